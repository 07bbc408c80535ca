-- Ask for a session to close: write the flag (pollers, Vision Agents nodes) and push a
-- notice to the owning node's channel (callboard nodes close at once). A close from a
-- deposed leader (its fencing token below the fence) is neither written nor pushed.
-- KEYS[1] = close flag, KEYS[2] = session key, KEYS[3] = fence; ARGV[1] = ttl in ms,
-- ARGV[2] = prefixed channel prefix, ARGV[3] = notice payload, ARGV[4] = the requester's
-- fencing token, '' when it has none (the flag's value: nodes ignore a flag whose token
-- is below the fence when they poll it; Vision Agents nodes only test that it exists).
-- Returns {'fenced', fence}, or {'ok', owner's node id or '' when the session record is
-- missing or unreadable}.
if ARGV[4] ~= '' then
  local fence = tonumber(redis.call('GET', KEYS[3]))
  if fence and tonumber(ARGV[4]) < fence then
    return {'fenced', tostring(fence)}
  end
end
redis.call('SET', KEYS[1], ARGV[4], 'PX', tonumber(ARGV[1]))
local raw = redis.call('GET', KEYS[2])
if not raw then
  return {'ok', ''}
end
local ok, record = pcall(cjson.decode, raw)
if not (ok and type(record) == 'table' and type(record.node_id) == 'string') then
  return {'ok', ''}
end
redis.call('PUBLISH', ARGV[2] .. record.node_id, ARGV[3])
return {'ok', record.node_id}
