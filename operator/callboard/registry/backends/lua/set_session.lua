-- A documented-layout write of one session record through callboard's store (a Vision
-- Agents registry running on RedisSessionKVStore): SET it, and index it by call at once
-- so per-call look-ups and limits see it (G5). The index lives as long as the record.
-- KEYS[1] = session key, KEYS[2] = call index set; ARGV[1] = record, ARGV[2] = ttl in ms,
-- ARGV[3] = session id, ARGV[4] = '1' to write only if the key exists (SET XX).
local done
if ARGV[4] == '1' then
  done = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'XX')
else
  done = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if not done then
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
