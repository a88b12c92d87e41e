#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CSluiceSupport
import Synchronization

/// One lock stripe of the ``LimiterTable``: an open-addressing table whose slots hold the entries
/// themselves, so a lookup usually costs one cache miss.
///
/// Linear probing with backward-shift deletion (no tombstones). Capacity grows by 1.5× (slots are
/// found with a multiply-shift "fast range", so it need not be a power of two), which keeps the
/// load between about 0.53 and 0.8 and the memory per key low. Eviction is CLOCK (second chance):
/// each access sets a referenced bit, and the hand evicts the first entry whose bit is clear,
/// clearing bits as it passes. That approximates least-recently-used without the two extra cache
/// misses per check that maintaining a linked list costs. The same hand reclaims entries that are
/// fully recovered, in bursts.
///
/// Every method except `init` must be called with the lock held.
@usableFromInline
final class Shard: @unchecked Sendable {
    /// 48 bytes: fingerprint, state, flags, the key's shard bits, expiry (whole seconds since the
    /// epoch, rounded up). `keyBits` fills what was padding: the entry is stored under the
    /// fingerprint of (tenant, key, limit), but its shard is chosen by (tenant, key), so a
    /// snapshot needs these bits to put the entry back in the right shard, even under another
    /// shard count.
    @usableFromInline
    struct Entry: Sendable {
        var high: UInt64
        var low: UInt64
        var state: LimiterState
        var flags: UInt8
        var keyBits: UInt16
        var expiry: UInt32

        static let occupied: UInt8 = 1
        static let referenced: UInt8 = 2
        static let empty = Entry(high: 0, low: 0, state: .gcra(GCRAState()), flags: 0, keyBits: 0, expiry: 0)

        @inline(__always) var isOccupied: Bool { flags & Self.occupied != 0 }

        @inline(__always)
        func matches(_ fingerprint: Fingerprint) -> Bool {
            flags & Self.occupied != 0 && low == fingerprint.low && high == fingerprint.high
        }
    }

    static let maxLoadNumerator = 4, maxLoadDenominator = 5
    static let initialCapacity = 64
    /// Slots the hand examines per burst, and checks between bursts: one slot per check on average.
    static let sweepBurst = 32

    let seed: UInt64
    let maxEntries: Int
    /// Whether the hand forgets fully recovered entries (see ``LimiterTable/init(shardCount:maxEntries:seed:reclaimsRecovered:)``).
    let reclaims: Bool

    var slots: UnsafeMutablePointer<Entry> {
        didSet { prefetchBase.store(UInt(bitPattern: slots), ordering: .relaxed) }
    }
    var capacity: Int {
        didSet { prefetchCapacity.store(capacity, ordering: .relaxed) }
    }
    /// Copies of `slots` and `capacity` readable without the lock, for prefetch hints only: a
    /// stale pair yields a useless (never a faulting) prefetch.
    let prefetchBase = Atomic<UInt>(0)
    let prefetchCapacity = Atomic<Int>(0)
    var count = 0
    var hand = 0
    var sweepCountdown = 0
    var leaseCounter: UInt64 = 0

    /// The lease lists of concurrency entries, by fingerprint; their slots hold a plain summary
    /// so that slots stay plain data (see ``LimiterState``).
    var leaseSets: [Fingerprint: LeaseSet] = [:]

    var checks: UInt64 = 0
    var allowed: UInt64 = 0
    var denied: UInt64 = 0
    var evictions: UInt64 = 0
    var reclaimed: UInt64 = 0
    var shrinks: UInt64 = 0

    init(maxEntries: Int, seed: UInt64, reclaims: Bool = true) {
        self.maxEntries = max(1, maxEntries)
        self.reclaims = reclaims
        self.seed = seed
        capacity = Self.initialCapacity
        slots = Self.allocateSlots(capacity)
        prefetchBase.store(UInt(bitPattern: slots), ordering: .relaxed)
        prefetchCapacity.store(capacity, ordering: .relaxed)
    }

