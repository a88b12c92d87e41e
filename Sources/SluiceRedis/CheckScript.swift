/// The server-side script that decides one check against every limit of its rule, atomically:
/// each limit is evaluated, and only if all allow do all consume (as the local table does). One
/// key per limit; a rule's keys share a hash tag, so in a Cluster they live in one slot and the
/// script runs on one node.
///
/// Time is in microseconds (exact in Lua's doubles for 285 years past the epoch): the emission
/// interval is `floor(period / limit)` µs where the local table rounds to the nanosecond, so
/// retry and reset times may differ from a local limit's by under a microsecond per hit; the
/// verdicts are the same where the period divides evenly. `now` is the caller's, or 0 for the
/// server's `TIME` (then daemons whose clocks differ still share one clock).
///
/// Arguments: `ARGV[1]` now (µs, or 0), `ARGV[2]` hits (0 peeks), `ARGV[3]` slack (ms), then per
/// limit its algorithm (1 GCRA, 2 token bucket, 3 sliding window, 4 fixed window, 5 concurrency),
/// limit, period (µs) and burst (for concurrency: the id of the lease an allowed check takes,
/// in decimal). A key expires when its state has recovered, by the server's clock, plus the
/// slack: with the daemons' clocks, keys must outlive their state by the most those clocks may
/// differ from the server's, or a daemon whose clock is behind finds its state gone.
/// Reply: allowed (0/1), reason (1 within limit, 2 over limit, 3 exceeds capacity), the index of
/// the limit that decided, its limit, remaining, reset after (µs), retry after (µs), and the
/// time used (µs).
public enum CheckScript {
    /// One check a call: the arguments above.
    public static let source = #"""
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local hits = tonumber(ARGV[2])
local slack = tonumber(ARGV[3])
"""# + "\n" + evaluators + #"""
local best, commits = nil, {}
for i = 1, #KEYS do
  local at = 3 + (i - 1) * 4
  local evaluate = evaluators[tonumber(ARGV[at + 1])]
  if evaluate == nil then return redis.error_reply('ERR sluice: unknown algorithm ' .. tostring(ARGV[at + 1])) end
  local decision, commit = evaluate(KEYS[i], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), ARGV[at + 4])
  decision[7] = i - 1
  best = tighter(best, decision)
  commits[i] = commit
end
if best[1] == 1 and hits > 0 then
  for i = 1, #KEYS do if commits[i] then commits[i]() end end
end
return {best[1], best[2], best[7], best[3], best[4], best[5], best[6], now}
"""#

    /// Many checks a call, decided one after the other as separate calls would be (a key checked
    /// twice sees the first check's hits): one script invocation for a whole batch costs Redis a
    /// fraction of one per check (argument parsing, the call's setup, a reply each).
    ///
    /// Arguments: `ARGV[1]` slack (ms), `ARGV[2]` the number of checks, then per check its time
    /// (µs, or 0 for the server's `TIME`, read once), its number of keys (limits), its hits, and
    /// per limit the four values of ``source``. `KEYS` holds every check's keys in order. Reply:
    /// one reply of ``source``'s shape per check. In a Cluster every key of a call must be in one
    /// slot.
    public static let batchSource = #"""
local slack = tonumber(ARGV[1])
local server_now = nil
local now, hits = 0, 0
"""# + "\n" + evaluators + #"""
local replies = {}
local k, a = 1, 3
for c = 1, tonumber(ARGV[2]) do
  now = tonumber(ARGV[a])
  if now == 0 then
    if server_now == nil then
      local t = redis.call('TIME')
      server_now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    now = server_now
  end
  local count = tonumber(ARGV[a + 1])
  hits = tonumber(ARGV[a + 2])
  a = a + 3
  local best, commits = nil, {}
  for i = 0, count - 1 do
    local evaluate = evaluators[tonumber(ARGV[a])]
    if evaluate == nil then return redis.error_reply('ERR sluice: unknown algorithm ' .. tostring(ARGV[a])) end
    local decision, commit = evaluate(KEYS[k + i], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3])
    decision[7] = i
    best = tighter(best, decision)
    commits[i + 1] = commit
    a = a + 4
  end
  if best[1] == 1 and hits > 0 then
    for i = 1, count do if commits[i] then commits[i]() end end
  end
  replies[c] = {best[1], best[2], best[7], best[3], best[4], best[5], best[6], now}
  k = k + count
end
return replies
"""#

    /// The evaluators and `tighter`, shared by both scripts: they read `now`, `hits` and `slack`,
    /// which each script declares before them.
    static let evaluators = #"""
local function fmt(x) return string.format('%.0f', x) end
local function ttl(ms) return math.max(1, math.ceil(ms + slack)) end

