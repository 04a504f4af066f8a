-- Books the earliest start a shared rate allows, and says how long until it: one call, no
-- polling. Every window is checked at once and the start is committed to all of them at the
-- same instant, the latest any of them (or the shared pause) allows; a refused booking (one
-- further off than `within`) changes nothing.
--
-- 'spaced' windows are GCRA: a theoretical arrival time (tat) per window advances by
-- interval / limit per start (a hair more, so that rounding never puts `limit` spacings under
-- `interval`), and a start of weight w may come when max(tat, now) + (w - burst) * T <= at.
-- 'sliding' windows share one log of the starts (a member per unit of weight, scored by its
-- instant): a start of weight w may come once the (limit - w + 1)-th newest unit has left its
-- window, and never before the newest (so that booked future starts keep the log in order).
--
-- Times are microseconds of Redis's clock (TIME), never the client's.
--
-- KEYS[1] state   hash: 'tat:<limit>/<interval>' per spaced window, 'prev:<limit>/<interval>'
--                 (its tat before the latest booking, '' for none), 'last' (that booking's id)
-- KEYS[2] log     sorted set: the sliding windows' starts, '<id>#<n>' scored by their instant
-- KEYS[3] paused  string: the instant nothing may start before (see rate-pause-1.lua)
-- ARGV[1] id      the booking's id, unique to it
-- ARGV[2] weight  how many starts it counts as: an integer >= 1
-- ARGV[3] within  the longest delay to book, in microseconds; -1: any
-- ARGV[4] kind    'spaced' or 'sliding'
-- ARGV[5] burst   how many may start at once in a spaced window
-- ARGV[6..]       each window's limit and interval (milliseconds), in pairs
-- Reply: { booked (1 or 0), delay (microseconds from now until the start, rounded up) }

local state_key, log_key, paused_key = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
local weight = tonumber(ARGV[2])
local within = tonumber(ARGV[3])
local kind = ARGV[4]
local burst = tonumber(ARGV[5])

local function fail(message)
  return redis.error_reply('ERR sluice rate: ' .. message)
end

local function is_count(n)
  return n ~= nil and n >= 1 and n % 1 == 0
end

-- Read and validate everything before the first write: Lua does not roll back.
if not is_count(weight) then return fail('weight must be an integer >= 1') end
if within == nil then return fail('within must be a number') end
if kind ~= 'spaced' and kind ~= 'sliding' then return fail('kind must be spaced or sliding') end
if not is_count(burst) then return fail('burst must be an integer >= 1') end
if #ARGV < 7 or (#ARGV - 5) % 2 ~= 0 then return fail('windows must come in pairs') end
local windows = {}
local longest, largest = 0, 0
for i = 6, #ARGV - 1, 2 do
  local limit, interval = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if not is_count(limit) or interval == nil or not (interval > 0) then
    return fail('a window must be an integer limit >= 1 and an interval > 0')
  end
  if weight > (kind == 'spaced' and burst or limit) then
    return fail('weight ' .. weight .. ' is more than the rate admits at once')
  end
  local us = interval * 1000
  windows[#windows + 1] = { limit = limit, us = us, name = ARGV[i] .. '/' .. ARGV[i + 1] }
  if us > longest then longest = us end
  if limit > largest then largest = limit end
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local at = now
local paused = tonumber(redis.call('GET', paused_key) or '')
if paused ~= nil and paused > at then at = paused end

if kind == 'spaced' then
  for _, w in ipairs(windows) do
    w.t = w.us / w.limit * (1 + 1e-9)
    w.tat = tonumber(redis.call('HGET', state_key, 'tat:' .. w.name) or '')
    if w.tat ~= nil then
      local allow = math.max(w.tat, now) + (weight - burst) * w.t
      if allow > at then at = allow end
    end
  end
else
  local newest = redis.call('ZRANGE', log_key, -1, -1, 'WITHSCORES')
  if newest[2] ~= nil and tonumber(newest[2]) > at then at = tonumber(newest[2]) end
  for _, w in ipairs(windows) do
    local rank = w.limit - weight + 1
    local entry = redis.call('ZRANGE', log_key, -rank, -rank, 'WITHSCORES')
    if entry[2] ~= nil then
      local allow = tonumber(entry[2]) + w.us
      if allow > at then at = allow end
    end
  end
end

local delay = math.ceil(at - now)
if within >= 0 and delay > within then return { 0, delay } end

-- Doubles written as text keep all their digits (tostring keeps 14).
local function exact(n)
  return string.format('%.17g', n)
end

-- Milliseconds until `instant`, at least 1: how long a key that remembers it must live.
local function ttl(instant)
  return math.max(1, math.ceil((instant - now) / 1000) + 1)
end

if kind == 'spaced' then
  local fields = { 'last', id }
  local until_ = at
  for _, w in ipairs(windows) do
    local tat = math.max(w.tat or at, at) + weight * w.t
    if tat > until_ then until_ = tat end
    fields[#fields + 1] = 'tat:' .. w.name
    fields[#fields + 1] = exact(tat)
    fields[#fields + 1] = 'prev:' .. w.name
    fields[#fields + 1] = w.tat == nil and '' or exact(w.tat)
  end
  redis.call('HSET', state_key, unpack(fields))
  redis.call('PEXPIRE', state_key, ttl(until_))
else
  -- Units that no window counts any more: older than the longest interval, or behind the
  -- newest `largest` (the most any window looks back at) once this booking is given back.
  redis.call('ZREMRANGEBYSCORE', log_key, '-inf', exact(now - longest))
  local score = exact(at)
  local n = 1
  while n <= weight do
    local members = {}
    for k = n, math.min(weight, n + 1999) do
      members[#members + 1] = score
      members[#members + 1] = id .. '#' .. k
    end
    redis.call('ZADD', log_key, unpack(members))
    n = n + 2000
  end
  redis.call('ZREMRANGEBYRANK', log_key, 0, -(largest + weight + 1))
  redis.call('PEXPIRE', log_key, ttl(at + longest))
  redis.call('HSET', state_key, 'last', id)
  redis.call('PEXPIRE', state_key, ttl(at))
end
return { 1, delay }
