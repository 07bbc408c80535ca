-- Cheap heartbeat of one node, O(1) in payload: the node's index set says which sessions to
-- renew, so nothing per session crosses the wire.
-- KEYS[1] = node record, KEYS[2] = node index set.
-- ARGV[1] = ttl in ms, ARGV[2] = node record JSON, ARGV[3] = number of sessions the node runs,
-- ARGV[4] = prefixed "sessions/", ARGV[5] = prefixed "index/calls/".
-- Returns false when the index does not hold exactly that many sessions (the caller then
-- runs heartbeat_full.lua), else the members ("call_id/session_id") whose record or call
-- index was missing, for the caller to write back.
local ttl = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
local expected = tonumber(ARGV[3])
if redis.call('SCARD', KEYS[2]) ~= expected then
  return false
end
local missing = {}
local call_ok = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local ok = redis.call('PEXPIRE', ARGV[4] .. member, ttl) == 1
  local call_id = string.match(member, '^[^/]+')
  local index_ok = call_ok[call_id]
  if index_ok == nil then
    index_ok = redis.call('PEXPIRE', ARGV[5] .. call_id, ttl) == 1
    call_ok[call_id] = index_ok
  end
  if not (ok and index_ok) then
    missing[#missing + 1] = member
  end
end
if expected > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return missing
