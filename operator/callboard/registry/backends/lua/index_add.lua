-- One batch of the foreign scan: index every session found and count the foreign ones.
-- ARGV[1] = prefixed "index/calls/", ARGV[2] = prefixed "nodes/", ARGV[3] = the store's
-- key prefix (the scan returns full keys); ARGV[4..] = full session keys found by SCAN.
-- A session is foreign when its record names a node with no callboard node record (a
-- Vision Agents node writes only the documented keys). Each session goes into its call's
-- index, which then lives at least as long as the record.
-- Returns how many of the sessions were foreign.
local cut = string.len(ARGV[3]) + string.len('sessions/') + 1
local foreign = 0
for i = 4, #ARGV do
  local key = ARGV[i]
  local call_id, session_id = string.match(string.sub(key, cut), '^([^/]+)/([^/]+)$')
  local pttl = redis.call('PTTL', key)
  if call_id and pttl > 0 then
    local call_index = ARGV[1] .. call_id
    redis.call('SADD', call_index, session_id)
    if redis.call('PTTL', call_index) < pttl then
      redis.call('PEXPIRE', call_index, pttl)
    end
    local raw = redis.call('GET', key)
    local ok, record = pcall(cjson.decode, raw)
    if ok and type(record) == 'table' and type(record.node_id) == 'string'
        and redis.call('EXISTS', ARGV[2] .. record.node_id) == 0 then
      foreign = foreign + 1
    end
  end
end
return foreign
