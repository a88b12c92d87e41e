import Foundation
import SluiceCore

// Bounded-memory summaries of streams with millions of keys, for anomaly detection (issue 7):
// how often a key was seen (count-min), which keys are the heaviest (space-saving), and how many
// distinct keys there were (HyperLogLog). Keys are `Fingerprint`s, already 128-bit hashes, so
// the sketches derive their row hashes from the fingerprint's halves instead of hashing again.
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

/// Space-saving (Metwally, Agrawal, El Abbadi): the `capacity` heaviest keys of a stream and an
/// upper bound of each one's count. Any key whose true count exceeds N / capacity is in the
/// summary, and each reported count overestimates by at most its `error`.
public struct SpaceSaving: Sendable {
    /// One monitored key.
    public struct Entry: Sendable, Equatable {
        public var key: Fingerprint
        /// An upper bound of its count.
        public var count: UInt64
        /// How much of `count` may belong to the keys it replaced.
        public var error: UInt64
    }

    /// Keys monitored at most.
    public let capacity: Int
    var entries: [Entry] = []
    var positions: [Fingerprint: Int] = [:]
    /// Everything added.
    public private(set) var total: UInt64 = 0

    /// A summary of the `capacity` heaviest keys.
    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        entries.reserveCapacity(self.capacity)
    }

    /// Counts `count` more of `key`. O(1) when the key is monitored or there is room; O(capacity)
    /// when the lightest must make way (a scan: capacities are hundreds, not millions).
    public mutating func add(_ key: Fingerprint, count: UInt64 = 1) {
        total &+= count
        if let position = positions[key] {
            entries[position].count &+= count
            return
        }
        if entries.count < capacity {
            positions[key] = entries.count
            entries.append(Entry(key: key, count: count, error: 0))
            return
        }
        var lightest = 0
        for index in entries.indices where entries[index].count < entries[lightest].count { lightest = index }
        let replaced = entries[lightest]
        positions.removeValue(forKey: replaced.key)
        positions[key] = lightest
        entries[lightest] = Entry(key: key, count: replaced.count &+ count, error: replaced.count)
    }

    /// The monitored keys, heaviest first.
    public func top(_ limit: Int = .max) -> [Entry] {
        Array(entries.sorted { ($0.count, $0.key.low) > ($1.count, $1.key.low) }.prefix(limit))
    }

    /// The monitored entry of `key`, nil when it is not monitored (then its count is at most the
    /// lightest monitored count).
    public func entry(of key: Fingerprint) -> Entry? {
        positions[key].map { entries[$0] }
    }
}

/// HyperLogLog (Flajolet et al.; with the small-range correction of Heule et al.): the number of
/// distinct keys, in 2^precision one-byte registers, within about 1.04 / √(2^precision)
/// (precision 12: 4 KiB, about 1.6 %).
public struct HyperLogLog: Sendable, Equatable {
    /// Bits of the hash that pick a register.
    public let precision: Int
    var registers: [UInt8]

    /// A counter of 2^`precision` registers (4…16).
    public init(precision: Int = 12) {
        self.precision = min(16, max(4, precision))
        registers = Array(repeating: 0, count: 1 << self.precision)
    }

    /// Counts `key`.
    @inline(__always)
    public mutating func add(_ key: Fingerprint) {
        let hash = key.low ^ (key.high &* 0x9E37_79B9_7F4A_7C15)
        let register = Int(truncatingIfNeeded: hash >> UInt64(64 - precision))
        let rest = (hash << UInt64(precision)) | (UInt64(1) << UInt64(precision - 1))
        let rank = UInt8(rest.leadingZeroBitCount + 1)
        if rank > registers[register] { registers[register] = rank }
    }

    /// Adds everything `other` counted (same precision): the union of the two streams.
    public mutating func merge(_ other: HyperLogLog) {
        guard other.precision == precision else { return }
        for index in registers.indices where other.registers[index] > registers[index] { registers[index] = other.registers[index] }
    }

    /// The estimated number of distinct keys added.
    public var count: Double {
        let m = Double(registers.count)
        var sum = 0.0
        var zeros = 0
        for register in registers {
            sum += 1 / Double(UInt64(1) << UInt64(register))
            if register == 0 { zeros += 1 }
        }
        let alpha = 0.7213 / (1 + 1.079 / m)
        let raw = alpha * m * m / sum
        // Small range: linear counting is more accurate while registers are still empty.
        if raw <= 2.5 * m, zeros > 0 { return m * log(m / Double(zeros)) }
        return raw
    }

    /// Bytes of registers.
    public var bytes: Int { registers.count }
}
