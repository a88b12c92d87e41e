import Synchronization

/// A map from fingerprints to values, spread over lock stripes, with its size in an atomic:
/// the one concurrent map every in-memory book uses (reputation records, tiers, baselines,
/// anomaly responses).
///
/// A check reads one stripe under its lock; a sweep or a listing walks the stripes one at a
/// time, so it never holds more than one lock. ``count`` is one relaxed load, exact once the
/// writers are done (each change adjusts it after its stripe's lock is released), so a hot path
/// can skip a map that is empty without taking a lock.
///
/// The stripes are `Mutex`es in one allocation: an array of locked boxes cost a retain and a
/// release of the box and a `pthread_mutex` lock and unlock on every read (about 120
/// instructions; callgrind, docs/BENCHMARKS.md), where a `Mutex` takes one compare-and-swap.
///
/// A map made with a filter answers "certainly absent" (``mayContain(_:)``) with one relaxed
/// load and no lock: for books most checks miss (reputation records, anomaly responses). Each
/// stripe owns its range of filter words; a key's bit is set when it is written, and a stripe's
/// words are rebuilt from its keys, under its lock, when a sweep or a walk has removed some, so a
/// rebuild never loses a bit set concurrently. False positives (removed keys not yet swept,
/// keys sharing a bit) only cost the locked lookup.
public final class StripedMap<Value: Sendable>: @unchecked Sendable {
    /// `mask + 1` stripes, each guarding its dictionary; freed with the map.
    @usableFromInline let stripes: UnsafeMutablePointer<Mutex<[Fingerprint: Value]>>
    @usableFromInline let mask: Int
    @usableFromInline let shift: UInt64
    /// How many keys have a value: its own allocation, read through a pointer, so that reading it
    /// from another module costs no retain of the map (a call to the map's own getter did).
    @usableFromInline let counted: UnsafeMutablePointer<Atomic<Int>>
    /// The membership filter; nil without one.
    @usableFromInline let filter: KeyFilter?

    /// An empty map of `1 << stripeBits` stripes (at most 2^16).
    ///
    /// - Parameters:
    ///   - shift: the low bits of a fingerprint skipped when choosing its stripe, for a map used
    ///     beside another keyed by the same fingerprints (so that the two do not contend for the
    ///     same stripes in step).
    ///   - filterWordsPerStripe: 64-bit words of membership filter per stripe, rounded up to a
    ///     power of two (0: no filter). Its false-positive share is about the keys per stripe
    ///     over its bits.
    public init(stripeBits: Int, shift: Int = 0, filterWordsPerStripe: Int = 0) {
        let bits = min(max(stripeBits, 0), 16)
        stripes = .allocate(capacity: 1 << bits)
        for index in 0..<(1 << bits) { (stripes + index).initialize(to: Mutex([:])) }
        mask = (1 << bits) - 1
        self.shift = UInt64(min(max(shift, 0), 48))
        counted = .allocate(capacity: 1)
        counted.initialize(to: Atomic(0))
        filter = filterWordsPerStripe > 0 ? KeyFilter(stripes: 1 << bits, wordsPerStripe: filterWordsPerStripe) : nil
    }

    deinit {
        stripes.deinitialize(count: mask + 1)
        stripes.deallocate()
        counted.deinitialize(count: 1)
        counted.deallocate()
        filter?.deallocate()
    }

    /// False when `key` certainly has no value: one relaxed load, no lock. True means "look it
    /// up" (always, for a map without a filter).
    @inlinable @inline(__always)
    public func mayContain(_ key: Fingerprint) -> Bool {
        guard let filter else { return true }
        return filter.mayContain(key, stripe: stripe(of: key))
    }

    /// How many stripes there are.
    public var stripeCount: Int { mask + 1 }

    /// Runs `body` on stripe `index`'s dictionary under its lock (the count is the caller's).
    @inlinable @inline(__always)
    func locked<Result>(_ index: Int, _ body: (inout [Fingerprint: Value]) -> Result) -> Result {
        // What `body` returns leaves the lock boxed: `withLock` asks for a `sending` result,
        // which a result of unknown type is not known to be.
        (stripes + index).pointee.withLock { stripe in UnsafeSendable(body(&stripe)) }.value
    }