-- Each evaluator returns a decision {allowed, reason, limit, remaining, reset, retry} and the
-- function that commits it (nil when there is nothing to write).
local function gcra(key, limit, period, burst)
  burst = tonumber(burst)
  local interval = math.max(1, math.floor(period / limit))
  local tolerance = interval * burst
  local tat = tonumber(redis.call('GET', key) or '0')
  local base = math.max(tat, now)
  local used = base - now
  local remaining = 0
  if tolerance > used then remaining = math.floor((tolerance - used) / interval) end
  if hits == 0 then
    local allow_at = base + interval - tolerance
    if allow_at <= now then return {1, 1, limit, remaining, used, 0} end
    return {0, 2, limit, remaining, used, allow_at - now}
  end
  if hits > burst then return {0, 3, limit, remaining, used, 0} end
  local new_tat = base + interval * hits
  local allow_at = new_tat - tolerance
  if allow_at > now then return {0, 2, limit, remaining, used, allow_at - now} end
  local after = new_tat - now
  return {1, 1, limit, math.floor((tolerance - after) / interval), after, 0},
    function() redis.call('SET', key, fmt(new_tat), 'PX', ttl(after / 1000)) end
end

local function ceil_div(a, b) return math.ceil(a / b) end

local function token_bucket(key, limit, period, burst)
  burst = tonumber(burst)
  local capacity = burst * period
  local level, last = capacity, now
  local state = redis.call('GET', key)
  if state then
    local l, t = string.match(state, '^(%S+) (%S+)$')
    level, last = tonumber(l), tonumber(t)
    if now > last then
      level = math.min(capacity, level + (now - last) * limit)
      last = now
    elseif level > capacity then
      level = capacity
    end
  end
  local need = math.max(hits, 1) * period
  local reset_before = ceil_div(capacity - level, limit)
  if hits > burst then return {0, 3, limit, math.floor(level / period), reset_before, 0} end
  if level < need then return {0, 2, limit, math.floor(level / period), reset_before, ceil_div(need - level, limit)} end
  if hits == 0 then return {1, 1, limit, math.floor(level / period), reset_before, 0} end
  local left = level - need
  local reset = ceil_div(capacity - left, limit)
  return {1, 1, limit, math.floor(left / period), reset, 0},
    function() redis.call('SET', key, fmt(left) .. ' ' .. fmt(last), 'PX', ttl(reset / 1000)) end
end

local function window_start(period) return now - (now % period) end

local function sliding_window(key, limit, period)
  local start, current, previous = -1, 0, 0
  local state = redis.call('GET', key)
  if state then
    local s, c, p = string.match(state, '^(%S+) (%S+) (%S+)$')
    start, current, previous = tonumber(s), tonumber(c), tonumber(p)
  end
  local ws = window_start(period)
  if ws > start then
    if start ~= -1 and ws == start + period then previous = current else previous = 0 end
    current = 0
    start = ws
  end
  local elapsed = math.max(0, math.min(now - start, period))
  local units = limit * period
  local weighted = previous * (period - elapsed) + current * period
  local remaining = 0
  if weighted < units then remaining = math.floor((units - weighted) / period) end
  local function reset_after(c, p)
    if c > 0 then return math.max(0, start + 2 * period - now) end
    if p > 0 then return math.max(0, start + period - now) end
    return 0
  end
  local reset = reset_after(current, previous)
  if hits > limit then return {0, 3, limit, remaining, reset, 0} end
  local wanted = math.max(hits, 1)
  if weighted + wanted * period > units then
    -- When the weighted count leaves room for `wanted`: later in this window as the previous
    -- one's weight shrinks, or in the next, where this window's count is the previous one.
    local window_end = start + period
    local retry = nil
    if current + wanted <= limit and previous > 0 then
      local room = math.floor((limit - current - wanted) * period / previous)
      if room > 0 then
        local needed = 0
        if room < period then needed = period - room end
        if start + needed < window_end then retry = math.max(0, start + needed - now) end
      end
    end
    if retry == nil then
      if current == 0 then
        retry = math.max(0, window_end - now)
      else
        local room = math.floor((limit - wanted) * period / current)
        local needed = 0
        if room < period then needed = period - room end
        retry = math.max(0, window_end + needed - now)
      end
    end
    return {0, 2, limit, remaining, reset, retry}
  end
  local after = weighted + hits * period
  local count = current + hits
  local reset_now = reset_after(count, previous)
  return {1, 1, limit, math.floor((units - after) / period), reset_now, 0},
    function() redis.call('SET', key, fmt(start) .. ' ' .. fmt(count) .. ' ' .. fmt(previous), 'PX', ttl((start + 2 * period - now) / 1000)) end
end

local function fixed_window(key, limit, period)
  local start, count = -1, 0
  local state = redis.call('GET', key)
  if state then
    local s, c = string.match(state, '^(%S+) (%S+)$')
    start, count = tonumber(s), tonumber(c)
  end
  local ws = window_start(period)
  if ws > start then start, count = ws, 0 end
  local left = start + period - now
  local used = math.min(count, limit)
  local reset = 0
  if count > 0 then reset = left end
  if hits > limit then return {0, 3, limit, limit - used, reset, 0} end
  if used + math.max(hits, 1) > limit then return {0, 2, limit, limit - used, reset, left} end
  local after = used + hits
  local reset_now = 0
  if after > 0 then reset_now = left end
  return {1, 1, limit, limit - after, reset_now, 0},
    function() redis.call('SET', key, fmt(start) .. ' ' .. fmt(after), 'PX', ttl(left / 1000)) end
