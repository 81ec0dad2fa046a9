"""The Lua of idempotency keys' deduplication modes (``submit(key=..., dedup=...)``).

What Redis holds for a key ``K`` (under the backend's prefix ``P``):

- ``P:key:K``: the id of the command holding the key while it is queued, delayed or
  running (the string every script compares, as before ``dedup=`` existed); it has no
  expiry: the script that settles the holder frees it, and a holder lost for good (its
  entry gone from Redis without being settled) frees it at the next submit with the key
  (``alive``), so a worker that dies mid-run leaves the key to the command it reclaims;
- ``P:dedup:K``: a hash about that holder: ``id``, ``lane``, ``type``, ``reply`` (its
  submitter's reply stream), ``ttl`` (how long the key is kept once it finished: ``''``
  not, milliseconds, or ``'inf'``), ``life`` (the backend's ``key_ttl`` in ms: how long
  the hash outlives a key that is gone), where it is (``stream`` and ``entry``, or the
  delayed zset ``member``; ``moved``: ``'1'`` once a worker queued it again, for a retry
  or handed back: a ``replace`` then counts it as running), and a ``keep_last`` follower
  waiting behind it (``f_id``, ``f_lane``, ``f_type``, ``f_reply``, ``f_ttl``, ``f_item``:
  its stream and fields as JSON, ``f_due``: when it is due, ms, 0 at once); it lives as
  long as the key (a key an older version wrote expires: its hash expires with it, but
  not while a follower waits in it);
- ``P:kept:K``: once a holder with a ttl finished, its record (JSON: ``id``, ``lane``,
  ``type``, ``reply``: the reply JSON its worker sent), expiring after the ttl;
- ``P:parked``: the set of keys that have a follower (``cancel_lane`` looks there).

``DEDUP`` is the Lua the other scripts share: ``dedup()`` returns its functions (made at
the first call; to cancel, they need ``event`` defined before it). The scripts of
``release_key`` and ``extend_key`` are here too.
"""

from __future__ import annotations

__all__ = ["DEDUP", "EXTEND_KEY", "RELEASE_KEY"]

