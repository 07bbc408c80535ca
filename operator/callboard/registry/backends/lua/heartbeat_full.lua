-- Full heartbeat of one node: write its record, renew every session it names, and rebuild
-- its index set from that list. Used when the cheap heartbeat (heartbeat.lua) finds the
-- index out of step with the node's own list, and periodically as a check.
-- KEYS[1] = node record, KEYS[2] = node index set. ARGV[1] = ttl in ms, ARGV[2] = node
-- record JSON, ARGV[3] = prefixed "sessions/", ARGV[4] = prefixed "index/calls/",
-- ARGV[5] = prefixed "ended/"; ARGV[6..] = the node's members "call_id/session_id".
-- A member with a tombstone ended while the list was on its way: it is neither renewed nor
-- indexed (G2). A member missing from its call's index is put back; a call index is only
-- ever lengthened. Returns the positions (1-based) of members whose record was missing
-- (lost by a Redis restart, flush or long outage): the caller writes those back.
local ttl = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('DEL', KEYS[2])
local missing = {}
local kept = {}
local extended = {}
for i = 6, #ARGV do
  local member = ARGV[i]
  if redis.call('EXISTS', ARGV[5] .. member) == 0 then
    if redis.call('PEXPIRE', ARGV[3] .. member, ttl) == 1 then
      local call_id, session_id = string.match(member, '^([^/]+)/(.+)$')
      local call_index = ARGV[4] .. call_id
      redis.call('SADD', call_index, session_id)
      if not extended[call_index] then
        extended[call_index] = true
        if redis.call('PTTL', call_index) < ttl then
          redis.call('PEXPIRE', call_index, ttl)
        end
      end
      kept[#kept + 1] = member
    else
      missing[#missing + 1] = i - 5
    end
  end
end
local chunk = 1000  -- stay well below Lua's limit on unpack()
for first = 1, #kept, chunk do
  redis.call('SADD', KEYS[2], unpack(kept, first, math.min(first + chunk - 1, #kept)))
end
if #kept > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return missing
