/// The server-side script of fast mode: each daemon decides on its own table and, every sync
/// interval, adds the hits it admitted since the last sync to the shared state in Redis and
/// takes back that state, which now holds every daemon's hits (gubernator's GLOBAL and
/// limitador's cached counters work the same way).
///
/// One call handles many entries, one key each (a limit of a check key, named as the check
/// script names it, so both modes keep the same state). Arguments: `ARGV[1]` slack (ms),
/// `ARGV[2]` the number of entries, then per entry its time (µs, the daemon's), algorithm (1 GCRA,
/// 2 token bucket, 3 sliding window, 4 fixed window), limit, period (µs), burst, and the hits to
/// add. The hits were admitted already: they are added without a check, so a key another daemon
/// used up goes into debt (a GCRA's TAT further ahead, a window's count past its limit) and every
/// daemon then waits it out. Reply: per entry the state after the hits, in microseconds:
/// `{tat}`, `{level, last}` (level in `period (µs)` units a token, below zero in debt),
/// `{start, current, previous}` or `{start, count}`.
public enum SyncScript {
    public static let source = #"""
local slack = tonumber(ARGV[1])
local function fmt(x) return string.format('%.0f', x) end
local function ttl(ms) return math.max(1, math.ceil(ms + slack)) end
local replies = {}
local a = 3
for c = 1, tonumber(ARGV[2]) do
  local now, algorithm = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local limit, period, burst, delta = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  a = a + 6
  local key = KEYS[c]
  local state = redis.call('GET', key)
  if algorithm == 1 then
    local interval = math.max(1, math.floor(period / limit))
    local tat = math.max(tonumber(state or '0') or 0, now)
    if delta > 0 then
      tat = tat + interval * delta
      redis.call('SET', key, fmt(tat), 'PX', ttl((tat - now) / 1000))
    end
    replies[c] = {tat}
  elseif algorithm == 2 then
    local capacity = burst * period
    local level, last = capacity, now
    if state then
      local l, t = string.match(state, '^(%S+) (%S+)$')
      level, last = tonumber(l), tonumber(t)
      if now > last then
        level = math.min(capacity, level + (now - last) * limit)
        last = now
      end
    end
    if delta > 0 then
      -- Below zero is debt (another daemon's hits admitted on a level this one had already
      -- spent): kept, so that every daemon waits it out.
      level = level - delta * period
      redis.call('SET', key, fmt(level) .. ' ' .. fmt(last), 'PX', ttl(math.ceil((capacity - level) / limit) / 1000))
    end
    replies[c] = {level, last}
  elseif algorithm == 3 then
    local start, current, previous = -1, 0, 0
    if state then
      local s, cur, p = string.match(state, '^(%S+) (%S+) (%S+)$')
      start, current, previous = tonumber(s), tonumber(cur), tonumber(p)
    end
    local ws = now - (now % period)
    if ws > start then
      if start ~= -1 and ws == start + period then previous = current else previous = 0 end
      current = 0
      start = ws
    end
    if delta > 0 then
      current = current + delta
      redis.call('SET', key, fmt(start) .. ' ' .. fmt(current) .. ' ' .. fmt(previous), 'PX', ttl((start + 2 * period - now) / 1000))
    end
    replies[c] = {start, current, previous}
  elseif algorithm == 4 then
    local start, count = -1, 0
    if state then
      local s, n = string.match(state, '^(%S+) (%S+)$')
      start, count = tonumber(s), tonumber(n)
    end
    local ws = now - (now % period)
    if ws > start then start, count = ws, 0 end
    if delta > 0 then
      count = count + delta
      redis.call('SET', key, fmt(start) .. ' ' .. fmt(count), 'PX', ttl((start + period - now) / 1000))
    end
    replies[c] = {start, count}
  else
    return redis.error_reply('ERR sluice: unknown algorithm ' .. tostring(algorithm))
  end
end
return replies
"""#

    /// The script as made once for ``RedisClient/evaluate(_:calls:deadline:)``.
    public static let script = RedisScript(source)

    /// One entry of a sync call: a limit's key, the daemon's time (µs), the limit's algorithm,
    /// limit, period (µs) and burst, and the hits to add.
    public struct Entry: Sendable {
        public var key: RESPArgument
        public var nowMicros: Int64
        public var algorithm: Int64
        public var limit: Int64
        public var periodMicros: Int64
        public var burst: Int64
        public var hits: Int64

        public init(key: RESPArgument, nowMicros: Int64, algorithm: Int64, limit: Int64, periodMicros: Int64, burst: Int64, hits: Int64) {
            self.key = key
            self.nowMicros = nowMicros
            self.algorithm = algorithm
            self.limit = limit
            self.periodMicros = periodMicros
            self.burst = burst
            self.hits = hits
        }
    }

    /// The call of ``source`` for `entries`, in order.
    public static func call<C: Collection<Entry>>(_ entries: C, slackMs: Int64) -> RedisClient.ScriptCall {
        var keys: [RESPArgument] = [], arguments: [RESPArgument] = [.integer(slackMs), .integer(Int64(entries.count))]
        keys.reserveCapacity(entries.count)
        arguments.reserveCapacity(2 + 6 * entries.count)
        for entry in entries {
            keys.append(entry.key)
            arguments += [.integer(entry.nowMicros), .integer(entry.algorithm), .integer(entry.limit), .integer(entry.periodMicros),
                          .integer(entry.burst), .integer(entry.hits)]
        }
        return RedisClient.ScriptCall(keys: keys, arguments: arguments)
    }
}
