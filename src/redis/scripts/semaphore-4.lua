--[[
Every operation of a RedisSemaphore, as one script: each call first does the same housekeeping
(expired leases go back, the line is served, the keys live as long as their longest entry), so
that a crashed holder's permits come back at the next call of anyone, whatever it is.

KEYS[1] expiry  ZSET  lease id -> its expiry, and process id -> its expiry (Redis ms): each
                      granted lease's own; a process's requests in line live while it does;
                      and "~" -> until, which keeps the set (and its TTL) between uses
KEYS[2] queue   ZSET  -priority -> "<ticket, 16 digits>:<lease id>": the line, head first (equal
                      scores are ordered by member, so the ticket keeps FIFO within a priority)
KEYS[3] ids     HASH  lease id -> "<weight> q <queue member>" while in line,
                                  "<weight> h <fence>" once granted;
                      "+<process id>" -> " <lease id> <lease id> ...": leases granted to that
                      process from the line and not acknowledged by it yet (it acknowledges a
                      lease by renewing or releasing it);
                      and the counters: held (the weight of the leases), queued (the requests
                      in line), fence, ticket, permits, until (every key lives at least until
                      then, Redis ms), and next (no entry of `expiry` expires before then)
KEYS[4] wake    the prefix of the sharded channels (SPUBLISH) on which grants to other processes
                are announced, one per process: "<wake>:<process id>" (in KEYS[4]'s slot, by the
                hash tag), as " <lease id> <fence> <lease id> <fence> ...": a release wakes the
                processes it granted to, not every process with a request in line

A process id is [A-Za-z0-9_-]+; a lease id is "<process id>:<n>".

ARGV[1] op       'acquire' | 'try' | 'release' | 'renew'
ARGV[2] client   the calling process's id
ARGV[3] lease    the caller's lease, in ms
ARGV[4] permits  the semaphore's size
ARGV[5] waiting  '1' if the caller has requests in line: its entry is renewed, and `lapsed` told
ARGV[6..]        acquire, try: triples of lease id, weight, priority
                 release: lease ids, held or in line
                 renew: lease ids the caller holds

Reply: { lapsed, result, sweep, id, fence, ms, id, fence, ms, ... }
  lapsed   1 if the caller's process entry had expired (its requests in line may be gone)
  result   acquire, try: one character per request: '1' granted, '0' in line, '-' refused (try);
           release: how many of the ids were found; renew: one character per id, '1' renewed,
           '0' gone
  sweep    ms until the earliest entry of `expiry` may expire (`next`, never later than it): a
           caller with requests in line checks again then, so that a crashed holder's permits
           reach the line when its lease ends, not at the caller's next timed check
  then the leases granted to the caller that it has not acknowledged, with their fences and
  the ms left before they expire: those granted by this call, and those granted from the line
  before it. A grant from the line is reported by every call of its process until that process
  acknowledges it, so a reply lost on the way (and the call sent again) loses no grant; an
  acquire sent again reports its own grant again.

Invariants: `held` is the total weight of the leases in `expiry`, changed only with the weight of
a lease added or removed; `queued` is the size of `queue`, changed with every member added or
removed; `next` is at most the earliest expiry in `expiry` (lowered by every entry added, made
exact by every sweep); a lease id is in `ids` exactly while it is in line or granted; a lease
granted to another process expires with that process's entry until it renews the lease; every
entry expires before `until`, and every key expires at it, all at once (none outlives another it
is read with; a new count finds no line or lease left); every argument is read and validated
before the first write (Lua does not roll back).

Cost: one HMGET reads what the call needs of the hash, and one HSET writes it back; `expiry` is
swept only once `next` has passed. With nobody in line and nothing to sweep, an acquire or a
release takes a short path of four or five commands that makes no closures (each costs about as
much as a command); every other call, and any that the short path cannot finish alone, takes the
general one.
--]]

local expiry, queue, ids, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
local client = ARGV[2]
local lease = tonumber(ARGV[3])
local permits = tonumber(ARGV[4])
local waiting = ARGV[5] == '1'

-- Read and validate.
local function bad(what)
  return redis.error_reply('ERR sluice semaphore: ' .. what)
end
if op ~= 'acquire' and op ~= 'try' and op ~= 'release' and op ~= 'renew' then
  return bad('unknown operation ' .. tostring(op))
end
if not client or not string.match(client, '^[%w_-]+$') then
  return bad('bad client id')
end
if not lease or lease < 1 or lease % 1 ~= 0 or not permits or permits < 1 or permits % 1 ~= 0 then
  return bad('bad lease or permits')
