-- Records of the members of an index set; prunes members whose record is gone.
-- KEYS[1] = index set; ARGV[1] = prefix that turns a member into its session key.
local records = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', ARGV[1] .. member)
  if value then
    records[#records + 1] = value
  else
    redis.call('SREM', KEYS[1], member)
  end
end
return records
