"""Lua scripts of the Redis bus. Each touches the keys of ONE destination only
(one hash tag, one cluster slot); effects on other destinations go through the
outbox. Times come from the server's clock (``TIME``), never the client's.

Entry fields: ``m`` message id, ``f`` frame, ``a`` deliveries before this entry
(retries), ``r`` error history (``\\x1e``-separated), ``h.<name>`` headers.
Dedup markers and the processed ledger are sorted sets scored by time, trimmed
by age in the same scripts, so memory stays bounded.
"""

from __future__ import annotations

_NOW = """
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)
"""

_OWNED = """
local function owned(stream, group, entry, consumer)
  local p = redis.call('XPENDING', stream, group, entry, entry, 1)
  return #p > 0 and p[1][2] == consumer
end
"""

# KEYS: stream, sent-zset. ARGV: dedup_ttl_ms, expire_ms, packed items (a msgpack
# array of {msg_id, frame, [field, value, ...]}, header fields being rare),
# housekeeping ('1' to trim the dedup set by age and to the most ids it keeps, and
# refresh the expiry of an inbox; the client asks at most once a second per
# destination), and the most ids the dedup set keeps (the oldest go past it). One packed
# argument keeps the client's argument encoding off the hot path; one ZMSCORE
# and one ZADD per batch, and the time read off the first new entry's id,
# keep the server's. Returns how many entries were added.
SEND = """
local items = cmsgpack.unpack(ARGV[3])
local ids = {}
for i, item in ipairs(items) do ids[i] = item[1] end
local known = redis.call('ZMSCORE', KEYS[2], unpack(ids))
local marks, fresh, now = {}, {}, nil
for i, item in ipairs(items) do
  local id = item[1]
  if not known[i] and not fresh[id] then
    fresh[id] = true
    local entry
    if #item == 2 then
      entry = redis.call('XADD', KEYS[1], '*', 'm', id, 'f', item[2])
    else
      entry = redis.call('XADD', KEYS[1], '*', 'm', id, 'f', item[2], unpack(item, 3))
    end
    -- an entry id starts with the server's clock in milliseconds
    now = now or tonumber(string.match(entry, '^%d+'))
    marks[#marks + 1] = now
    marks[#marks + 1] = id
  end
end
if #marks > 0 then redis.call('ZADD', KEYS[2], unpack(marks)) end
if ARGV[4] == '1' then
  local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
  if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1) end
"""
SEND += (
    _NOW
    + """
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[1]))
  local expire = tonumber(ARGV[2])
  if expire > 0 then
    redis.call('PEXPIRE', KEYS[1], expire)
    redis.call('PEXPIRE', KEYS[2], expire)
  end
end
return #marks / 2
"""
)

# KEYS: stream. ARGV: group, consumer, min_idle_ms, count, only_consumer ('' = any),
# start id ('-', or '(' id for entries after it).
# Returns {entry_id, fields, times_delivered} for each entry claimed.
RECLAIM = """
local p
if ARGV[5] ~= '' then
  p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[6], '+', ARGV[4], ARGV[5])
else
  p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[6], '+', ARGV[4])
end
if #p == 0 then return {} end
local ids, counts = {}, {}
for i, e in ipairs(p) do
  ids[i] = e[1]
  counts[e[1]] = e[4]
end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(ids))
local out = {}
for _, entry in ipairs(claimed) do
  if entry and entry[2] then
    out[#out + 1] = {entry[1], entry[2], counts[entry[1]] + 1}
  end
end
-- entries trimmed or deleted from the stream but still pending: drop them
for _, id in ipairs(ids) do
  if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
end
return out
"""

