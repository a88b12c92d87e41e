import NIOConcurrencyHelpers
import NIOCore
import SluiceCore
import SluiceRedis
import Synchronization

/// Fast mode's bookkeeping (`redis.mode: fast`): checks are decided on this daemon's own table,
/// at its speed, and what they admitted is recorded here; every `redis.sync_interval` a sync
/// adds it to the shared state in Redis (``SyncScript``) and makes the state Redis answers (every
/// daemon's hits) the table's, with what was admitted meanwhile replayed on top.
///
/// The price is over-admission within an interval: the daemons each see the others' hits one
/// sync late, so at a limit's edge each can admit what the last interval freed. With `N`
/// daemons, a rate `R` and an interval `T`, at most about `(N - 1) × R × T` more than the limit
/// pass, once (the debt it leaves in Redis is then waited out by all): docs/DISTRIBUTED.md has
/// the measured figures.
final class FastSync: Sendable {
    /// A limit's hits admitted since the last sync.
    struct Pending: Sendable {
        var key: Fingerprint
        var limit: BoundLimit
        /// The limit as the last check scaled it.
        var spec: LimitSpec
        var hits: UInt64
    }

    let pending = StripedMap<Pending>(stripeBits: 6)
    /// Entries waiting for a sync, beyond which admitted hits are not recorded (counted).
    let capacity: Int
    let dropped = Atomic<UInt64>(0)
    let syncs = Atomic<UInt64>(0)
    /// Set while a sync is out: the next waits for it.
    let running = Atomic<Bool>(false)
    /// The stripe the next drain starts at: where the last one stopped, so that no stripe waits
    /// behind others that keep filling.
    let nextStripe = Atomic<Int>(0)

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    /// Records a check: its hits when it was `admitted`, none otherwise. Either way the next
    /// sync reads the key's state back, so a daemon's view of a key it checks is never more
    /// than an interval older than its last check (a key it has admitted nothing on, or denied,
    /// would otherwise keep its last view).
    func record(_ item: UnsafePointer<BatchCheck>, admitted: Bool) {
        let hits = admitted ? item.pointee.hits : 0
        switch item.pointee.limits {
        case .single(let limit): record(item.pointee, limit, hits: hits)
        case .rule(let limits): for limit in limits { record(item.pointee, limit, hits: hits) }
        }
    }

    func record(_ item: BatchCheck, _ limit: BoundLimit, hits: UInt64) {
        guard limit.spec.algorithm != .concurrency else { return }
        let entry = item.key.combined(with: limit.identity)
        let spec = limit.spec.scaled(by: item.multiplier)
        let kept = pending.update(entry) { value -> Bool in
            if value != nil {
                value?.hits &+= hits
                value?.spec = spec
                return true
            }
            guard pending.count < capacity else { return false }
            value = Pending(key: item.key, limit: limit, spec: spec, hits: hits)
            return true
        }
        if !kept { dropped.add(1, ordering: .relaxed) }
    }

    /// Takes the entries recorded so far, `maximum` at most: first those with admitted hits
    /// (the fleet must count them), then those only checked (whose view is refreshed). What is
    /// left waits for the next sync.
    func drain(maximum: Int = .max) -> [Pending] {
        guard !pending.isEmpty else { return [] }
        var taken: [Pending] = []
        let stripes = pending.stripeCount
        let start = nextStripe.load(ordering: .relaxed)
        var stopped = start
        for admittedOnly in [true, false] {
            for step in 0..<stripes where taken.count < maximum {
                let index = (start + step) % stripes
                pending.withStripe(index) { stripe in
                    var keys: [Fingerprint] = []
                    for (key, value) in stripe where taken.count < maximum && (!admittedOnly || value.hits > 0) {
                        taken.append(value)
                        keys.append(key)
                    }
                    // Removed after the walk: removing during it would copy the stripe's storage.
                    for key in keys { stripe[key] = nil }
                }
                if taken.count >= maximum { stopped = index }
            }
        }
        nextStripe.store(stopped, ordering: .relaxed)
        return taken
    }

    /// Puts back entries a sync could not deliver, merged with what was recorded since.
    func restore(_ entries: [Pending]) {
        for entry in entries {
            let kept = pending.update(entry.key.combined(with: entry.limit.identity)) { value -> Bool in
                if value != nil {
                    value?.hits &+= entry.hits
                    return true
                }
                guard pending.count < capacity else { return false }
                value = entry
                return true
            }
            if !kept { dropped.add(1, ordering: .relaxed) }
        }
    }

    /// Hits recorded for `entry` since the drain (what a sync replays on the state it adopts).
    func recordedSince(_ entry: Pending) -> UInt64 {
        pending.read(entry.key.combined(with: entry.limit.identity)) { $0?.hits ?? 0 }
    }

    /// The sync entry of `pending` at `now` (ns).
    static func entry(_ pending: Pending, now: Int64) -> SyncScript.Entry {
        let spec = pending.spec
        return SyncScript.Entry(key: .string(RedisBackend.keyName(pending.key, pending.limit)), nowMicros: now / 1_000,
                                algorithm: Int64(spec.algorithm.rawValue), limit: Int64(clamping: spec.limit),
                                periodMicros: spec.period / 1_000, burst: Int64(clamping: spec.burst), hits: Int64(clamping: pending.hits))
    }

    /// The table state a sync reply describes for `spec`; nil for a reply of the wrong shape.
    static func state(_ reply: RESPValue, spec: LimitSpec) -> LimiterState? {
        guard let fields = reply.elements?.compactMap(\.integer), fields.dropFirst().allSatisfy({ $0 >= 0 }),
              fields.first.map({ $0 >= 0 || spec.algorithm == .tokenBucket }) == true else { return nil }
        func nanoseconds(_ micros: Int64) -> Int64? {
            let (value, overflow) = micros.multipliedReportingOverflow(by: 1_000)
            return overflow ? nil : value
        }
        switch spec.algorithm {
        case .gcra:
            guard fields.count == 1, let tat = nanoseconds(fields[0]) else { return nil }
            return .gcra(GCRAState(tat: tat))
        case .tokenBucket:
            guard fields.count == 2, let last = nanoseconds(fields[1]), spec.limit > 0 else { return nil }
            guard fields[0] < 0 else { return .tokenBucket(TokenBucketState(level: UInt128(fields[0]) * 1_000, last: last)) }
            // A level in debt is an empty bucket that starts to fill once the debt is refilled:
            // `debt / limit` later.
            let debt = UInt128(fields[0].magnitude) * 1_000
            let wait = (debt + UInt128(spec.limit) - 1) / UInt128(spec.limit)
            let (later, overflow) = last.addingReportingOverflow(Int64(clamping: wait))
            return .tokenBucket(TokenBucketState(level: 0, last: overflow ? .max : later))
        case .slidingWindow:
            guard fields.count == 3, let start = nanoseconds(fields[0]) else { return nil }
            return .slidingWindow(SlidingWindowState(start: start, current: UInt64(fields[1]), previous: UInt64(fields[2])))
        case .fixedWindow:
            guard fields.count == 2, let start = nanoseconds(fields[0]) else { return nil }
            return .fixedWindow(FixedWindowState(start: start, count: UInt64(fields[1])))
        case .concurrency:
            return nil
        }
    }
}
