-- One page of the cluster's sessions, in node order, then "call_id/session_id" order within
-- a node (see callboard/registry/paging.py). Bounded per page: at most ARGV[4] nodes of the
-- directory, and within each the node's index set (one SMEMBERS, sorted here: a node runs
-- few sessions) and one GET per member looked at, until ARGV[4] records are found.
-- KEYS[1] = the node directory (sorted set of node ids, score 0, kept by the heartbeats).
-- ARGV[1] = prefixed "index/nodes/", ARGV[2] = prefixed "sessions/", ARGV[3] = prefixed
-- "nodes/", ARGV[4] = limit, ARGV[5] = resume after this node ('' = from the first),
-- ARGV[6] = resume after this member of it ('' = after the whole node), ARGV[7] = '1' for
-- only node ARGV[5] (a node filter; then ARGV[6] '' means from its first member).
-- A directory entry whose node has neither a record nor an index set is pruned.
-- Returns {next node, next member, records...}: next node '' means no node is left.
local limit = tonumber(ARGV[4])
local records = {}
local last_member = ''

local function page_node(node, after)
  local members = redis.call('SMEMBERS', ARGV[1] .. node)
  table.sort(members)
  for _, member in ipairs(members) do
    if member > after then
      local value = redis.call('GET', ARGV[2] .. member)
      if value then
        records[#records + 1] = value
      end
      last_member = member
      if #records >= limit then
        return true
      end
    end
  end
  return false
end

local function answer(node, member)
  local out = {node, member}
  for i = 1, #records do
    out[#out + 1] = records[i]
  end
  return out
end

if ARGV[7] == '1' then
  if page_node(ARGV[5], ARGV[6]) then
    return answer(ARGV[5], last_member)
  end
  return answer('', '')
end

local start = '-'
if ARGV[5] ~= '' then
  if ARGV[6] == '' then
    start = '(' .. ARGV[5]
  else
    start = '[' .. ARGV[5]
  end
end
local nodes = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, limit)
for _, node in ipairs(nodes) do
  local after = ''
  if node == ARGV[5] then
    after = ARGV[6]
  end
  if redis.call('EXISTS', ARGV[3] .. node) == 0 and redis.call('EXISTS', ARGV[1] .. node) == 0 then
    redis.call('ZREM', KEYS[1], node)
  elseif page_node(node, after) then
    return answer(node, last_member)
  end
end
if #nodes < limit then
  return answer('', '')
end
return answer(nodes[#nodes], '')
