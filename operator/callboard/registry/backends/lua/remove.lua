-- Remove one session: its record, its close flag, its index entries; optionally a tombstone.
-- KEYS[1] = session key, KEYS[2] = close flag, KEYS[3] = call index set, KEYS[4] = tombstone key
-- ARGV[1] = fallback owner node id, ARGV[2] = session id, ARGV[3] = prefixed "index/nodes/",
-- ARGV[4] = node index member "call_id/session_id", ARGV[5] = tombstone JSON ('' = none),
-- ARGV[6] = tombstone TTL in ms, ARGV[7] = prefixed "index/digests/" (the owner's node
-- index digest follows its membership, see heartbeat.lua), ARGV[8] = prefixed
-- "index/versions/" ('' = none): the owner's version moves on when its set or a record
-- changes. Returns 1 if the record existed.
-- include: _bump_version (bump_version(key, ttl_ms), see _bump_version.lua)
local raw = redis.call('GET', KEYS[1])
local owner = ARGV[1]
if raw then
  local ok, record = pcall(cjson.decode, raw)
  if ok and type(record) == 'table' and type(record.node_id) == 'string' then
    owner = record.node_id
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[2])
local unindexed = redis.call('SREM', ARGV[3] .. owner, ARGV[4]) == 1
-- Only a version the owner keeps moves on (a node of an older callboard keeps none: a
-- version made here would stand still while that node registers sessions).
if (raw or unindexed) and (ARGV[8] or '') ~= '' and redis.call('EXISTS', ARGV[8] .. owner) == 1 then
  bump_version(ARGV[8] .. owner, nil)
end
if unindexed then
  local digest = ARGV[7] .. owner
  local d = redis.call('GET', digest)
  if d then
    local c, a, b = string.match(d, '^(-?%d+):(-?%d+):(-?%d+)$')
    local h = redis.sha1hex(ARGV[4])
    c = (tonumber(c) or 0) - 1
    a = (tonumber(a) or 0) - tonumber(string.sub(h, 1, 8), 16)
    b = (tonumber(b) or 0) - tonumber(string.sub(h, 9, 16), 16)
    redis.call('SET', digest, string.format('%d:%.0f:%.0f', c, a, b), 'KEEPTTL')
  end
end
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
end
if raw then
  return 1
end
return 0
