-- Add sessions found by a scan (written by nodes that keep no indexes) to the call index.
-- Per pair i: KEYS[i] = call index set, ARGV[2i-1] = session id, ARGV[2i] = TTL in ms of its record.
for i = 1, #KEYS do
  local ttl = tonumber(ARGV[2 * i])
  redis.call('SADD', KEYS[i], ARGV[2 * i - 1])
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return #KEYS
