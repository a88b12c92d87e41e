import NIOConcurrencyHelpers

/// One lock stripe of the ``LimiterTable``: an open-addressing index over a slab of entries kept
/// in least-recently-used order.
///
/// Every method except `init` must be called with `lock` held. The index stores, per slot, the
/// high 32 bits of the entry's fingerprint (a tag that saves most slab reads on a probe) and the
/// entry's slab position; slab positions never move, so the LRU links stay valid.
@usableFromInline
final class Shard: @unchecked Sendable {
    @usableFromInline
    struct Entry {
        var fingerprint: Fingerprint
        var recoveredAt: Int64
        var newer: UInt32
        var older: UInt32
        var state: LimiterState
    }

    static let none: UInt32 = .max
    static let freeMark: UInt32 = .max - 1
    static let emptySlot: UInt64 = .max
    static let maxIndexLoadNumerator = 3, maxIndexLoadDenominator = 4

    @usableFromInline let lock = NIOLock()
    let seed: UInt64
    let shardIndex: UInt64
    let shardBits: UInt64
    let maxEntries: Int

    var entries: UnsafeMutablePointer<Entry>
    var entryCapacity: Int
    var entryHigh = 0
    var freeHead: UInt32 = none
    var index: UnsafeMutablePointer<UInt64>
    var indexMask: Int
    var count = 0
    var mostRecent: UInt32 = none
    var leastRecent: UInt32 = none
    var sweepHand = 0
    var leaseCounter: UInt64 = 0

    var checks: UInt64 = 0
    var allowed: UInt64 = 0
    var denied: UInt64 = 0
    var evictions: UInt64 = 0
    var reclaimed: UInt64 = 0

    init(maxEntries: Int, seed: UInt64, shardIndex: Int, shardBits: Int) {
        self.maxEntries = max(1, maxEntries)
        self.seed = seed
        self.shardIndex = UInt64(shardIndex)
        self.shardBits = UInt64(shardBits)
        entryCapacity = 16
        entries = .allocate(capacity: entryCapacity)
        indexMask = 31
        index = .allocate(capacity: indexMask + 1)
        index.initialize(repeating: Self.emptySlot, count: indexMask + 1)
    }

    deinit {
        entries.deinitialize(count: entryHigh)
        entries.deallocate()
        index.deallocate()
    }

    /// Bytes this shard has allocated.
    var allocatedBytes: Int { entryCapacity * MemoryLayout<Entry>.stride + (indexMask + 1) * 8 }

    // MARK: index

    @inline(__always)
    func home(_ fingerprint: Fingerprint) -> Int {
        Int(truncatingIfNeeded: StableHasher.finalMix(fingerprint.low ^ seed)) & indexMask
    }

    @inline(__always)
    static func tag(_ fingerprint: Fingerprint) -> UInt64 { fingerprint.high & 0xFFFF_FFFF_0000_0000 }

    /// The slab position of `fingerprint`'s entry, or nil.
    @inline(__always)
    func find(_ fingerprint: Fingerprint) -> Int? {
        var position = home(fingerprint)
        let tag = Self.tag(fingerprint)
        while true {
            let slot = index[position]
            if slot == Self.emptySlot { return nil }
            if slot & 0xFFFF_FFFF_0000_0000 == tag {
                let entry = Int(truncatingIfNeeded: slot & 0xFFFF_FFFF)
                if entries[entry].fingerprint == fingerprint { return entry }
            }
            position = (position &+ 1) & indexMask
        }
    }

    func indexPosition(ofEntry entry: Int) -> Int? {
        let fingerprint = entries[entry].fingerprint
        let expected = Self.tag(fingerprint) | UInt64(entry)
        var position = home(fingerprint)
        while true {
            let slot = index[position]
            if slot == expected { return position }
            if slot == Self.emptySlot { return nil }
            position = (position &+ 1) & indexMask
        }
    }

    func placeInIndex(_ fingerprint: Fingerprint, entry: Int) {
        var position = home(fingerprint)
        while index[position] != Self.emptySlot { position = (position &+ 1) & indexMask }
        index[position] = Self.tag(fingerprint) | UInt64(entry)
    }

