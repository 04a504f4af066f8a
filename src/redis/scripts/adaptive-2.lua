--[[
The shared limit of an adaptive gate (RedisAdaptiveStore): the total concurrency of every client
that uses the name, and the clients present, among whom it is divided. Each client learns on its
own (its windows, its latency estimates), moves its share as it would a limit of its own, and
proposes the change; this script takes or refuses each one on Redis's clock, so that the total
moves as N limits of their own would in sum (see redis/adaptive.ts for why):
- an increase or a decrease for a rising latency ('shrink') adds to the total what the proposer
  added to (or took off) its share: N clients that each see room raise the total N times as fast
  as one would, and one of N that alone sees a queue (its noise) moves its part only;
- no increase within `window` ms of the last decrease for a drop (a round trip must pass to see
  what the decrease did);
- a decrease for a drop multiplies the whole total by what the proposer multiplied its share by,
  only from a client that had heard of the last one (its `epoch` is the current one), and not
  within `cooldown` ms of it: N clients that see one burst of 429s cut the total once.
A proposal computed from a share that has moved since is applied to the total as it is.

KEYS[1] state    HASH  limit (a number, unrounded), increased and decreased (Redis ms of the
                       last of each), epoch (decreases taken so far)
KEYS[2] clients  ZSET  client id -> until (Redis ms) it counts as present without another call

ARGV[1]  op        'sync' | 'increase' | 'decrease' | 'shrink' | 'leave'
ARGV[2]  client    the caller's id, [A-Za-z0-9_-]+
ARGV[3]  from      increase, decrease, shrink: the share the proposal was computed from (> 0)
ARGV[4]  to        increase, decrease, shrink: the share proposed (a number > 0)
ARGV[5]  epoch     decrease: the epoch the proposer knew
ARGV[6]  window    increase: the least time since the last decrease for a drop, in ms (>= 0)
ARGV[7]  cooldown  decrease: the least time since the last decrease for a drop, in ms (>= 0)
ARGV[8]  min       the least the total can be, and each client's share: an integer >= 1
ARGV[9]  max       the most the total can be: an integer >= min
ARGV[10] initial   the total while no state is kept: an integer from min to max
ARGV[11] presence  how long the caller counts as present after this call, in ms (> 0)
ARGV[12] keep      how long the state outlives the last call, in ms (>= presence)

Reply: { limit (text, all its digits), share, clients, epoch, taken (1 or 0) }
  share    the caller's part of the total: the total's floor split among the clients present
           (the remainder one each to the first by id), at least min; 0 after 'leave'
  clients  how many are present (the caller included, unless it left)
  taken    1 if the proposal changed the limit
--]]

local state_key, clients_key = KEYS[1], KEYS[2]
local op = ARGV[1]
local client = ARGV[2]
local from = tonumber(ARGV[3])
local to = tonumber(ARGV[4])
local known = tonumber(ARGV[5])
local window = tonumber(ARGV[6])
local cooldown = tonumber(ARGV[7])
local min = tonumber(ARGV[8])
local max = tonumber(ARGV[9])
local initial = tonumber(ARGV[10])
local presence = tonumber(ARGV[11])
local keep = tonumber(ARGV[12])

local function fail(message)
  return redis.error_reply('ERR sluice adaptive: ' .. message)
end

local function is_count(n)
  return n ~= nil and n >= 1 and n % 1 == 0 and n ~= math.huge
end

local function is_finite(n)
  return n ~= nil and n == n and n ~= math.huge and n ~= -math.huge
end

-- Read and validate everything before the first write: Lua does not roll back.
local ops = { sync = true, increase = true, decrease = true, shrink = true, leave = true }
if not ops[op] then return fail('op must be sync, increase, decrease, shrink or leave') end
if client == nil or not string.match(client, '^[A-Za-z0-9_-]+$') then
  return fail('client must be [A-Za-z0-9_-]+')
end
if op == 'increase' or op == 'decrease' or op == 'shrink' then
  if not is_finite(from) or not (from > 0) or not is_finite(to) or not (to > 0) then
    return fail('from and to must be numbers > 0')
  end
end
if op == 'decrease' and not is_finite(known) then return fail('epoch must be a number') end
if not is_finite(window) or window < 0 then return fail('window must be a number >= 0') end
if not is_finite(cooldown) or cooldown < 0 then return fail('cooldown must be a number >= 0') end
if not is_count(min) then return fail('min must be an integer >= 1') end
if not is_count(max) or max < min then return fail('max must be an integer >= min') end
if not is_count(initial) or initial < min or initial > max then
  return fail('initial must be an integer from min to max')
end
if not is_finite(presence) or not (presence > 0) then return fail('presence must be a number > 0') end
if not is_finite(keep) or keep < presence then return fail('keep must be a number >= presence') end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local kept = redis.call('HMGET', state_key, 'limit', 'increased', 'decreased', 'epoch')
local limit = tonumber(kept[1]) or initial
local increased = tonumber(kept[2])
local decreased = tonumber(kept[3])
local epoch = tonumber(kept[4]) or 0
-- Clients that disagree on the bounds: each call keeps the total within the caller's.
if limit < min then limit = min end
if limit > max then limit = max end

local function since(instant)
  if instant == nil then return math.huge end
  return now - instant
end

redis.call('ZREMRANGEBYSCORE', clients_key, '-inf', now)
if op == 'leave' then
  redis.call('ZREM', clients_key, client)
else
  redis.call('ZADD', clients_key, now + math.ceil(presence), client)
end
redis.call('PEXPIRE', clients_key, math.ceil(keep))

local members = redis.call('ZRANGE', clients_key, 0, -1)
local n = #members

local taken = 0
if op == 'increase' then
  local next = math.min(max, limit + (to - from))
  if since(decreased) >= window and next > limit then
    limit, increased, taken = next, now, 1
  end
elseif op == 'decrease' then
  local next = math.max(min, limit * to / from)
  if known == epoch and since(decreased) >= cooldown and next < limit then
    limit, decreased, epoch, taken = next, now, epoch + 1, 1
  end
elseif op == 'shrink' then
  local next = math.max(min, limit + (to - from))
  if to < from and next < limit then limit, taken = next, 1 end
end

-- Doubles written as text keep all their digits (tostring keeps 14).
local function exact(x)
  return string.format('%.17g', x)
end

local fields = { 'limit', exact(limit), 'epoch', epoch }
if increased ~= nil then
  fields[#fields + 1] = 'increased'
  fields[#fields + 1] = increased
end
if decreased ~= nil then
  fields[#fields + 1] = 'decreased'
  fields[#fields + 1] = decreased
end
redis.call('HSET', state_key, unpack(fields))
redis.call('PEXPIRE', state_key, math.ceil(keep))

local share = 0
if op ~= 'leave' then
  table.sort(members)
  local rank = 0
  for i, id in ipairs(members) do
    if id == client then rank = i - 1 end
  end
  local total = math.floor(limit + 1e-9)
  share = math.floor(total / n)
  if rank < total % n then share = share + 1 end
  if share < min then share = min end
end
return { exact(limit), share, n, epoch, taken }
