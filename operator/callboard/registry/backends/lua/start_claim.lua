-- Claim a start request for one claimant (a node process): at most one claimant, once,
-- and never one a deposed leader sent (its fencing token below the fence).
-- KEYS[1] = request key (expires with the request), KEYS[2] = claim key, KEYS[3] = fence;
-- ARGV[1] = claimant ("node_id#instance"), ARGV[2] = claim key ttl in ms,
-- ARGV[3] = the request's fencing token, '' when it carries none (never fenced).
-- Returns claimed | started (this claimant, again) | taken | withdrawn | expired | fenced.
local state = redis.call('GET', KEYS[2])
if state == 'withdrawn' or state == 'fenced' then
  return state
elseif state == 'started:' .. ARGV[1] then
  return 'started'
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
if state then
  return 'claimed'
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'expired'
end
redis.call('SET', KEYS[2], 'claimed:' .. ARGV[1], 'PX', tonumber(ARGV[2]))
return 'claimed'
