-- Full heartbeat of one node: write its record, renew every session it names, and rebuild
-- its index set (and the set's digest) from that list. Used when the cheap heartbeat
-- (heartbeat.lua) finds the index out of step with the node's own list, and periodically.
-- KEYS[1] = node record, KEYS[2] = node index set, KEYS[3] = the node index's digest,
-- KEYS[4] = the node directory (see heartbeat.lua).
-- ARGV[1] = ttl in ms, ARGV[2] = node record JSON, ARGV[3] = prefixed "sessions/",
-- ARGV[4] = prefixed "index/calls/", ARGV[5] = prefixed "ended/", ARGV[6] = the TTL in ms
-- of a call index (see heartbeat.lua), ARGV[7] = the node's id; ARGV[8..] = the node's
-- members "call_id/session_id".
-- A member with a tombstone ended while the list was on its way: it is neither renewed nor
-- indexed (G2). Each call's index gets the node's live members back (one SADD per call) and
-- is only ever lengthened. Returns the positions (1-based) of members whose record was
-- missing (lost by a Redis restart, flush or long outage): the caller writes those back
-- (register.lua then adds them to the index and the digest).
-- KEYS[5] = the node's version (see register.lua): moved on when the rebuilt digest
-- differs from the stored one (the set's membership changed), else renewed.
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
redis.call('DEL', KEYS[2])
local missing = {}
local kept = {}
local by_call = {}
local calls = {}
local s1, s2 = 0, 0
for i = 8, #ARGV do
  local member = ARGV[i]
  if redis.call('EXISTS', ARGV[5] .. member) == 0 then
    if redis.call('PEXPIRE', ARGV[3] .. member, ttl) == 1 then
      local call_id, session_id = string.match(member, '^([^/]+)/(.+)$')
      local ids = by_call[call_id]
      if ids == nil then
        ids = {}
        by_call[call_id] = ids
        calls[#calls + 1] = call_id
      end
      ids[#ids + 1] = session_id
      kept[#kept + 1] = member
      local h = redis.sha1hex(member)
      s1 = s1 + tonumber(string.sub(h, 1, 8), 16)
      s2 = s2 + tonumber(string.sub(h, 9, 16), 16)
    else
      missing[#missing + 1] = i - 7
    end
  end
end
local call_ttl = tonumber(ARGV[6])
for _, call_id in ipairs(calls) do
  local call_index = ARGV[4] .. call_id
  sadd_all(call_index, by_call[call_id])
  if redis.call('PTTL', call_index) < call_ttl then
    redis.call('PEXPIRE', call_index, call_ttl)
  end
end
sadd_all(KEYS[2], kept)
local digest = string.format('%d:%.0f:%.0f', #kept, s1, s2)
local changed = redis.call('GET', KEYS[3]) ~= digest or #missing > 0
redis.call('SET', KEYS[3], digest, 'PX', ttl)
if #kept > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if KEYS[5] then
  if changed then
    bump_version(KEYS[5], ttl)
  else
    redis.call('PEXPIRE', KEYS[5], ttl)
  end
end
return missing
