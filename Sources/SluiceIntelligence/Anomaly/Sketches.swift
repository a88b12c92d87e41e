import Foundation
import SluiceCore

// A bounded-memory summary of a stream with millions of keys, for anomaly detection: how often a
// key was seen (count-min), for requests whose subject or address found the detector full. Keys
// are `Fingerprint`s, already 128-bit hashes, so the rows' hashes are derived from the
// fingerprint's halves instead of hashing again. (Space-saving and HyperLogLog summaries were
// here, unused, and went in issue 16; the distinct counts are `DistinctPerMinute`.)
//
// No library among the project's packages provides these; each is a few dozen lines of
// textbook arithmetic, tested against exact counts and the published error bounds.

/// Count-min sketch with conservative update (Cormode and Muthukrishnan; Estan and Varghese):
/// an estimate of a key's count that never undercounts, and overcounts by at most ε·N with
/// probability 1 − δ, where N is the total added, ε = e / width and δ = e^(−depth).
public struct CountMinSketch: Sendable, Equatable {
    /// Counters per row.
    public let width: Int
    /// Rows (independent hashes).
    public let depth: Int
    var counters: [UInt32]
    /// Everything added.
    public private(set) var total: UInt64 = 0

    /// A sketch of `width` × `depth` counters (4 bytes each). `width` is rounded up to a power of two.
    public init(width: Int, depth: Int) {
        var rounded = 1
        while rounded < max(1, width) { rounded <<= 1 }
        self.width = rounded
        self.depth = max(1, depth)
        counters = Array(repeating: 0, count: rounded * self.depth)
    }

    /// A sketch whose overcount stays within `epsilon` × total with probability 1 − `delta`.
    public init(epsilon: Double, delta: Double) {
        let width = Int((2.718281828459045 / max(1e-9, epsilon)).rounded(.up))
        let depth = Int(log(1 / max(1e-12, min(0.5, delta))).rounded(.up))
        self.init(width: width, depth: depth)
    }

    /// The counter of `key` in `row`: double hashing from the fingerprint's halves.
    @inline(__always)
    func index(_ key: Fingerprint, row: Int) -> Int {
        let hash = key.low &+ UInt64(truncatingIfNeeded: row) &* (key.high | 1)
        return row &* width &+ Int(truncatingIfNeeded: (hash ^ (hash >> 29)) & UInt64(width - 1))
    }

    /// Adds `count` to `key` (conservative update: only the rows at the minimum grow).
    public mutating func add(_ key: Fingerprint, count: UInt32 = 1) {
        total &+= UInt64(count)
        let estimate = self.estimate(key)
        let target = UInt32(clamping: UInt64(estimate) + UInt64(count))
        for row in 0..<depth {
            let slot = index(key, row: row)
            if counters[slot] < target { counters[slot] = target }
        }
    }

    /// The estimated count of `key`: at least its true count.
    public func estimate(_ key: Fingerprint) -> UInt32 {
        var minimum = UInt32.max
        for row in 0..<depth { minimum = min(minimum, counters[index(key, row: row)]) }
        return minimum
    }

    /// Halves every counter (and the total): old counts fade, a window without a wall.
    public mutating func decay() {
        for index in counters.indices { counters[index] >>= 1 }
        total >>= 1
    }

    /// Bytes of counters.
    public var bytes: Int { counters.count * MemoryLayout<UInt32>.stride }
}

/// The heaviest keys of a stream in bounded memory (space-saving, Metwally, Agrawal and El
/// Abbadi): `capacity` counters; a new key, when all are taken, replaces the smallest and
/// inherits its count as its possible overcount. Every key whose true count exceeds N/capacity
/// is kept, and a kept key's count overstates its true count by at most its `error`.
/// Updates are O(log capacity): the counters are a binary min-heap with each key's position.
public struct SpaceSaving<Key: Hashable> {
    public struct Entry {
        public var key: Key
        public var count: UInt64
        /// How much of `count` may belong to the keys it replaced.
        public var error: UInt64
    }

