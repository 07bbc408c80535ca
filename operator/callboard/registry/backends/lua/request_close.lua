-- Ask for a session to close: write the flag (pollers, Vision Agents nodes) and push a
-- notice to the owning node's channel (callboard nodes close at once).
-- KEYS[1] = close flag, KEYS[2] = session key; ARGV[1] = ttl in ms,
-- ARGV[2] = prefixed channel prefix, ARGV[3] = notice payload.
-- Returns the owner's node id, or false when the session record is missing or unreadable.
redis.call('SET', KEYS[1], '', 'PX', tonumber(ARGV[1]))
local raw = redis.call('GET', KEYS[2])
if not raw then
  return false
end
local ok, record = pcall(cjson.decode, raw)
if not (ok and type(record) == 'table' and type(record.node_id) == 'string') then
  return false
end
redis.call('PUBLISH', ARGV[2] .. record.node_id, ARGV[3])
return record.node_id
