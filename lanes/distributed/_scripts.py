"""The Lua scripts of the Redis backend: each step that must be atomic is one script.

Times come from the server (``TIME``), so workers on machines whose clocks differ agree on
leases, delays and rate-limit buckets. Every key lives under the backend's prefix; scripts
that derive a key from an id (waiters) need a standalone Redis or a prefix with a hash tag.
"""

from __future__ import annotations

from ._scripts_dedup import DEDUP

__all__ = [
    "CANCEL",
    "CANCEL_LANE",
    "EMIT",
    "FETCH",
    "FINISH",
    "HEARTBEAT",
    "MOVE_LETTER",
    "PAUSE",
    "PREEMPT",
    "REQUEUE_FRONT",
    "RETRY",
    "SUBMIT",
]

# Events (only while a subscription keeps the switch key alive): ``emit`` writes the events
# a worker built (one JSON text per line); ``submitted`` and ``cancelled`` build their own.
_EMIT = """
local function emit(stream, on, text)
  if text == '' or redis.call('EXISTS', on) == 0 then return end
  for line in string.gmatch(text, '[^\\n]+') do
    redis.call('XADD', stream, 'MAXLEN', '~', 10000, '*', 'e', line)
  end
end
local function event(stream, on, kind, lane, id, extra)
  if redis.call('EXISTS', on) == 0 then return end
  local clock = redis.call('TIME')
  local e = extra or {}
  e.key, e.lane, e.command_id = kind, lane, id
  e.timestamp = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
  redis.call('XADD', stream, 'MAXLEN', '~', 10000, '*', 'e', cjson.encode(e))
end
local function submitted(stream, on, json)
  if redis.call('EXISTS', on) == 0 then return end
  local ok, env = pcall(cjson.decode, json or '')
  if not ok or type(env) ~= 'table' then return end
  event(stream, on, 'lane.command.submitted', env.lane, env.id, {command_type = env.type})
end
"""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: events stream, its switch. ARGV: events (one JSON per line).
EMIT = _EMIT + "emit(KEYS[1], KEYS[2], ARGV[1])\nreturn 1\n"