DEDUP = """
local dedup_loaded = nil
-- dedup(): the functions below, made at the first call (a command without a key, the most
-- common, pays nothing for them).
local function dedup()
  if dedup_loaded then return dedup_loaded end
  local function clock()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local function dedup_names(prefix, k)
    return prefix .. ':dedup:' .. k, prefix .. ':kept:' .. k
  end
  local function key_of(prefix, live) return string.sub(live, #prefix + 6) end
  local function cancelled_reply(id, reason)
    return cjson.encode({id = id, outcome = 'cancelled', value = 'null', error = reason,
      attempts = 0})
  end
  -- Send a reply to a command's own reply stream and to every submitter waiting on it.
  local function reply_to(prefix, id, own, json)
    local waiters = prefix .. ':waiters:' .. id
    local targets = redis.call('SMEMBERS', waiters)
    if own and own ~= '' then targets[#targets + 1] = own end
    for _, stream in ipairs(targets) do
      if redis.call('EXISTS', stream) == 1 then redis.call('XADD', stream, '*', 'c', json) end
    end
    redis.call('DEL', waiters)
  end
  -- Count, announce and reply the cancellation of a command that never reached a worker.
  local function settle_cancelled(prefix, id, lane, own, reason, stream, on)
    redis.call('HINCRBY', prefix .. ':stats:' .. lane, 'cancelled', 1)
    event(stream, on, 'lane.command.cancelled', lane, id)
    local json = cancelled_reply(id, reason)
    reply_to(prefix, id, own, json)
    return json
  end
  -- Queue a command ({stream, fields}) now or at ``due``; returns its delayed member (the
  -- FETCH that moves it names the key's hash, to record its entry id) or its entry id.
  local function enqueue(prefix, meta, id, item, due)
    if due > 0 and due > clock() then
      local member = cjson.encode({item[1], item[2]})
      if meta then member = cjson.encode({item[1], item[2], meta, id}) end
      redis.call('ZADD', prefix .. ':delayed', due, member)
      redis.call('XADD', prefix .. ':notify', 'MAXLEN', 1, '*', 'delayed', '1')
      return member, ''
    end
    return '', redis.call('XADD', item[1], '*', unpack(item[2]))
  end
  -- ``c`` takes the key ``live`` (its hash: ``meta``) and is queued; returns its entry id.
  -- Neither expires: the key is held until its holder is settled (or found lost).
  local function take(prefix, live, meta, life, c)
    redis.call('SET', live, c.id)
    redis.call('DEL', meta)
    local member, entry = enqueue(prefix, meta, c.id, c.item, c.due)
    redis.call('HSET', meta, 'id', c.id, 'lane', c.lane, 'type', c.type, 'reply', c.reply,
      'ttl', c.ttl, 'life', life, 'stream', c.item[1], 'entry', entry, 'member', member)
    return entry
  end
  -- Whether the key's holder is still in Redis: its delayed member, or its stream entry
  -- (queued, preempted, or pending while a worker runs it, also a dead one's until it is
  -- reclaimed). Its place unknown (a hash an older version wrote), it counts as alive.
  local function alive(prefix, meta, holder)
    local m = redis.call('HMGET', meta, 'id', 'stream', 'entry', 'member')
    if m[1] ~= holder then return true end
    if m[4] and m[4] ~= '' then
      return redis.call('ZSCORE', prefix .. ':delayed', m[4]) ~= false
    end
    if m[3] and m[3] ~= '' then return #redis.call('XRANGE', m[2], m[3], m[3]) > 0 end
    return true
  end
  -- Where the key's holder waits ({kind, hash fields, front item}), or nil when a worker
  -- has it (running, or started and queued again: a retry, a hand-back) or its place is
  -- unknown.
  local function waiting_place(prefix, meta, holder, group)
    local m = redis.call('HMGET', meta, 'id', 'stream', 'entry', 'member', 'lane', 'reply',
      'moved')
    if m[1] ~= holder or m[7] == '1' then return nil end
    if m[4] and m[4] ~= '' and redis.call('ZSCORE', prefix .. ':delayed', m[4]) then
      return {'delayed', m}
    end
    if not m[3] or m[3] == '' then return nil end
    local stream, entry = m[2], m[3]
    local pending = redis.pcall('XPENDING', stream, group, entry, entry, 1)
    if type(pending) == 'table' and pending.err == nil and pending[1] ~= nil then
      local item = entry .. ' ' .. pending[1][2]  -- preempted, back at the front: waiting
      if redis.call('LPOS', stream .. ':front', item) then return {'front', m, item} end
      return nil
    end
    if #redis.call('XRANGE', stream, entry, entry) > 0 then return {'queued', m} end
    return nil
  end
  -- Take a waiting holder out of its lane (see ``waiting_place``).
  local function unqueue(prefix, place, group)
    local m = place[2]
    if place[1] == 'delayed' then
      redis.call('ZREM', prefix .. ':delayed', m[4])
    elseif place[1] == 'front' then
      redis.call('LREM', m[2] .. ':front', 1, place[3])
      redis.call('XACK', m[2], group, m[3])
      redis.call('XDEL', m[2], m[3])
    else
      redis.call('XDEL', m[2], m[3])
    end
  end
  -- The hash ``meta`` of key ``k``, kept while a follower waited in it, expires with its key
  -- again (or after its ``life`` when the key is gone).
  local function unkept(prefix, k, meta)
    local pttl = redis.call('PTTL', prefix .. ':key:' .. k)
    if pttl == -2 then pttl = tonumber(redis.call('HGET', meta, 'life')) or 1 end
    if pttl > 0 then redis.call('PEXPIRE', meta, pttl) end
  end
  -- Queue the follower waiting in the hash ``meta`` of key ``k`` at once, without the key
  -- (its key was released, or its holder lost); returns whether there was one.
  local function queue_follower(prefix, k, meta)
    local f = redis.call('HMGET', meta, 'f_id', 'f_item', 'f_due')
    if not f[1] then return false end
    redis.call('HDEL', meta, 'f_id', 'f_lane', 'f_type', 'f_reply', 'f_ttl', 'f_item', 'f_due')
    redis.call('SREM', prefix .. ':parked', k)
    enqueue(prefix, nil, f[1], cjson.decode(f[2]), tonumber(f[3]))
    return true
  end
  -- Drop the follower waiting behind the holder of key ``k`` (cancelled: ``reason``; its
  -- own submitter is not told when ``quiet``: it resolves the handle itself).
  local function unpark(prefix, k, meta, reason, stream, on, quiet)
    local f = redis.call('HMGET', meta, 'f_id', 'f_lane', 'f_reply')
    if not f[1] then return nil end
    redis.call('HDEL', meta, 'f_id', 'f_lane', 'f_type', 'f_reply', 'f_ttl', 'f_item', 'f_due')
    redis.call('SREM', prefix .. ':parked', k)
    unkept(prefix, k, meta)
    local own = f[3]
    if quiet then own = '' end
    settle_cancelled(prefix, f[1], f[2], own, reason, stream, on)
    return f[1]
  end
  -- The holder ``id`` of ``live`` ended (``json``: its reply, nil if none): the key is
  -- freed, then taken by its follower, or kept (the reply stored) for the holder's ttl. A
  -- key that expired while its holder ran (one an older version wrote) is known by its
  -- hash; a key another command holds is left alone.
  local function ended(prefix, live, id, json)
    local current = redis.call('GET', live)
    if current and current ~= id then return end
    if current then redis.call('DEL', live) end
    local k = key_of(prefix, live)
    local meta, kept = dedup_names(prefix, k)
    local m = redis.call('HMGET', meta, 'id', 'lane', 'type', 'ttl', 'f_id', 'f_lane', 'f_type',
      'f_reply', 'f_ttl', 'f_item', 'f_due', 'life')
    if m[1] ~= id then return end
    if m[5] then
      redis.call('SREM', prefix .. ':parked', k)
      take(prefix, live, meta, m[12], {id = m[5], lane = m[6], type = m[7], reply = m[8],
        ttl = m[9], item = cjson.decode(m[10]), due = tonumber(m[11])})
      return
    end
    redis.call('DEL', meta)
    if m[4] and m[4] ~= '' and json then
      local record = cjson.encode({id = id, lane = m[2], type = m[3], reply = json})
      if m[4] == 'inf' then
        redis.call('SET', kept, record)
      else
        redis.call('SET', kept, record, 'PX', m[4])
      end
    end
  end
  dedup_loaded = {dedup_names = dedup_names, key_of = key_of, cancelled_reply = cancelled_reply,
    reply_to = reply_to, settle_cancelled = settle_cancelled, enqueue = enqueue, take = take,
    alive = alive, waiting_place = waiting_place, unqueue = unqueue,
    queue_follower = queue_follower, unpark = unpark, ended = ended}
  return dedup_loaded
end
"""


