-- Every live node record and the session records of the nodes that changed, read through
-- the indexes (no SCAN: O(nodes + the changed nodes' sessions), not O(key space)). For the
-- operator's sync cycle, which keeps the sessions of the nodes that did not change.
-- KEYS[1] = the node directory (index/node_ids, node ids at score 0), KEYS[2] = the
-- callboard-only marker ('' = do not check it: the caller trusts the indexes).
-- ARGV[1] = prefixed "nodes/", ARGV[2] = prefixed "index/nodes/", ARGV[3] = prefixed
-- "sessions/", ARGV[4] = prefixed "index/versions/"; then pairs: node id, the version of
-- that node's sessions the caller holds.
-- A node's version (index/versions/{node_id}) moves on with every script that writes one
-- of its records or changes its index set (register, remove, a heartbeat that finds a
-- record missing or rebuilds the set). A node whose version equals the caller's, and whose
-- record lives, is answered without its sessions; any other (no version: a node of an
-- older callboard, or the key lost; no record: the node is going, its records expire on
-- their own) with all of them.
-- Returns false when the indexes cannot be trusted to name everything: the set is missing
-- (nodes that predate it, or a flush before the next heartbeat), or the marker is asked for
-- and absent (documented-layout nodes may write sessions no index knows): the caller scans.
-- Else {node records, entries}, one entry per node of the directory:
-- {node id, version ('' = none), 0} (unchanged) or {node id, version, 1, session records};
-- members whose record is gone are skipped, and a node with neither record nor index set
-- leaves the directory.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 0 then
  return false
end
local known = {}
for i = 5, #ARGV - 1, 2 do
  known[ARGV[i]] = ARGV[i + 1]
end
local nodes = {}
local entries = {}
for _, node_id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local record = redis.call('GET', ARGV[1] .. node_id)
  local version = redis.call('GET', ARGV[4] .. node_id) or ''
  if record then
    nodes[#nodes + 1] = record
  end
  if record and version ~= '' and known[node_id] == version then
    entries[#entries + 1] = {node_id, version, 0}
  else
    local members = redis.call('SMEMBERS', ARGV[2] .. node_id)
    if not record and #members == 0 then
      redis.call('ZREM', KEYS[1], node_id)  -- a node gone for good: its record and index expired
    else
      local sessions = {}
      for _, member in ipairs(members) do
        local session = redis.call('GET', ARGV[3] .. member)
        if session then
          sessions[#sessions + 1] = session
        end
      end
      entries[#entries + 1] = {node_id, version, 1, sessions}
    end
  end
end
return {nodes, entries}