# KEYS: stream, delayed zset, idempotency key, notify stream (wakes idle workers on a delay),
# the lane's counters hash (``submitted`` counts each command accepted, not a key's repeat),
# the events stream and its switch, the key's kept record and its hash (see _scripts_dedup).
# ARGV: dedup ('0': no key; '1': a key without ``dedup=``, as 'hold'; 'hold', 'replace' or
# 'keep_last'), command id, prefix, reply stream, key ttl ms, delay ms, the key's ttl once
# its command ended ('' none, ms or 'inf'), the reason a replaced command is cancelled
# with, the consumer group, the command's lane and type, fields...
# Returns {id, entry id, kept record}: the id of the command that will run (the given one,
# or the one already holding the key: this submitter is then registered to receive its
# result too), its lane stream entry's id ('' when it is delayed, waits behind the key's
# running holder (keep_last) or is another command's), and the JSON record of the finished
# command whose key is kept ('' otherwise; the id is then that command's).
SUBMIT = (
    _NOW
    + _EMIT
    + DEDUP
    + """
local mode, id, prefix, life = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local fields = {}
for i = 12, #ARGV do fields[#fields + 1] = ARGV[i] end
local delay = tonumber(ARGV[6])
if mode == '0' then
  redis.call('HINCRBY', KEYS[5], 'submitted', 1)
  submitted(KEYS[6], KEYS[7], ARGV[13])
  if delay > 0 then
    redis.call('ZADD', KEYS[2], now + delay, cjson.encode({KEYS[1], fields}))
    redis.call('XADD', KEYS[4], 'MAXLEN', 1, '*', 'delayed', '1')
    return {id, '', ''}
  end
  return {id, redis.call('XADD', KEYS[1], '*', unpack(fields)), ''}
end
local D, reason, group = dedup(), ARGV[8], ARGV[9]
local k = D.key_of(prefix, KEYS[3])
local due = 0
if delay > 0 then due = now + delay end
local park = false
local holder = redis.call('GET', KEYS[3])
if holder and not D.alive(prefix, KEYS[9], holder) then  -- lost for good: the key is free
  redis.call('DEL', KEYS[3])
  holder = nil
end
if not holder then
  local record = redis.call('GET', KEYS[8])
  if record then return {cjson.decode(record).id, '', record} end
  D.queue_follower(prefix, k, KEYS[9])  -- its holder is lost (or its key expired): queued
else
  local place = nil
  if mode == 'replace' or mode == 'keep_last' then
    place = D.waiting_place(prefix, KEYS[9], holder, group)
  end
  if place then  -- waiting: cancelled and replaced by this one (and so is its follower)
    D.unqueue(prefix, place, group)
    D.unpark(prefix, k, KEYS[9], reason, KEYS[6], KEYS[7])
    redis.call('DEL', KEYS[3], KEYS[9])
    D.settle_cancelled(prefix, holder, place[2][5], place[2][6], reason, KEYS[6], KEYS[7])
  elseif mode == 'keep_last' then
    park = true
  else
    redis.call('SADD', prefix .. ':waiters:' .. holder, ARGV[4])
    return {holder, '', ''}
  end
end
redis.call('HINCRBY', KEYS[5], 'submitted', 1)
submitted(KEYS[6], KEYS[7], ARGV[13])
if park then  -- behind the running holder: kept in its hash (no expiry) until it ends
  D.unpark(prefix, k, KEYS[9], reason, KEYS[6], KEYS[7])
  if redis.call('HGET', KEYS[9], 'id') ~= holder then
    redis.call('DEL', KEYS[9])
    redis.call('HSET', KEYS[9], 'id', holder, 'life', life)
  end
  redis.call('HSET', KEYS[9], 'f_id', id, 'f_lane', ARGV[10], 'f_type', ARGV[11],
    'f_reply', ARGV[4], 'f_ttl', ARGV[7], 'f_item', cjson.encode({KEYS[1], fields}),
    'f_due', due)
  redis.call('PERSIST', KEYS[9])
  redis.call('SADD', prefix .. ':parked', k)
  return {id, '', ''}
end
local entry = D.take(prefix, KEYS[3], KEYS[9], life, {id = id, lane = ARGV[10],
  type = ARGV[11], reply = ARGV[4], ttl = ARGV[7], item = {KEYS[1], fields}, due = due})
return {id, entry, ''}
"""
)

