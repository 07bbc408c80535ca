-- Register sessions of one node: write each record and add it to the per-call and per-node
-- sets, refusing what is not the node's to write.
-- KEYS[1] = node index set, KEYS[2] = its digest ("count:sum1:sum2", see heartbeat.lua);
-- then per session i: KEYS[2i+1] = session key, KEYS[2i+2] = call index set.
-- ARGV[1] = ttl in ms; ARGV[2] = max sessions per call (0 = no limit; only with one session);
-- ARGV[3] = prefixed "sessions/{call_id}/" (to test index members); ARGV[4] = this node's id;
-- ARGV[5] = "1" for a write-back (heartbeat: skip sessions with a tombstone or another
-- owner) else "0" (a new registration: refuse another owner); ARGV[6] = prefixed "ended/";
-- ARGV[7] = the callboard-only marker key ('' = do not check it: the caller scanned, or
-- the fleet is declared callboard-only);
-- ARGV[8] = the TTL in ms of a call index (long, see heartbeat.lua);
-- ARGV[9] = the node's drain mark key ('' = do not check it: a write-back or a restore);
-- ARGV[10] = how many
-- extra session ids of the call follow (found by a scan: sessions of documented-layout
-- nodes the index may not know), then those ids; then per session i:
-- session id, node index member "call_id/session_id", record JSON; last, the node's
-- version key ('' = none): moved on when a record is written (see bump_version).
-- Returns {'ok', written}, {'limit', live sessions in the call},
-- {'conflict', owner node id}, {'draining'} when the operator marked the node for removal
-- (checked here, in the write, so no session slips in after the mark), or {'exact'} when
-- the fleet is not known to be callboard-only and the caller must scan the call's keys and
-- pass them as extras.
local ttl = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local node_id = ARGV[4]
local write_back = ARGV[5] == '1'
local call_ttl = tonumber(ARGV[8])
local n_extra = tonumber(ARGV[10])
local base = 10 + n_extra
local n = (#KEYS - 2) / 2
local version_key = ARGV[base + 3 * n + 1] or ''

-- include: _bump_version (bump_version(key, ttl_ms), see _bump_version.lua)

-- Add (sign 1) or take away (-1) one member's words in a node index's digest.
local function digest_update(key, member, sign)
  local h = redis.sha1hex(member)
  local c, a, b = 0, 0, 0
  local d = redis.call('GET', key)
  if d then
    c, a, b = string.match(d, '^(-?%d+):(-?%d+):(-?%d+)$')
    c, a, b = tonumber(c) or 0, tonumber(a) or 0, tonumber(b) or 0
  end
  c = c + sign
  a = a + sign * tonumber(string.sub(h, 1, 8), 16)
  b = b + sign * tonumber(string.sub(h, 9, 16), 16)
  redis.call('SET', key, string.format('%d:%.0f:%.0f', c, a, b), 'KEEPTTL')
end

local function owner_of(key)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  local ok, record = pcall(cjson.decode, raw)
  if ok and type(record) == 'table' and type(record.node_id) == 'string' then
    return record.node_id
  end
  return nil  -- garbage is nobody's record
end

if ARGV[9] ~= '' and redis.call('EXISTS', ARGV[9]) == 1 then
  return {'draining'}
end

if not write_back then
  local owner = owner_of(KEYS[3])
  if owner and owner ~= node_id then
    return {'conflict', owner}
  end
end

if limit > 0 then
  if ARGV[7] ~= '' and redis.call('EXISTS', ARGV[7]) == 0 then
    return {'exact'}
  end
  local call_index, sid, live = KEYS[4], ARGV[base + 1], 0
  for i = 1, n_extra do
    local member = ARGV[10 + i]
    local pttl = redis.call('PTTL', ARGV[3] .. member)
    if pttl > 0 then
      redis.call('SADD', call_index, member)
      if redis.call('PTTL', call_index) < pttl then
        redis.call('PEXPIRE', call_index, pttl)
      end
    end
  end
  for _, member in ipairs(redis.call('SMEMBERS', call_index)) do
    if member ~= sid then
      if redis.call('EXISTS', ARGV[3] .. member) == 1 then
        live = live + 1
      else
        redis.call('SREM', call_index, member)
      end
    end
  end
  if live >= limit then
    return {'limit', live}
  end
end

local written = 0
local extended = {}
for i = 1, n do
  local session_key, call_index = KEYS[2 * i + 1], KEYS[2 * i + 2]
  local at = base + 3 * (i - 1)
  local member = ARGV[at + 2]
  local skip = false
  if write_back then
    if redis.call('EXISTS', ARGV[6] .. member) == 1 then
      skip = true  -- it ended while the heartbeat was on its way (G2)
    else
      local owner = owner_of(session_key)
      skip = owner ~= nil and owner ~= node_id
    end
  end
  if not skip then
    redis.call('SET', session_key, ARGV[at + 3], 'PX', ttl)
    redis.call('SADD', call_index, ARGV[at + 1])
    if redis.call('SADD', KEYS[1], member) == 1 then
      digest_update(KEYS[2], member, 1)
    end
    written = written + 1
    if not extended[call_index] then
      extended[call_index] = true
      if redis.call('PTTL', call_index) < call_ttl then
        redis.call('PEXPIRE', call_index, call_ttl)
      end
    end
  end
end
if written > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  if version_key ~= '' then
    bump_version(version_key, ttl)
  end
end
return {'ok', written}
