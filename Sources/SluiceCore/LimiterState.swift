/// The state one limit keeps for one key: one case per algorithm.
///
/// An enum rather than an existential so the table stores states inline and the hot path
/// dispatches with a switch.
public enum LimiterState: Sendable, Hashable {
    case gcra(GCRAState)
    case tokenBucket(TokenBucketState)
    case slidingWindow(SlidingWindowState)
    case fixedWindow(FixedWindowState)
    case concurrency(LeaseSet)

    /// The state of a key never seen (or fully recovered) for `spec`.
    @inlinable
    public static func fresh(_ spec: LimitSpec, now: Int64) -> LimiterState {
        switch spec.algorithm {
        case .gcra: .gcra(GCRAState())
        case .tokenBucket: .tokenBucket(.full(spec, now: now))
        case .slidingWindow: .slidingWindow(SlidingWindowState())
        case .fixedWindow: .fixedWindow(FixedWindowState())
        case .concurrency: .concurrency(LeaseSet())
        }
    }

    /// Whether this state belongs to `algorithm`.
    @inlinable
    public func matches(_ algorithm: Algorithm) -> Bool {
        switch (self, algorithm) {
        case (.gcra, .gcra), (.tokenBucket, .tokenBucket), (.slidingWindow, .slidingWindow),
             (.fixedWindow, .fixedWindow), (.concurrency, .concurrency): true
        default: false
        }
    }

    /// Evaluates `hits` at `now` against `spec` without mutating.
    ///
    /// - Returns: the decision and the state to store if the check is committed.
    @inlinable
    public func evaluate(hits: UInt64, now: Int64, spec: LimitSpec, leaseID: UInt64 = 0) -> (Decision, LimiterState) {
        switch self {
        case .gcra(let s):
            let (d, n) = s.evaluate(hits: hits, now: now, spec: spec)
            return (d, .gcra(n))
        case .tokenBucket(let s):
            let (d, n) = s.evaluate(hits: hits, now: now, spec: spec)
            return (d, .tokenBucket(n))
        case .slidingWindow(let s):
            let (d, n) = s.evaluate(hits: hits, now: now, spec: spec)
            return (d, .slidingWindow(n))
        case .fixedWindow(let s):
            let (d, n) = s.evaluate(hits: hits, now: now, spec: spec)
            return (d, .fixedWindow(n))
        case .concurrency(let s):
            let (d, n) = s.evaluate(hits: hits, now: now, spec: spec, leaseID: leaseID)
            return (d, .concurrency(n))
        }
    }

    /// The time from which this state is equivalent to a fresh one and may be forgotten.
    @inlinable
    public func recoveredAt(_ spec: LimitSpec) -> Int64 {
        switch self {
        case .gcra(let s): s.recoveredAt
        case .tokenBucket(let s): s.recoveredAt(spec)
        case .slidingWindow(let s): s.recoveredAt(period: spec.period)
        case .fixedWindow(let s): s.recoveredAt(spec)
        case .concurrency(let s): s.recoveredAt
        }
    }
}