# KEYS: stream, done-zset, outbox. ARGV: group, consumer, ledger_ttl_ms, packed
# items (a msgpack array of {entry_id, msg_id, {dest, msg_id, frame, [field, value,
# ...]} per effect}), the XPENDING count bound, housekeeping ('1' to trim the
# ledger by age and to the most ids it keeps, at most once a second per
# destination), the packed ids of outbox entries an earlier commit forwarded (''
# if none), deleted here so that clean-up costs no command of its own, and the most
# ids the ledger keeps. Ownership comes from one XPENDING over the batch's id
# range (the consumer's own entries only), the ledger from one ZMSCORE and one
# ZADD: per item, the script calls the server only for the effects it writes.
# Returns {statuses, outbox ids}: one letter per item (d done, u duplicate,
# l lost) and the outbox ids of the done items' effects, in order; a flat
# reply converts and parses far faster than a table per item.
COMMIT = (
    _NOW
    + """
local group, consumer = ARGV[1], ARGV[2]
if ARGV[6] == '1' then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3])) end
if ARGV[7] ~= '' then redis.call('XDEL', KEYS[3], unpack(cmsgpack.unpack(ARGV[7]))) end
local items = cmsgpack.unpack(ARGV[4])
local msgs, lo, hi, lo_ms, lo_seq, hi_ms, hi_seq = {}
for k, item in ipairs(items) do
  msgs[k] = item[2]
  local ms, seq = string.match(item[1], '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  if not lo or ms < lo_ms or (ms == lo_ms and seq < lo_seq) then
    lo, lo_ms, lo_seq = item[1], ms, seq
  end
  if not hi or ms > hi_ms or (ms == hi_ms and seq > hi_seq) then
    hi, hi_ms, hi_seq = item[1], ms, seq
  end
end
local owned = {}
for _, p in ipairs(redis.call('XPENDING', KEYS[1], group, lo, hi, ARGV[5], consumer)) do
  owned[p[1]] = true
end
local known = redis.call('ZMSCORE', KEYS[2], unpack(msgs))
local statuses, outbox, acks, marks, fresh = {}, {}, {}, {}, {}
for k, item in ipairs(items) do
  local entry, msg = item[1], item[2]
  local seen = known[k] or fresh[msg]
  local status
  if not owned[entry] then
    -- already processed (e.g. this very commit, retried after a lost reply): say so
    if seen then status = 'u' else status = 'l' end
  elseif seen then
    status = 'u'
  else
    status = 'd'
    fresh[msg] = true
    marks[#marks + 1] = now
    marks[#marks + 1] = msg
    for e = 3, #item do
      local fx = item[e]
      outbox[#outbox + 1] = redis.call('XADD', KEYS[3], '*', 'd', fx[1], 'm', fx[2], 'f', fx[3], unpack(fx, 4))
    end
  end
  if status ~= 'l' then
    acks[#acks + 1] = entry
    owned[entry] = nil
  end
  statuses[k] = status
end
if #marks > 0 then redis.call('ZADD', KEYS[2], unpack(marks)) end
if ARGV[6] == '1' then
  local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[8])
  if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1) end
end
if #acks > 0 then
  redis.call('XACK', KEYS[1], group, unpack(acks))
  redis.call('XDEL', KEYS[1], unpack(acks))
end
return {table.concat(statuses), outbox}
"""
)

# KEYS: record list. ARGV: index, item, ttl_ms. Appends the item when the list holds
# exactly ``index`` items; 1 when it is (now or already) there, 0 on a gap.
APPEND = """
local n = redis.call('LLEN', KEYS[1])
local index = tonumber(ARGV[1])
if n == index then
  redis.call('RPUSH', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if n > index then return 1 end
return 0
"""

