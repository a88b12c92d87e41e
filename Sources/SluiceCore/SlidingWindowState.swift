/// Sliding window state: the counts of the current fixed window and the one before it.
///
/// The sliding count at `now`, `e` nanoseconds into the current window, is
/// `previous × (period − e) / period + current` (exact rational arithmetic). A check of `n` hits is
/// allowed when that count plus `n` is at most `limit`. Windows start at multiples of `period`
/// since the Unix epoch.
public struct SlidingWindowState: Sendable, Hashable {
    /// Start of the current window, nanoseconds since the epoch.
    public var start: Int64
    /// Hits counted in the current window.
    public var current: UInt64
    /// Hits counted in the window before it.
    public var previous: UInt64

    /// A state with the given counts.
    @inlinable public init(start: Int64 = .min, current: UInt64 = 0, previous: UInt64 = 0) {
        self.start = start
        self.current = current
        self.previous = previous
    }

    @inlinable
    func advanced(to now: Int64, period: Int64) -> SlidingWindowState {
        let windowStart = FixedWindowState.windowStart(now, period: period)
        if windowStart <= start { return self }
        if start != .min, windowStart == start &+ period {
            return SlidingWindowState(start: windowStart, current: 0, previous: current)
        }
        return SlidingWindowState(start: windowStart, current: 0, previous: 0)
    }

    @inlinable
    static func ceilDiv(_ a: UInt128, _ b: UInt128) -> UInt128 { (a + b - 1) / b }

    /// Evaluates `hits` at `now` without mutating; returns the decision and the state to commit.
    @inlinable
    public func evaluate(hits: UInt64, now: Int64, spec: LimitSpec) -> (Decision, SlidingWindowState) {
        var next = advanced(to: now, period: spec.period)
        let period = UInt128(spec.period)
        let elapsed = UInt128(max(0, min(now &- next.start, spec.period)))
        let limitUnits = UInt128(spec.limit) * period
        // The sliding count scaled by `period`, so that all comparisons stay in integers.
        let weighted = UInt128(next.previous) * (period - elapsed) + UInt128(next.current) * period
        let remainingBefore = weighted >= limitUnits ? 0 : UInt64((limitUnits - weighted) / period)
        let reset = next.resetAfter(now: now, period: spec.period)
        if hits > spec.limit {
            return (Decision(allowed: false, limit: spec.limit, remaining: remainingBefore, resetAfter: reset,
                             retryAfter: 0, reason: .exceedsCapacity, algorithm: .slidingWindow), next)
        }
        let wanted = UInt128(hits == 0 ? 1 : hits)
        guard weighted + wanted * period <= limitUnits else {
            let retry = next.retryAfter(wanted: wanted, now: now, spec: spec)
            return (Decision(allowed: false, limit: spec.limit, remaining: remainingBefore, resetAfter: reset,
                             retryAfter: retry, reason: .overLimit, algorithm: .slidingWindow), next)
        }
        next.current += hits
        let after = weighted + UInt128(hits) * period
        return (Decision(allowed: true, limit: spec.limit, remaining: UInt64((limitUnits - after) / period),
                         resetAfter: next.resetAfter(now: now, period: spec.period), retryAfter: 0,
                         reason: .withinLimit, algorithm: .slidingWindow), next)
    }

    /// The earliest time from `now` at which `wanted` hits fit, assuming no other hits arrive.
    @inlinable
    func retryAfter(wanted: UInt128, now: Int64, spec: LimitSpec) -> Int64 {
        let period = UInt128(spec.period)
        let limit = UInt128(spec.limit)
        let windowEnd = start &+ spec.period
        // Inside the current window the previous window's weight shrinks: need
        // previous × (period − e) ≤ (limit − current − wanted) × period.
        if UInt128(current) + wanted <= limit, previous > 0 {
            let room = (limit - UInt128(current) - wanted) * period / UInt128(previous)
            if room > 0 {
                let elapsedNeeded = room >= period ? 0 : period - room
                let at = start &+ Int64(elapsedNeeded)
                if at < windowEnd { return max(0, at &- now) }
            }
        }
        // Otherwise in the next window, where today's count becomes the previous one.
        guard current > 0 else { return max(0, windowEnd &- now) }
        let room = (limit - wanted) * period / UInt128(current)
        let elapsedNeeded = room >= period ? 0 : period - room
        return max(0, windowEnd &+ Int64(elapsedNeeded) &- now)
    }

    /// How long until the sliding count is zero; 0 when it is (an empty state's `recoveredAt` is
    /// `.min`, and `.min &- now` wrapped to a huge positive time: found by the Redis script's
    /// differential test).
    @inlinable
    func resetAfter(now: Int64, period: Int64) -> Int64 {
        let recovered = recoveredAt(period: period)
        return recovered == .min ? 0 : max(0, recovered &- now)
    }

    /// When the sliding count will be zero.
    @inlinable
    public func recoveredAt(period: Int64) -> Int64 {
        if current > 0 { return start &+ 2 &* period }
        if previous > 0 { return start &+ period }
        return .min
    }
}