    /// The stripe `key` lives in.
    @inlinable @inline(__always)
    public func stripe(of key: Fingerprint) -> Int { Int(truncatingIfNeeded: key.low >> shift) & mask }

    /// How many keys have a value (one relaxed load).
    @inlinable
    public var count: Int { stripedMapCount(counted) }

    /// Whether no key has a value (one relaxed load).
    @inlinable
    public var isEmpty: Bool { stripedMapCount(counted) == 0 }

    @usableFromInline
    func adjustCount(by delta: Int) {
        if delta != 0 { counted.pointee.add(delta, ordering: .relaxed) }
    }

    /// The value of `key`.
    @inlinable
    public func value(for key: Fingerprint) -> Value? {
        locked(stripe(of: key)) { $0[key] }
    }

    /// What `body` makes of the value of `key` (nil: none), under its stripe's lock: for a part of
    /// a large value without copying all of it.
    @inlinable
    public func read<Result>(_ key: Fingerprint, _ body: (Value?) -> Result) -> Result {
        locked(stripe(of: key)) { body($0[key]) }
    }

    /// Runs `body` on the value of `key` (nil: none) under its stripe's lock; what `body` leaves
    /// there becomes the value (nil removes it). `body` must be quick and must not use the map.
    @inlinable @discardableResult
    public func update<Result>(_ key: Fingerprint, _ body: (inout Value?) -> Result) -> Result {
        let (result, added) = locked(stripe(of: key)) { stripe -> (Result, Int) in
            // Marked before it may be written: a reader that sees no bit finds no value.
            filter?.mark(key, stripe: self.stripe(of: key))
            let before = stripe.count
            let result = body(&stripe[key])
            return (result, stripe.count - before)
        }
        adjustCount(by: added)
        return result
    }

    /// Sets the value of `key` (nil removes it); returns the one it replaced.
    @inlinable @discardableResult
    public func set(_ value: Value?, for key: Fingerprint) -> Value? {
        update(key) { slot in
            defer { slot = value }
            return slot
        }
    }

    /// Removes the value of `key`; returns it.
    @inlinable @discardableResult
    public func removeValue(for key: Fingerprint) -> Value? { set(nil, for: key) }

    /// Runs `body` on stripe `index`'s entries under its lock (the count and the filter follow
    /// what it does).
    @discardableResult
    public func withStripe<Result>(_ index: Int, _ body: (inout [Fingerprint: Value]) -> Result) -> Result {
        let (result, added) = locked(index) { stripe -> (Result, Int) in
            let before = stripe.count
            let result = body(&stripe)
            filter?.rebuild(stripe: index, keys: stripe.keys)
            return (result, stripe.count - before)
        }
        adjustCount(by: added)
        return result
    }

    /// Rebuilds the filter from the keys present, a stripe at a time (a sweep does it for the
    /// stripes it walks; this is for keys removed one by one).
    public func rebuildFilter() {
        guard filter != nil else { return }
        forEachStripe { _, _ in }
    }

    /// Runs `body` on every stripe in turn, each under its own lock.
    public func forEachStripe(_ body: (_ index: Int, inout [Fingerprint: Value]) -> Void) {
        for index in 0...mask { withStripe(index) { body(index, &$0) } }
    }

    /// Removes every entry `shouldRemove` picks, a stripe at a time; returns them.
    @discardableResult
    public func removeAll(where shouldRemove: (Fingerprint, Value) -> Bool) -> [(key: Fingerprint, value: Value)] {
        var removed: [(key: Fingerprint, value: Value)] = []
        forEachStripe { _, stripe in
            let start = removed.count
            for (key, value) in stripe where shouldRemove(key, value) { removed.append((key, value)) }
            // Removed after the walk: removing during it would copy the stripe's storage.
            for entry in removed[start...] { stripe[entry.key] = nil }
        }
        return removed
    }

