/// One check of a batch given to ``LimiterTable/check(batch:into:)``.
public struct BatchCheck: Sendable {
    /// The limits a check is decided against.
    public enum Limits: Sendable {
        /// One limit (an inline limit or a one-limit rule).
        case single(BoundLimit)
        /// All of a rule's limits, decided together.
        case rule([BoundLimit])
    }

    /// The counted key, ``Fingerprint/of(tenant:key:)``.
    public var key: Fingerprint
    /// What it is decided against.
    public var limits: Limits
    /// The cost; 0 peeks.
    public var hits: UInt64
    /// Nanoseconds since the epoch.
    public var now: Int64
    /// Scales the limits for this check.
    public var multiplier: Double
    /// When true the table leaves this check alone (its decision was made elsewhere, e.g. a block).
    public var skip: Bool

    /// Creates a batch item.
    public init(key: Fingerprint, limits: Limits, hits: UInt64, now: Int64, multiplier: Double = 1, skip: Bool = false) {
        self.key = key
        self.limits = limits
        self.hits = hits
        self.now = now
        self.multiplier = multiplier
        self.skip = skip
    }
}

extension LimiterTable {
    /// Decides a batch: the same decisions, in the same per-key order, as deciding each check in
    /// turn, but each shard's lock is taken once for all the batch's checks in that shard and
    /// their slots are prefetched, so the checks' cache misses overlap instead of queueing
    /// behind one lock acquisition (a full fence) each.
    ///
    /// - Parameters:
    ///   - batch: the checks. Checks marked `skip` are not touched.
    ///   - decisions: receives decision *i* for check *i*; at least `batch.count` long.
    /// - Complexity: O(n log n) to group by shard, then O(1) expected per limit.
    public func check(batch: UnsafeBufferPointer<BatchCheck>, into decisions: UnsafeMutableBufferPointer<Decision>) {
        let count = batch.count
        guard count > 0 else { return }
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: count) { order in
            // (shard << 32 | index): sorting groups by shard and keeps request order inside a
            // group, so checks of one key (always one shard) are decided in the order sent.
            var used = 0
            for index in 0..<count where !batch[index].skip {
                let shard = UInt64(Int(truncatingIfNeeded: batch[index].key.high >> 7) & shardMask)
                order[used] = shard << 32 | UInt64(index)
                used += 1
            }
            var groups = UnsafeMutableBufferPointer(rebasing: order[0..<used])
            groups.sort()
            // Phase one: a short loop that starts loading every slot the batch will touch. Its
            // iterations are a few dozen instructions, so many cache misses are in flight at once;
            // by phase two most slots are in cache.
            for position in 0..<used {
                let index = Int(groups[position] & 0xFFFF_FFFF)
                shards[Int(groups[position] >> 32)]._withUnsafeGuaranteedRef { $0.prefetch(batch[index]) }
            }
            // Phase two: decide, holding each shard's lock for its whole group.
            var start = 0
            while start < used {
                let shardIndex = Int(groups[start] >> 32)
                var end = start
                while end < used, Int(groups[end] >> 32) == shardIndex { end += 1 }
                shards[shardIndex]._withUnsafeGuaranteedRef { shard in
                    shard.lock()
                    defer { shard.unlock() }
                    for position in start..<end {
                        let index = Int(groups[position] & 0xFFFF_FFFF)
                        let item = batch[index]
                        switch item.limits {
                        case .single(let limit) where limit.spec.algorithm == .gcra && item.multiplier == 1:
                            decisions[index] = shard.checkGCRA(item.key.combined(with: limit.identity), spec: limit.spec,
                                                               hits: item.hits, now: item.now)
                        case .single(let limit):
                            decisions[index] = withUnsafePointer(to: limit) {
                                shard.check(key: item.key, limits: UnsafeBufferPointer(start: $0, count: 1), hits: item.hits,
                                            now: item.now, multiplier: item.multiplier)
                            }
                        case .rule(let limits):
                            decisions[index] = limits.withUnsafeBufferPointer {
                                shard.check(key: item.key, limits: $0, hits: item.hits, now: item.now, multiplier: item.multiplier)
                            }
                        }
                    }
                }
                start = end
            }
        }
    }
}

extension Shard {
    @inline(__always)
    func prefetch(_ item: BatchCheck) {
        switch item.limits {
        case .single(let limit): prefetch(item.key.combined(with: limit.identity))
        case .rule(let limits): for limit in limits { prefetch(item.key.combined(with: limit.identity)) }
        }
    }
}
