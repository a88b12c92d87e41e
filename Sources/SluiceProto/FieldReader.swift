/// A bounds-checked protobuf field reader over raw bytes that returns nil instead of throwing:
/// the daemon's fast codec (`CheckFrameCodec`) and the load harness's answer scanner both read
/// with it. Any malformed input yields nil, never a trap.
public struct FieldReader {
    public let bytes: UnsafeRawBufferPointer
    public var position = 0

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var atEnd: Bool { position >= bytes.count }

    @inlinable @inline(__always)
    public mutating func tag() -> (Int, Int)? {
        // Field numbers are 1 to 2^29 - 1; swift-protobuf refuses the rest, so must this reader.
        guard let key = varint(), key >> 3 != 0, key >> 3 <= 536_870_911 else { return nil }
        return (Int(key >> 3), Int(key & 7))
    }

    @inlinable @inline(__always)
    public mutating func varint() -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while position < bytes.count {
            let byte = bytes[position]
            position += 1
            if shift == 63, byte > 1 { return nil }
            value |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return value }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    @inlinable @inline(__always)
    public mutating func lengthDelimited() -> UnsafeRawBufferPointer? {
        guard let length = varint(), length <= UInt64(bytes.count - position) else { return nil }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[position..<(position + Int(length))])
        position += Int(length)
        return slice
    }

    @inlinable
    public mutating func skip(_ wire: Int) -> Bool {
        switch wire {
        case 0: return varint() != nil
        case 1: return advance(8)
        case 2: return lengthDelimited() != nil
        case 5: return advance(4)
        default: return false // groups and invalid wire types: the general path decides
        }
    }

    @inlinable
    public mutating func advance(_ count: Int) -> Bool {
        guard bytes.count - position >= count else { return false }
        position += count
        return true
    }
}

/// Protobuf varints, written: the one encoder the fast codec, the refusal writer and the load
/// harness share (``FieldReader`` is the one reader).
public enum Varint {
    /// Bytes of `value` encoded.
    @inlinable @inline(__always)
    public static func size(_ value: UInt64) -> Int {
        // 1 + floor(bits / 7), with bits the index of the highest set bit (0 for 0).
        (((63 - (value | 1).leadingZeroBitCount) * 9) + 73) / 64
    }

    /// Writes `value` at `base + offset`, which has room for ``size(_:)`` bytes; returns the
    /// offset after it.
    @inlinable @inline(__always)
    public static func write(_ value: UInt64, to base: UnsafeMutableRawPointer, at offset: Int) -> Int {
        var v = value, offset = offset
        while v >= 0x80 {
            base.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, toByteOffset: offset, as: UInt8.self)
            offset += 1
            v >>= 7
        }
        base.storeBytes(of: UInt8(v), toByteOffset: offset, as: UInt8.self)
        return offset + 1
    }

    /// Appends `value` to `bytes`.
    @inlinable
    public static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }
}