# KEYS: delayed zset, then the streams to fetch from, most urgent lane first, then the set
# of paused lanes (a paused lane's streams are skipped: nothing of it starts or is reclaimed).
# ARGV: group, consumer, budget, reclaim idle ms (0: no reclaim), poll ms, pool (the slots
# of the budget not reserved for lanes below their ``min_concurrency``), then ten values
# per stream: lane, lane's free slots, ordered (1/0), cluster cap of the lane (0: none),
# tokens per ms (0: no rate limit), burst, bucket key, the lane's reserved slots left (a
# lane takes those, then slots of the pool), its priority, its boost points (ms a queued
# command has waited in the stream, space-separated; '' none). A lane's streams are
# consecutive. Streams are served in order of their effective priority (the lane's
# priority, one level more urgent per boost point passed by the age of the stream's
# longest-waiting queued command: the oldest of its preempted ones, else its head; never
# below 0); ties go to the more urgent lane (the given order), then within a lane with a
# boost to the stream whose queued command waited longest, then in the given order.
# Returns {entries, wait hint ms (-1: none), last ids (only when nothing was fetched)};
# each entry is {stream, id, flat fields, deliveries}. A stream's preempted commands (its
# ``:front`` list) come before its reclaimed and new entries. A due delayed member that
# names an idempotency key's hash (its 3rd and 4th items: the hash, the command id; see
# _scripts_dedup) has its new entry id recorded there, so a replacing submit finds it.
FETCH = (
    _NOW
    + """
local group, consumer = ARGV[1], ARGV[2]
local budget, reclaim, poll = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local pool = tonumber(ARGV[6])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 256)
for _, member in ipairs(due) do
  local item = cjson.decode(member)
  local entry = redis.call('XADD', item[1], '*', unpack(item[2]))
  if item[3] and redis.call('HGET', item[3], 'id') == item[4] then  -- a key's holder
    redis.call('HSET', item[3], 'entry', entry, 'member', '')
  end
  redis.call('ZREM', KEYS[1], member)
end
local wait = -1
local function hint(ms)
  if wait < 0 or ms < wait then wait = ms end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[2] then hint(math.max(1, tonumber(head[2]) - now)) end
local paused = KEYS[#KEYS]
local left, running, reserved, rank = {}, {}, {}, {}
local order = {}
for i = 2, #KEYS - 1 do
  local base = 7 + (i - 2) * 10
  local effective = tonumber(ARGV[base + 8])
  local since = nil
  if ARGV[base + 9] ~= '' then
    -- since when its longest-waiting queued command waits (ms): the oldest of its preempted
    -- commands (each delivered before any unread entry, so older), else its first unread
    for _, item in ipairs(redis.call('LRANGE', KEYS[i] .. ':front', 0, -1)) do
      local ms = tonumber(string.match(item, '^(%d+)'))
      if ms and (not since or ms < since) then since = ms end
    end
    if not since then
      local groups = redis.pcall('XINFO', 'GROUPS', KEYS[i])
      if type(groups) == 'table' and groups.err == nil then
        for _, info in ipairs(groups) do
          local f = {}
          for j = 1, #info, 2 do f[info[j]] = info[j + 1] end
          if f['name'] == group then
            local first = redis.call('XRANGE', KEYS[i], '(' .. f['last-delivered-id'], '+',
              'COUNT', 1)[1]
            if first then since = tonumber(string.match(first[1], '^(%d+)')) end
          end
        end
      end
    end
    if since then
      for point in string.gmatch(ARGV[base + 9], '%S+') do
        if now - since >= tonumber(point) then effective = effective - 1 end
      end
      effective = math.max(0, effective)
    end
  end
  local lane = ARGV[base]
  if left[lane] == nil then
    left[lane] = tonumber(ARGV[base + 1])
    reserved[lane] = tonumber(ARGV[base + 7])
    rank[lane] = i  -- its first stream: on a tie, the more urgent lane goes first
  end
  order[#order + 1] = {effective, rank[lane], since or math.huge, i}
  if tonumber(ARGV[base + 3]) > 0 then
    running[lane] = (running[lane] or 0) + redis.call('XPENDING', KEYS[i], group)[1]
  end
end
table.sort(order, function(a, b)
  for j = 1, 3 do
    if a[j] ~= b[j] then return a[j] < b[j] end
  end
  return a[4] < b[4]
end)
local out = {}
for _, pick in ipairs(order) do
  if budget <= 0 then break end
  local i = pick[4]
  local stream = KEYS[i]
  local base = 7 + (i - 2) * 10
  local lane = ARGV[base]
  local n = math.min(budget, left[lane], reserved[lane] + math.max(0, pool))
  if redis.call('SISMEMBER', paused, lane) == 1 then n = 0 end
  local ordered, cap = ARGV[base + 2] == '1', tonumber(ARGV[base + 3])
  local rate, burst, bucket = tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5]), ARGV[base + 6]
  local tokens = 0
  if rate > 0 then
    local state = redis.call('HMGET', bucket, 'tokens', 'ts')
    tokens = burst
    if state[1] then
      tokens = math.min(burst, tonumber(state[1]) + (now - tonumber(state[2])) * rate)
    end
    n = math.min(n, math.floor(tokens))
  end
  local got = 0
  while got < n do  -- preempted commands first: the front of the lane (see REQUEUE_FRONT)
    local item = redis.call('LPOP', stream .. ':front')
    if not item then break end
    local id, owner = string.match(item, '^(%S+) (.+)$')
    local info = id and redis.call('XPENDING', stream, group, id, id, 1)[1]
    if info and info[2] == owner then  -- not reclaimed, acknowledged or cancelled since
      local claimed = redis.call('XCLAIM', stream, group, consumer, 0, id,
        'RETRYCOUNT', info[4])
      if claimed[1] and claimed[1][2] then
        out[#out + 1] = {stream, id, claimed[1][2], info[4]}
        got = got + 1
      end
    end
  end
  if n - got > 0 and reclaim > 0 then
    local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, reclaim, '0-0', 'COUNT',
      n - got)
    for _, entry in ipairs(claimed[2]) do
      local info = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
      local deliveries = 1
      if info[1] then deliveries = info[1][4] end
      out[#out + 1] = {stream, entry[1], entry[2], deliveries}
      got = got + 1
    end
  end
  local fresh = n - got
  if fresh > 0 and (ordered or cap > 0) then
    local pending = redis.call('XPENDING', stream, group)[1]
    if ordered then
      if pending > 0 then fresh = 0 else fresh = math.min(fresh, 1) end
    end
    if cap > 0 then fresh = math.min(fresh, cap - running[lane]) end
    if fresh <= 0 and redis.call('XLEN', stream) > pending then hint(poll) end
  end
  if fresh > 0 then
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', fresh,
      'STREAMS', stream, '>')
    if read then
      for _, entry in ipairs(read[1][2]) do
        out[#out + 1] = {stream, entry[1], entry[2], 1}
        got = got + 1
        if cap > 0 then running[lane] = running[lane] + 1 end
      end
    end
  end
  if rate > 0 then
    tokens = tokens - got
    redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', now)
    if tokens < 1 and redis.call('XLEN', stream) > redis.call('XPENDING', stream, group)[1] then
      hint(math.ceil((1 - tokens) / rate))
    end
  end
  left[lane] = left[lane] - got
  budget = budget - got
  local mine = math.min(got, reserved[lane])
  reserved[lane] = reserved[lane] - mine
  pool = pool - (got - mine)
end
local last = {}
if #out == 0 then
  for i = 2, #KEYS - 1 do
    local info = redis.call('XINFO', 'STREAM', KEYS[i])
    for j = 1, #info, 2 do
      if info[j] == 'last-generated-id' then last[#last + 1] = info[j + 1] end
    end
  end
end
return {out, wait, last}
"""
)

