/// Concurrency state: the leases currently held against one key.
///
/// A check of `n` hits acquires one lease of weight `n` when the live weights plus `n` are at most
/// `limit`. A lease ends when released or `period` after it was granted, whichever comes first.
public struct LeaseSet: Sendable, Hashable {
    /// One granted lease.
    public struct Lease: Sendable, Hashable {
        /// The id handed to the client.
        public var id: UInt64
        /// How many units the lease holds.
        public var weight: UInt64
        /// When it expires if not released, nanoseconds since the epoch.
        public var expiresAt: Int64

        /// Creates a lease.
        @inlinable public init(id: UInt64, weight: UInt64, expiresAt: Int64) {
            self.id = id
            self.weight = weight
            self.expiresAt = expiresAt
        }
    }

    /// The leases, in the order they were granted.
    public var leases: [Lease]

    /// An empty set.
    @inlinable public init(leases: [Lease] = []) { self.leases = leases }

    /// The units held by leases still live at `now`.
    @inlinable
    public func held(at now: Int64) -> UInt64 {
        var total: UInt64 = 0
        for lease in leases where lease.expiresAt > now { total += lease.weight }
        return total
    }

    /// Evaluates `hits` at `now`; an allowed check acquires lease `leaseID`.
    ///
    /// - Complexity: O(leases held).
    @inlinable
    public func evaluate(hits: UInt64, now: Int64, spec: LimitSpec, leaseID: UInt64) -> (Decision, LeaseSet) {
        let held = min(held(at: now), spec.limit)
        let reset = max(0, (leases.map(\.expiresAt).max() ?? now) &- now)
        if hits > spec.limit {
            return (Decision(allowed: false, limit: spec.limit, remaining: spec.limit - held, resetAfter: reset,
                             retryAfter: 0, reason: .exceedsCapacity, algorithm: .concurrency), self)
        }
        let wanted = hits == 0 ? 1 : hits
        guard held + wanted <= spec.limit else {
            // The earliest time enough leases expire for `wanted` to fit.
            var freed: UInt64 = 0
            var retry: Int64 = reset
            for lease in leases.filter({ $0.expiresAt > now }).sorted(by: { $0.expiresAt < $1.expiresAt }) {
                freed += lease.weight
                if held - min(freed, held) + wanted <= spec.limit { retry = lease.expiresAt &- now; break }
            }
            return (Decision(allowed: false, limit: spec.limit, remaining: spec.limit - held, resetAfter: reset,
                             retryAfter: retry, reason: .overLimit, algorithm: .concurrency), self)
        }
        if hits == 0 {
            return (Decision(allowed: true, limit: spec.limit, remaining: spec.limit - held, resetAfter: reset,
                             retryAfter: 0, reason: .withinLimit, algorithm: .concurrency), self)
        }
        var next = LeaseSet(leases: leases.filter { $0.expiresAt > now })
        let expiresAt = now &+ spec.period
        next.leases.append(Lease(id: leaseID, weight: hits, expiresAt: expiresAt))
        return (Decision(allowed: true, limit: spec.limit, remaining: spec.limit - held - hits,
                         resetAfter: max(reset, spec.period), retryAfter: 0, reason: .withinLimit,
                         algorithm: .concurrency, leaseID: leaseID), next)
    }

    /// Removes lease `id`; returns whether it was live.
    @inlinable
    public mutating func release(_ id: UInt64, now: Int64) -> Bool {
        guard let index = leases.firstIndex(where: { $0.id == id }) else { return false }
        let live = leases[index].expiresAt > now
        leases.remove(at: index)
        leases.removeAll { $0.expiresAt <= now }
        return live
    }

    /// When the last lease expires.
    @inlinable public var recoveredAt: Int64 { leases.map(\.expiresAt).max() ?? .min }
}
