"""The Lua scripts of a shared limit on Redis (``open_shared_limit``).

KEYS of every script, under ``<prefix>:limit:<name>:``: ``leases`` (sorted set: holder token
-> lease expiry ms), ``owners`` (hash: token -> session), ``held`` (hash: session -> slots
held), ``queue`` (sorted set: waiting token -> arrival number), ``waiting`` (hash: token ->
session), ``alive`` (sorted set: waiting token -> expiry ms), ``seq`` (arrival counter),
``grants`` (stream: one entry per slot handed to a waiter), ``stats`` (hash).
ARGV of every script starts with max_concurrency and the lease in ms.

Slots go to waiters by the in-process rule between sessions: the waiter whose session holds
the fewest slots first, ties in arrival order (FIFO). A lease or a wait that is not renewed
expires; expired ones are dropped by the next script call, so a killed holder's slots come
back within one lease.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "LIMIT_STATS", "RELEASE", "RENEW"]

_COMMON = """
local LEASES, OWNERS, HELD, QUEUE, WAITING, ALIVE, SEQ, GRANTS, STATS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local max, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function drop_lease(token)
  if redis.call('ZREM', LEASES, token) == 1 then
    local session = redis.call('HGET', OWNERS, token)
    redis.call('HDEL', OWNERS, token)
    if session and redis.call('HINCRBY', HELD, session, -1) <= 0 then
      redis.call('HDEL', HELD, session)
    end
  end
end
local function drop_waiter(token)
  redis.call('ZREM', QUEUE, token)
  redis.call('HDEL', WAITING, token)
  redis.call('ZREM', ALIVE, token)
end
local function reap()
  for _, token in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', now)) do
    drop_lease(token)
  end
  for _, token in ipairs(redis.call('ZRANGEBYSCORE', ALIVE, '-inf', now)) do
    drop_waiter(token)
  end
end
local function dispatch()
  while redis.call('ZCARD', LEASES) < max do
    local best, fewest
    for _, token in ipairs(redis.call('ZRANGE', QUEUE, 0, -1)) do
      local session = redis.call('HGET', WAITING, token) or ''
      local held = tonumber(redis.call('HGET', HELD, session) or '0')
      if best == nil or held < fewest then best, fewest = token, held end
    end
    if best == nil then return end
    local session = redis.call('HGET', WAITING, best) or ''
    drop_waiter(best)
    redis.call('ZADD', LEASES, now + lease, best)
    redis.call('HSET', OWNERS, best, session)
    redis.call('HINCRBY', HELD, session, 1)
    redis.call('HINCRBY', STATS, 'granted', 1)
    redis.call('XADD', GRANTS, 'MAXLEN', '~', 1000, '*', 'granted', best)
  end
end
local function hint()
  local first = redis.call('ZRANGE', LEASES, 0, 0, 'WITHSCORES')
  if first[2] then return math.max(1, tonumber(first[2]) - now) end
  return lease
end
"""

# ARGV: max, lease ms, token, session, wait ttl ms.
# Takes a free slot directly when nobody waits; else queues the token (once), renews its
# wait and hands out free slots (counted as granted). Returns {1, 0} when the token holds a
# slot, else {0, ms until the first lease expires (look again then)}.
ACQUIRE = (
    _COMMON
    + """
local token, session = ARGV[3], ARGV[4]
reap()
if redis.call('ZCARD', QUEUE) == 0 and redis.call('ZCARD', LEASES) < max
    and not redis.call('ZSCORE', LEASES, token) then  -- nobody waits: take it directly
  redis.call('ZADD', LEASES, now + lease, token)
  redis.call('HSET', OWNERS, token, session)
  redis.call('HINCRBY', HELD, session, 1)
  return {1, 0}
end
if not redis.call('ZSCORE', LEASES, token) then
  if not redis.call('ZSCORE', QUEUE, token) then
    redis.call('ZADD', QUEUE, redis.call('INCR', SEQ), token)
    redis.call('HSET', WAITING, token, session)
  end
  redis.call('ZADD', ALIVE, now + tonumber(ARGV[5]), token)
  dispatch()
end
if redis.call('ZSCORE', LEASES, token) then return {1, 0} end
return {0, hint()}
"""
)

# ARGV: max, lease ms, token. Gives the token's slot back, or stops its wait; hands out
# the free slots. Returns 1.
RELEASE = (
    _COMMON
    + """
drop_lease(ARGV[3])
drop_waiter(ARGV[3])
reap()
dispatch()
return 1
"""
)

# ARGV: max, lease ms, wait ttl ms, tokens... Renews the leases and waits of the tokens;
# returns those that hold nothing and wait for nothing any more (expired meanwhile).
RENEW = (
    _COMMON
    + """
local lost = {}
for i = 4, #ARGV do
  if redis.call('ZSCORE', LEASES, ARGV[i]) then
    redis.call('ZADD', LEASES, 'XX', now + lease, ARGV[i])
  elseif redis.call('ZSCORE', QUEUE, ARGV[i]) then
    redis.call('ZADD', ALIVE, 'XX', now + tonumber(ARGV[3]), ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
reap()
dispatch()
return lost
"""
)

# ARGV: max, lease ms. Returns {slots held, waiters, sessions holding, granted so far}.
LIMIT_STATS = (
    _COMMON
    + """
reap()
dispatch()
local granted = tonumber(redis.call('HGET', STATS, 'granted') or '0')
return {redis.call('ZCARD', LEASES), redis.call('ZCARD', QUEUE), redis.call('HLEN', HELD),
  granted}
"""
)
