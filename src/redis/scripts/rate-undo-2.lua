-- Gives back a booking of rate-reserve-3.lua whose start will not happen, if nothing was
-- booked after it: the windows become what they were before it. A booking that cannot be
-- given back stays counted, so the limit is never exceeded.
--
-- KEYS[1] state   hash, as rate-reserve-3.lua keeps it
-- KEYS[2] log     sorted set, as rate-reserve-3.lua keeps it
-- ARGV[1] id      the booking's id
-- ARGV[2] weight  its weight
-- ARGV[3] kind    'spaced' or 'sliding'
-- ARGV[4..]       each window's limit and interval, in pairs, as the booking had them
-- Reply: 1 if it was given back, 0 if not

local state_key, log_key = KEYS[1], KEYS[2]
local id = ARGV[1]
local weight = tonumber(ARGV[2])
local kind = ARGV[3]

if weight == nil or weight < 1 or weight % 1 ~= 0 then
  return redis.error_reply('ERR sluice rate: weight must be an integer >= 1')
end
if kind ~= 'spaced' and kind ~= 'sliding' then
  return redis.error_reply('ERR sluice rate: kind must be spaced or sliding')
end
if redis.call('HGET', state_key, 'last') ~= id then return 0 end

if kind == 'spaced' then
  local restore, forget = {}, { 'last' }
  for i = 4, #ARGV - 1, 2 do
    local name = ARGV[i] .. '/' .. ARGV[i + 1]
    local prev = redis.call('HGET', state_key, 'prev:' .. name)
    if prev == false or prev == '' then
      forget[#forget + 1] = 'tat:' .. name
    else
      restore[#restore + 1] = 'tat:' .. name
      restore[#restore + 1] = prev
    end
    forget[#forget + 1] = 'prev:' .. name
  end
  if #restore > 0 then redis.call('HSET', state_key, unpack(restore)) end
  redis.call('HDEL', state_key, unpack(forget))
else
  local n = 1
  while n <= weight do
    local members = {}
    for k = n, math.min(weight, n + 3999) do members[#members + 1] = id .. '#' .. k end
    redis.call('ZREM', log_key, unpack(members))
    n = n + 4000
  end
  redis.call('HDEL', state_key, 'last')
end
return 1