# KEYS: stream. ARGV: group, consumer, ids... Renews the lease of the ids this consumer
# still owns; returns the ids it lost (reclaimed by another worker, or acknowledged).
HEARTBEAT = """
local lost = {}
for i = 3, #ARGV do
  local info = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if info[1] and info[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""

# KEYS: stream, reply stream, dead-letter stream, idempotency key, the lane's counters hash,
# the deployment's counters hash, the removed-letters stream, the events stream and switch.
# ARGV: group, message id, prefix, command id, has_key, dead-letter maxlen, the lane counters
# to add 1 to (space-separated), events (one JSON per line, '' none), number of reply
# fields (0: no reply), reply fields..., dead-letter fields... (none: not dead-lettered).
# Returns 0 when the message was no longer pending (another worker settled it first): then
# nothing is counted. A letter evicted by the dead-letter limit is counted and announced on
# the removed-letters stream (submitters mirror the dead-letter stream). The key is freed,
# then taken by a ``keep_last`` follower (queued now), or kept with the reply for its ttl.
FINISH = (
    _EMIT
    + DEDUP
    + """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
for name in string.gmatch(ARGV[7], '%S+') do redis.call('HINCRBY', KEYS[5], name, 1) end
emit(KEYS[8], KEYS[9], ARGV[8])
local nreply = tonumber(ARGV[9])
local reply, dead = {}, {}
for i = 10, 9 + nreply do reply[#reply + 1] = ARGV[i] end
for i = 10 + nreply, #ARGV do dead[#dead + 1] = ARGV[i] end
if #dead > 0 then
  local limit = tonumber(ARGV[6])
  local over = redis.call('XLEN', KEYS[3]) - limit + 1
  if over > 0 then
    for _, entry in ipairs(redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', over)) do
      redis.call('XADD', KEYS[7], 'MAXLEN', '~', 10000, '*', 'evicted', entry[1])
    end
    redis.call('HINCRBY', KEYS[6], 'dead_letters_evicted', over)
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', limit, '*', unpack(dead))
end
if #reply > 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('XADD', KEYS[2], '*', unpack(reply)) end
  local waiters = ARGV[3] .. ':waiters:' .. ARGV[4]
  for _, stream in ipairs(redis.call('SMEMBERS', waiters)) do
    if redis.call('EXISTS', stream) == 1 then redis.call('XADD', stream, '*', unpack(reply)) end
  end
  redis.call('DEL', waiters)
end
if ARGV[5] == '1' then dedup().ended(ARGV[3], KEYS[4], ARGV[4], reply[2]) end
return 1
"""
)

# KEYS: stream, delayed zset, the lane's counters hash, the events stream and switch, the
# hash of the command's idempotency key (see _scripts_dedup; any name when it has none).
# ARGV: group, message id, delay ms, lane counters to add 1 to (space-separated; '' for a
# command handed back), events (one JSON per line, '' none), the command id when it has a
# key ('' none), fields of the next attempt.
# Acknowledges this attempt and queues the next one (at once, or after the delay). The
# key's hash, when this command holds the key, learns where it is now (its holder stays
# alive for the scripts; a delayed member names the hash, for FETCH to update it).
RETRY = (
    _NOW
    + _EMIT
    + """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
for name in string.gmatch(ARGV[4], '%S+') do redis.call('HINCRBY', KEYS[3], name, 1) end
emit(KEYS[4], KEYS[5], ARGV[5])
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local delay = tonumber(ARGV[3])
local meta, id = KEYS[6], ARGV[6]
local holds = id ~= '' and redis.call('HGET', meta, 'id') == id
if delay > 0 then
  local member = cjson.encode({KEYS[1], fields})
  if holds then member = cjson.encode({KEYS[1], fields, meta, id}) end
  redis.call('ZADD', KEYS[2], now + delay, member)
  if holds then redis.call('HSET', meta, 'entry', '', 'member', member, 'moved', '1') end
else
  local entry = redis.call('XADD', KEYS[1], '*', unpack(fields))
  if holds then
    redis.call('HSET', meta, 'stream', KEYS[1], 'entry', entry, 'member', '', 'moved', '1')
  end
end
return 1
"""
)

# KEYS: dead-letter stream, lane stream, the lane's counters hash, removed-letters stream,
# the events stream and switch. ARGV: letter id, fields of the new command.
# Moves a dead letter back to its lane (a new submission); returns 0 when the letter is gone.
MOVE_LETTER = (
    _EMIT
    + """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 'removed', ARGV[1])
redis.call('HINCRBY', KEYS[3], 'submitted', 1)
submitted(KEYS[5], KEYS[6], ARGV[3])
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
return 1
"""
)

# KEYS: lane stream, cancelled zset, control stream, idempotency key, the lane's counters,
# the events stream and switch. ARGV: group, entry id ('' unknown: a key's hash may know
# it), command id, marker ttl ms, has_key, lane, prefix.
# A command still queued in its stream (not handed to any worker, or preempted and waiting
# in the stream's front list), or waiting behind its key's running holder (keep_last), is
# deleted: returns 1, it never starts again (its key is freed or kept as at its end; the
# submitters waiting on it are told). Otherwise (running, delayed, or finished) the id is
# marked cancelled until the ttl passes and announced on the control stream, which every
# worker reads: returns 2.
CANCEL = (
    _NOW
    + _EMIT
    + DEDUP
    + """
local prefix, entry = ARGV[7], ARGV[2]
if ARGV[5] == '1' then
  local k = dedup().key_of(prefix, KEYS[4])
  local meta = dedup().dedup_names(prefix, k)
  local h = redis.call('HMGET', meta, 'f_id', 'id', 'stream', 'entry', 'moved')
  if h[1] == ARGV[3] then  -- waiting behind its key's running holder: dropped
    dedup().unpark(prefix, k, meta, '', KEYS[6], KEYS[7], true)
    return 1
  end
  if entry == '' and h[2] == ARGV[3] and h[3] == KEYS[1] and h[4] and h[5] ~= '1' then
    entry = h[4]  -- its entry id, learnt since its submit (a follower that took its key)
  end
end
if entry ~= '' then
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], entry, entry, 1)
  local handed = type(pending) == 'table' and pending.err == nil and pending[1] ~= nil
  if handed then  -- preempted and waiting at the front of its lane: queued, in effect
    local item = entry .. ' ' .. pending[1][2]
    if redis.call('LREM', KEYS[1] .. ':front', 1, item) == 1 then
      redis.call('XACK', KEYS[1], ARGV[1], entry)
      handed = false
    end
  end
  if not handed and redis.call('XDEL', KEYS[1], entry) == 1 then
    if ARGV[5] == '1' then  -- its key is freed or kept; the submitters waiting on it told
      local json = dedup().settle_cancelled(prefix, ARGV[3], ARGV[6], '', '', KEYS[6], KEYS[7])
      dedup().ended(prefix, KEYS[4], ARGV[3], json)
      return 1
    end
    redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
    event(KEYS[6], KEYS[7], 'lane.command.cancelled', ARGV[6], ARGV[3])
    return 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'cancel', ARGV[3])
