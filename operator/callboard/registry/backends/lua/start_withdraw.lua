-- Withdraw a start request (the requester gave up on it): unless a node already
-- committed it, nobody can claim or commit it any more.
-- KEYS[1] = request key, KEYS[2] = claim key; ARGV[1] = claim key ttl in ms.
-- Returns started (too late: a node committed; follow its session) | withdrawn.
local state = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[1])
if state and string.sub(state, 1, 8) == 'started:' then
  return 'started'
end
redis.call('SET', KEYS[2], 'withdrawn', 'PX', tonumber(ARGV[1]))
return 'withdrawn'
