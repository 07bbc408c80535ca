-- Records of the members of an index set; prunes members whose record is gone.
-- KEYS[1] = index set; ARGV[1] = prefix that turns a member into its session key;
-- ARGV[2] = the callboard-only marker key ('' = do not check); ARGV[3..] = extra members
-- found by a scan of the call's keys (sessions of documented-layout nodes), indexed here
-- (the index entry lives as long as the record) before the set is read.
-- Returns {flag, records...}: flag is 1 when the marker was asked about and is absent (the
-- fleet is not known to be callboard-only: the caller must scan the call's keys and ask
-- again, with no marker and what it found), else 0.
if ARGV[2] ~= '' and redis.call('EXISTS', ARGV[2]) == 0 then
  return {1}
end
for i = 3, #ARGV do
  local pttl = redis.call('PTTL', ARGV[1] .. ARGV[i])
  if pttl > 0 then
    redis.call('SADD', KEYS[1], ARGV[i])
    if redis.call('PTTL', KEYS[1]) < pttl then
      redis.call('PEXPIRE', KEYS[1], pttl)
    end
  end
end
local records = {0}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', ARGV[1] .. member)
  if value then
    records[#records + 1] = value
  else
    redis.call('SREM', KEYS[1], member)
  end
end
return records
