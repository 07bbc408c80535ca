-- Shared by the scripts that change a node's records or index set (register, remove,
-- heartbeat, heartbeat_full); callboard.registry.backends.redis._lua inlines it at each
-- script's include line for it (Redis scripts cannot load one another).
-- Move the node's version (index/versions/{node_id}) on: a new value that no earlier one
-- had (the clock in microseconds, or one more), so a reader that holds an older one reads
-- the node's sessions again; it lives ttl_ms (nil: as long as it did; the heartbeat
-- renews it).
local function bump_version(key, ttl_ms)
  -- pcall: a user whose ACL leaves TIME out (category rules such as +@read +@write do)
  -- still writes; its versions then only count up.
  local t = redis.pcall('TIME')
  local now = 0
  if type(t) == 'table' and not t.err then
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  local old = tonumber(redis.call('GET', key) or '0') or 0
  local value = string.format('%.0f', math.max(now, old + 1))
  if ttl_ms then
    redis.call('SET', key, value, 'PX', ttl_ms)
  else
    redis.call('SET', key, value, 'KEEPTTL')
  end
end