    /// Deletes index slot `position`, shifting later members of its probe run back (no tombstones).
    func removeFromIndex(at position: Int) {
        var hole = position
        var probe = position
        while true {
            probe = (probe &+ 1) & indexMask
            let slot = index[probe]
            if slot == Self.emptySlot { break }
            let wanted = home(entries[Int(truncatingIfNeeded: slot & 0xFFFF_FFFF)].fingerprint)
            // Move the slot back unless its home lies cyclically in (hole, probe].
            let distanceToProbe = (probe &- wanted) & indexMask
            let distanceToHole = (hole &- wanted) & indexMask
            if distanceToHole < distanceToProbe {
                index[hole] = slot
                hole = probe
            }
        }
        index[hole] = Self.emptySlot
    }

    func growIndex() {
        let oldMask = indexMask
        let old = index
        indexMask = (oldMask + 1) * 2 - 1
        index = .allocate(capacity: indexMask + 1)
        index.initialize(repeating: Self.emptySlot, count: indexMask + 1)
        for position in 0...oldMask where old[position] != Self.emptySlot {
            let entry = Int(truncatingIfNeeded: old[position] & 0xFFFF_FFFF)
            placeInIndex(entries[entry].fingerprint, entry: entry)
        }
        old.deallocate()
    }

    // MARK: LRU list

    @inline(__always)
    func unlink(_ entry: Int) {
        let newer = entries[entry].newer, older = entries[entry].older
        if newer == Self.none { mostRecent = older } else { entries[Int(newer)].older = older }
        if older == Self.none { leastRecent = newer } else { entries[Int(older)].newer = newer }
    }

    @inline(__always)
    func pushMostRecent(_ entry: Int) {
        entries[entry].newer = Self.none
        entries[entry].older = mostRecent
        if mostRecent != Self.none { entries[Int(mostRecent)].newer = UInt32(entry) }
        mostRecent = UInt32(entry)
        if leastRecent == Self.none { leastRecent = UInt32(entry) }
    }

    @inline(__always)
    func touch(_ entry: Int) {
        guard mostRecent != UInt32(entry) else { return }
        unlink(entry)
        pushMostRecent(entry)
    }

    // MARK: entries

    func remove(entry: Int) {
        if let position = indexPosition(ofEntry: entry) { removeFromIndex(at: position) }
        unlink(entry)
        entries[entry].state = .gcra(GCRAState())
        entries[entry].older = Self.freeMark
        entries[entry].newer = freeHead
        freeHead = UInt32(entry)
        count -= 1
    }

    func insert(_ fingerprint: Fingerprint, state: LimiterState, recoveredAt: Int64) -> Int {
        if count >= maxEntries, leastRecent != Self.none {
            remove(entry: Int(leastRecent))
            evictions &+= 1
        }
        if (count + 1) * Self.maxIndexLoadDenominator > (indexMask + 1) * Self.maxIndexLoadNumerator {
            growIndex()
        }
        let entry: Int
        if freeHead != Self.none {
            entry = Int(freeHead)
            freeHead = entries[entry].newer
            entries[entry] = Entry(fingerprint: fingerprint, recoveredAt: recoveredAt, newer: Self.none,
                                   older: Self.none, state: state)
        } else {
            if entryHigh == entryCapacity { growSlab() }
            entry = entryHigh
            (entries + entry).initialize(to: Entry(fingerprint: fingerprint, recoveredAt: recoveredAt,
                                                   newer: Self.none, older: Self.none, state: state))
            entryHigh += 1
        }
        placeInIndex(fingerprint, entry: entry)
        pushMostRecent(entry)
        count += 1
        return entry
    }

    func growSlab() {
        // 1.25× growth keeps slack memory per key low; the copy is amortized over many inserts.
        let newCapacity = min(Int(UInt32.max) - 2, max(entryCapacity + 16, entryCapacity + entryCapacity / 4))
        let grown = UnsafeMutablePointer<Entry>.allocate(capacity: newCapacity)
        grown.moveInitialize(from: entries, count: entryHigh)
        entries.deallocate()
        entries = grown
        entryCapacity = newCapacity
    }

