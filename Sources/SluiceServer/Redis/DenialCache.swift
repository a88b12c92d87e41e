import SluiceCore

/// Checks known to be over their limit, answered here until their retry time without a round
/// trip to Redis (issue 17's local over-limit cache; envoy ratelimit keeps one too).
///
/// A denial is exact to reuse: every algorithm of the check script leaves its state unchanged
/// when it denies, so until the retry time the same check (same key, same limits, as many hits
/// or more, no more room from a multiplier) is denied again, whatever other daemons do: they
/// can only use more of the limit. Only an operator's reset of the key in Redis ends a denial
/// earlier, and it then lasts at most the retry time it was given.
///
/// Bounded: a stripe holds at most `capacity / stripes` denials; a full stripe drops its
/// expired ones, and when none are, the new denial is not kept (Redis is asked next time).
final class DenialCache: Sendable {
    struct Denial: Sendable {
        /// Until when (the daemon's time, ns) the check stays denied.
        var until: Int64
        /// When it was denied.
        var at: Int64
        var hits: UInt64
        var multiplier: Double
        var decision: Decision
    }

    let map: StripedMap<Denial>
    let perStripe: Int

    /// A cache of at most about `capacity` denials.
    init(capacity: Int) {
        map = StripedMap(stripeBits: 6)
        perStripe = max(1, capacity / map.stripeCount)
    }

    /// The key a check's denial is kept under: its key and the identities of its limits.
    static func key(of item: BatchCheck, limits: [BoundLimit]) -> Fingerprint {
        var mixed: UInt64 = 0x9E37_79B9_7F4A_7C15
        for limit in limits { mixed = (mixed ^ limit.identity) &* 0xBF58_476D_1CE4_E5B9 }
        return Fingerprint(high: item.key.high ^ mixed, low: item.key.low ^ (mixed >> 29 | mixed << 35))
    }

    /// The denial `item` meets now, if one kept applies: its retry and reset times count from now.
    func denial(of item: BatchCheck, key: Fingerprint) -> Decision? {
        guard !map.isEmpty else { return nil }
        return map.read(key) { denial -> Decision? in
            guard let denial, item.now < denial.until, item.now >= denial.at, item.hits >= denial.hits,
                  item.multiplier <= denial.multiplier else { return nil }
            var decision = denial.decision
            let elapsed = item.now &- denial.at
            decision.retryAfter = denial.until &- item.now
            decision.resetAfter = max(0, decision.resetAfter &- elapsed)
            return decision
        }
    }

    /// Keeps `decision`, a denial of `item` by Redis, until its retry time.
    func keep(_ decision: Decision, of item: BatchCheck, key: Fingerprint) {
        guard !decision.allowed, decision.retryAfter > 0, decision.retryAfter < .max / 4, item.now > 0 else { return }
        let (until, overflow) = item.now.addingReportingOverflow(decision.retryAfter)
        guard !overflow else { return }
        let denial = Denial(until: until, at: item.now, hits: item.hits, multiplier: item.multiplier, decision: decision)
        let now = item.now
        map.withStripe(map.stripe(of: key)) { stripe in
            if stripe[key] == nil, stripe.count >= perStripe {
                stripe = stripe.filter { $0.value.until > now }
                guard stripe.count < perStripe else { return }
            }
            stripe[key] = denial
        }
    }

    /// Denials kept now (some may have expired).
    var count: Int { map.count }
}
