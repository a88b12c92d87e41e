@testable import SluiceCore

/// Straightforward models of each algorithm, written from the definitions in docs/PROTOCOL.md and
/// independently of the implementation: the GCRA one is the ITU-T continuous-state leaky bucket,
/// the window ones recount a full log of granted hits. They answer allowed / remaining / retry.
protocol ReferenceModel {
    mutating func check(hits: UInt64, now: Int64) -> (allowed: Bool, remaining: UInt64, retryAfter: Int64)
}

/// ITU-T I.371 continuous-state leaky bucket: content X drains one unit per ns; a hit adds T.
struct LeakyBucketModel: ReferenceModel {
    let interval: Int64, tolerance: Int64, burst: UInt64
    var content: Int64 = 0
    var lastConformance: Int64 = .min

    init(_ spec: LimitSpec) {
        interval = spec.period / Int64(spec.limit)
        tolerance = interval * Int64(spec.burst)
        burst = spec.burst
    }

    mutating func check(hits: UInt64, now: Int64) -> (allowed: Bool, remaining: UInt64, retryAfter: Int64) {
        let drained = lastConformance == .min ? 0 : max(0, content - (now - lastConformance))
        let remainingBefore = UInt64(max(0, (tolerance - drained) / interval))
        let cost = interval * Int64(max(hits, 1))
        if hits > burst { return (false, remainingBefore, 0) }
        if drained + cost > tolerance { return (false, remainingBefore, drained + cost - tolerance) }
        if hits == 0 { return (true, remainingBefore, 0) }
        content = drained + cost
        lastConformance = now
        return (true, UInt64((tolerance - content) / interval), 0)
    }
}

/// Tokens as an exact fraction with denominator `period`, refilled by elapsed × limit.
struct TokenBucketModel: ReferenceModel {
    let spec: LimitSpec
    var numerator: UInt128
    var last: Int64?

    init(_ spec: LimitSpec) {
        self.spec = spec
        numerator = UInt128(spec.burst) * UInt128(spec.period)
    }

    mutating func check(hits: UInt64, now: Int64) -> (allowed: Bool, remaining: UInt64, retryAfter: Int64) {
        let capacity = UInt128(spec.burst) * UInt128(spec.period)
        if let last, now > last { numerator = min(capacity, numerator + UInt128(now - last) * UInt128(spec.limit)) }
        if last == nil || now > last! { last = now }
        let tokens = UInt64(numerator / UInt128(spec.period))
        if hits > spec.burst { return (false, tokens, 0) }
        let need = UInt128(max(hits, 1)) * UInt128(spec.period)
        if numerator < need {
            let missing = need - numerator
            let wait = (missing + UInt128(spec.limit) - 1) / UInt128(spec.limit)
            return (false, tokens, Int64(wait))
        }
        if hits == 0 { return (true, tokens, 0) }
        numerator -= need
        return (true, UInt64(numerator / UInt128(spec.period)), 0)
    }
}

/// Recounts a log of granted hits per epoch-aligned window.
struct WindowLogModel: ReferenceModel {
    let spec: LimitSpec
    let sliding: Bool
    var log: [(time: Int64, hits: UInt64)] = []

    init(_ spec: LimitSpec, sliding: Bool) {
        self.spec = spec
        self.sliding = sliding
    }

    func windowStart(_ t: Int64) -> Int64 { t - ((t % spec.period) + spec.period) % spec.period }

    func hits(in range: Range<Int64>) -> UInt64 { log.filter { range.contains($0.time) }.reduce(0) { $0 + $1.hits } }

    /// The sliding (or fixed) count at `t`, scaled by period.
    func scaledCount(at t: Int64) -> UInt128 {
        let start = windowStart(t)
        let current = hits(in: start..<(start + spec.period))
        if !sliding { return UInt128(current) * UInt128(spec.period) }
        let previous = hits(in: (start - spec.period)..<start)
        return UInt128(previous) * UInt128(spec.period - (t - start)) + UInt128(current) * UInt128(spec.period)
    }

    func fits(_ hits: UInt64, at t: Int64) -> Bool {
        scaledCount(at: t) + UInt128(hits) * UInt128(spec.period) <= UInt128(spec.limit) * UInt128(spec.period)
    }

    func remaining(at t: Int64) -> UInt64 {
        let limitUnits = UInt128(spec.limit) * UInt128(spec.period)
        let count = scaledCount(at: t)
        return count >= limitUnits ? 0 : UInt64((limitUnits - count) / UInt128(spec.period))
    }

    mutating func check(hits: UInt64, now: Int64) -> (allowed: Bool, remaining: UInt64, retryAfter: Int64) {
        if hits > spec.limit { return (false, remaining(at: now), 0) }
        let wanted = max(hits, 1)
        if !fits(wanted, at: now) {
            // Earliest later time the hits fit: search to the nanosecond with bisection over a
            // monotone predicate (the count only falls as time passes without new hits).
            var low = now, high = windowStart(now) + 2 * spec.period
            while low + 1 < high {
                let mid = low + (high - low) / 2
                if fits(wanted, at: mid) { high = mid } else { low = mid }
            }
            return (false, remaining(at: now), high - now)
        }
        if hits > 0 { log.append((now, hits)) }
        return (true, remaining(at: now), 0)
    }
}

/// Leases as a plain list.
struct LeaseModel: ReferenceModel {
    let spec: LimitSpec
    var leases: [(weight: UInt64, expiresAt: Int64)] = []

    mutating func check(hits: UInt64, now: Int64) -> (allowed: Bool, remaining: UInt64, retryAfter: Int64) {
        leases.removeAll { $0.expiresAt <= now }
        let held = leases.reduce(0) { $0 + $1.weight }
        if hits > spec.limit { return (false, spec.limit - held, 0) }
        if held + max(hits, 1) > spec.limit {
            var freed: UInt64 = 0
            for lease in leases.sorted(by: { $0.expiresAt < $1.expiresAt }) {
                freed += lease.weight
                if held - freed + max(hits, 1) <= spec.limit { return (false, spec.limit - held, lease.expiresAt - now) }
            }
            return (false, spec.limit - held, 0)
        }
        if hits > 0 { leases.append((hits, now + spec.period)) }
        return (true, spec.limit - held - hits, 0)
    }
}
