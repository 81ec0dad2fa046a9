"""The Lua scripts behind statistics, the worker registry and the dead-letter queue on Redis.

Like :mod:`._scripts`, every step that must be atomic is one script and times come from the
server's clock (``TIME``).
"""

from __future__ import annotations

__all__ = ["CLEAR_LETTERS", "DEAD_SNAPSHOT", "POP_LETTER", "REGISTER", "STATS", "UNREGISTER"]

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
    queued = queued + length - held
    running = running + held
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
