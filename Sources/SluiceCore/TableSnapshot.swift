/// Every entry of a ``LimiterTable`` in a form that outlives the process, so that a restart does
/// not hand every caller a fresh quota (a restart that resets limits is an attack vector).
///
/// States hold absolute times (nanoseconds since the Unix epoch), so the time that passed while
/// the daemon was down applies by itself when checks resume.
///
/// Format, version 1, little-endian: `"SLUICESN"`, version (u32), reserved (u32), written-at
/// (i64 ns), entry count (u64), entries of 47 bytes (fingerprint high and low u64, the key's
/// shard bits u16, state kind u8, expiry u32, three u64 words of state), lease-set count (u64),
/// lease sets (fingerprint, lease count u32, then id u64, weight u64, expiry i64 per lease), and
/// last a 64-bit ``StableHasher`` checksum of everything before it.
public struct TableSnapshot: Sendable, Equatable {
    /// One table entry.
    public struct Entry: Sendable, Equatable {
        /// The fingerprint of (tenant, key, limit) the state is stored under.
        public var fingerprint: Fingerprint
        /// The bits of the (tenant, key) fingerprint that choose the shard.
        public var keyBits: UInt16
        public var state: LimiterState
        /// Whole seconds since the epoch at which the entry is fully recovered.
        public var expiry: UInt32
    }

    public var entries: [Entry] = []
    /// Lease lists of concurrency entries, by fingerprint.
    public var leaseSets: [Fingerprint: LeaseSet] = [:]
    /// When it was taken, nanoseconds since the epoch.
    public var writtenAt: Int64 = 0

    public init() {}

    static let magic: [UInt8] = Array("SLUICESN".utf8)
    /// The format version this build writes and reads.
    public static let version: UInt32 = 1
    static let entryBytes = 47
}

/// Why snapshot bytes could not be read.
public struct SnapshotError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The checksum the files Sluice keeps end with: a 64-bit ``StableHasher`` of their bytes.
public enum StableChecksum {
    public static func of(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        var hasher = StableHasher()
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
        return hasher.finalize().low
    }
}

extension TableSnapshot {
    /// The snapshot's bytes.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(48 + entries.count * Self.entryBytes)
        out += Self.magic
        out.appendLittleEndian(Self.version)
        out.appendLittleEndian(UInt32(0))
        out.appendLittleEndian(UInt64(bitPattern: writtenAt))
        out.appendLittleEndian(UInt64(entries.count))
        for entry in entries {
            out.appendLittleEndian(entry.fingerprint.high)
            out.appendLittleEndian(entry.fingerprint.low)
            out.appendLittleEndian(entry.keyBits)
            let (kind, words) = entry.state.snapshotWords
            out.append(kind)
            out.appendLittleEndian(entry.expiry)
            out.appendLittleEndian(words.0)
            out.appendLittleEndian(words.1)
            out.appendLittleEndian(words.2)
        }
        out.appendLittleEndian(UInt64(leaseSets.count))
        for (fingerprint, set) in leaseSets.sorted(by: { ($0.key.high, $0.key.low) < ($1.key.high, $1.key.low) }) {
            out.appendLittleEndian(fingerprint.high)
            out.appendLittleEndian(fingerprint.low)
            out.appendLittleEndian(UInt32(set.leases.count))
            for lease in set.leases {
                out.appendLittleEndian(lease.id)
                out.appendLittleEndian(lease.weight)
                out.appendLittleEndian(UInt64(bitPattern: lease.expiresAt))
            }
        }
        out.appendLittleEndian(Self.checksum(out[...]))
        return out
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt64 { StableChecksum.of(bytes) }

    /// Reads a snapshot, checking its magic, version, every count against the bytes present,
    /// and its checksum.
    ///
    /// - Throws: ``SnapshotError`` saying what is wrong; no input traps.
    public init(decoding bytes: [UInt8]) throws(SnapshotError) {
        self.init()
        guard bytes.count >= 48 else { throw SnapshotError("\(bytes.count) bytes: too short for a snapshot (truncated?)") }
        guard Array(bytes[0..<8]) == Self.magic else { throw SnapshotError("not a Sluice snapshot (its first bytes are not SLUICESN)") }
        var trailer = SnapshotReader(bytes[(bytes.count - 8)...])
        let stored: UInt64 = try trailer.read()
        guard Self.checksum(bytes[0..<(bytes.count - 8)]) == stored else {
            throw SnapshotError("checksum mismatch: the file is corrupt or truncated")
        }
        var reader = SnapshotReader(bytes[8..<(bytes.count - 8)])
        let version: UInt32 = try reader.read()
        guard version == Self.version else {
            throw SnapshotError("format version \(version); this build reads version \(Self.version)")
        }
        let _: UInt32 = try reader.read()
        writtenAt = Int64(bitPattern: try reader.read() as UInt64)
        let count: UInt64 = try reader.read()
        guard count <= UInt64(reader.remaining / Self.entryBytes) else { throw SnapshotError("entry count \(count) exceeds the file") }
        entries.reserveCapacity(Int(count))
        for index in 0..<Int(count) {
            let fingerprint = Fingerprint(high: try reader.read(), low: try reader.read())
            let keyBits: UInt16 = try reader.read()
            let kind: UInt8 = try reader.read()
            let expiry: UInt32 = try reader.read()
            let words: (UInt64, UInt64, UInt64) = (try reader.read(), try reader.read(), try reader.read())
            guard let state = LimiterState(snapshotKind: kind, words: words) else {
                throw SnapshotError("entry \(index) has unknown state kind \(kind)")
            }
            entries.append(Entry(fingerprint: fingerprint, keyBits: keyBits, state: state, expiry: expiry))
        }
        let sets: UInt64 = try reader.read()
        guard sets <= UInt64(reader.remaining / 20) else { throw SnapshotError("lease-set count \(sets) exceeds the file") }
        for _ in 0..<Int(sets) {
            let fingerprint = Fingerprint(high: try reader.read(), low: try reader.read())
            let leases: UInt32 = try reader.read()
            guard Int(leases) <= reader.remaining / 24 else { throw SnapshotError("lease count \(leases) exceeds the file") }
            var set = LeaseSet()
            for _ in 0..<Int(leases) {
                set.leases.append(LeaseSet.Lease(id: try reader.read(), weight: try reader.read(),
                                                 expiresAt: Int64(bitPattern: try reader.read() as UInt64)))
            }
            leaseSets[fingerprint] = set
        }
        guard reader.remaining == 0 else { throw SnapshotError("\(reader.remaining) unexpected bytes after the lease sets") }
    }
}

