// The detector's records by key, in about a third of the memory of a `Dictionary`.
//
// A dictionary of a million 120-byte records holds them in 2^21 buckets (its load stays under
// 3/4), and while it grows both tables are alive. Here the records are dense, in chunks of 4,096
// that never move, and only an index of 4-byte slots is hashed: a slot holds the record's
// position and, in the bits the position does not need, a tag from the key's hash, so a probe
// rarely reads a key that is not the one it looks for. Growing rebuilds only the index.
// Removing moves the last record into the hole. (No package in the mirror offers a compact
// open-addressing map; swift-collections' OrderedDictionary keeps a hash table beside dense
// arrays the same way, but grows its arrays by doubling, and a doubled array of a million
// records is the memory this saves.)

/// Records of type `Record` by 64-bit key (already a hash), at most `maxCount` of them.
struct RecordTable<Record> {
    static var chunkShift: Int { 12 }
    static var chunkSize: Int { 1 << chunkShift }

    private var keyChunks: [ContiguousArray<UInt64>] = []
    private var recordChunks: [ContiguousArray<Record>] = []
    /// Slots: 0 is empty; otherwise `tag << positionBits | (position + 1)`.
    private var slots: [UInt32]
    private var mask: Int
    private let positionBits: UInt32
    private let positionMask: UInt32
    private(set) var count = 0

    /// A table for at most `maxCount` records (more can be inserted only if the positions fit
    /// in 32 bits; callers bound it).
    init(maxCount: Int) {
        let needed = max(1, min(maxCount, Int(UInt32.max - 1)) + 1)
        positionBits = UInt32(min(32, Int.bitWidth - (needed - 1).leadingZeroBitCount))
        positionMask = positionBits == 32 ? .max : (1 << positionBits) - 1
        slots = Array(repeating: 0, count: 16)
        mask = 15
    }

    @inline(__always)
    private static func mix(_ key: UInt64) -> UInt64 {
        var mixed = key ^ (key >> 31)
        mixed = mixed &* 0x7FB5_D329_728E_A185
        return mixed ^ (mixed >> 27)
    }

    @inline(__always)
    private func tag(_ hash: UInt64) -> UInt32 {
        positionBits == 32 ? 0 : UInt32(truncatingIfNeeded: hash >> 40) << positionBits
    }

    /// The key of the record at `position`.
    @inline(__always)
    func storedKey(at position: Int) -> UInt64 {
        keyChunks[position >> Self.chunkShift][position & (Self.chunkSize - 1)]
    }

    /// The record at `position` (in `0..<count`).
    @inline(__always)
    subscript(position position: Int) -> Record {
        get { recordChunks[position >> Self.chunkShift][position & (Self.chunkSize - 1)] }
        set { recordChunks[position >> Self.chunkShift][position & (Self.chunkSize - 1)] = newValue }
    }

    /// The slot of `key`, or of the empty slot where it would go.
    @inline(__always)
    private func find(_ key: UInt64) -> (slot: Int, found: Bool) {
        let hash = Self.mix(key)
        let wanted = tag(hash)
        var slot = Int(truncatingIfNeeded: hash) & mask
        while true {
            let value = slots[slot]
            if value == 0 { return (slot, false) }
            if value & ~positionMask == wanted, storedKey(at: Int(value & positionMask) - 1) == key { return (slot, true) }
            slot = (slot + 1) & mask
        }
    }

    /// The position of `key`'s record, or nil.
    @inline(__always)
    func position(of key: UInt64) -> Int? {
        let (slot, found) = find(key)
        return found ? Int(slots[slot] & positionMask) - 1 : nil
    }

    subscript(key: UInt64) -> Record? {
        get { position(of: key).map { self[position: $0] } }
        set {
            if let newValue { insertOrReplace(newValue, for: key) } else { removeValue(forKey: key) }
        }
    }

    /// Sets `key`'s record, returning its position.
    @discardableResult
    mutating func insertOrReplace(_ record: Record, for key: UInt64) -> Int {
        var (slot, found) = find(key)
        if found {
            let position = Int(slots[slot] & positionMask) - 1
            self[position: position] = record
            return position
        }
        if (count + 1) * 8 > slots.count * 7 {
            grow()
            slot = find(key).slot
        }
        let position = count
        if position & (Self.chunkSize - 1) == 0 {
            var keys = ContiguousArray<UInt64>()
            keys.reserveCapacity(Self.chunkSize)
            var records = ContiguousArray<Record>()
            records.reserveCapacity(Self.chunkSize)
            keyChunks.append(keys)
            recordChunks.append(records)
        }
        keyChunks[keyChunks.count - 1].append(key)
        recordChunks[recordChunks.count - 1].append(record)
        count += 1
        slots[slot] = tag(Self.mix(key)) | UInt32(truncatingIfNeeded: position + 1)
        return position
    }

    private mutating func grow() {
        let capacity = slots.count * 2
        slots = Array(repeating: 0, count: capacity)
        mask = capacity - 1
        for position in 0..<count {
            let hash = Self.mix(storedKey(at: position))
            var slot = Int(truncatingIfNeeded: hash) & mask
            while slots[slot] != 0 { slot = (slot + 1) & mask }
            slots[slot] = tag(hash) | UInt32(truncatingIfNeeded: position + 1)
        }
    }

