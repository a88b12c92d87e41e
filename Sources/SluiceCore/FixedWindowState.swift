/// Fixed window state: a counter for the window `[start, start + period)`.
///
/// Windows start at multiples of `period` since the Unix epoch (a 1-minute window resets on the
/// minute). A check of `n` hits is allowed when `count + n ≤ limit`. Time that runs backwards (only
/// possible with the request clock) stays in the current window.
public struct FixedWindowState: Sendable, Hashable {
    /// Start of the current window, nanoseconds since the epoch.
    public var start: Int64
    /// Hits counted in the current window.
    public var count: UInt64

    /// A window starting at `start` with `count` hits.
    @inlinable public init(start: Int64 = .min, count: UInt64 = 0) {
        self.start = start
        self.count = count
    }

    /// The start of the window that contains `now`.
    @inlinable
    public static func windowStart(_ now: Int64, period: Int64) -> Int64 {
        let r = now % period
        return now &- (r < 0 ? r &+ period : r)
    }

    @inlinable
    func advanced(to now: Int64, period: Int64) -> FixedWindowState {
        let current = Self.windowStart(now, period: period)
        return current > start ? FixedWindowState(start: current, count: 0) : self
    }

    /// Evaluates `hits` at `now` without mutating; returns the decision and the state to commit.
    @inlinable
    public func evaluate(hits: UInt64, now: Int64, spec: LimitSpec) -> (Decision, FixedWindowState) {
        var next = advanced(to: now, period: spec.period)
        let windowLeft = next.start &+ spec.period &- now
        let used = min(next.count, spec.limit)
        let reset = next.count == 0 ? 0 : windowLeft
        if hits > spec.limit {
            return (Decision(allowed: false, limit: spec.limit, remaining: spec.limit - used, resetAfter: reset,
                             retryAfter: 0, reason: .exceedsCapacity, algorithm: .fixedWindow), next)
        }
        let wanted = hits == 0 ? 1 : hits
        guard used + wanted <= spec.limit else {
            return (Decision(allowed: false, limit: spec.limit, remaining: spec.limit - used, resetAfter: reset,
                             retryAfter: windowLeft, reason: .overLimit, algorithm: .fixedWindow), next)
        }
        next.count = used + hits
        return (Decision(allowed: true, limit: spec.limit, remaining: spec.limit - next.count,
                         resetAfter: next.count == 0 ? 0 : windowLeft, retryAfter: 0, reason: .withinLimit,
                         algorithm: .fixedWindow), next)
    }

    /// When this window's count stops mattering.
    @inlinable
    public func recoveredAt(_ spec: LimitSpec) -> Int64 { count == 0 ? .min : start &+ spec.period }
}