/// Reads little-endian integers, refusing to read past its bytes (the table snapshot, the
/// anomaly detector's state).
public struct SnapshotReader {
    // Inlinable, with its fields: a file of a hundred megabytes is read a field at a time, and
    // an unspecialised generic call per field from another module costs ten times the reading.
    @usableFromInline let bytes: ArraySlice<UInt8>
    @usableFromInline var position: Int

    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    @inlinable public var remaining: Int { bytes.endIndex - position }

    @inlinable public mutating func read<T: FixedWidthInteger>() throws(SnapshotError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw SnapshotError("truncated at byte \(position)") }
        var value: T = 0
        for index in 0..<size { value |= T(bytes[position + index]) << (8 * index) }
        position += size
        return value
    }
}

extension Array where Element == UInt8 {
    @inlinable public mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        for index in 0..<MemoryLayout<T>.size { append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }
}

extension LimiterState {
    /// The state as a kind and three words: the snapshot's encoding.
    var snapshotWords: (UInt8, (UInt64, UInt64, UInt64)) {
        switch self {
        case .gcra(let s): (1, (UInt64(bitPattern: s.tat), 0, 0))
        case .tokenBucket(let s): (2, (s.levelHigh, s.levelLow, UInt64(bitPattern: s.last)))
        case .slidingWindow(let s): (3, (UInt64(bitPattern: s.start), s.current, s.previous))
        case .fixedWindow(let s): (4, (UInt64(bitPattern: s.start), s.count, 0))
        case .concurrency(let s): (5, (UInt64(bitPattern: s.latestExpiry), 0, 0))
        }
    }

    init?(snapshotKind kind: UInt8, words: (UInt64, UInt64, UInt64)) {
        switch kind {
        case 1: self = .gcra(GCRAState(tat: Int64(bitPattern: words.0)))
        case 2: self = .tokenBucket(TokenBucketState(level: UInt128(words.0) << 64 | UInt128(words.1), last: Int64(bitPattern: words.2)))
        case 3:
            var state = SlidingWindowState()
            state.start = Int64(bitPattern: words.0)
            state.current = words.1
            state.previous = words.2
            self = .slidingWindow(state)
        case 4:
            var state = FixedWindowState()
            state.start = Int64(bitPattern: words.0)
            state.count = words.1
            self = .fixedWindow(state)
        case 5: self = .concurrency(LeaseSummary(latestExpiry: Int64(bitPattern: words.0)))
        default: return nil
        }
    }
}

extension LimiterTable {
    /// Every entry, shard by shard: each shard is read under its own lock, so checks keep
    /// flowing meanwhile and each shard is consistent in itself.
    public func snapshot(writtenAt: Int64) -> TableSnapshot {
        var snapshot = TableSnapshot()
        snapshot.writtenAt = writtenAt
        for shard in ownedShards {
            shard.lock()
            defer { shard.unlock() }
            do {
                for position in 0..<shard.capacity where shard.slots[position].isOccupied {
                    let slot = shard.slots[position]
                    snapshot.entries.append(.init(fingerprint: Fingerprint(high: slot.high, low: slot.low), keyBits: slot.keyBits,
                                                  state: slot.state, expiry: slot.expiry))
                }
                for (fingerprint, set) in shard.leaseSets { snapshot.leaseSets[fingerprint] = set }
            }
        }
        return snapshot
    }

    /// Puts a snapshot's entries back, each into the shard its key belongs to under this table's
    /// shard count. Entries already present are left alone; past the table's capacity the shards
    /// evict as usual. Returns how many entries were put back.
    @discardableResult
    public func restore(_ snapshot: TableSnapshot) -> Int {
        var restored = 0
        for entry in snapshot.entries {
            ownedShards[Int(entry.keyBits) & shardMask].lock()
            defer { ownedShards[Int(entry.keyBits) & shardMask].unlock() }
            let shard = ownedShards[Int(entry.keyBits) & shardMask]
            guard shard.find(entry.fingerprint) == nil else { continue }
            shard.insert(entry.fingerprint, state: entry.state, expiry: entry.expiry, keyBits: entry.keyBits)
            if case .concurrency = entry.state, let set = snapshot.leaseSets[entry.fingerprint] {
                shard.leaseSets[entry.fingerprint] = set
            }
            restored += 1
        }
        return restored
    }
}