return 2
"""
)

# KEYS: the paused set, then the streams of the lanes more urgent than a preemptible
# command this (full) worker runs, most urgent first.
# ARGV: group, prefix, grace ms, claim ttl ms, then the lane of each stream.
# Looks for a command no worker took although it waited at least the grace (every idle
# worker would have taken it by then) and claims it for this worker (a key per entry, for
# the ttl: one waiting command makes one worker preempt, not all). Returns {stream, id} of
# the claimed entry, or {} when nothing waits that long or every such entry is claimed.
PREEMPT = (
    _NOW
    + """
local group, prefix = ARGV[1], ARGV[2]
local grace, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 2, #KEYS do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i + 3]) == 0 then
    local last = nil
    local groups = redis.pcall('XINFO', 'GROUPS', KEYS[i])
    if type(groups) == 'table' and groups.err == nil then
      for _, info in ipairs(groups) do
        local fields = {}
        for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
        if fields['name'] == group then last = fields['last-delivered-id'] end
      end
    end
    if last then
      for _, entry in ipairs(redis.call('XRANGE', KEYS[i], '(' .. last, '+', 'COUNT', 16)) do
        local ms = tonumber(string.match(entry[1], '^(%d+)'))
        if now - ms < grace then break end
        local claim = prefix .. ':preempt:' .. KEYS[i] .. ':' .. entry[1]
        if redis.call('SET', claim, '1', 'NX', 'PX', ttl) then return {KEYS[i], entry[1]} end
      end
    end
  end
