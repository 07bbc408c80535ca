-- Cheap heartbeat of one node, O(1) in payload: the node's index set says which sessions to
-- renew, so nothing per session crosses the wire.
-- KEYS[1] = node record, KEYS[2] = node index set, KEYS[3] = the node index's digest,
-- KEYS[4] = the node directory (sorted set of node ids, for paged listings; ARGV[7] = this
-- node's id goes in at every beat, so a lost directory is whole again after one beat).
-- ARGV[1] = ttl in ms, ARGV[2] = node record JSON, ARGV[3] = the digest of the members the
-- node runs ("count:sum1:sum2": sums of the first two 32-bit words of SHA-1(member)),
-- ARGV[4] = prefixed "sessions/", ARGV[5] = prefixed "index/calls/", ARGV[6] = the TTL in
-- ms of a call index (long: it is renewed by the full heartbeat and by register.lua only;
-- members whose record is gone are pruned when read).
-- The digest key is kept by every script that changes the index's membership
-- (register.lua, remove.lua, heartbeat_full.lua): when it differs from the node's own, or
-- the set's size differs from its count (the set evicted, the digest not), this returns
-- false and the caller runs heartbeat_full.lua. Else it renews every member and returns the
-- members ("call_id/session_id") whose record was missing, for the caller to write back
-- (a member the node does not run means the set was edited behind the digest's back: the
-- caller then runs the full heartbeat too). Each call's index gets the node's members of
-- that call back (one SADD per call: a lost index, or lost members, are repaired); a
-- repaired index gets its TTL back, only ever lengthened (other nodes share it).
-- KEYS[5] = the node's version (see register.lua): renewed at every beat, moved on when a
-- member's record is missing (a reader's copy of the node's sessions is stale).
-- include: _bump_version (bump_version(key, ttl_ms), see _bump_version.lua)
local function sadd_all(key, items)
  local added = 0
  for first = 1, #items, 1000 do  -- stay well below Lua's limit on unpack()
    added = added + redis.call('SADD', key, unpack(items, first, math.min(first + 999, #items)))
  end
  return added
end

local ttl = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[4], 0, ARGV[7])
local stored = redis.call('GET', KEYS[3])
local count = tonumber(string.match(ARGV[3], '^(%d+):'))
if stored ~= ARGV[3] or redis.call('SCARD', KEYS[2]) ~= count then
  return false
end
local missing = {}
local by_call = {}
local calls = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('PEXPIRE', ARGV[4] .. member, ttl) == 1 then
    local call_id, session_id = string.match(member, '^([^/]+)/(.+)$')
    local ids = by_call[call_id]
    if ids == nil then
      ids = {}
      by_call[call_id] = ids
      calls[#calls + 1] = call_id
    end
    ids[#ids + 1] = session_id
  else
    missing[#missing + 1] = member
  end
end
local call_ttl = tonumber(ARGV[6])
for _, call_id in ipairs(calls) do
  local call_index = ARGV[5] .. call_id
  if sadd_all(call_index, by_call[call_id]) > 0 and redis.call('PTTL', call_index) < call_ttl then
    redis.call('PEXPIRE', call_index, call_ttl)
  end
end
if count > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
if KEYS[5] then
  if #missing > 0 then
    bump_version(KEYS[5], ttl)
  else
    redis.call('PEXPIRE', KEYS[5], ttl)
  end
end
return missing
