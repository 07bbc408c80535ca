-- Commit a start request just before registering its session: after this answer
-- "started", a withdrawal can no longer stop it; any other answer means "do not start".
-- An unclaimed request is claimed and committed in one step.
-- KEYS[1] = request key, KEYS[2] = claim key; ARGV[1] = claimant, ARGV[2] = ttl in ms.
-- Returns started | taken | withdrawn | expired.
local state = redis.call('GET', KEYS[2])
if state == 'started:' .. ARGV[1] then
  return 'started'
elseif state == 'withdrawn' then
  return 'withdrawn'
elseif state and state ~= 'claimed:' .. ARGV[1] then
  return 'taken'
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'expired'
end
redis.call('SET', KEYS[2], 'started:' .. ARGV[1], 'PX', tonumber(ARGV[2]))
redis.call('DEL', KEYS[1])
return 'started'
