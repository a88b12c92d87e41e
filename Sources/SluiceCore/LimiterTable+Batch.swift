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
    /// Which table holds its key: 0 the shared one, else a tenant's own (its `max_keys` quota),
    /// numbered by the server. The table itself does not read it.
    public var partition: UInt16 = 0

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
            // (shard << 32 | index), grouped by shard with request order kept inside a group, so
            // checks of one key (always one shard) are decided in the order sent.
            let used = group(batch, into: order)
            // Decide, holding each shard's lock for its whole group, while prefetching the slots
            // of the check `prefetchDistance` places ahead. Prefetching the whole batch first
            // was measured slower: beyond the ten or so misses a core keeps in flight, prefetches
            // are dropped, and the slots missed again when decided.
            let distance = Self.prefetchDistance
            for position in 0..<min(distance, used) { prefetch(order[position], batch) }
            var start = 0
            while start < used {
                let shardIndex = Int(order[start] >> 32)
                var end = start
                while end < used, Int(order[end] >> 32) == shardIndex { end += 1 }
                shards[shardIndex]._withUnsafeGuaranteedRef { shard in
                    shard.lock()
                    defer { shard.unlock() }
                    for position in start..<end {
                        if position + distance < used { prefetch(order[position + distance], batch) }
                        let index = Int(order[position] & 0xFFFF_FFFF)
                        decisions[index] = shard.decide(batch[index])
                    }
                }
                start = end
            }
        }
    }

    /// How many checks ahead a batch prefetches: enough to cover a cache miss, few enough that
    /// the prefetches are not dropped (docs/BENCHMARKS.md).
    static let prefetchDistance = 8

    @inline(__always)
    func prefetch(_ ordered: UInt64, _ batch: UnsafeBufferPointer<BatchCheck>) {
        shards[Int(ordered >> 32)]._withUnsafeGuaranteedRef { $0.prefetch(batch[Int(ordered & 0xFFFF_FFFF)]) }
    }

    /// Writes (shard << 32 | index) for every check not skipped, grouped by shard in ascending
    /// shard order, request order kept within a shard; returns how many.
    ///
    /// A counting sort when the shards are few next to the batch (the common case: 16 shards per
    /// core); a comparison sort otherwise. The generic sort was 15 % of a batch's time.
    func group(_ batch: UnsafeBufferPointer<BatchCheck>, into order: UnsafeMutableBufferPointer<UInt64>) -> Int {
        let shardCount = shardMask + 1
        var used = 0
        if shardCount <= 256 {
            return withUnsafeTemporaryAllocation(of: Int32.self, capacity: shardCount + 1) { starts in
                starts.initialize(repeating: 0)
                for index in 0..<batch.count where !batch[index].skip {
                    starts[shardIndex(batch[index].key) + 1] += 1
                    used += 1
                }
                for shard in 0..<shardCount { starts[shard + 1] += starts[shard] }
                for index in 0..<batch.count where !batch[index].skip {
                    let shard = shardIndex(batch[index].key)
                    order[Int(starts[shard])] = UInt64(shard) << 32 | UInt64(index)
                    starts[shard] += 1
                }
                return used
            }
        }
        for index in 0..<batch.count where !batch[index].skip {
            order[used] = UInt64(shardIndex(batch[index].key)) << 32 | UInt64(index)
            used += 1
        }
        var sorted = UnsafeMutableBufferPointer(rebasing: order[0..<used])
        sorted.sort()
        return used
    }
}

extension Shard {
    /// Decides one batch item; the shard's lock must be held.
    @inline(__always)
    func decide(_ item: BatchCheck) -> Decision {
        switch item.limits {
        case .single(let limit) where limit.spec.algorithm == .gcra:
            // Scaled (reputation, a tier, a baseline) or not, one GCRA limit takes the scalar path.
            return checkGCRA(item.key.combined(with: limit.identity), spec: limit.spec.scaled(by: item.multiplier), hits: item.hits,
                             now: item.now, keyBits: item.key.shardBits)
        case .single(let limit):
            return withUnsafePointer(to: limit) {
                check(key: item.key, limits: UnsafeBufferPointer(start: $0, count: 1), hits: item.hits, now: item.now,
                      multiplier: item.multiplier)
            }
        case .rule(let limits):
            return limits.withUnsafeBufferPointer {
                check(key: item.key, limits: $0, hits: item.hits, now: item.now, multiplier: item.multiplier)
            }
        }
    }

    @inline(__always)
    func prefetch(_ item: BatchCheck) {
        switch item.limits {
        case .single(let limit): prefetch(item.key.combined(with: limit.identity))
        case .rule(let limits): for limit in limits { prefetch(item.key.combined(with: limit.identity)) }
        }
    }
}
