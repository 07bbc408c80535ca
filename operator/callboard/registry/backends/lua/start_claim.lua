-- Claim a start request for one claimant (a node process): at most one claimant, once.
-- KEYS[1] = request key (expires with the request), KEYS[2] = claim key;
-- ARGV[1] = claimant ("node_id#instance"), ARGV[2] = claim key ttl in ms.
-- Returns claimed | started (this claimant, again) | taken | withdrawn | expired.
local state = redis.call('GET', KEYS[2])
if state then
  if state == 'withdrawn' then
    return 'withdrawn'
  elseif state == 'claimed:' .. ARGV[1] then
    return 'claimed'
  elseif state == 'started:' .. ARGV[1] then
    return 'started'
  end
  return 'taken'
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'expired'
end
redis.call('SET', KEYS[2], 'claimed:' .. ARGV[1], 'PX', tonumber(ARGV[2]))
return 'claimed'