    public let capacity: Int
    var heap: [Entry] = []
    var position: [Key: Int] = [:]
    /// Everything added.
    public private(set) var total: UInt64 = 0

    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        heap.reserveCapacity(self.capacity)
    }

    /// Adds `count` to `key`.
    public mutating func add(_ key: Key, count: UInt64 = 1) {
        total &+= count
        if let index = position[key] {
            heap[index].count &+= count
            siftDown(index)
        } else if heap.count < capacity {
            heap.append(Entry(key: key, count: count, error: 0))
            position[key] = heap.count - 1
            siftUp(heap.count - 1)
        } else {
            let smallest = heap[0]
            position[smallest.key] = nil
            heap[0] = Entry(key: key, count: smallest.count &+ count, error: smallest.count)
            position[key] = 0
            siftDown(0)
        }
    }

    /// The `count` heaviest keys, heaviest first.
    public func top(_ count: Int) -> [Entry] {
        Array(heap.sorted { $0.count > $1.count }.prefix(count))
    }

    mutating func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].count < heap[parent].count else { return }
            swapAt(child, parent)
            child = parent
        }
    }

    mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < heap.count, heap[left].count < heap[smallest].count { smallest = left }
            if right < heap.count, heap[right].count < heap[smallest].count { smallest = right }
            guard smallest != parent else { return }
            swapAt(parent, smallest)
            parent = smallest
        }
    }

    mutating func swapAt(_ a: Int, _ b: Int) {
        heap.swapAt(a, b)
        position[heap[a].key] = a
        position[heap[b].key] = b
    }
}

/// A Bloom filter of 64-bit keys (already hashes): whether a key was added, never a false "no",
/// a false "yes" with probability about `falsePositiveRate` at the count it was sized for.
/// Written once (by the detector, when a surge's response starts), then only read by checks.
public struct BloomFilter: Sendable, Equatable {
    var words: [UInt64]
    let mask: UInt64
    let hashes: Int

    /// A filter for `count` keys at `falsePositiveRate` (bits rounded up to a power of two).
    public init(count: Int, falsePositiveRate: Double = 0.01) {
        let rate = min(0.5, max(1e-6, falsePositiveRate))
        let bits = Double(max(64, count)) * -log(rate) / (log(2) * log(2))
        var rounded = 64
        while Double(rounded) < bits, rounded < 1 << 34 { rounded <<= 1 }
        words = Array(repeating: 0, count: rounded / 64)
        mask = UInt64(rounded - 1)
        hashes = min(12, max(1, Int((Double(rounded) / Double(max(64, count)) * log(2)).rounded())))
    }

    /// The two hashes of `key` from which its bit positions are made (double hashing).
    @inline(__always)
    static func hashes(_ key: UInt64) -> (UInt64, UInt64) {
        var first = key &* 0x9E37_79B9_7F4A_7C15
        first ^= first >> 32
        return (first, (key ^ (key >> 29)) &* 0xBF58_476D_1CE4_E5B9 | 1)
    }

    public mutating func insert(_ key: UInt64) {
        let (first, second) = Self.hashes(key)
        for round in 0..<hashes {
            let bit = (first &+ UInt64(truncatingIfNeeded: round) &* second) & mask
            words[Int(truncatingIfNeeded: bit >> 6)] |= 1 << (bit & 63)
        }
    }

    /// Whether `key` may have been added (certainly, if it was).
    @inline(__always)
    public func contains(_ key: UInt64) -> Bool {
        let (first, second) = Self.hashes(key)
        for round in 0..<hashes {
            let bit = (first &+ UInt64(truncatingIfNeeded: round) &* second) & mask
            if words[Int(truncatingIfNeeded: bit >> 6)] & (1 << (bit & 63)) == 0 { return false }
        }
        return true
    }

    /// Bytes of bits.
    public var bytes: Int { words.count * 8 }
}

