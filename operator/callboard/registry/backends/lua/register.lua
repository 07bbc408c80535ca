-- Register sessions: write each record and add it to the per-call and per-node sets.
-- KEYS[1] = node index set; then per session i: KEYS[2i] = session key, KEYS[2i+1] = call index set
-- ARGV[1] = ttl in ms; ARGV[2] = max sessions per call (0 = no limit; only with one session);
-- ARGV[3] = prefixed "sessions/{call_id}/" (to test index members); then per session i:
-- ARGV[3i+1] = session id, ARGV[3i+2] = node index member "call_id/session_id", ARGV[3i+3] = record
-- Returns the number written, or -1 - (sessions already in the call) when the limit refuses.
local ttl = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local n = (#KEYS - 1) / 2

if limit > 0 then
  local call_index, sid, live = KEYS[3], ARGV[4], 0
  for _, member in ipairs(redis.call('SMEMBERS', call_index)) do
    if member ~= sid then
      if redis.call('EXISTS', ARGV[3] .. member) == 1 then
        live = live + 1
      else
        redis.call('SREM', call_index, member)
      end
    end
  end
  if live >= limit then
    return -1 - live
  end
end

local refreshed = {}
for i = 1, n do
  local session_key, call_index = KEYS[2 * i], KEYS[2 * i + 1]
  local base = 3 * i
  redis.call('SET', session_key, ARGV[base + 3], 'PX', ttl)
  redis.call('SADD', call_index, ARGV[base + 1])
  redis.call('SADD', KEYS[1], ARGV[base + 2])
  if not refreshed[call_index] then
    refreshed[call_index] = true
    if redis.call('PTTL', call_index) < ttl then
      redis.call('PEXPIRE', call_index, ttl)
    end
  end
end
if n > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return n