    /// Forgets up to `budget` entries that are fully recovered at `now`, walking the slab.
    @inline(__always)
    func sweep(now: Int64, budget: Int = 2) {
        guard entryHigh > 0 else { return }
        for _ in 0..<budget {
            if sweepHand >= entryHigh { sweepHand = 0 }
            if entries[sweepHand].older != Self.freeMark, entries[sweepHand].recoveredAt <= now {
                remove(entry: sweepHand)
                reclaimed &+= 1
            }
            sweepHand += 1
        }
    }

    func nextLeaseID() -> UInt64 {
        leaseCounter &+= 1
        return (leaseCounter << shardBits) | shardIndex
    }

    // MARK: decisions

    /// The stored state for `fingerprint` if it matches `spec`'s algorithm, else a fresh one.
    @inline(__always)
    func state(at entry: Int?, for spec: LimitSpec, now: Int64) -> LimiterState {
        if let entry, entries[entry].state.matches(spec.algorithm) { return entries[entry].state }
        return .fresh(spec, now: now)
    }

    @inline(__always)
    func store(_ state: LimiterState, at entry: Int?, fingerprint: Fingerprint, spec: LimitSpec) {
        let recoveredAt = state.recoveredAt(spec)
        if let entry {
            entries[entry].state = state
            entries[entry].recoveredAt = recoveredAt
            touch(entry)
        } else {
            _ = insert(fingerprint, state: state, recoveredAt: recoveredAt)
        }
    }

    /// Decides `hits` for the key `key` against every limit in `limits`: allowed only if all
    /// allow, and then all consume; otherwise none does.
    func check(
        key: Fingerprint, limits: UnsafeBufferPointer<BoundLimit>, hits: UInt64, now: Int64, multiplier: Double
    ) -> Decision {
        sweep(now: now)
        checks &+= 1
        if limits.count == 1 {
            let spec = limits[0].spec.scaled(by: multiplier)
            let fingerprint = key.combined(with: limits[0].identity)
            let entry = find(fingerprint)
            let leaseID = spec.algorithm == .concurrency && hits > 0 ? nextLeaseID() : 0
            let (decision, next) = state(at: entry, for: spec, now: now)
                .evaluate(hits: hits, now: now, spec: spec, leaseID: leaseID)
            if decision.allowed {
                allowed &+= 1
                if hits > 0 {
                    store(next, at: entry, fingerprint: fingerprint, spec: spec)
                    return decision
                }
            } else {
                denied &+= 1
            }
            // A key being denied is in use: evicting it would hand its caller a fresh limit.
            if let entry { touch(entry) }
            return decision
        }
        var result: Decision? = nil
        for (position, limit) in limits.enumerated() {
            let spec = limit.spec.scaled(by: multiplier)
            let fingerprint = key.combined(with: limit.identity)
            let entry = find(fingerprint)
            if let entry { touch(entry) }
            var (decision, _) = state(at: entry, for: spec, now: now)
                .evaluate(hits: hits, now: now, spec: spec)
            decision.limitIndex = UInt32(position)
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
            let spec = limit.spec.scaled(by: multiplier)
            let fingerprint = key.combined(with: limit.identity)
            let entry = find(fingerprint)
            let leaseID = spec.algorithm == .concurrency ? nextLeaseID() : 0
            let (committed, next) = state(at: entry, for: spec, now: now)
                .evaluate(hits: hits, now: now, spec: spec, leaseID: leaseID)
            if committed.leaseID != 0, decision.leaseID == 0 { decision.leaseID = committed.leaseID }
            store(next, at: entry, fingerprint: fingerprint, spec: spec)
        }
        return decision
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

    /// Returns lease `leaseID` of `limit` for `key` early.
    func release(key: Fingerprint, limit: BoundLimit, leaseID: UInt64, now: Int64) -> Bool {
        let fingerprint = key.combined(with: limit.identity)
        guard let entry = find(fingerprint), case .concurrency(var leases) = entries[entry].state else { return false }
        entries[entry].state = .gcra(GCRAState()) // drop the reference so the release mutates in place
        let released = leases.release(leaseID, now: now)
        entries[entry].state = .concurrency(leases)
        entries[entry].recoveredAt = leases.recoveredAt
        return released
    }
}
