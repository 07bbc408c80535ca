-- The sessions among some session keys (one SCAN step's) that no node index knows: those of
-- documented-layout (Vision Agents) nodes writing with their own Redis client. The last
-- phase of a paged listing (see callboard/registry/paging.py); indexed sessions were listed
-- in the node phase already.
-- ARGV[1] = prefixed "sessions/", ARGV[2] = prefixed "index/nodes/", ARGV[3..] = full keys.
-- Returns {place, record, ...} ("call_id/session_id" and record) for the keys whose place
-- is not in its node's index set, in the order given (a record that is not JSON with a
-- string node_id counts as not indexed: the reader skips it).
local records = {}
local cut = #ARGV[1] + 1
for i = 3, #ARGV do
  local value = redis.call('GET', ARGV[i])
  if value then
    local ok, decoded = pcall(cjson.decode, value)
    local node = ok and type(decoded) == 'table' and decoded['node_id']
    local place = string.sub(ARGV[i], cut)
    if type(node) ~= 'string' or redis.call('SISMEMBER', ARGV[2] .. node, place) == 0 then
      records[#records + 1] = place
      records[#records + 1] = value
    end
  end
end
return records
