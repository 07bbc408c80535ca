-- Take or keep a lease: the one node that holds it does a cluster-wide job (the foreign
-- scan), so that job runs once per cluster and not once per node.
-- KEYS[1] = lease key; ARGV[1] = this node's id, ARGV[2] = lease time in ms.
-- Returns 1 when this node holds the lease (now renewed), else 0.
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
