-- GCRA in Redis: the algorithm of redis-cell's CL.THROTTLE, as a Lua script called with EVALSHA.
-- scripts/bench-vs-redis.sh runs it as the Redis side of the same-run comparison.
--   EVALSHA sha 1 KEY BURST COUNT PERIOD_MS QUANTITY
-- BURST checks of 1 pass back to back from empty, then one every PERIOD_MS / COUNT.
-- Returns {limited (0 allowed, 1 denied), limit, remaining, retry_after_ms (-1 if allowed), reset_after_ms}.
-- Times are integer microseconds from Redis' own clock (TIME); the stored value is the key's
-- theoretical arrival time, expiring when the key is fully recovered.
local burst = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local period_ms = tonumber(ARGV[3])
local quantity = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = math.max(1, math.floor(period_ms * 1000 / count))
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval * quantity
local allow_at = new_tat - tolerance
if allow_at > now then
  local remaining = math.max(0, math.floor((tolerance - (tat - now)) / interval))
  return {1, burst, remaining, math.ceil((allow_at - now) / 1000), math.ceil((tat - now) / 1000)}
end
-- %d keeps all 16 digits; Lua's default number format would round them.
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {0, burst, math.floor((tolerance - (new_tat - now)) / interval), -1, math.ceil((new_tat - now) / 1000)}
