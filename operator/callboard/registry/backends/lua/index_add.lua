-- One batch of the foreign scan: index every session found and count the foreign ones.
-- ARGV[1] = prefixed "index/calls/", ARGV[2] = prefixed "nodes/", ARGV[3] = the store's
-- key prefix (the scan returns full keys), ARGV[4] = ms the index entries must last at
-- least (until the next scan: the foreign node refreshes its record meanwhile, the index
-- must follow; members whose record is gone are pruned when read); ARGV[5..] = full
-- session keys found by SCAN. A session is foreign when its record names a node with no
-- callboard node record (a Vision Agents node writes only the documented keys).
-- Returns how many of the sessions were foreign.
local cut = string.len(ARGV[3]) + string.len('sessions/') + 1
local foreign = 0
local keep = tonumber(ARGV[4])
for i = 5, #ARGV do
  local key = ARGV[i]
  local call_id, session_id = string.match(string.sub(key, cut), '^([^/]+)/([^/]+)$')
  local pttl = redis.call('PTTL', key)
  if call_id and pttl > 0 then
    local call_index = ARGV[1] .. call_id
    local last = math.max(pttl, keep)
    redis.call('SADD', call_index, session_id)
    if redis.call('PTTL', call_index) < last then
      redis.call('PEXPIRE', call_index, last)
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