    /// Starts loading the slot where `fingerprint` would live, without taking the lock.
    @inline(__always)
    func prefetch(_ fingerprint: Fingerprint) {
        let base = prefetchBase.load(ordering: .relaxed)
        let capacity = prefetchCapacity.load(ordering: .relaxed)
        let mixed = StableHasher.finalMix(fingerprint.low ^ seed)
        let position = Int(truncatingIfNeeded: mixed.multipliedFullWidth(by: UInt64(capacity)).high)
        let address = base &+ UInt(position &* MemoryLayout<Entry>.stride)
        // The home entry and the two after it (144 bytes, three or four cache lines): with linear
        // probing at load 0.53-0.8 the key is often one or two slots past its home, and the
        // profile showed that probe's miss as the largest cost once only the home was fetched.
        // Prefetching past the end of the slots is harmless: a prefetch never faults.
        sluice_prefetch(UnsafeRawPointer(bitPattern: address))
        sluice_prefetch(UnsafeRawPointer(bitPattern: address &+ 64))
        sluice_prefetch(UnsafeRawPointer(bitPattern: address &+ 128))
        sluice_prefetch(UnsafeRawPointer(bitPattern: address &+ UInt(3 * MemoryLayout<Entry>.stride - 1)))
    }

    deinit {
        Self.freeSlots(slots, capacity)
    }

    /// Slot arrays of 1 MiB and more are mapped on their own, rounded to 2 MiB and advised to use
    /// transparent huge pages: a lookup in a large table then costs a cache miss but rarely a TLB
    /// miss (a page walk, which in a VM is itself several misses). Unmapping on growth returns the
    /// memory at once, which malloc'd blocks of this size would not.
    static let hugePage = 2 << 20
    static let mapThreshold = 1 << 20

    static func mappedBytes(_ capacity: Int) -> Int? {
        let bytes = capacity * MemoryLayout<Entry>.stride
        guard bytes >= mapThreshold else { return nil }
        return (bytes + hugePage - 1) / hugePage * hugePage
    }

    static func allocateSlots(_ capacity: Int) -> UnsafeMutablePointer<Entry> {
        let slots: UnsafeMutablePointer<Entry>
        #if os(Linux)
        if let bytes = mappedBytes(capacity),
           let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED {
            _ = madvise(raw, bytes, MADV_HUGEPAGE)
            slots = raw.bindMemory(to: Entry.self, capacity: capacity)
        } else {
            slots = .allocate(capacity: capacity)
        }
        #else
        slots = .allocate(capacity: capacity)
        #endif
        slots.initialize(repeating: .empty, count: capacity)
        return slots
    }

    static func freeSlots(_ slots: UnsafeMutablePointer<Entry>, _ capacity: Int) {
        slots.deinitialize(count: capacity)
        #if os(Linux)
        if let bytes = mappedBytes(capacity) {
            // Mapped by allocateSlots unless mmap failed there; a failed munmap means the block
            // came from the fallback allocation.
            if munmap(UnsafeMutableRawPointer(slots), bytes) == 0 { return }
        }
        #endif
        slots.deallocate()
    }

    /// The shard's lock: test-and-test-and-set, released with a plain store.
    ///
    /// Measured against pthread_mutex (docs/BENCHMARKS.md): glibc's unlock is a locked
    /// read-modify-write, a full fence that waits for the check's cache-missing stores; this
    /// release does not, which took batched decisions from 3.9 to 5.4 M/s per core. Critical
    /// sections are a few hundred nanoseconds; after 256 spins a waiter yields, so a preempted
    /// holder costs the waiter a reschedule, not a burnt core.
    let spin = Atomic<Bool>(false)

    @inline(__always)
    func lock() {
        while true {
            if !spin.load(ordering: .relaxed), spin.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged { return }
            var spins = 0
            while spin.load(ordering: .relaxed) {
                spins += 1
                if spins > 256 { sched_yield(); spins = 0 }
            }
        }
    }

    @inline(__always)
    func unlock() { spin.store(false, ordering: .releasing) }

    /// Bytes this shard has allocated for its slots.
    var allocatedBytes: Int { Self.mappedBytes(capacity) ?? capacity * MemoryLayout<Entry>.stride }

    // MARK: slots

    @inline(__always)
    func home(_ high: UInt64, _ low: UInt64) -> Int {
        let mixed = StableHasher.finalMix(low ^ seed)
        return Int(truncatingIfNeeded: mixed.multipliedFullWidth(by: UInt64(capacity)).high)
    }

