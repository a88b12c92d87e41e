#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The in-memory limiter table: every key's state, sharded and lock-striped.
///
/// A stable hash of (tenant, key) picks one of a power-of-two number of shards, each with its own
/// lock, so every limit of a multi-limit rule lives under one lock and is decided atomically.
/// Within the shard each limit's state is stored under the fingerprint of (tenant, key, limit).
/// Memory is bounded: recovered entries are reclaimed a few at a time as checks arrive, and a full
/// shard evicts its least recently used entry.
// @unchecked: `shards` is written once in init and only read after; each shard guards itself with its lock.
public final class LimiterTable: @unchecked Sendable {
    /// Unretained references: the table owns `ownedShards`, and going through `Unmanaged` keeps
    /// two threads from contending on a shard object's reference count on every check.
    @usableFromInline let shards: UnsafeMutablePointer<Unmanaged<Shard>>
    let ownedShards: [Shard]
    @usableFromInline let shardMask: Int
    /// The most entries the table keeps (spread evenly over the shards).
    public let maxEntries: Int

    /// A shard count scaled to the machine: 16 per core, a power of two, 16 ... 4096.
    public static var defaultShardCount: Int {
        let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        return min(4096, max(16, (cores * 16).nextPowerOfTwo))
    }

    /// Creates an empty table.
    ///
    /// - Parameters:
    ///   - shardCount: rounded up to a power of two; `nil` uses ``defaultShardCount``.
    ///   - maxEntries: the most entries kept before the least recently used are evicted.
    ///   - seed: mixes index positions against hash flooding; random unless a test fixes it.
    ///   - reclaimsRecovered: forget fully recovered entries as checks pass by. Only sound when
    ///     the `now` of every check is in order across keys (a monotonic clock); with times taken
    ///     from requests, one connection's later time would forget another key's state before
    ///     that key's own, earlier, checks. Without it only eviction bounds the memory.
    public init(shardCount: Int? = nil, maxEntries: Int = 5_000_000, seed: UInt64 = .random(in: .min ... .max),
                reclaimsRecovered: Bool = true) {
        let count = max(1, shardCount ?? Self.defaultShardCount).nextPowerOfTwo
        let perShard = (max(1, maxEntries) + count - 1) / count
        ownedShards = (0..<count).map { Shard(maxEntries: perShard, seed: seed &+ UInt64($0), reclaims: reclaimsRecovered) }
        shards = .allocate(capacity: count)
        shards.initialize(from: ownedShards.map { Unmanaged.passUnretained($0) }, count: count)
        shardMask = count - 1
        self.maxEntries = perShard * count
    }

    deinit {
        shards.deinitialize(count: ownedShards.count)
        shards.deallocate()
    }

    /// The number of shards.
    public var shardCount: Int { ownedShards.count }

    /// The shard that holds every limit of `key`.
    @inline(__always)
    func shardIndex(_ key: Fingerprint) -> Int { Int(key.shardBits) & shardMask }

    @inline(__always)
    func withShard<T>(for key: Fingerprint, _ body: (Shard) -> T) -> T {
        shards[shardIndex(key)]._withUnsafeGuaranteedRef { shard in
            shard.lock()
            defer { shard.unlock() }
            return body(shard)
        }
    }

    /// Decides `hits` for `key` (see ``Fingerprint/of(tenant:key:)``) against one limit.
    ///
    /// - Parameters:
    ///   - hits: the cost; 0 peeks without consuming.
    ///   - now: nanoseconds since the Unix epoch.
    ///   - multiplier: scales the limit and burst for this check (reputation, tiers, load).
    /// - Complexity: O(1) expected.
    public func check(key: Fingerprint, limit: BoundLimit, hits: UInt64, now: Int64, multiplier: Double = 1) -> Decision {
        if limit.spec.algorithm == .gcra {
            // Scaled or not, one GCRA limit takes the scalar path (the spec is scaled outside the lock).
            let fingerprint = key.combined(with: limit.identity)
            let spec = limit.spec.scaled(by: multiplier)
            return shards[shardIndex(key)]._withUnsafeGuaranteedRef { shard in
                shard.prefetch(fingerprint)
                shard.lock()
                defer { shard.unlock() }
                return shard.checkGCRA(fingerprint, spec: spec, hits: hits, now: now, keyBits: key.shardBits)
            }
        }
        return withUnsafePointer(to: limit) { pointer in
            check(key: key, limits: UnsafeBufferPointer(start: pointer, count: 1), hits: hits, now: now,
                  multiplier: multiplier)
        }
    }

