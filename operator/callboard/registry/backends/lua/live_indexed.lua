-- Every live node record and every session record of those nodes, read through the indexes
-- (no SCAN: O(nodes + their sessions), not O(key space)). For the operator's sync cycle.
-- KEYS[1] = the node directory (index/node_ids, node ids at score 0), KEYS[2] = the
-- callboard-only marker ('' = do not check it: the caller trusts the indexes).
-- ARGV[1] = prefixed "nodes/", ARGV[2] = prefixed "index/nodes/", ARGV[3] = prefixed "sessions/".
-- Returns false when the indexes cannot be trusted to name everything: the set is missing
-- (nodes that predate it, or a flush before the next heartbeat), or the marker is asked for
-- and absent (documented-layout nodes may write sessions no index knows): the caller scans.
-- Else {node records, session records}; members whose record is gone are skipped, and a
-- node with neither record nor index set leaves the directory.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 0 then
  return false
end
local nodes = {}
local sessions = {}
for _, node_id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local record = redis.call('GET', ARGV[1] .. node_id)
  if record then
    nodes[#nodes + 1] = record
  end
  local members = redis.call('SMEMBERS', ARGV[2] .. node_id)
  if not record and #members == 0 then
    redis.call('ZREM', KEYS[1], node_id)  -- a node gone for good: its record and index expired
  end
  for _, member in ipairs(members) do
    local session = redis.call('GET', ARGV[3] .. member)
    if session then
      sessions[#sessions + 1] = session
    end
  end
end
return {nodes, sessions}