end

-- The tighter of two decisions, as the local table picks it.
local function tighter(a, b)
  if a == nil then return b end
  if a[1] == 1 and b[1] == 0 then return b end
  if a[1] == 0 and b[1] == 1 then return a end
  if a[1] == 0 then
    if a[2] == 3 then return a end
    if b[2] == 3 then return b end
    if b[6] > a[6] then return b end
    return a
  end
  if b[4] ~= a[4] then
    if b[4] < a[4] then return b end
    return a
  end
  if b[5] > a[5] then return b end
  return a
end

-- Concurrency: leases in a sorted set, scored by when each expires (µs), each member
-- '<lease id>:<weight>'. The lease id comes in the burst's place, as text: a 64-bit id does not
-- fit a Lua number. Expired leases are dropped first: a crashed daemon's come back after
-- `period`, as they do on the local table.
local function concurrency(key, limit, period, lease)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local members = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local held, latest = 0, now
  for i = 1, #members, 2 do
    held = held + tonumber(string.match(members[i], ':(%d+)$'))
    latest = math.max(latest, tonumber(members[i + 1]))
  end
  held = math.min(held, limit)
  local reset = latest - now
  if hits > limit then return {0, 3, limit, limit - held, reset, 0} end
  local wanted = math.max(hits, 1)
  if held + wanted > limit then
    -- The earliest time enough leases expire for `wanted` to fit (the set is in expiry order).
    local freed, retry = 0, reset
    for i = 1, #members, 2 do
      freed = freed + tonumber(string.match(members[i], ':(%d+)$'))
      if held - math.min(freed, held) + wanted <= limit then
        retry = tonumber(members[i + 1]) - now
        break
      end
    end
    return {0, 2, limit, limit - held, reset, retry}
  end
  if hits == 0 then return {1, 1, limit, limit - held, reset, 0} end
  local keep = math.max(reset, period)
  return {1, 1, limit, limit - held - hits, keep, 0},
    function()
      redis.call('ZADD', key, fmt(now + period), lease .. ':' .. fmt(hits))
      redis.call('PEXPIRE', key, ttl(keep / 1000))
    end
end

local evaluators = {gcra, token_bucket, sliding_window, fixed_window, concurrency}

"""#

    /// Returns a lease early: `KEYS[1]` the limit's set, `ARGV[1]` the lease id, `ARGV[2]` now
    /// (µs, or 0 for the server's `TIME`). Reply: 1 when the lease was held and live, 0 otherwise.
    public static let releaseSource = #"""
local now = tonumber(ARGV[2])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local live = 0
for i = 1, #members, 2 do
  if string.match(members[i], '^(%d+):') == ARGV[1] then
    if tonumber(members[i + 1]) > now then live = 1 end
    redis.call('ZREM', KEYS[1], members[i])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return live
"""#

    /// The scripts as made once for ``RedisClient/evaluate(_:calls:deadline:)``.
    public static let script = RedisScript(source)
    public static let batchScript = RedisScript(batchSource)
    public static let releaseScript = RedisScript(releaseSource)

    /// One check's part of a call: its keys (one per limit), its time (µs, 0: the server's),
    /// its hits, and per limit its algorithm, limit, period (µs) and burst.
    public struct Check: Sendable {
        public var keys: [RESPArgument]
        public var nowMicros: Int64
        public var hits: Int64
        public var limits: [RESPArgument]

        public init(keys: [RESPArgument], nowMicros: Int64, hits: Int64, limits: [RESPArgument]) {
            self.keys = keys
            self.nowMicros = nowMicros
            self.hits = hits
            self.limits = limits
        }
    }

    /// The call of ``source`` for one check.
    public static func call(_ check: Check, slackMs: Int64) -> RedisClient.ScriptCall {
        RedisClient.ScriptCall(keys: check.keys, arguments: [.integer(check.nowMicros), .integer(check.hits), .integer(slackMs)] + check.limits)
    }

    /// The call of ``batchSource`` for `checks`, in order.
    public static func batchCall<C: Collection<Check>>(_ checks: C, slackMs: Int64) -> RedisClient.ScriptCall {
        var keys: [RESPArgument] = [], arguments: [RESPArgument] = [.integer(slackMs), .integer(Int64(checks.count))]
        for check in checks {
            keys += check.keys
            arguments += [.integer(check.nowMicros), .integer(Int64(check.keys.count)), .integer(check.hits)]
            arguments += check.limits
        }
        return RedisClient.ScriptCall(keys: keys, arguments: arguments)
    }
}
