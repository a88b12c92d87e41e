/// A concurrency entry's slot summary: when its last live lease expires. The leases themselves
/// are a ``LeaseSet`` kept beside the table's slots.
public struct LeaseSummary: Sendable, Hashable {
    /// The latest expiry of the key's leases (`.min` for none).
    public var latestExpiry: Int64
    /// A summary.
    @inlinable public init(latestExpiry: Int64) { self.latestExpiry = latestExpiry }
}

/// The state one limit keeps for one key, as stored in the table's slots: one case per algorithm.
///
/// An enum rather than an existential so the table stores states inline and the hot path
/// dispatches with a switch. It holds plain data only (no references), so copying a slot is a
/// memory copy: with a lease array in the concurrency case every copy of every entry went through
/// reference counting, about 15 runtime calls per decision (measured with callgrind).
public enum LimiterState: Sendable, Hashable {
    case gcra(GCRAState)
    case tokenBucket(TokenBucketState)
    case slidingWindow(SlidingWindowState)
    case fixedWindow(FixedWindowState)
    /// Concurrency is decided with the key's ``LeaseSet``; the slot keeps this summary.
    case concurrency(LeaseSummary)

    /// The state of a key never seen (or fully recovered) for `spec`.
    @inlinable
    public static func fresh(_ spec: LimitSpec, now: Int64) -> LimiterState {
        switch spec.algorithm {
        case .gcra: .gcra(GCRAState())
        case .tokenBucket: .tokenBucket(.full(spec, now: now))
        case .slidingWindow: .slidingWindow(SlidingWindowState())
        case .fixedWindow: .fixedWindow(FixedWindowState())
        case .concurrency: .concurrency(LeaseSummary(latestExpiry: .min))
        }
    }

    /// This state after `hits` more were admitted at `now`, without a check (fast mode's sync
    /// replays what this daemon admitted on top of the fleet's state; a window's count may pass
    /// its limit, a GCRA's TAT run further ahead: debt the next checks wait out).
    @inlinable
    public func consuming(_ hits: UInt64, now: Int64, spec: LimitSpec) -> LimiterState {
        guard hits > 0 else { return self }
        switch self {
        case .gcra(var state):
            let (cost, overflow) = spec.emissionInterval.multipliedReportingOverflow(by: Int64(clamping: hits))
            let (sum, past) = max(state.tat, now).addingReportingOverflow(cost)
            state.tat = overflow || past ? .max : sum
            return .gcra(state)
        case .tokenBucket(var state):
            let need = UInt128(hits) * UInt128(spec.period)
            state.level = state.level > need ? state.level - need : 0
            return .tokenBucket(state)
        case .slidingWindow(var state):
            state.current &+= hits
            return .slidingWindow(state)
        case .fixedWindow(var state):
            state.count &+= hits
            return .fixedWindow(state)
        case .concurrency:
            return self
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

    /// Evaluates `hits` at `now` against `spec` without mutating (rate algorithms).
    ///
    /// Concurrency needs the key's ``LeaseSet`` (``LeaseSet/evaluate(hits:now:spec:leaseID:)``); for
    /// a `.concurrency` state this answers a capacity denial rather than guess.
    /// - Returns: the decision and the state to store if the check is committed.
    @inlinable
    public func evaluate(hits: UInt64, now: Int64, spec: LimitSpec) -> (Decision, LimiterState) {
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
        case .concurrency:
            return (Decision(allowed: false, limit: spec.limit, remaining: 0, resetAfter: 0, retryAfter: 0,
                             reason: .exceedsCapacity, algorithm: .concurrency), self)
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
        case .concurrency(let s): s.latestExpiry
        }
    }
}
