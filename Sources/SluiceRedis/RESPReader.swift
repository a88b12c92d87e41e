/// Why bytes from a server are not RESP2. The connection that sent them cannot be read any
/// further (the stream has lost its framing) and is closed.
public struct RESPError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable codes, for logs and metrics.
    public enum Code: String, Sendable {
        /// A value starts with a byte that is no RESP2 type.
        case badType = "bad_type"
        /// A length or an integer is not a decimal number, or is out of range.
        case badNumber = "bad_number"
        /// A line does not end in CRLF, or a bulk string is not followed by one.
        case badTerminator = "bad_terminator"
        /// Past ``RESPReader/Limits``: a bulk string, an array, a line, or nesting.
        case tooLarge = "too_large"
    }

    public let code: Code
    public let description: String

    init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }
}

/// Reads RESP2 replies out of bytes as they arrive: a reply split over several reads reads as
/// nil (not all here yet) until the rest comes. Every length and count a server sends is
/// checked against ``Limits`` before anything is allocated for it, and no arithmetic on it can
/// trap: a hostile or broken server gets an ``RESPError``, never a crash or an unbounded buffer.
public struct RESPReader: Sendable {
    /// The most a reply may hold.
    public struct Limits: Sendable, Equatable {
        /// Bytes of one bulk string (Redis allows 512 MB; the daemon's replies are small).
        public var bulkBytes = 16 << 20
        /// Elements of one array (`CLUSTER SLOTS` of a large cluster has thousands).
        public var elements = 1 << 20
        /// Bytes of one status or error line.
        public var lineBytes = 64 << 10
        /// Arrays within arrays.
        public var depth = 16

        public init() {}
    }

    public var limits: Limits

    public init(limits: Limits = Limits()) { self.limits = limits }

    /// The reply that starts at `position` in `bytes`, with `position` moved past it; nil, and
    /// `position` unchanged, when it has not all arrived.
    public func read(_ bytes: UnsafeRawBufferPointer, at position: inout Int) throws(RESPError) -> RESPValue? {
        var cursor = position
        guard let value = try value(bytes, &cursor, depth: 0) else { return nil }
        position = cursor
        return value
    }

    func value(_ bytes: UnsafeRawBufferPointer, _ cursor: inout Int, depth: Int) throws(RESPError) -> RESPValue? {
        guard cursor < bytes.count else { return nil }
        let kind = bytes[cursor]
        var at = cursor + 1
        switch kind {
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard let line = try line(bytes, &at) else { return nil }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[line]), as: UTF8.self)
            cursor = at
            return kind == UInt8(ascii: "+") ? .simple(text) : .error(text)
        case UInt8(ascii: ":"):
            guard let line = try line(bytes, &at) else { return nil }
            let number = try Self.integer(UnsafeRawBufferPointer(rebasing: bytes[line]))
            cursor = at
            return .integer(number)
        case UInt8(ascii: "$"):
            guard let line = try line(bytes, &at) else { return nil }
            let length = try Self.integer(UnsafeRawBufferPointer(rebasing: bytes[line]))
            if length == -1 {
                cursor = at
                return .bulk(nil)
            }
            guard length >= 0 else { throw RESPError(.badNumber, "a bulk string of length \(length)") }
            guard length <= limits.bulkBytes else {
                throw RESPError(.tooLarge, "a bulk string of \(length) bytes, over the limit of \(limits.bulkBytes)")
            }
            let count = Int(length)
            // `count` is at most `bulkBytes`, so neither sum overflows.
            guard bytes.count - at >= count + 2 else { return nil }
            guard bytes[at + count] == 13, bytes[at + count + 1] == 10 else {
                throw RESPError(.badTerminator, "a bulk string of \(count) bytes not followed by CRLF")
            }
            let body = Array(UnsafeRawBufferPointer(rebasing: bytes[at..<(at + count)]))
            cursor = at + count + 2
            return .bulk(body)
        case UInt8(ascii: "*"):
            guard let line = try line(bytes, &at) else { return nil }
            let length = try Self.integer(UnsafeRawBufferPointer(rebasing: bytes[line]))
            if length == -1 {
                cursor = at
                return .array(nil)
            }
            guard length >= 0 else { throw RESPError(.badNumber, "an array of length \(length)") }
            guard length <= limits.elements else {
                throw RESPError(.tooLarge, "an array of \(length) elements, over the limit of \(limits.elements)")
            }
            guard depth < limits.depth else { throw RESPError(.tooLarge, "arrays nested deeper than \(limits.depth)") }
            let count = Int(length)
            // Each element takes at least 3 bytes (":0\r\n" is the shortest but "+\r\n" is 3):
            // an array that cannot fit in what has arrived is not here yet, and nothing is
            // reserved for a count a server merely claims.
            guard (bytes.count - at) / 3 >= count else { return nil }
            var elements: [RESPValue] = []
            elements.reserveCapacity(count)
            for _ in 0..<count {
                guard let element = try value(bytes, &at, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            cursor = at
            return .array(elements)
        default:
            throw RESPError(.badType, "a reply starting with byte \(kind), which is no RESP2 type")
        }
    }

    /// The range of the line at `at`, before its CRLF, with `at` moved past the CRLF; nil when
    /// the CRLF has not arrived.
    func line(_ bytes: UnsafeRawBufferPointer, _ at: inout Int) throws(RESPError) -> Range<Int>? {
        let start = at
        var index = start
        // The CR is looked for in at most `lineBytes + 1` bytes.
        let end = min(bytes.count, start + limits.lineBytes + 1)
        while index < end, bytes[index] != 13 { index += 1 }
        if index == end {
            if index - start > limits.lineBytes { throw RESPError(.tooLarge, "a line over \(limits.lineBytes) bytes") }
            return nil
        }
        guard index + 1 < bytes.count else { return nil }
        guard bytes[index + 1] == 10 else { throw RESPError(.badTerminator, "a CR not followed by LF") }
        at = index + 2
        return start..<index
    }

    /// A decimal integer, as RESP writes them: an optional minus, then 1 to 19 digits.
    static func integer(_ text: UnsafeRawBufferPointer) throws(RESPError) -> Int64 {
        var digits = text[...]
        let negative = digits.first == UInt8(ascii: "-")
        if negative { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.count <= 19 else {
            throw RESPError(.badNumber, "\"\(String(decoding: text, as: UTF8.self))\" is not an integer")
        }
        var value: Int64 = 0
        for digit in digits {
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else {
                throw RESPError(.badNumber, "\"\(String(decoding: text, as: UTF8.self))\" is not an integer")
            }
            let (times, overflow) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(digit - UInt8(ascii: "0")))
            guard !overflow, !overflow2 else {
                throw RESPError(.badNumber, "\"\(String(decoding: text, as: UTF8.self))\" is out of range")
            }
            value = sum
        }
        return negative ? -value : value
    }
}