# KEYS: the key (``P:key:K``), its kept record, its hash, the set of parked keys.
# ARGV: prefix, the key K.
# Frees the key: its kept record goes, a live holder keeps running without it (its end
# keeps nothing), a follower waiting behind it is queued at once (without the key).
# Returns 1 when anything held the key, else 0.
RELEASE_KEY = (
    DEDUP
    + """
local held = 0
if redis.call('DEL', KEYS[2]) == 1 then held = 1 end
if redis.call('DEL', KEYS[1]) == 1 then held = 1 end
redis.call('SREM', KEYS[4], ARGV[2])
if dedup().queue_follower(ARGV[1], ARGV[2], KEYS[3]) then held = 1 end
redis.call('DEL', KEYS[3])
return held
"""
)

# KEYS: the key (``P:key:K``), its kept record, its hash. ARGV: ttl (ms, or 'inf'), the
# backend's key ttl (ms).
# A live holder's key will be kept the ttl after it ends; a kept key is kept the ttl from
# now. A live key without its hash gets one that expires with the key (never, when the key
# does not expire; a follower that takes the key then holds it the key ttl).
# Returns 1 when anything held the key, else 0.
EXTEND_KEY = """
local holder = redis.call('GET', KEYS[1])
if holder then
  if redis.call('HGET', KEYS[3], 'id') ~= holder then
    local pttl = redis.call('PTTL', KEYS[1])
    redis.call('DEL', KEYS[3])
    if pttl > 0 then
      redis.call('HSET', KEYS[3], 'id', holder, 'life', pttl)
      redis.call('PEXPIRE', KEYS[3], pttl)
    else
      redis.call('HSET', KEYS[3], 'id', holder, 'life', ARGV[2])
    end
  end
  redis.call('HSET', KEYS[3], 'ttl', ARGV[1])
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if ARGV[1] == 'inf' then
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return 1
"""