# KEYS: join hash. ARGV: expect, then, ttl_ms, part, value, ... Opens a rendezvous
# (each field set only if absent: opening twice changes nothing).
OPEN_JOIN = """
redis.call('HSETNX', KEYS[1], '.expect', ARGV[1])
redis.call('HSETNX', KEYS[1], '.then', ARGV[2])
for i = 4, #ARGV, 2 do redis.call('HSETNX', KEYS[1], 'p.' .. ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: join hash. ARGV: part, value, ttl_ms. The part's first value wins; returns
# the rendezvous's payload once every part is in, else false. A part that comes
# when no rendezvous is open (a late copy, after it went) is kept ttl_ms at most.
ARRIVE = """
redis.call('HSETNX', KEYS[1], 'p.' .. ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
local expect = redis.call('HGET', KEYS[1], '.expect')
if not expect then return false end
if redis.call('HLEN', KEYS[1]) - 2 >= tonumber(expect) then
  return redis.call('HGET', KEYS[1], '.then')
end
return false
"""

# KEYS: done-zset. ARGV: packed message ids. Returns one letter per id: '1' when the
# ledger holds it (committed within its window), '0' when not. One packed argument:
# a processor asks this for every batch it reads.
PROCESSED = """
local ids = cmsgpack.unpack(ARGV[1])
local known = redis.call('ZMSCORE', KEYS[1], unpack(ids))
local out = {}
for i = 1, #ids do out[i] = known[i] and '1' or '0' end
return table.concat(out)
"""

# KEYS: stream, delayed-zset. ARGV: group, consumer, entry_id, delay_ms, packed fields.
RETRY = (
    _NOW
    + _OWNED
    + """
if not owned(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS: stream, delayed-zset. Moves due retries back onto the stream.
PROMOTE = (
    _NOW
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 200)
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', unpack(cmsgpack.unpack(member)))
  redis.call('ZREM', KEYS[2], member)
end
return #due
"""
)

# KEYS: stream, dead-stream. ARGV: group, consumer ('' = skip the ownership check),
# entry_id, the most dead letters kept, then the dead-letter fields. Returns
# {the dead letter's id, how many old ones were trimmed}, or false.
DEAD = (
    _OWNED
    + """
if ARGV[2] ~= '' and not owned(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return false end
local dead = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
local trimmed = redis.call('XTRIM', KEYS[2], 'MAXLEN', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return {dead, trimmed}
"""
)

# KEYS: records hash, index sorted set (one hash tag). ARGV: ttl_ms, max records,
# packed items (a msgpack array of {message id, final '1' or '0', record}), housekeeping
# ('1' to drop records older than the ttl). A record is stored as its final flag,
# the server's time in milliseconds (13 digits) and the record; one that is not
# final never replaces one that is. Past ``max records`` the oldest go, up to 1000
# a call. Returns how many records were written.
RESULT = (
    _NOW
    + """
local items = cmsgpack.unpack(ARGV[3])
local stamp = string.format('%013d', now)
local written = 0
for _, item in ipairs(items) do
  local id, final = item[1], item[2]
  local old = final ~= '1' and redis.call('HGET', KEYS[1], id)
  if not (old and string.sub(old, 1, 1) == '1') then
    redis.call('HSET', KEYS[1], id, final .. stamp .. item[3])
    redis.call('ZADD', KEYS[2], now, id)
    written = written + 1
  end
end
local function drop(ids)
  if #ids > 0 then
    redis.call('HDEL', KEYS[1], unpack(ids))
    redis.call('ZREM', KEYS[2], unpack(ids))
  end
end
if ARGV[4] == '1' then
  drop(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, 1000))
end
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
if excess > 0 then drop(redis.call('ZRANGE', KEYS[2], 0, math.min(excess, 1000) - 1)) end
return written
"""
)

# KEYS: stream. ARGV: group, consumer ('' = every consumer), min idle ms. Deletes the
# consumers that hold no pending entry and were idle at least that long (a worker
# that stopped, or one restarted under a new name), so the group lists only live
# ones. A consumer holding entries stays: deleting it would drop them. Returns how
# many went.
PRUNE = """
local gone = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if (ARGV[2] == '' or f['name'] == ARGV[2]) and tonumber(f['pending']) == 0
     and tonumber(f['idle']) >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    gone = gone + 1
  end
end
return gone
"""

# KEYS: counters hash, its once-set (one hash tag). ARGV: ttl seconds (0: none), the
# once key ('' = always add), then field, amount pairs. Adds the amounts unless the
# once key was seen before; the set expires with the counters. Returns 1 if added.
COUNT = """
local ttl = tonumber(ARGV[1])
if ARGV[2] ~= '' then
  if redis.call('SADD', KEYS[2], ARGV[2]) == 0 then return 0 end
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
for i = 3, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""

# KEYS: marked set (a sorted set scored by each member's expiry, ms). ARGV: ttl ms,
# members... Drops the members already expired, then marks these until now + ttl;
# the set itself expires with its latest mark.
MARK = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
)

# KEYS: marked set. ARGV: members... Returns those marked and not expired.
MARKED = (
    _NOW
    + """
local expiries = redis.call('ZMSCORE', KEYS[1], unpack(ARGV))
local out = {}
for i, score in ipairs(expiries) do
  if score and tonumber(score) > now then out[#out + 1] = ARGV[i] end
end
return out
"""
)

# KEYS: stream. ARGV: group, consumer, entry ids... Resets the idle clock of entries
# this consumer still owns; 1/0 per entry.
RENEW = (
    _OWNED
    + """
local out = {}
for i = 3, #ARGV do
  if owned(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""
)

# KEYS: stream, dead-stream. ARGV: entry ids of dead letters ('' = all, up to 1000).
# Puts them back with a fresh delivery count; returns how many. A dead letter that
# kept only the start of its frame (it has a 'sha256' field) stays: it cannot run.
REPLAY = """
local entries
if ARGV[1] == '' then
  entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1000)
else
  entries = {}
  local seen = {}
  for _, id in ipairs(ARGV) do
    if not seen[id] then
      seen[id] = true
      local e = redis.call('XRANGE', KEYS[2], id, id)
      if #e > 0 then entries[#entries + 1] = e[1] end
    end
  end
end
local moved = 0
for _, e in ipairs(entries) do
  local fields, keep, cut = e[2], {}, false
  for j = 1, #fields, 2 do
    local k = fields[j]
    if k == 'm' or k == 'f' or string.sub(k, 1, 2) == 'h.' then
      keep[#keep + 1] = k
      keep[#keep + 1] = fields[j + 1]
    elseif k == 'sha256' then
      cut = true
    end
  end
  if not cut then
    redis.call('XADD', KEYS[1], '*', unpack(keep))
    redis.call('XDEL', KEYS[2], e[1])
    moved = moved + 1
  end
end
return moved
"""

# KEYS: presence hash. ARGV: member, ttl_ms, info. Value = "<expires_ms>|<info>".
ANNOUNCE = (
    _NOW
    + """
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[2])) .. '|' .. ARGV[3])
return 1
"""
)

# KEYS: presence hash. Returns {member, info, ...} of live members; drops expired ones.
MEMBERS = (
    _NOW
    + """
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local value = all[i + 1]
  local cut = string.find(value, '|', 1, true)
  if cut and tonumber(string.sub(value, 1, cut - 1)) > now then
    out[#out + 1] = all[i]
    out[#out + 1] = string.sub(value, cut + 1)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
"""
)

# KEYS: lease key, token counter (same hash tag). ARGV: holder, ttl_ms.
# Acquire when free, renew when held by ``holder``; returns the fencing token
# (it grows with every new holder), or false when someone else holds it.
LEASE = """
local current = redis.call('GET', KEYS[1])
if not current then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
  return token
end
local cut = string.find(current, '|', 1, true)
if string.sub(current, 1, cut - 1) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(current, cut + 1))
end
return false
"""

# KEYS: lease key. ARGV: holder. Gives the lease up if ``holder`` has it.
UNLEASE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.find(current, '|', 1, true) - 1) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
