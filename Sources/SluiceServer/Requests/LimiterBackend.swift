import SluiceCore

/// What the check pipeline decides against: where the counters live.
///
/// The sharded in-memory ``LimiterTable`` is the first backend and answers at once. A backend
/// whose counters are shared by a fleet (a Redis) answers over the network: it says so with
/// ``answersAtOnce`` and answers through ``decide(_:completion:)``, never blocking the event
/// loop; the pipeline then settles and encodes the batch when the answer comes.
public protocol LimiterBackend: AnyObject, Sendable {
    /// Whether ``check(batch:into:)`` and the other synchronous calls answer without waiting
    /// for I/O (on the event loop, under a lock at most). False: use ``decide(_:completion:)``.
    var answersAtOnce: Bool { get }

    /// Decides the check at `item` (with every limit of its rule) now. By pointer: a check
    /// passed by value was copied at every call, an outlined copy of its limits (callgrind).
    func check(_ item: UnsafePointer<BatchCheck>) -> Decision

    /// Decides a batch now, as if its checks were decided one after the other in order (a key
    /// checked twice sees its first check's hits); checks marked `skip` are left as they are in
    /// `decisions`.
    func check(batch: UnsafeBufferPointer<BatchCheck>, into decisions: UnsafeMutableBufferPointer<Decision>)

    /// What a check would meet with its limits `factor` times smaller, changing nothing (shadow
    /// mode's "would deny").
    func evaluate(_ item: BatchCheck, factor: Double) -> Decision

    /// Decides a batch, answering `completion` once with one decision per check, in order;
    /// `skip` checks answer ``Decision/blocked(retryAfter:)``. The completion may run on any
    /// thread.
    func decide(_ batch: [BatchCheck], completion: @escaping @Sendable ([Decision]) -> Void)

    /// Releases a concurrency lease; false when it was not held.
    func release(key: Fingerprint, limit: BoundLimit, leaseID: UInt64, now: Int64) -> Bool

    /// Releases a concurrency lease, answering `completion` once (on any thread): what a
    /// backend that is not ``answersAtOnce`` is asked.
    func release(key: Fingerprint, limit: BoundLimit, leaseID: UInt64, now: Int64, completion: @escaping @Sendable (Bool) -> Void)

    /// Counts and sizes, for `Stats` and metrics.
    func statistics() -> TableStatistics
}

extension LimiterBackend {
    /// A backend that answers at once answers a deferred batch at once too.
    public func decide(_ batch: [BatchCheck], completion: @escaping @Sendable ([Decision]) -> Void) {
        var decisions = [Decision](repeating: .blocked(), count: batch.count)
        batch.withUnsafeBufferPointer { items in
            decisions.withUnsafeMutableBufferPointer { check(batch: items, into: $0) }
        }
        completion(decisions)
    }

    /// A backend that answers at once releases at once too.
    public func release(key: Fingerprint, limit: BoundLimit, leaseID: UInt64, now: Int64, completion: @escaping @Sendable (Bool) -> Void) {
        completion(release(key: key, limit: limit, leaseID: leaseID, now: now))
    }
}

extension LimiterTable: LimiterBackend {
    public var answersAtOnce: Bool { true }

    @inline(__always)
    public func check(_ item: UnsafePointer<BatchCheck>) -> Decision {
        switch item.pointee.limits {
        case .single(let limit):
            return check(key: item.pointee.key, limit: limit, hits: item.pointee.hits, now: item.pointee.now, multiplier: item.pointee.multiplier)
        case .rule(let limits):
            return check(key: item.pointee.key, limits: limits, hits: item.pointee.hits, now: item.pointee.now, multiplier: item.pointee.multiplier)
        }
    }

    public func evaluate(_ item: BatchCheck, factor: Double) -> Decision {
        switch item.limits {
        case .single(let limit):
            withUnsafePointer(to: limit) {
                evaluate(key: item.key, limits: UnsafeBufferPointer(start: $0, count: 1), hits: item.hits, now: item.now,
                         multiplier: item.multiplier, factor: factor)
            }
        case .rule(let limits):
            limits.withUnsafeBufferPointer {
                evaluate(key: item.key, limits: $0, hits: item.hits, now: item.now, multiplier: item.multiplier, factor: factor)
            }
        }
    }
}