    @inline(__always)
    func next(_ position: Int) -> Int { position + 1 == capacity ? 0 : position + 1 }

    /// The slot holding `fingerprint`, or nil.
    @inline(__always)
    func find(_ fingerprint: Fingerprint) -> Int? {
        var position = home(fingerprint.high, fingerprint.low)
        while true {
            let entry = slots + position
            if entry.pointee.matches(fingerprint) { return position }
            if !entry.pointee.isOccupied { return nil }
            position = next(position)
        }
    }

    /// Empties slot `position`, shifting later members of its probe run back (no tombstones).
    func remove(at position: Int) {
        if case .concurrency = slots[position].state {
            leaseSets.removeValue(forKey: Fingerprint(high: slots[position].high, low: slots[position].low))
        }
        var hole = position
        var probe = position
        while true {
            probe = next(probe)
            guard slots[probe].isOccupied else { break }
            let wanted = home(slots[probe].high, slots[probe].low)
            // Move the entry back unless its home lies cyclically in (hole, probe].
            let toProbe = probe >= wanted ? probe - wanted : probe + capacity - wanted
            let toHole = hole >= wanted ? hole - wanted : hole + capacity - wanted
            if toHole < toProbe {
                slots[hole] = slots[probe]
                hole = probe
            }
        }
        slots[hole] = .empty
        count -= 1
    }

    func place(_ entry: Entry) {
        var position = home(entry.high, entry.low)
        while slots[position].isOccupied { position = next(position) }
        slots[position] = entry
    }

    func grow() { resize(to: capacity + capacity / 2) }

    /// Rebuilds the slots at `newCapacity` (which must hold every entry below the maximum load).
    func resize(to newCapacity: Int) {
        let old = slots
        let oldCapacity = capacity
        capacity = newCapacity
        slots = Self.allocateSlots(capacity)
        for position in 0..<oldCapacity where old[position].isOccupied {
            place(old[position])
        }
        Self.freeSlots(old, oldCapacity)
    }

    /// Moves the hand one slot down, wrapping from 0 to the top.
    ///
    /// The hand walks *down* because removal shifts the rest of a probe run back towards lower
    /// slots: walking down, the entries above the hand were already visited, so reclaiming a run
    /// of expired entries moves nothing. Walking up, each removal shifted the whole remaining
    /// run into the hand's slot, which was quadratic in the run's length.
    @inline(__always)
    func advanceHand() { hand = hand <= 0 ? capacity - 1 : hand - 1 }

    /// Evicts one entry by CLOCK: the first the hand finds without its referenced bit.
    func evictOne() {
        for _ in 0...(2 * capacity) {
            if hand >= capacity { hand = capacity - 1 }
            if slots[hand].isOccupied {
                if slots[hand].flags & Entry.referenced != 0 {
                    slots[hand].flags &= ~Entry.referenced
                } else {
                    remove(at: hand)
                    advanceHand()
                    evictions &+= 1
                    return
                }
            }
            advanceHand()
        }
    }

    func insert(_ fingerprint: Fingerprint, state: LimiterState, expiry: UInt32, keyBits: UInt16) {
        if count >= maxEntries { evictOne() }
        if (count + 1) * Self.maxLoadDenominator > capacity * Self.maxLoadNumerator { grow() }
        place(Entry(high: fingerprint.high, low: fingerprint.low, state: state,
                    flags: Entry.occupied | Entry.referenced, keyBits: keyBits, expiry: expiry))
        count += 1
    }

    /// Every `sweepBurst` checks, forgets the fully recovered entries among the next `sweepBurst`
    /// slots. Bursts of adjacent slots let the loads overlap; two slots per check cost a cache
    /// miss each time, as the profile showed.
    @inline(__always)
    func sweep(now: Int64) {
        guard reclaims else { return }
        sweepCountdown -= 1
        guard sweepCountdown <= 0 else { return }
        sweepCountdown = Self.sweepBurst
        sweep(now: now, budget: Self.sweepBurst)
        // After a spike, give the memory back: below a fifth full, rebuild at about half full.
        if count * 5 < capacity, capacity > 4 * Self.initialCapacity {
            resize(to: max(Self.initialCapacity, count * 2))
            shrinks &+= 1
        }
    }

