import NIOCore

/// One argument of a Redis command: sent as a bulk string whatever it holds.
public enum RESPArgument: Sendable, Equatable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case bytes([UInt8])
    case string(String)
    case integer(Int64)

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
}

/// A command as Redis reads it: an array of bulk strings.
public struct RESPCommand: Sendable, Equatable, CustomStringConvertible {
    public var arguments: [RESPArgument]

    public init(_ arguments: [RESPArgument]) { self.arguments = arguments }
    public init(_ arguments: RESPArgument...) { self.arguments = arguments }

    /// Appends the command's bytes to `buffer`.
    public func write(into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "*"))
        Self.writeDecimal(Int64(arguments.count), into: &buffer)
        for argument in arguments {
            switch argument {
            case .bytes(let bytes):
                Self.writeBulkHeader(bytes.count, into: &buffer)
                buffer.writeBytes(bytes)
            case .string(let text):
                Self.writeBulkHeader(text.utf8.count, into: &buffer)
                buffer.writeString(text)
            case .integer(let value):
                // At most 20 bytes: written to scratch first for its length.
                var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)
                withUnsafeMutableBytes(of: &scratch) { digits in
                    let count = Self.decimal(value, into: digits)
                    Self.writeBulkHeader(count, into: &buffer)
                    buffer.writeBytes(UnsafeRawBufferPointer(rebasing: digits[(digits.count - count)...]))
                }
            }
            buffer.writeInteger(UInt16(0x0D0A))
        }
    }

    /// The command's bytes.
    public var bytes: [UInt8] {
        var buffer = ByteBufferAllocator().buffer(capacity: 64)
        write(into: &buffer)
        return Array(buffer.readableBytesView)
    }

    /// The command as redis-cli would show it (for logs; long arguments shortened).
    public var description: String {
        arguments.map { argument -> String in
            switch argument {
            case .bytes(let bytes): return bytes.count > 64 ? "<\(bytes.count) bytes>" : String(decoding: bytes, as: UTF8.self)
            case .string(let text): return text.utf8.count > 64 ? "<\(text.utf8.count) bytes>" : text
            case .integer(let value): return String(value)
            }
        }.joined(separator: " ")
    }

    static func writeBulkHeader(_ count: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "$"))
        writeDecimal(Int64(count), into: &buffer)
    }

    /// `value` in decimal, then CRLF.
    static func writeDecimal(_ value: Int64, into buffer: inout ByteBuffer) {
        var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &scratch) { digits in
            let count = decimal(value, into: digits)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: digits[(digits.count - count)...]))
        }
        buffer.writeInteger(UInt16(0x0D0A))
    }

    /// Writes `value` in decimal at the end of `digits` (24 bytes); returns how many bytes.
    static func decimal(_ value: Int64, into digits: UnsafeMutableRawBufferPointer) -> Int {
        var magnitude = value.magnitude
        var at = digits.count
        repeat {
            at -= 1
            digits[at] = UInt8(ascii: "0") + UInt8(magnitude % 10)
            magnitude /= 10
        } while magnitude > 0
        if value < 0 {
            at -= 1
            digits[at] = UInt8(ascii: "-")
        }
        return digits.count - at
    }
}
