-- Raise the operator's fence to a leadership term's token; never lower it.
-- KEYS[1] = fence key; ARGV[1] = the term's fencing token (an integer).
-- Returns the fence after the call: the token, or a higher one (a newer term's).
local current = tonumber(redis.call('GET', KEYS[1]))
local token = tonumber(ARGV[1])
if current == nil or token > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return token
end
return current