    /// Forgets up to `budget` entries that are fully recovered at `now`, advancing the hand.
    func sweep(now: Int64, budget: Int) {
        guard count > 0 else { return }
        let seconds = now <= 0 ? 0 : UInt64(now / 1_000_000_000)
        for _ in 0..<budget {
            if hand >= capacity { hand = capacity - 1 }
            if slots[hand].isOccupied, UInt64(slots[hand].expiry) <= seconds {
                // Whatever shifts into this slot comes from above: visited already.
                remove(at: hand)
                reclaimed &+= 1
            }
            advanceHand()
        }
    }

    /// Whole seconds since the epoch at which `state` is recovered, rounded up.
    @inline(__always)
    static func expiry(_ state: LimiterState, _ spec: LimitSpec) -> UInt32 {
        expiry(seconds: state.recoveredAt(spec))
    }

    @inline(__always)
    static func expiry(seconds recoveredAt: Int64) -> UInt32 {
        if recoveredAt <= 0 { return 0 }
        let seconds = recoveredAt / 1_000_000_000 + (recoveredAt % 1_000_000_000 == 0 ? 0 : 1)
        return seconds >= Int64(UInt32.max) ? .max : UInt32(seconds)
    }

    /// This shard's secret for lease ids, from the system's random source.
    let leaseSecret = (UInt64.random(in: .min ... .max), UInt64.random(in: .min ... .max))

    /// A new lease id: a keyed hash (SipHash, seeded per process, and the shard's secret) of a
    /// counter, so that ids are unique among a key's leases yet unguessable: a client cannot
    /// release another client's lease by trying ids. Never 0, which means "no lease".
    func nextLeaseID() -> UInt64 {
        leaseCounter &+= 1
        var hasher = Hasher()
        hasher.combine(leaseSecret.0)
        hasher.combine(leaseSecret.1)
        hasher.combine(leaseCounter)
        let id = UInt64(bitPattern: Int64(hasher.finalize()))
        return id == 0 ? 1 : id
    }

    // MARK: decisions

    @inline(__always)
    func state(at position: Int?, for spec: LimitSpec, now: Int64) -> LimiterState {
        if let position, slots[position].state.matches(spec.algorithm) { return slots[position].state }
        return .fresh(spec, now: now)
    }

    @inline(__always)
    func store(_ state: LimiterState, at position: Int?, fingerprint: Fingerprint, spec: LimitSpec, keyBits: UInt16) {
        let expiry = Self.expiry(state, spec)
        if let position {
            slots[position].state = state
            slots[position].expiry = expiry
            slots[position].flags |= Entry.referenced
        } else {
            insert(fingerprint, state: state, expiry: expiry, keyBits: keyBits)
        }
    }

    /// Evaluates one limit for `fingerprint`; with `commit`, an allowed check consumes.
    /// Either way an existing entry is marked used: a key being denied is in use, and evicting
    /// it would hand its caller a fresh limit.
    @inline(__always)
    func decide(_ fingerprint: Fingerprint, spec: LimitSpec, hits: UInt64, now: Int64, commit: Bool, keyBits: UInt16) -> Decision {
        let position = find(fingerprint)
        if spec.algorithm == .concurrency {
            return decideLeases(fingerprint, at: position, spec: spec, hits: hits, now: now, commit: commit, keyBits: keyBits)
        }
        // GCRA, the default, in place: no enum round trip for the common case.
        if spec.algorithm == .gcra, let position, case .gcra(let gcra) = slots[position].state {
            let (decision, next) = gcra.evaluate(hits: hits, now: now, spec: spec)
            if commit, decision.allowed, hits > 0 {
                slots[position].state = .gcra(next)
                slots[position].expiry = Self.expiry(seconds: next.tat)
            }
            slots[position].flags |= Entry.referenced
            return decision
        }
        let (decision, next) = state(at: position, for: spec, now: now).evaluate(hits: hits, now: now, spec: spec)
        if commit, decision.allowed, hits > 0 {
            store(next, at: position, fingerprint: fingerprint, spec: spec, keyBits: keyBits)
        } else if let position {
            slots[position].flags |= Entry.referenced
        }
        return decision
    }

