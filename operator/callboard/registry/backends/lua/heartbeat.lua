-- Cheap heartbeat of one node, O(1) in payload: the node's index set says which sessions to
-- renew, so nothing per session crosses the wire.
-- KEYS[1] = node record, KEYS[2] = node index set.
-- ARGV[1] = ttl in ms, ARGV[2] = node record JSON, ARGV[3] = the digest of the members the
-- node runs ("count:sum1:sum2", see digest.lua), ARGV[4] = prefixed "sessions/",
-- ARGV[5] = prefixed "index/calls/".
-- Returns false when the index does not hold exactly those members (the caller then runs
-- heartbeat_full.lua), else the members ("call_id/session_id") whose record was missing,
-- for the caller to write back. A member missing from its call's index is put back here
-- (the record exists, only the index lost it); a call index is only ever lengthened, never
-- shortened (other nodes, with other TTLs, share it).
local ttl = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
local members = redis.call('SMEMBERS', KEYS[2])
local s1, s2 = 0, 0
for _, member in ipairs(members) do
  local h = redis.sha1hex(member)
  s1 = s1 + tonumber(string.sub(h, 1, 8), 16)
  s2 = s2 + tonumber(string.sub(h, 9, 16), 16)
end
if string.format('%d:%.0f:%.0f', #members, s1, s2) ~= ARGV[3] then
  return false
end
local missing = {}
local extended = {}
for _, member in ipairs(members) do
  if redis.call('PEXPIRE', ARGV[4] .. member, ttl) == 1 then
    local call_id, session_id = string.match(member, '^([^/]+)/(.+)$')
    local call_index = ARGV[5] .. call_id
    redis.call('SADD', call_index, session_id)
    if not extended[call_index] then
      extended[call_index] = true
      if redis.call('PTTL', call_index) < ttl then
        redis.call('PEXPIRE', call_index, ttl)
      end
    end
  else
    missing[#missing + 1] = member
  end
end
if #members > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return missing
