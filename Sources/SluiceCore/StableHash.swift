/// A 128-bit hash that is the same in every process, on every machine, in every version.
///
/// Swift's `Hasher` is seeded per process, so it cannot name state that outlives the process or is
/// shared between daemons. This is a small multiply-fold hash (two independent 64-bit lanes) over
/// length-prefixed fields: fast for short keys and well mixed, but not cryptographic, so table
/// positions derived from it are re-mixed with a per-table random seed against hash flooding.
public struct StableHasher: Sendable {
    @usableFromInline var a: UInt64 = 0x243F_6A88_85A3_08D3
    @usableFromInline var b: UInt64 = 0x1319_8A2E_0370_7344

    /// A hasher in its initial state.
    @inlinable public init() {}

    @inlinable @inline(__always)
    static func fold(_ x: UInt64, _ y: UInt64) -> UInt64 {
        let (high, low) = x.multipliedFullWidth(by: y)
        return high ^ low
    }

    @inlinable @inline(__always)
    mutating func mix(_ word: UInt64) {
        a = Self.fold(a ^ word, 0xA076_1D64_78BD_642F)
        b = Self.fold(b ^ (word &+ 0xE703_7ED1_A0B4_28DB), 0x8EBC_6AF0_9C88_C6E3)
    }

    /// Adds a 64-bit value.
    @inlinable public mutating func combine(_ value: UInt64) { mix(value) }

    /// Adds bytes, prefixed by their length so that ("ab", "c") and ("a", "bc") differ.
    @inlinable
    public mutating func combine(bytes: UnsafeRawBufferPointer) {
        mix(UInt64(bytes.count) | 0x5100_0000_0000_0000)
        var offset = 0
        let count = bytes.count
        while offset + 8 <= count {
            mix(UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)))
            offset += 8
        }
        // The last 1 to 7 bytes, little-endian in one word: two overlapping loads, or three for
        // fewer than 4 bytes, instead of a loop a byte at a time (the same word: pinned by
        // the stable-hash tests, for every length).
        let rest = count - offset
        if rest >= 4 {
            let low = UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            let high = UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + rest - 4, as: UInt32.self)))
            mix(low | high << (8 * UInt64(rest - 4)))
        } else if rest > 0 {
            let first = UInt64(bytes[offset]), middle = UInt64(bytes[offset + (rest >> 1)]), last = UInt64(bytes[offset + rest - 1])
            mix(first | middle << (8 * UInt64(rest >> 1)) | last << (8 * UInt64(rest - 1)))
        }
    }

    /// Adds a string's UTF-8 bytes, length-prefixed.
    @inlinable
    public mutating func combine(_ string: String) {
        var string = string
        string.withUTF8 { combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// A bijective 64-bit mix (the MurmurHash3 finalizer): well-mixed output from any input.
    @inlinable @inline(__always)
    public static func finalMix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 33)) &* 0xFF51_AFD7_ED55_8CCD
        z = (z ^ (z >> 33)) &* 0xC4CE_B9FE_1A85_EC53
        return z ^ (z >> 33)
    }

    /// The 128-bit result.
    @inlinable @inline(__always)
    public func finalize() -> Fingerprint {
        Fingerprint(high: Self.finalMix(a ^ (b >> 29)), low: Self.finalMix(b ^ (a << 31) ^ 0x9E37_79B9_7F4A_7C15))
    }
}

/// A 128-bit stable identity of (tenant, key) or of (tenant, key, limit).
public struct Fingerprint: Sendable, Hashable, CustomStringConvertible {
    /// The high 64 bits.
    public var high: UInt64
    /// The low 64 bits.
    public var low: UInt64

    /// Creates a fingerprint from its halves.
    @inlinable public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// This fingerprint extended with a limit's identity.
    ///
    /// Both inputs are already well-mixed hashes, so one bijective mix per half is enough: two
    /// pairs collide only if both halves do. A full rehash cost 85 instructions per check
    /// (callgrind); this costs about 15. Stable: stored state will be named by it.
    @inlinable @inline(__always)
    public func combined(with limitIdentity: UInt64) -> Fingerprint {
        Fingerprint(high: StableHasher.finalMix(high ^ limitIdentity),
                    low: StableHasher.finalMix(low &+ limitIdentity &* 0x9E37_79B9_7F4A_7C15))
    }

    /// 32 hex digits.
    public var description: String {
        let h = String(high, radix: 16), l = String(low, radix: 16)
        return String(repeating: "0", count: 16 - h.count) + h + String(repeating: "0", count: 16 - l.count) + l
    }
}

extension Fingerprint {
    /// What a `Dictionary` or `Set` keyed by fingerprints (every book) hashes with, instead of
    /// SipHash over both halves: a fingerprint is a well-mixed 128-bit hash already, so one
    /// bijective mix of a half with the table's seed spreads it as well, for about a tenth of
    /// the instructions (callgrind: SipHash cost some 900 instructions a check over the books).
    /// The seed is per table and per process, so a client choosing keys cannot aim at buckets.
    @inlinable
    public func _rawHashValue(seed: Int) -> Int {
        Int(truncatingIfNeeded: StableHasher.finalMix(low ^ UInt64(truncatingIfNeeded: seed)) ^ high)
    }

    /// Both halves (what a `Hasher` combining a fingerprint with other values gets).
    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(high)
        hasher.combine(low)
    }
}

extension Fingerprint {
    /// The identity of a counted key: a tenant and a key.
    @inlinable
    public static func of(tenant: String, key: String) -> Fingerprint {
        var hasher = StableHasher()
        hasher.combine(tenant)
        hasher.combine(key)
        return hasher.finalize()
    }

    /// The same fingerprint from the UTF-8 bytes of tenant and key.
    @inlinable
    public static func of(tenant: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer) -> Fingerprint {
        var hasher = StableHasher()
        hasher.combine(bytes: tenant)
        hasher.combine(bytes: key)
        return hasher.finalize()
    }
}