    func decideLeases(_ fingerprint: Fingerprint, at position: Int?, spec: LimitSpec, hits: UInt64, now: Int64,
                      commit: Bool, keyBits: UInt16) -> Decision {
        var leases = LeaseSet()
        if let position, case .concurrency = slots[position].state { leases = leaseSets[fingerprint] ?? LeaseSet() }
        let leaseID = commit && hits > 0 ? nextLeaseID() : 0
        let (decision, next) = leases.evaluate(hits: hits, now: now, spec: spec, leaseID: leaseID)
        if commit, decision.allowed, hits > 0 {
            leaseSets[fingerprint] = next
            store(.concurrency(LeaseSummary(latestExpiry: next.recoveredAt)), at: position, fingerprint: fingerprint, spec: spec,
                  keyBits: keyBits)
        } else if let position {
            slots[position].flags |= Entry.referenced
        }
        return decision
    }

    /// One GCRA limit, no multiplier: the default and by far the most common check, decided with
    /// scalars and without the generic machinery (instruction counts in docs/BENCHMARKS.md).
    /// Same decisions as `check(key:limits:...)`; the reference-model and batch tests cover it.
    @inline(__always)
    func checkGCRA(_ fingerprint: Fingerprint, spec: LimitSpec, hits: UInt64, now: Int64, keyBits: UInt16) -> Decision {
        sweep(now: now)
        checks &+= 1
        guard hits > 0, hits <= spec.burst, let position = find(fingerprint),
              case .gcra(let state) = slots[position].state else {
            // Peeks, capacity denials and new keys take the general path.
            let decision = decide(fingerprint, spec: spec, hits: hits, now: now, commit: true, keyBits: keyBits)
            if decision.allowed { allowed &+= 1 } else { denied &+= 1 }
            return decision
        }
        let interval = spec.emissionInterval, tolerance = spec.tolerance
        let base = max(state.tat, now)
        let newTat = base &+ interval &* Int64(hits)
        let allowAt = newTat &- tolerance
        slots[position].flags |= Entry.referenced
        if allowAt > now {
            denied &+= 1
            let usedBefore = base &- now
            return Decision(allowed: false, limit: spec.limit,
                            remaining: tolerance > usedBefore ? UInt64((tolerance &- usedBefore) / interval) : 0,
                            resetAfter: usedBefore, retryAfter: allowAt &- now, reason: .overLimit, algorithm: .gcra)
        }
        allowed &+= 1
        slots[position].state = .gcra(GCRAState(tat: newTat))
        slots[position].expiry = Self.expiry(seconds: newTat)
        let used = newTat &- now
        return Decision(allowed: true, limit: spec.limit, remaining: UInt64((tolerance &- used) / interval),
                        resetAfter: used, retryAfter: 0, reason: .withinLimit, algorithm: .gcra)
    }

    /// Decides `hits` for `key` against every limit in `limits`: allowed only if all allow, and
    /// then all consume; otherwise none does.
    func check(
        key: Fingerprint, limits: UnsafeBufferPointer<BoundLimit>, hits: UInt64, now: Int64, multiplier: Double
    ) -> Decision {
        sweep(now: now)
        checks &+= 1
        if limits.count == 1 {
            let decision = decide(key.combined(with: limits[0].identity), spec: limits[0].spec.scaled(by: multiplier),
                                  hits: hits, now: now, commit: true, keyBits: key.shardBits)
            if decision.allowed { allowed &+= 1 } else { denied &+= 1 }
            return decision
        }
        var result: Decision? = nil
        for (index, limit) in limits.enumerated() {
            var decision = decide(key.combined(with: limit.identity), spec: limit.spec.scaled(by: multiplier),
                                  hits: hits, now: now, commit: false, keyBits: key.shardBits)
            decision.limitIndex = UInt32(index)
            result = Self.tighter(result, decision)
        }
        guard var decision = result else {
            return Decision(allowed: false, limit: 0, remaining: 0, resetAfter: 0, retryAfter: 0,
                            reason: .exceedsCapacity, algorithm: .gcra)
        }
        guard decision.allowed else {
            denied &+= 1
            return decision
        }
        allowed &+= 1
        guard hits > 0 else { return decision }
        // Every limit allows: commit each. Evaluation is deterministic, so this repeats pass one.
        for limit in limits {
            let committed = decide(key.combined(with: limit.identity), spec: limit.spec.scaled(by: multiplier),
                                   hits: hits, now: now, commit: true, keyBits: key.shardBits)
            if committed.leaseID != 0, decision.leaseID == 0 { decision.leaseID = committed.leaseID }
        }
        return decision
    }