    /// Every entry `isIncluded` picks (all by default), a stripe at a time: not one moment's view
    /// of the whole map while it changes.
    ///
    /// - Complexity: O(entries).
    public func entries(where isIncluded: (Fingerprint, Value) -> Bool = { _, _ in true }) -> [(key: Fingerprint, value: Value)] {
        var out: [(key: Fingerprint, value: Value)] = []
        for index in 0...mask {
            locked(index) { stripe in
                for (key, value) in stripe where isIncluded(key, value) { out.append((key, value)) }
            }
        }
        return out
    }

    /// Every value `isIncluded` picks (all by default).
    public func values(where isIncluded: (Value) -> Bool = { _ in true }) -> [Value] {
        var out: [Value] = []
        for index in 0...mask {
            locked(index) { stripe in
                for value in stripe.values where isIncluded(value) { out.append(value) }
            }
        }
        return out
    }
}

/// The count behind `counted` (one relaxed load). A function of its own, not inlinable: inlined
/// into another module, an atomic's operations were left generic and looked up their
/// conformance at run time (callgrind).
@usableFromInline
func stripedMapCount(_ counted: UnsafeMutablePointer<Atomic<Int>>) -> Int {
    counted.pointee.load(ordering: .relaxed)
}

/// A value carried out of a `Mutex`'s closure, which asks for a `sending` result: the caller's
/// result type is not known to be Sendable, and the lock is what makes handing it over safe.
@usableFromInline
struct UnsafeSendable<Value>: @unchecked Sendable {
    @usableFromInline let value: Value
    @inlinable init(_ value: Value) { self.value = value }
}

/// A map's membership filter (``StripedMap``): a range of 64-bit words per stripe, whose bit for
/// a key is set when the key is written and cleared when its stripe is rebuilt without it.
///
/// A struct of a pointer, freed by its map: loaded from the map it costs no retain (a class did,
/// on each check), and it is not generic, so its atomics are compiled once, specialized.
@usableFromInline
struct KeyFilter: @unchecked Sendable {
    let words: UnsafeMutablePointer<Atomic<UInt64>>
    let wordsPerStripe: Int
    let count: Int

    init(stripes: Int, wordsPerStripe: Int) {
        var size = 1
        while size < wordsPerStripe { size <<= 1 }
        self.wordsPerStripe = size
        count = stripes * size
        words = .allocate(capacity: count)
        for index in 0..<count { (words + index).initialize(to: Atomic(0)) }
    }

    func deallocate() {
        words.deinitialize(count: count)
        words.deallocate()
    }

    @inline(__always)
    func position(of key: Fingerprint, stripe: Int) -> (word: Int, bit: UInt64) {
        (stripe &* wordsPerStripe &+ Int(truncatingIfNeeded: key.high >> 6) & (wordsPerStripe &- 1), 1 << (key.high & 63))
    }

    /// Whether `key`'s bit is set (one relaxed load).
    @usableFromInline
    func mayContain(_ key: Fingerprint, stripe: Int) -> Bool {
        let (word, bit) = position(of: key, stripe: stripe)
        return words[word].load(ordering: .relaxed) & bit != 0
    }

    /// Sets `key`'s bit (with its stripe locked, before the key is written).
    @usableFromInline
    func mark(_ key: Fingerprint, stripe: Int) {
        let (word, bit) = position(of: key, stripe: stripe)
        if words[word].load(ordering: .relaxed) & bit == 0 { words[word].bitwiseOr(bit, ordering: .relaxed) }
    }

    /// Sets stripe `stripe`'s words from `keys`, all it holds (with the stripe locked).
    func rebuild(stripe: Int, keys: some Sequence<Fingerprint>) {
        let base = stripe * wordsPerStripe
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: wordsPerStripe) { fresh in
            fresh.initialize(repeating: 0)
            for key in keys {
                let (word, bit) = position(of: key, stripe: stripe)
                fresh[word - base] |= bit
            }
            for offset in 0..<wordsPerStripe { words[base + offset].store(fresh[offset], ordering: .relaxed) }
        }
    }
}