    /// Decides `hits` for `key` against all of `limits` atomically: allowed only if every limit
    /// allows, and then every limit consumes; otherwise none does. The decision is the tightest.
    ///
    /// - Complexity: O(`limits.count`) expected.
    public func check(key: Fingerprint, limits: [BoundLimit], hits: UInt64, now: Int64, multiplier: Double = 1) -> Decision {
        limits.withUnsafeBufferPointer {
            check(key: key, limits: $0, hits: hits, now: now, multiplier: multiplier)
        }
    }

    func check(key: Fingerprint, limits: UnsafeBufferPointer<BoundLimit>, hits: UInt64, now: Int64, multiplier: Double) -> Decision {
        withShard(for: key) { $0.check(key: key, limits: limits, hits: hits, now: now, multiplier: multiplier) }
    }

    /// Whether ``check(key:limits:hits:now:multiplier:)`` would allow `hits` now if every limit's
    /// capacity were `factor` times smaller, without consuming, creating state or counting a
    /// check: shadow mode's "would this be denied?".
    ///
    /// - Complexity: O(`limits.count`) expected.
    public func evaluate(key: Fingerprint, limits: UnsafeBufferPointer<BoundLimit>, hits: UInt64, now: Int64,
                         multiplier: Double, factor: Double) -> Decision {
        withShard(for: key) { $0.evaluate(key: key, limits: limits, hits: hits, now: now, multiplier: multiplier, factor: factor) }
    }

    /// Starts loading, without locking, the memory a later check of `limit` for `key` will touch.
    ///
    /// A batch that prefetches a few checks ahead overlaps their cache misses; each check alone
    /// waits for its own. Purely a hint: it changes nothing and never faults.
    public func prefetch(key: Fingerprint, limit: BoundLimit) {
        shards[shardIndex(key)]._withUnsafeGuaranteedRef {
            $0.prefetch(key.combined(with: limit.identity))
        }
    }

    /// Makes `state` (of `spec`, the limit as the checks scale it) the state of `limit` for
    /// `key`, then consumes `hits` from it without a check: fast mode's sync, the fleet's state
    /// from Redis plus what this daemon admitted since that state was read.
    ///
    /// - Complexity: O(1) expected.
    public func adopt(key: Fingerprint, limit: BoundLimit, spec: LimitSpec, state: LimiterState, consuming hits: UInt64, now: Int64) {
        withShard(for: key) { $0.adopt(key.combined(with: limit.identity), state: state, spec: spec, hits: hits, now: now, keyBits: key.shardBits) }
    }

    /// Returns a concurrency lease early.
    ///
    /// - Returns: whether the lease was live.
    /// - Complexity: O(leases held by the key).
    public func release(key: Fingerprint, limit: BoundLimit, leaseID: UInt64, now: Int64) -> Bool {
        withShard(for: key) { $0.release(key: key, limit: limit, leaseID: leaseID, now: now) }
    }

    /// Counters summed over all shards (each shard read under its lock, one after another).
    public func statistics() -> TableStatistics {
        var total = TableStatistics(shards: ownedShards.count, maxEntries: maxEntries)
        for shard in ownedShards {
            shard.lock()
            defer { shard.unlock() }
            do {
                total.entries += shard.count
                total.checks &+= shard.checks
                total.allowed &+= shard.allowed
                total.denied &+= shard.denied
                total.evictions &+= shard.evictions
                total.reclaimed &+= shard.reclaimed
                total.shrinks &+= shard.shrinks
                total.allocatedBytes += shard.allocatedBytes
            }
        }
        return total
    }
}

/// A snapshot of the table's counters.
public struct TableStatistics: Sendable, Hashable {
    /// Shards in the table.
    public var shards: Int
    /// The most entries the table keeps.
    public var maxEntries: Int
    /// Entries held now.
    public var entries = 0
    /// Checks decided since start.
    public var checks: UInt64 = 0
    /// Checks allowed.
    public var allowed: UInt64 = 0
    /// Checks denied.
    public var denied: UInt64 = 0
    /// Entries evicted because their shard was full.
    public var evictions: UInt64 = 0
    /// Fully recovered entries forgotten.
    public var reclaimed: UInt64 = 0
    /// Times a shard rebuilt itself smaller after most of its entries were reclaimed.
    public var shrinks: UInt64 = 0
    /// Bytes the shards have allocated for their slots.
    public var allocatedBytes = 0
}

extension Fingerprint {
    /// The bits of a (tenant, key) fingerprint that choose its shard (up to 65,536 shards).
    @inline(__always)
    var shardBits: UInt16 { UInt16(truncatingIfNeeded: high >> 7) }
}

extension Int {
    /// The smallest power of two at or above `self` (1 for values below 1).
    @inlinable
    public var nextPowerOfTwo: Int {
        guard self > 1 else { return 1 }
        return 1 << (Int.bitWidth - (self - 1).leadingZeroBitCount)
    }
}