    /// Whether `check` would allow `hits` if each limit's capacity were `factor` (< 1) times what it
    /// is, given the state the enforced limits built; nothing is consumed or counted.
    ///
    /// Each limit's state is kept in its own units (time for GCRA, counts for windows), built by
    /// the enforced limit: scaling the limit would reread that state in other units. Instead the
    /// capacity taken away is charged as extra hits against the enforced limit: "used + hits ≤
    /// factor × capacity" is "used + hits + (1 - factor) × capacity ≤ capacity".
    func evaluate(
        key: Fingerprint, limits: UnsafeBufferPointer<BoundLimit>, hits: UInt64, now: Int64, multiplier: Double, factor: Double
    ) -> Decision {
        var result: Decision? = nil
        for (index, limit) in limits.enumerated() {
            let spec = limit.spec.scaled(by: multiplier)
            let capacity = spec.algorithm == .gcra || spec.algorithm == .tokenBucket ? spec.burst : spec.limit
            let kept = factor < 1 ? max(1, UInt64((Double(capacity) * factor).rounded(.down))) : capacity
            var decision = decide(key.combined(with: limit.identity), spec: spec, hits: hits &+ (capacity - kept),
                                  now: now, commit: false, keyBits: key.shardBits)
            decision.limitIndex = UInt32(index)
            if !decision.allowed { decision.reason = hits > kept ? .exceedsCapacity : .overLimit }
            result = Self.tighter(result, decision)
        }
        return result ?? Decision(allowed: false, limit: 0, remaining: 0, resetAfter: 0, retryAfter: 0,
                                  reason: .exceedsCapacity, algorithm: .gcra)
    }

    /// Of two decisions, the one a caller must heed: a denial over an allowance (the capacity
    /// denial first, then the longest wait); between allowances, the least remaining.
    static func tighter(_ current: Decision?, _ candidate: Decision) -> Decision {
        guard let current else { return candidate }
        switch (current.allowed, candidate.allowed) {
        case (true, false): return candidate
        case (false, true): return current
        case (false, false):
            if current.reason == .exceedsCapacity { return current }
            if candidate.reason == .exceedsCapacity { return candidate }
            return candidate.retryAfter > current.retryAfter ? candidate : current
        case (true, true):
            if candidate.remaining != current.remaining {
                return candidate.remaining < current.remaining ? candidate : current
            }
            return candidate.resetAfter > current.resetAfter ? candidate : current
        }
    }

    /// Replaces the state of `fingerprint` with `state` (made for `spec`), then consumes `hits`
    /// from it without a check (fast mode's sync: the fleet's state, plus what this daemon
    /// admitted since it was read).
    func adopt(_ fingerprint: Fingerprint, state: LimiterState, spec: LimitSpec, hits: UInt64, now: Int64, keyBits: UInt16) {
        store(state.consuming(hits, now: now, spec: spec), at: find(fingerprint), fingerprint: fingerprint, spec: spec, keyBits: keyBits)
    }

    /// Returns lease `leaseID` of `limit` for `key` early.
    func release(key: Fingerprint, limit: BoundLimit, leaseID: UInt64, now: Int64) -> Bool {
        let fingerprint = key.combined(with: limit.identity)
        guard let position = find(fingerprint), case .concurrency = slots[position].state,
              var leases = leaseSets[fingerprint] else { return false }
        let released = leases.release(leaseID, now: now)
        leaseSets[fingerprint] = leases
        let state = LimiterState.concurrency(LeaseSummary(latestExpiry: leases.recoveredAt))
        slots[position].state = state
        slots[position].expiry = Self.expiry(state, limit.spec)
        slots[position].flags |= Entry.referenced
        return released
    }
}