end
return {}
"""
)

# KEYS: stream, its front list, notify stream, the lane's counters hash, the events stream
# and its switch. ARGV: group, message id, consumer, events (one JSON per line).
# Puts a preempted command back at the front of its lane: the entry stays pending (its
# attempt is not counted again), its id goes to the front list that FETCH reads before the
# stream, and an idle worker is woken. Returns 0 when this consumer no longer holds it.
REQUEUE_FRONT = (
    _EMIT
    + """
local info = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)[1]
if not info or info[2] ~= ARGV[3] then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2] .. ' ' .. ARGV[3])
redis.call('HINCRBY', KEYS[4], 'preempted', 1)
emit(KEYS[5], KEYS[6], ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', 1, '*', 'preempted', '1')
return 1
"""
)

# KEYS: paused set, control stream, notify stream. ARGV: lane, '1' (pause) or '0' (resume).
# Pauses or resumes a lane for every worker: fetches skip a paused lane at once (the set),
# workers stop reading it when the control stream tells them; a resume wakes idle workers.
PAUSE = """
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'pause', ARGV[1])
else
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'resume', ARGV[1])
  redis.call('XADD', KEYS[3], 'MAXLEN', 1, '*', 'resumed', '1')
end
return 1
"""

# KEYS: delayed zset, control stream, the lane's counters hash, the events stream and its
# switch, then the lane's streams.
# ARGV: group, lane, queued ('1'/'0'), running ('1'/'0'), prefix, the caller's reply stream.
# Queued: deletes the lane's entries no worker holds, its preempted ones (front lists), its
# delayed (and retrying) commands and those waiting behind their key's running holder
# (keep_last), replying 'cancelled' to their submitters and freeing their keys (or keeping
# them, as at their end). Running: tells every worker (control stream) to cancel the lane's
# running commands, and adds the caller's reply stream to each one's waiters (it then
# learns when each has stopped).
# Returns {queued commands deleted, running commands told to stop, their command ids}.
CANCEL_LANE = (
    _EMIT
    + DEDUP
    + """
