"""The Lua scripts behind statistics, the worker registry, the dead-letter queue and the
schedules on Redis.

Like :mod:`._scripts`, every step that must be atomic is one script and times come from the
server's clock (``TIME``).
"""

from __future__ import annotations

from ._scripts import _EMIT

__all__ = [
    "CLEAR_LETTERS",
    "DEAD_SNAPSHOT",
    "DEFINE_SCHEDULE",
    "DISCARD_LETTER",
    "FIRE",
    "POP_LETTER",
    "REGISTER",
    "SCHEDULE_STATE",
    "STATS",
    "UNREGISTER",
]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: workers zset (name -> expiry ms), this worker's hash.
# ARGV: worker name, ttl ms, then field, value pairs (max_concurrency, lane:<name>,
# cluster:<name>). A worker silent for the ttl (its lease) drops out of the statistics.
REGISTER = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('DEL', KEYS[2])
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
if #fields > 0 then redis.call('HSET', KEYS[2], unpack(fields)) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""
)

# KEYS: workers zset, this worker's hash. ARGV: worker name.
UNREGISTER = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: paused set, delayed zset, dead-letter stream, deployment counters hash, workers
# zset, then per lane: its counters hash and its streams.
# ARGV: group, prefix, then per lane: its name and how many streams it has.
# Returns {sum of live workers' max_concurrency, dead letters, evicted letters, lanes...};
# each lane is {name, counters (flat), queued, running, delayed, paused (1/0), capacity}.
STATS = (
    _NOW
    + """
local group, prefix = ARGV[1], ARGV[2]
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
local total, capacity, cluster = 0, {}, {}
for _, name in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local flat = redis.call('HGETALL', prefix .. ':worker:' .. name)
  for i = 1, #flat, 2 do
    local field, value = flat[i], tonumber(flat[i + 1]) or 0
    if field == 'max_concurrency' then
      total = total + value
    elseif string.sub(field, 1, 5) == 'lane:' then
      local lane = string.sub(field, 6)
      capacity[lane] = (capacity[lane] or 0) + value
    elseif string.sub(field, 1, 8) == 'cluster:' then
      cluster[string.sub(field, 9)] = value
    end
  end
end
local delayed = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local ok, item = pcall(cjson.decode, member)
  if ok and type(item) == 'table' and type(item[1]) == 'string' then
    delayed[item[1]] = (delayed[item[1]] or 0) + 1
  end
end
local lanes = {}
local k, a = 6, 3
while a < #ARGV do
  local lane, count = ARGV[a], tonumber(ARGV[a + 1])
  local counters = redis.call('HGETALL', KEYS[k])
  local queued, running, waiting = 0, 0, 0
  for i = k + 1, k + count do
    local length = redis.call('XLEN', KEYS[i])
    local summary = redis.pcall('XPENDING', KEYS[i], group)
    local held = 0
    if type(summary) == 'table' and summary.err == nil then held = summary[1] end
    local front = redis.call('LLEN', KEYS[i] .. ':front')  -- preempted: pending again
    queued = queued + length - held + front
    running = running + held - front
    waiting = waiting + (delayed[KEYS[i]] or 0)
  end
  local cap = capacity[lane] or 0
  if cluster[lane] and cluster[lane] < cap then cap = cluster[lane] end
  local paused = redis.call('SISMEMBER', KEYS[1], lane)
  lanes[#lanes + 1] = {lane, counters, queued, running, waiting, paused, cap}
  k = k + 1 + count
  a = a + 2
end
local evicted = tonumber(redis.call('HGET', KEYS[4], 'dead_letters_evicted') or '0')
return {total, redis.call('XLEN', KEYS[3]), evicted, lanes}
"""
)

# KEYS: dead-letter stream, removed-letters stream.
# Returns {every letter (oldest first), the removed-letters stream's last id ('0-0': none)}:
# a submitter's mirror starts from this and follows both streams from there.
DEAD_SNAPSHOT = """
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local last = '0-0'
if newest[1] then last = newest[1][1] end
return {redis.call('XRANGE', KEYS[1], '-', '+'), last}
"""

