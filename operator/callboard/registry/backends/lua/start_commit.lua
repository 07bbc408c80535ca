-- Commit a start request just before registering its session: after this answer
-- "started", a withdrawal can no longer stop it; any other answer means "do not start".
-- An unclaimed request is claimed and committed in one step. A request a deposed leader
-- sent (its fencing token below the fence) is fenced here too: the fence may have risen
-- since the claim.
-- KEYS[1] = request key, KEYS[2] = claim key, KEYS[3] = fence; ARGV[1] = claimant,
-- ARGV[2] = ttl in ms, ARGV[3] = the request's fencing token ('' when none).
-- Returns started | taken | withdrawn | expired | fenced.
local state = redis.call('GET', KEYS[2])
if state == 'started:' .. ARGV[1] then
  return 'started'
elseif state == 'withdrawn' or state == 'fenced' then
  return state
elseif state and state ~= 'claimed:' .. ARGV[1] then
  return 'taken'
end
if ARGV[3] ~= '' then
  local fence = tonumber(redis.call('GET', KEYS[3]))
  if fence and tonumber(ARGV[3]) < fence then
    redis.call('SET', KEYS[2], 'fenced', 'PX', tonumber(ARGV[2]))
    redis.call('DEL', KEYS[1])
    return 'fenced'
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'expired'
end
redis.call('SET', KEYS[2], 'started:' .. ARGV[1], 'PX', tonumber(ARGV[2]))
redis.call('DEL', KEYS[1])
return 'started'