    /// Removes `key`'s record, if there is one.
    @discardableResult
    mutating func removeValue(forKey key: UInt64) -> Record? {
        let (slot, found) = find(key)
        guard found else { return nil }
        let position = Int(slots[slot] & positionMask) - 1
        let record = self[position: position]
        remove(slot: slot, position: position)
        return record
    }

    /// Empties `slot` (linear probing's backward shift: no tombstones), and moves the last
    /// record into `position`.
    private mutating func remove(slot: Int, position: Int) {
        var hole = slot
        var next = (hole + 1) & mask
        while slots[next] != 0 {
            let home = Int(truncatingIfNeeded: Self.mix(storedKey(at: Int(slots[next] & positionMask) - 1))) & mask
            // The entry at `next` may move back into the hole if its home is not in (hole, next].
            if (next - home) & mask >= (next - hole) & mask {
                slots[hole] = slots[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        slots[hole] = 0
        let last = count - 1
        if position != last {
            let lastKey = storedKey(at: last)
            let (lastSlot, _) = find(lastKey)
            slots[lastSlot] = (slots[lastSlot] & ~positionMask) | UInt32(truncatingIfNeeded: position + 1)
            keyChunks[position >> Self.chunkShift][position & (Self.chunkSize - 1)] = lastKey
            self[position: position] = self[position: last]
        }
        keyChunks[keyChunks.count - 1].removeLast()
        recordChunks[recordChunks.count - 1].removeLast()
        if keyChunks[keyChunks.count - 1].isEmpty {
            keyChunks.removeLast()
            recordChunks.removeLast()
        }
        count = last
    }

    /// Removes every record `shouldRemove` says to, calling `removed` with each one's key.
    mutating func removeAll(where shouldRemove: (Record) -> Bool, removed: (UInt64) -> Void = { _ in }) {
        var position = count - 1
        while position >= 0 {
            if shouldRemove(self[position: position]) {
                let key = storedKey(at: position)
                removed(key)
                remove(slot: find(key).slot, position: position)
            }
            position -= 1
        }
    }

    /// Removes everything, keeping the index's size.
    mutating func removeAll() {
        keyChunks = []
        recordChunks = []
        for slot in slots.indices { slots[slot] = 0 }
        count = 0
    }

    /// Calls `body` with every key and record.
    func forEach(_ body: (UInt64, Record) throws -> Void) rethrows {
        for position in 0..<count { try body(storedKey(at: position), self[position: position]) }
    }

    /// Bytes held: the index, and the chunks' keys and records.
    var bytes: Int {
        slots.count * 4 + keyChunks.count * Self.chunkSize * (8 + MemoryLayout<Record>.stride)
    }
}

/// A record's time in 32 bits: whole seconds from 2020-01-01 (so from 1952 to 2088), or "never".
/// A time is kept rounded down to its second; the detector's windows are 5 s and longer.
struct PackedTime: Equatable {
    var seconds: Int32

    static let epochMs: Int64 = 1_577_836_800_000
    static let never = PackedTime(seconds: .min)

    init(seconds: Int32) { self.seconds = seconds }

    /// `milliseconds` (``AnomalyDetector/never`` or a time), rounded down to its second, within range.
    @inline(__always)
    init(_ milliseconds: Int64) {
        let clamped = min(max(milliseconds, AnomalyDetector.never), 1 << 62)
        guard clamped != AnomalyDetector.never else {
            seconds = .min
            return
        }
        let offset = clamped - Self.epochMs
        let floored = offset >= 0 ? offset / 1_000 : -((999 - offset) / 1_000)
        seconds = Int32(clamping: max(floored, Int64(Int32.min) + 1))
    }

    /// The time in milliseconds since the epoch, or ``AnomalyDetector/never``.
    @inline(__always)
    var milliseconds: Int64 { seconds == .min ? AnomalyDetector.never : Int64(seconds) * 1_000 + Self.epochMs }
}

/// A time field of a record, kept as a ``PackedTime`` (4 bytes) and read as milliseconds.
@propertyWrapper
struct Seconds {
    var packed: PackedTime
    init(wrappedValue: Int64) { packed = PackedTime(wrappedValue) }
    var wrappedValue: Int64 {
        @inline(__always) get { packed.milliseconds }
        @inline(__always) set { packed = PackedTime(newValue) }
    }
}

/// A non-negative rate or score of a record in half precision (2 bytes): three significant
/// digits, up to 65,000 (larger values are kept as 65,000). A running average kept this way
/// stalls once its steps are under half its precision: within 1.5 % of the true average for
/// steps of 1/30.
@propertyWrapper
struct Half {
    var packed: Float16
    init(wrappedValue: Float) { packed = Self.half(wrappedValue) }
    var wrappedValue: Float {
        @inline(__always) get { Float(packed) }
        @inline(__always) set { packed = Self.half(newValue) }
    }
    @inline(__always)
    static func half(_ value: Float) -> Float16 { Float16(min(max(value, 0), 65_000)) }
}

/// A count of a record in 16 bits, saturating at 65,535, read as a `UInt32`.
@propertyWrapper
struct Saturating {
    var packed: UInt16
    init(wrappedValue: UInt32) { packed = UInt16(clamping: wrappedValue) }
    var wrappedValue: UInt32 {
        @inline(__always) get { UInt32(packed) }
        @inline(__always) set { packed = UInt16(clamping: newValue) }
    }
}