local group, lane, prefix = ARGV[1], ARGV[2], ARGV[5]
local dropped, running, ids = 0, 0, {}
local function drop(fields)
  local ok, env = pcall(cjson.decode, fields[2] or '')
  dropped = dropped + 1
  redis.call('HINCRBY', KEYS[3], 'cancelled', 1)
  if not ok or type(env) ~= 'table' or type(env.id) ~= 'string' then return end
  event(KEYS[4], KEYS[5], 'lane.command.cancelled', lane, env.id)
  local reply = cjson.encode({id = env.id, outcome = 'cancelled', value = 'null',
    error = '', attempts = 0})
  local targets = redis.call('SMEMBERS', prefix .. ':waiters:' .. env.id)
  if type(env.reply) == 'string' then targets[#targets + 1] = env.reply end
  for _, stream in ipairs(targets) do
    if redis.call('EXISTS', stream) == 1 then redis.call('XADD', stream, '*', 'c', reply) end
  end
  redis.call('DEL', prefix .. ':waiters:' .. env.id)
  if type(env.key) == 'string' then  -- freed, or kept as at its end
    dedup().ended(prefix, prefix .. ':key:' .. env.key, env.id, reply)
  end
end
local function pending(stream, what)
  local answer = redis.pcall('XPENDING', stream, group, unpack(what))
  if type(answer) == 'table' and answer.err == nil then return answer end
  return nil
end
if ARGV[3] == '1' then
  for _, k in ipairs(redis.call('SMEMBERS', prefix .. ':parked')) do
    local meta = dedup().dedup_names(prefix, k)
    local parked = redis.call('HGET', meta, 'f_lane')
    if parked == lane then
      dropped = dropped + 1
      dedup().unpark(prefix, k, meta, '', KEYS[4], KEYS[5])
    elseif not parked then  -- its hash expired
      redis.call('SREM', prefix .. ':parked', k)
    end
  end
  local mine = {}
  for i = 6, #KEYS do
    mine[KEYS[i]] = true
    for _, item in ipairs(redis.call('LRANGE', KEYS[i] .. ':front', 0, -1)) do
      local id = string.match(item, '^(%S+)')
      local entry = redis.call('XRANGE', KEYS[i], id, id)[1]
      if redis.call('XACK', KEYS[i], group, id) == 1 and entry then
        redis.call('XDEL', KEYS[i], id)
        drop(entry[2])
      end
    end
    redis.call('DEL', KEYS[i] .. ':front')
    local held = {}
    for _, row in ipairs(pending(KEYS[i], {'-', '+', 1000000}) or {}) do held[row[1]] = true end
    for _, entry in ipairs(redis.call('XRANGE', KEYS[i], '-', '+')) do
      if not held[entry[1]] then
        redis.call('XDEL', KEYS[i], entry[1])
        drop(entry[2])
      end
    end
  end
  for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local item = cjson.decode(member)
    if mine[item[1]] then
      redis.call('ZREM', KEYS[1], member)
      drop(item[2])
    end
  end
end
if ARGV[4] == '1' then
  for i = 6, #KEYS do
    local waiting = {}  -- preempted: pending, but no worker runs them (queued, in effect)
    for _, item in ipairs(redis.call('LRANGE', KEYS[i] .. ':front', 0, -1)) do
      waiting[string.match(item, '^(%S+)')] = true
    end
    for _, row in ipairs(pending(KEYS[i], {'-', '+', 1000000}) or {}) do
      if not waiting[row[1]] then
        running = running + 1
        local entry = redis.call('XRANGE', KEYS[i], row[1], row[1])[1]
        local ok, env = pcall(cjson.decode, entry and entry[2][2] or '')
        if ok and type(env) == 'table' and type(env.id) == 'string' then
          redis.call('SADD', prefix .. ':waiters:' .. env.id, ARGV[6])
          ids[#ids + 1] = env.id
        end
      end
    end
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'cancel_lane', lane)
end
return {dropped, running, ids}
"""
)