# KEYS: dead-letter stream, removed-letters stream.
# Removes the oldest letter and returns it ({id, flat fields}); {} when there is none.
POP_LETTER = """
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if not first then return {} end
redis.call('XDEL', KEYS[1], first[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'removed', first[1])
return first
"""

# KEYS: dead-letter stream, removed-letters stream. ARGV: letter id.
# Removes one letter (announced like a pop); returns 1, or 0 when no letter has that id.
DISCARD_LETTER = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'removed', ARGV[1])
return 1
"""

# KEYS: dead-letter stream, removed-letters stream.
# Removes every letter (the stream stays, so ids keep growing); returns how many.
CLEAR_LETTERS = """
local count = redis.call('XLEN', KEYS[1])
if count == 0 then return 0 end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1]
redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'cleared', newest)
return count
"""

# KEYS: the schedule's hash, the set of schedule keys.
# ARGV: key, definition JSON, its digest, anchor (seconds), interval ('' for a cron).
# Defines the schedule once for the deployment: the first definition's anchor and every
# later slot handled are shared by every replica. A different definition replaces it (the
# slots handled so far stay handled; a new interval starts after the last one).
# Returns {anchor, last slot handled, paused ('1'/'0')}.
DEFINE_SCHEDULE = """
local digest = redis.call('HGET', KEYS[1], 'digest')
if not digest then
  redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'digest', ARGV[3], 'anchor', ARGV[4],
    'last', ARGV[4], 'every', ARGV[5], 'paused', '0', 'fired', 0, 'skipped', 0)
  redis.call('SADD', KEYS[2], ARGV[1])
elseif digest ~= ARGV[3] then
  if ARGV[5] == '' or redis.call('HGET', KEYS[1], 'every') ~= ARGV[5] then
    redis.call('HSET', KEYS[1], 'anchor', redis.call('HGET', KEYS[1], 'last'))
  end
  redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'digest', ARGV[3], 'every', ARGV[5])
end
return redis.call('HMGET', KEYS[1], 'anchor', 'last', 'paused')
"""

# KEYS: the schedule's hash, the lane stream, the overlap key, the lane's counters hash, the
# events stream and its switch.
# ARGV: definition digest, slot (seconds), key ttl ms, overlap key used ('1'/'0'), command
# id, then the firing's fields (none: only record that every slot up to this one is dealt
# with). Each slot is dealt with once for the deployment, whichever replica comes first.
# Returns {code, detail, paused ('1'/'0')}: 1 fired (detail: the stream entry id); 0
# another replica dealt with this slot already (detail: the last slot handled); 2 recorded;
# 3 skipped, the previous firing still holds the overlap key; 4 skipped, the schedule is
# paused; -1 the schedule is gone (cancelled); -2 it was redefined by another process.
FIRE = (
    _EMIT
    + """
local digest = redis.call('HGET', KEYS[1], 'digest')
if not digest then return {-1, '', '0'} end
if digest ~= ARGV[1] then return {-2, '', '0'} end
local last = redis.call('HGET', KEYS[1], 'last')
local paused = redis.call('HGET', KEYS[1], 'paused')
if tonumber(ARGV[2]) <= tonumber(last) then return {0, last, paused} end
redis.call('HSET', KEYS[1], 'last', ARGV[2])
if #ARGV < 6 then return {2, '', paused} end
if paused == '1' then
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
  return {4, '', paused}
end
if ARGV[4] == '1' then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('HINCRBY', KEYS[1], 'skipped', 1)
    return {3, '', paused}
  end
  redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[3])
end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HINCRBY', KEYS[4], 'submitted', 1)
redis.call('HINCRBY', KEYS[1], 'fired', 1)
submitted(KEYS[5], KEYS[6], ARGV[7])
return {1, redis.call('XADD', KEYS[2], '*', unpack(fields)), paused}
"""
)

# KEYS: the schedule's hash, the set of schedule keys. ARGV: key, 'pause', 'resume' or
# 'cancel'. Returns 0 when the schedule is gone.
SCHEDULE_STATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == 'cancel' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
elseif ARGV[2] == 'pause' then
  redis.call('HSET', KEYS[1], 'paused', '1')
else
  redis.call('HSET', KEYS[1], 'paused', '0')
end
return 1
"""
