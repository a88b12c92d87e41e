/// The Redis Cluster slot of a key: CRC16 (XMODEM) of the key, or of its hash tag, mod 16,384
/// (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#key-distribution-model).
/// Keys that share a hash tag (`{rule:login}:burst`, `{rule:login}:daily`) share a slot, so one
/// script can update them together.
public enum KeySlot {
    public static let count = 16_384

    /// The slot of `key`.
    public static func of<Bytes: Collection>(_ key: Bytes) -> Int where Bytes.Element == UInt8 {
        Int(crc16(tag(of: key)) % UInt16(count))
    }

    /// The slot of `key`.
    public static func of(_ key: String) -> Int { of(Array(key.utf8)) }

    /// What is hashed: the bytes between the first `{` and the first `}` after it, when there
    /// are some; otherwise the whole key.
    static func tag<Bytes: Collection>(of key: Bytes) -> Bytes.SubSequence where Bytes.Element == UInt8 {
        if let open = key.firstIndex(of: UInt8(ascii: "{")) {
            let rest = key[key.index(after: open)...]
            if let close = rest.firstIndex(of: UInt8(ascii: "}")), close != rest.startIndex { return rest[rest.startIndex..<close] }
        }
        return key[...]
    }

    static let table: [UInt16] = (0..<256).map { byte in
        var crc = UInt16(byte) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as Redis computes it.
    static func crc16<Bytes: Sequence>(_ bytes: Bytes) -> UInt16 where Bytes.Element == UInt8 {
        var crc: UInt16 = 0
        for byte in bytes { crc = (crc << 8) ^ table[Int((crc >> 8) ^ UInt16(byte))] }
        return crc
    }
}
