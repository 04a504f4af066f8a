-- Pauses a shared rate: nothing is booked to start before the pause ends (rate-reserve-3.lua
-- reads it). A pause never shortens one already running: the longest wins.
--
-- KEYS[1] paused  string: the instant (microseconds of Redis's clock) the pause ends; it
--                 expires then
-- ARGV[1] ms      how long to pause, in milliseconds (a number >= 0)
-- Reply: how long the pause still runs, in milliseconds (rounded up)

local paused_key = KEYS[1]
local ms = tonumber(ARGV[1])
if ms == nil or not (ms >= 0) or ms == math.huge then
  return redis.error_reply('ERR sluice rate: ms must be a finite number >= 0')
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local ends = now + ms * 1000
local current = tonumber(redis.call('GET', paused_key) or '')
if current ~= nil and current >= ends then return math.ceil((current - now) / 1000) end
if ms > 0 then
  redis.call('SET', paused_key, string.format('%.17g', ends), 'PX', math.ceil(ms))
end
return math.ceil(ms)
