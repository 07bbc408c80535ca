-- Full heartbeat of one node: write its record, renew every session it names, and rebuild
-- its index set from that list. Used when the cheap heartbeat (heartbeat.lua) finds the
-- index out of step with the node's own list, and periodically as a check.
-- KEYS[1] = node record, KEYS[2] = node index set; per session i: KEYS[2i+1] = session key,
-- KEYS[2i+2] = call index set. ARGV[1] = ttl in ms, ARGV[2] = node record JSON;
-- per session i: ARGV[2+i] = node index member "call_id/session_id".
-- Returns the positions (1-based) of sessions whose record or call index was missing (lost
-- by a Redis restart, flush or long outage): the caller writes those back with register.lua.
local ttl = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
local n = (#KEYS - 2) / 2
local missing = {}
local call_ok = {}
for i = 1, n do
  local session_key, call_index = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local ok = redis.call('PEXPIRE', session_key, ttl) == 1
  local index_ok = call_ok[call_index]
  if index_ok == nil then
    index_ok = redis.call('PEXPIRE', call_index, ttl) == 1
    call_ok[call_index] = index_ok
  end
  if not (ok and index_ok) then
    missing[#missing + 1] = i
  end
end
redis.call('DEL', KEYS[2])
local chunk = 1000  -- stay well below Lua's limit on unpack()
for first = 3, n + 2, chunk do
  redis.call('SADD', KEYS[2], unpack(ARGV, first, math.min(first + chunk - 1, n + 2)))
end
if n > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return missing
