/// Generic cell rate algorithm state: the theoretical arrival time (TAT) of the next unit.
///
/// With emission interval `T = period / limit` (rounded down to the nanosecond) and tolerance
/// `τ = T × burst`, a check of `n` hits at `now` is allowed when `max(TAT, now) + n·T − τ ≤ now`,
/// and then `TAT = max(TAT, now) + n·T`. From empty exactly `burst` single hits pass back to back.
public struct GCRAState: Sendable, Hashable {
    /// Nanoseconds since the epoch; at or before `now` means the key is fully recovered.
    public var tat: Int64

    /// A fully recovered state.
    @inlinable public init(tat: Int64 = .min) { self.tat = tat }

    /// Evaluates `hits` at `now` without mutating; returns the decision and the state to commit.
    ///
    /// `hits == 0` peeks: allowed says whether one hit would pass, and nothing changes.
    @inlinable
    public func evaluate(hits: UInt64, now: Int64, spec: LimitSpec) -> (Decision, GCRAState) {
        let interval = spec.emissionInterval
        let tolerance = spec.tolerance
        let base = max(tat, now)
        let usedBefore = base &- now
        // Only the paths that report it pay for this division.
        var remainingBefore: UInt64 { tolerance > usedBefore ? UInt64((tolerance &- usedBefore) / interval) : 0 }
        if hits == 0 {
            let allowAt = base &+ interval &- tolerance
            let allowed = allowAt <= now
            return (Decision(allowed: allowed, limit: spec.limit, remaining: remainingBefore, resetAfter: usedBefore,
                             retryAfter: allowed ? 0 : allowAt &- now, reason: allowed ? .withinLimit : .overLimit,
                             algorithm: .gcra), self)
        }
        guard hits <= spec.burst else {
            return (Decision(allowed: false, limit: spec.limit, remaining: remainingBefore, resetAfter: usedBefore,
                             retryAfter: 0, reason: .exceedsCapacity, algorithm: .gcra), self)
        }
        let newTat = base &+ interval &* Int64(hits)
        let allowAt = newTat &- tolerance
        if allowAt > now {
            return (Decision(allowed: false, limit: spec.limit, remaining: remainingBefore, resetAfter: usedBefore,
                             retryAfter: allowAt &- now, reason: .overLimit, algorithm: .gcra), self)
        }
        let used = newTat &- now
        return (Decision(allowed: true, limit: spec.limit, remaining: UInt64((tolerance &- used) / interval),
                         resetAfter: used, retryAfter: 0, reason: .withinLimit, algorithm: .gcra),
                GCRAState(tat: newTat))
    }

    /// When this state is fully recovered (and may be forgotten).
    @inlinable public var recoveredAt: Int64 { tat }
}