end
local prefix = client .. ':'
local requests = {}
-- The lease ids whose records this call reads (its requests, or the ids it releases).
local asked = {}
if op == 'acquire' or op == 'try' then
  if (#ARGV - 5) % 3 ~= 0 then
    return bad('requests come in triples')
  end
  for i = 6, #ARGV, 3 do
    local id, weight, priority = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if string.sub(id, 1, #prefix) ~= prefix or not weight or weight < 1 or weight % 1 ~= 0
      or weight > permits or not priority or priority ~= priority then
      return bad('bad request ' .. tostring(id))
    end
    requests[#requests + 1] = { id, weight, priority }
    asked[#asked + 1] = id
  end
elseif op == 'release' then
  local seen = {}
  for i = 6, #ARGV do
    local id = ARGV[i]
    -- Only lease ids: counters and lists share the hash.
    if not seen[id] and string.find(id, ':', 1, true) then
      seen[id] = true
      asked[#asked + 1] = id
    end
  end
end

local mine = '+' .. client
local fields = { 'permits', 'held', 'until', mine, 'fence', 'ticket', 'queued', 'next' }
local first = math.min(#asked, 3990)
for i = 1, first do
  fields[#fields + 1] = asked[i]
end
local values = redis.call('HMGET', ids, unpack(fields))
if values[1] and tonumber(values[1]) ~= permits then
  return bad('this name has ' .. values[1] .. ' permits, and this process asked for ' .. ARGV[4]
    .. ': every process must give the same permits (or use another name)')
end
-- The records read or written by this call: lease id -> record, or false once deleted.
local records = {}
for i = 1, first do
  records[asked[i]] = values[8 + i]
end
for i = first + 1, #asked, 4000 do
  local part = redis.call('HMGET', ids, unpack(asked, i, math.min(i + 3999, #asked)))
  for j = 1, #part do
    records[asked[i + j - 1]] = part[j]
  end
end

if not values[1] then
  -- A new count (first use, the keys expired or lost): what is left of a line or of leases is
  -- stale (every entry expired before the count), and would disagree with it.
  redis.call('DEL', queue, expiry)
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local held = tonumber(values[2] or '0')
local horizon = tonumber(values[3] or '0')
-- Every key of the name expires at `until` and at no other time, so that none outlives another
-- it is read with (a line outliving its count would be served by a wrong count for good). It
-- moves on by two leases at a time, when less than a lease (and a second) is left.
local horizon_due = horizon < now + lease + 1000 and now + 2 * lease + 1000 or horizon
local queued = tonumber(values[7] or '0')
local next_expiry = tonumber(values[8] or '0')
local fence = tonumber(values[5] or '0')
-- A grant's fence is the last one plus one, or Redis's time in microseconds if that is more:
-- above every fence handed out before (which rose by fewer than one per microsecond) even when
-- the count is new (first use, keys expired, Redis's data lost) or older than fences already
-- handed out (Redis restarted from a snapshot, a replica that lagged took over), as long as
-- Redis's clock does not go back. (Below 2^53, so exact as a Lua number and in JavaScript.)
local seed = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- The short path: nothing to sweep, nobody in line, no grant waiting to be acknowledged, the keys'
-- horizon far enough, and one request that fits or one held lease given back.
if now < next_expiry and queued == 0 and #asked == 1 and not waiting and not values[4]
  and values[1] and horizon >= now + lease + 1000 then
  local id = asked[1]
  local info = records[id]
  if (op == 'acquire' or op == 'try') and not info and held + requests[1][2] <= permits then
    local weight = requests[1][2]
    fence = math.max(fence + 1, seed)
    local text = string.format('%.0f', fence)
    redis.call('ZADD', expiry, now + lease, id)
    redis.call('HSET', ids, id, weight .. ' h ' .. text, 'held', held + weight, 'fence', text,
      'next', math.min(next_expiry, now + lease))
    return { 0, '1', math.min(next_expiry, now + lease) - now, id, text, lease }
  end
  local weight = op == 'release' and info and string.match(info, '^(%d+) h ')
  if weight then
    redis.call('ZREM', expiry, id)
    redis.call('HDEL', ids, id)
    redis.call('HSET', ids, 'held', held - tonumber(weight))
    return { 0, 1, next_expiry - now }
  end
end

-- Reads `member` of `key` with `command` once per call, through `cache` (false: not there).
local function cached(cache, command, key, member)
  local value = cache[member]
  if value == nil then
    value = redis.call(command, key, member) or false
    cache[member] = value
  end
  return value
end

-- Writes to the hash, made once at the end: field -> value, or false to delete.
local writes = {}
local function record_of(id)
  return cached(records, 'HGET', ids, id)
end
local function set_record(id, info)
  records[id] = info
  writes[id] = info
end

-- One call per 4000 arguments: unpack() is limited by the Lua stack.
local function chunked(command, key, list)
  for i = 1, #list, 4000 do
    redis.call(command, key, unpack(list, i, math.min(i + 3999, #list)))
  end
end

-- weight, kind ('q' or 'h'), and the queue member or the fence
local function parse(info)
  local weight, kind, rest = string.match(info, '^(%d+) (%a) (.+)$')
  return tonumber(weight), kind, rest
end

local function owner_of(id)
  return string.match(id, '^(.-):')
end

-- The unacknowledged grants of each process touched, as sets, written back at the end.
local unacked = {}
local function unacked_of(owner)
  local set = unacked[owner]
  if not set then
    set = { changed = false, ids = {} }
    local list = owner == client and values[4] or redis.call('HGET', ids, '+' .. owner)
    for id in string.gmatch(list or '', '%S+') do
      set.ids[id] = true
    end
    unacked[owner] = set
  end
  return set
end
local function acknowledge(id)
  local set = unacked_of(owner_of(id))
  if set.ids[id] then
    set.ids[id] = nil
    set.changed = true
  end
end


-- What has expired goes: a crashed or paused holder's leases (their weight comes back), and the
-- entries of processes gone quiet. A bounded number per call; then `next` is exact again.
local expired = {}
if now >= next_expiry then
  expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 1000)
end
if #expired > 0 then
  for _, id in ipairs(expired) do
    if string.find(id, ':', 1, true) then
      local info = record_of(id)
      if info then
        held = held - parse(info)
      end
      acknowledge(id)
      set_record(id, false)
    end
  end
  chunked('ZREM', expiry, expired)
end
if now >= next_expiry then
  next_expiry = tonumber(redis.call('ZRANGE', expiry, 0, 0, 'WITHSCORES')[2] or now + lease)
end
-- Every entry added lowers `next` to its expiry, if sooner.
local function expires(at)
  if at < next_expiry then
    next_expiry = at
  end
end

-- A caller with requests in line is alive: they live until its next call or renewal is due.
local lapsed = 0
local function keep_alive()
  if lapsed == 0 and not redis.call('ZSCORE', expiry, client) then
    lapsed = 1
  end
  redis.call('ZADD', expiry, now + lease, client)
  expires(now + lease)
end
if waiting then
  keep_alive()
end

local function next_fence()
  fence = math.max(fence + 1, seed)
  local text = string.format('%.0f', fence)
  writes['fence'] = text
  return text
end
local ticket = tonumber(values[6] or '0')

local alive = {}
local function expiry_of(owner)
  return cached(alive, 'ZSCORE', expiry, owner)
end

local reply = { 0, '', 0 }
-- Process id -> the lease ids and fences granted to it from the line by this call, in turn;
-- `wakes` lists those processes in the order of their first grant.
local woken, wakes = {}, {}
-- Grants `id` the permits it asked for. One granted from the line stays unacknowledged (and
-- reported) until its process renews or releases it; one granted to its caller's own request is
-- reported in this reply, and again if the request is sent again.
local function grant(id, weight, member)
  if member then
    redis.call('ZREM', queue, member)
    queued = queued - 1
  end
  held = held + weight
  local fence = next_fence()
  set_record(id, weight .. ' h ' .. fence)
  local owner = owner_of(id)
  if owner == client then
    redis.call('ZADD', expiry, now + lease, id)
    expires(now + lease)
  else
    -- Until its process renews it, the lease lives as long as that process's requests do.
    redis.call('ZADD', expiry, expiry_of(owner), id)
    if not woken[owner] then
      woken[owner] = {}
      wakes[#wakes + 1] = owner
    end
    local words = woken[owner]
    words[#words + 1] = id
    words[#words + 1] = fence
  end
  if member then
    local set = unacked_of(owner)
    set.ids[id] = true
    set.changed = true
  else
    reply[#reply + 1] = id
    reply[#reply + 1] = fence
    reply[#reply + 1] = lease
  end
end

-- Grants from the head of the line while the head's whole weight fits; a request whose process
-- is gone leaves the line when it reaches the head (a bounded number per call).
local function serve()
  local dropped = 0
  while queued > 0 do
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if not head then
      queued = 0
      return
    end
    local id = string.sub(head, 18)
    local info = record_of(id)
    local weight = info and parse(info)
    if not weight or not expiry_of(owner_of(id)) then
      redis.call('ZREM', queue, head)
      queued = queued - 1
      set_record(id, false)
      dropped = dropped + 1
      if dropped >= 2000 then
        return
      end
    elseif held + weight > permits then
      return
    else
      grant(id, weight, head)
    end
  end
end

-- What came back is served before anything new is asked (no barging); a renewal also goes on
-- with the line after a call that stopped dropping the requests of processes gone.
if #expired > 0 or op == 'renew' then
  serve()
end

local result
if op == 'acquire' or op == 'try' then
  local out = {}
  for _, request in ipairs(requests) do
    local id, weight, priority = request[1], request[2], request[3]
    local info = record_of(id)
    if info then
      -- Asked before (a retry after a lost reply): answered as then, nothing counted twice.
      local _, kind, fence = parse(info)
      if kind == 'h' then
        local until_ = redis.call('ZSCORE', expiry, id)
        if until_ and not unacked_of(client).ids[id] then
          -- Granted to this request directly: reported again (once from the line, below).
          reply[#reply + 1] = id
          reply[#reply + 1] = fence
          reply[#reply + 1] = tonumber(until_) - now
        end
        out[#out + 1] = '1'
      else
        out[#out + 1] = '0'
      end
    else
      local head = queued > 0 and redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES') or {}
      if (head[1] == nil or -priority < tonumber(head[2])) and held + weight <= permits then
        grant(id, weight, nil)
        out[#out + 1] = '1'
      elseif op == 'try' then
        out[#out + 1] = '-'
      else
        if not waiting then
          keep_alive()
          waiting = true
        end
        ticket = ticket + 1
        writes['ticket'] = ticket
        local member = string.format('%016d', ticket) .. ':' .. id
        redis.call('ZADD', queue, -priority, member)
        if queued == 0 then
          -- A new line: the key has no TTL yet; it gets the other keys'.
          redis.call('PEXPIREAT', queue, horizon_due)
        end
        queued = queued + 1
        set_record(id, weight .. ' q ' .. member)
        out[#out + 1] = '0'
      end
    end
  end
  result = table.concat(out)
elseif op == 'release' then
  local found, held_ids, members = 0, {}, {}
  for _, id in ipairs(asked) do
    local info = record_of(id)
    if info then
      local weight, kind, rest = parse(info)
      found = found + 1
      if kind == 'h' then
        held = held - weight
        held_ids[#held_ids + 1] = id
        acknowledge(id)
      else
        members[#members + 1] = rest
      end
      set_record(id, false)
    end
  end
  chunked('ZREM', expiry, held_ids)
  chunked('ZREM', queue, members)
  queued = queued - #members
  serve()
  result = found
else
  local out = {}
  for i = 6, #ARGV do
    local id = ARGV[i]
    if string.find(id, ':', 1, true) and redis.call('ZSCORE', expiry, id) then
      redis.call('ZADD', expiry, 'XX', 'GT', now + lease, id)
      acknowledge(id)
      out[#out + 1] = '1'
    else
      out[#out + 1] = '0'
    end
  end
  result = table.concat(out)
end
reply[1] = lapsed
reply[2] = result
reply[3] = next_expiry - now

-- The caller's grants from the line that it has not acknowledged: made by this call, or
-- announced on the channel (which may have lost the message), or reported before in a reply
-- that may have been lost.
for id in pairs(unacked_of(client).ids) do
  local info = record_of(id)
  local until_ = redis.call('ZSCORE', expiry, id)
  if info and until_ then
    local _, _, fence = parse(info)
    reply[#reply + 1] = id
    reply[#reply + 1] = fence
    reply[#reply + 1] = tonumber(until_) - now
  end
end

for owner, set in pairs(unacked) do
  if set.changed then
    local list = {}
    for id in pairs(set.ids) do
      list[#list + 1] = id
    end
    writes['+' .. owner] = #list > 0 and ' ' .. table.concat(list, ' ') or false
  end
end
if held ~= tonumber(values[2] or '0') or not values[1] then
  writes['held'] = held
  writes['permits'] = permits
end
if queued ~= tonumber(values[7] or '0') then
  writes['queued'] = queued
end
if next_expiry ~= tonumber(values[8] or '0') then
  writes['next'] = next_expiry
end

-- Every entry expires before `until`, and every key lives past it: an abandoned name leaves
-- nothing behind, and no caller's TTL shortens a longer lease's. The entry "~" keeps `expiry`
-- (and its TTL) from vanishing while it is empty; `queue` gets the TTL when a call makes it.
local refresh = horizon_due ~= horizon
if refresh then
  horizon = horizon_due
  writes['until'] = horizon
  redis.call('ZADD', expiry, horizon, '~')
end

local sets, deletes = {}, {}
for field, value in pairs(writes) do
  if value then
    sets[#sets + 1] = field
    sets[#sets + 1] = value
  else
    deletes[#deletes + 1] = field
  end
end
chunked('HDEL', ids, deletes)
chunked('HSET', ids, sets)

if refresh then
  redis.call('PEXPIREAT', expiry, horizon)
  redis.call('PEXPIREAT', queue, horizon)
  redis.call('PEXPIREAT', ids, horizon)
end

for _, owner in ipairs(wakes) do
  redis.call('SPUBLISH', wake .. ':' .. owner, ' ' .. table.concat(woken[owner], ' '))
end

return reply
