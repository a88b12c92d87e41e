/// Token bucket state: the level of the bucket at `last`, in exact fixed point.
///
/// One token is `period` level units; the bucket holds `burst × period` units and gains `limit`
/// units per elapsed nanosecond, so refill has no rounding drift. A check of `n` hits needs
/// `n × period` units. A new bucket is full.
public struct TokenBucketState: Sendable, Hashable {
    @usableFromInline var levelHigh: UInt64
    @usableFromInline var levelLow: UInt64
    /// The time the level was last brought up to date.
    public var last: Int64

    /// The level in units (`tokens × period`).
    @inlinable public var level: UInt128 {
        get { UInt128(levelHigh) << 64 | UInt128(levelLow) }
        set { levelHigh = UInt64(truncatingIfNeeded: newValue >> 64); levelLow = UInt64(truncatingIfNeeded: newValue) }
    }

    /// A bucket with `level` units at `last`.
    @inlinable public init(level: UInt128, last: Int64) {
        levelHigh = UInt64(truncatingIfNeeded: level >> 64)
        levelLow = UInt64(truncatingIfNeeded: level)
        self.last = last
    }

    /// A full bucket for `spec` at `now`.
    @inlinable public static func full(_ spec: LimitSpec, now: Int64) -> TokenBucketState {
        TokenBucketState(level: UInt128(spec.burst) * UInt128(spec.period), last: now)
    }

    @inlinable
    static func ceilDiv(_ a: UInt128, _ b: UInt128) -> Int64 {
        let q = (a + b - 1) / b
        return q > UInt128(Int64.max) ? Int64.max : Int64(q)
    }

    /// Evaluates `hits` at `now` without mutating; returns the decision and the state to commit.
    @inlinable
    public func evaluate(hits: UInt64, now: Int64, spec: LimitSpec) -> (Decision, TokenBucketState) {
        let period = UInt128(spec.period)
        let rate = UInt128(spec.limit)
        let capacity = UInt128(spec.burst) * period
        var refilled = self
        if now > last {
            // Taken in 128 bits: a restored state may hold any time, and `now - last` would trap.
            let elapsed = UInt128(Int128(now) - Int128(last))
            refilled.level = level >= capacity ? capacity : min(capacity, level + elapsed * rate)
            refilled.last = now
        } else if level > capacity {
            refilled.level = capacity
        }
        let current = refilled.level
        let need = UInt128(hits == 0 ? 1 : hits) * period
        let resetBefore = Self.ceilDiv(capacity - current, rate)
        if hits > spec.burst {
            return (Decision(allowed: false, limit: spec.limit, remaining: UInt64(current / period),
                             resetAfter: resetBefore, retryAfter: 0, reason: .exceedsCapacity,
                             algorithm: .tokenBucket), refilled)
        }
        guard current >= need else {
            return (Decision(allowed: false, limit: spec.limit, remaining: UInt64(current / period),
                             resetAfter: resetBefore, retryAfter: Self.ceilDiv(need - current, rate),
                             reason: .overLimit, algorithm: .tokenBucket), refilled)
        }
        if hits == 0 {
            return (Decision(allowed: true, limit: spec.limit, remaining: UInt64(current / period),
                             resetAfter: resetBefore, retryAfter: 0, reason: .withinLimit, algorithm: .tokenBucket),
                    refilled)
        }
        refilled.level = current - need
        return (Decision(allowed: true, limit: spec.limit, remaining: UInt64(refilled.level / period),
                         resetAfter: Self.ceilDiv(capacity - refilled.level, rate), retryAfter: 0,
                         reason: .withinLimit, algorithm: .tokenBucket), refilled)
    }

    /// When the bucket will be full again.
    @inlinable
    public func recoveredAt(_ spec: LimitSpec) -> Int64 {
        let capacity = UInt128(spec.burst) * UInt128(spec.period)
        guard level < capacity else { return last }
        let (sum, overflow) = last.addingReportingOverflow(Self.ceilDiv(capacity - level, UInt128(spec.limit)))
        return overflow ? .max : sum
    }
}
