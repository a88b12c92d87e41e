import SluiceProto
import SwiftProtobuf

/// What the harness speaks to its target.
public enum TargetProtocol: Sendable, Equatable {
    /// Sluice frames: one `Request` with a `CheckRequest` of `batch` checks per frame.
    case sluice
    /// Redis RESP: `EVALSHA sha 1 key burst count period quantity` per request (a GCRA Lua script).
    case redis(sha: String)
    /// Sluice frames sent to a length-prefixed echo server: the floor any framed protocol pays.
    case echo
    /// Redis RESP, envoy ratelimit's way: `INCRBY key hits` and `EXPIRE key period` pipelined
    /// per request, a fixed window decided by the caller (allowed while the count is at most
    /// `limit`).
    case redisIncrement(limit: UInt64)
    /// Sluice's HTTP/JSON API: `POST /v1/check` with one check's JSON per request, on
    /// kept-alive HTTP/1.1 connections (pipelined at depths above 1).
    case http
    /// Envoy's rate limit service: one gRPC call of `ShouldRateLimit` per request (one
    /// descriptor `[(descriptorKey, the check's key)]` in `domain`), written as raw HTTP/2 frames
    /// on a connection the driver opened with ``GRPCWire/handshake(_:)``: the cost of a client as
    /// lean as Envoy's, not of a Swift gRPC stack.
    case grpc(domain: String, descriptorKey: String)

    /// Whether the target answers one check a request, in order, without ids (Redis, HTTP, gRPC at depth 1).
    public var isRedis: Bool {
        switch self {
        case .redis, .redisIncrement, .http, .grpc: return true
        case .sluice, .echo: return false
        }
    }
}

/// Builds request frames from checks encoded once, so that the harness spends its time on I/O,
/// not on encoding. A pre-encoded entry is the `CheckRequest.checks` field: tag, length, `Check`.
public struct RequestEncoder: Sendable {
    public let targetProtocol: TargetProtocol

    public init(targetProtocol: TargetProtocol) {
        self.targetProtocol = targetProtocol
    }

    /// The bytes one check contributes to a request: for Sluice the `checks` field of a
    /// `CheckRequest`; for Redis the whole EVALSHA command.
    public func encodeEntry(_ check: Sluice_V1_Check, redisArguments: RedisGCRAArguments) throws -> [UInt8] {
        switch targetProtocol {
        case .sluice, .echo:
            let body: [UInt8] = try check.serializedBytes()
            var entry: [UInt8] = [0x0A]
            Varint.append(UInt64(body.count), to: &entry)
            entry.append(contentsOf: body)
            return entry
        case .redis(let sha):
            return redisArguments.command(sha: sha, key: check.key, quantity: check.hitsPresence == nil ? 1 : check.hits)
        case .redisIncrement:
            return redisArguments.incrementCommands(key: check.key, quantity: check.hitsPresence == nil ? 1 : check.hits)
        case .http:
            var options = JSONEncodingOptions()
            options.preserveProtoFieldNames = true
            let body = Array(try check.jsonString(options: options).utf8)
            return Array("POST /v1/check HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body
        case .grpc(let domain, let descriptorKey):
            var request = Envoy_Service_Ratelimit_V3_RateLimitRequest()
            request.domain = domain
            var descriptor = Envoy_Service_Ratelimit_V3_RateLimitDescriptor()
            var entry = Envoy_Service_Ratelimit_V3_RateLimitDescriptor.Entry()
            entry.key = descriptorKey
            entry.value = check.key
            descriptor.entries = [entry]
            request.descriptors = [descriptor]
            return try request.serializedBytes()
        }
    }

    /// Appends one request holding `entries` (Sluice: one frame with every check; Redis: one
    /// command per entry, so `entries` must hold one).

    public func appendRequest(id: UInt64, entries: UnsafeBufferPointer<UnsafeBufferPointer<UInt8>>, to out: inout [UInt8]) {
        switch targetProtocol {
        case .redis, .redisIncrement, .http:
            for entry in entries { out.append(contentsOf: entry) }
        case .grpc:
            for entry in entries { GRPCWire.appendCall(stream: UInt32(truncatingIfNeeded: id &* 2 &- 1), message: entry, to: &out) }
        case .sluice, .echo:
            var checksLength = 0
            for entry in entries { checksLength += entry.count }
            let body = 1 + Varint.size(id) + 1 + Varint.size(UInt64(checksLength)) + checksLength
            out.append(UInt8(truncatingIfNeeded: body >> 24))
            out.append(UInt8(truncatingIfNeeded: body >> 16))
            out.append(UInt8(truncatingIfNeeded: body >> 8))
            out.append(UInt8(truncatingIfNeeded: body))
            out.append(0x08)
            Varint.append(id, to: &out)
            out.append(0x12)
            Varint.append(UInt64(checksLength), to: &out)
            for entry in entries { out.append(contentsOf: entry) }
        }
    }
}

/// The arguments of the GCRA Lua script (`scripts/gcra.lua`, redis-cell's semantics):
/// `KEYS[1]`, then burst, count per period, period in milliseconds, quantity.
public struct RedisGCRAArguments: Sendable {
    public var burst: UInt64
    public var count: UInt64
    public var periodMs: UInt64

    public init(burst: UInt64, count: UInt64, periodMs: UInt64) {
        self.burst = burst
        self.count = count
        self.periodMs = periodMs
    }

    /// `EVALSHA sha 1 key burst count period quantity` as a RESP array of bulk strings.
    public func command(sha: String, key: String, quantity: UInt64) -> [UInt8] {
        Self.encode(["EVALSHA", sha, "1", key, String(burst), String(count), String(periodMs), String(quantity)])
    }

    /// envoy ratelimit's two commands for one descriptor: `INCRBY key quantity` then `EXPIRE key
    /// seconds` (the period, at least a second). envoy puts the window's start in the key; the
    /// key here is fixed (the entry is encoded once), which costs Redis the same work.
    public func incrementCommands(key: String, quantity: UInt64) -> [UInt8] {
        let name = "ratelimit_" + key
        return Self.encode(["INCRBY", name, String(quantity)]) + Self.encode(["EXPIRE", name, String(max(1, (periodMs + 999) / 1_000))])
    }

    static func encode(_ parts: [String]) -> [UInt8] {
        var out = Array("*\(parts.count)\r\n".utf8)
        for part in parts {
            let bytes = Array(part.utf8)
            out.append(contentsOf: Array("$\(bytes.count)\r\n".utf8))
            out.append(contentsOf: bytes)
            out.append(contentsOf: [13, 10])
        }
        return out
    }
}

/// One answer read off the wire.
public struct Answer: Sendable, Equatable {
    /// The request id (Sluice; 0 for Redis and echo, which answer in order without ids).
    public var id: UInt64
    public var allowed: Int
    public var denied: Int
    /// True for a Sluice `Error` or a Redis error reply.
    public var isError: Bool

    public init(id: UInt64, allowed: Int, denied: Int, isError: Bool) {
        self.id = id
        self.allowed = allowed
        self.denied = denied
        self.isError = isError
    }
}

/// Why a stream of answers cannot be read any further.
public struct AnswerStreamError: Error, CustomStringConvertible {
    public var description: String
}

/// Reads answers from the bytes received so far, without copying and without a protobuf
/// decode: the harness must cost far less per request than the daemon it measures. The tests
/// check it against swift-protobuf on the same bytes.
public enum AnswerScanner {
    /// The largest answer frame accepted.
    public static let maximumFrame = 16 << 20

    /// Scans one answer at the start of `bytes`. Returns nil when more bytes are needed, else the
    /// answer and how many bytes it took.
    public static func next(_ bytes: UnsafeRawBufferPointer, protocol targetProtocol: TargetProtocol) throws(AnswerStreamError) -> (Answer, Int)? {
        switch targetProtocol {
        case .sluice: return try nextSluice(bytes, echo: false)
        case .echo: return try nextSluice(bytes, echo: true)
        case .redis: return try nextRESP(bytes)
        case .redisIncrement(let limit): return try nextIncrement(bytes, limit: limit)
        case .http: return try nextHTTP(bytes)
        case .grpc: return try GRPCWire.nextAnswer(bytes)
        }
    }

    /// An HTTP/1.1 answer of `/v1/check`: its head up to the blank line, `Content-Length` bytes
    /// of body; allowed when the body starts `{"allowed":true` (the API writes it first).
    static func nextHTTP(_ bytes: UnsafeRawBufferPointer) throws(AnswerStreamError) -> (Answer, Int)? {
        guard bytes.count >= 16 else { return nil }
        var end = -1
        var index = 3
        while index < bytes.count {
            if bytes[index] == 10, bytes[index - 1] == 13, bytes[index - 2] == 10, bytes[index - 3] == 13 { end = index + 1; break }
            index += 1
        }
        guard end > 0 else {
            if bytes.count > 16_384 { throw AnswerStreamError(description: "an HTTP head longer than 16 KiB") }
            return nil
        }
        let head = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<end]), as: UTF8.self)
        guard let line = head.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") }),
              let length = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)), length <= maximumFrame else {
            throw AnswerStreamError(description: "an HTTP answer without a Content-Length")
        }
        guard bytes.count >= end + length else { return nil }
        let ok = head.hasPrefix("HTTP/1.1 200")
        let allowedPrefix = Array("{\"allowed\":true".utf8)
        let allowed = ok && length >= allowedPrefix.count && UnsafeRawBufferPointer(rebasing: bytes[end..<(end + allowedPrefix.count)]).elementsEqual(allowedPrefix)
        return (Answer(id: 0, allowed: ok && allowed ? 1 : 0, denied: ok && !allowed ? 1 : 0, isError: !ok), end + length)
    }

    static func nextSluice(_ bytes: UnsafeRawBufferPointer, echo: Bool) throws(AnswerStreamError) -> (Answer, Int)? {
        guard bytes.count >= 4 else { return nil }
        let length = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
        guard length <= maximumFrame else { throw AnswerStreamError(description: "an answer frame of \(length) bytes") }
        guard bytes.count >= 4 + length else { return nil }
        let frame = UnsafeRawBufferPointer(rebasing: bytes[4..<(4 + length)])
        if echo {
            // The echoed request: its id is field 1, and it counts as one answer.
            var reader = ProtoReader(frame)
            var id: UInt64 = 0
            while let (field, wire) = try reader.tag() {
                if field == 1, wire == 0 { id = try reader.varint() } else { try reader.skip(wire) }
            }
            return (Answer(id: id, allowed: 0, denied: 0, isError: false), 4 + length)
        }
        return (try scanResponse(frame), 4 + length)
    }

    /// A `Response`: id (1), check (2: `CheckResponse` whose field 1 holds verdicts, whose field
    /// 1 is `allowed`), error (3).
    static func scanResponse(_ frame: UnsafeRawBufferPointer) throws(AnswerStreamError) -> Answer {
        var reader = ProtoReader(frame)
        var answer = Answer(id: 0, allowed: 0, denied: 0, isError: false)
        while let (field, wire) = try reader.tag() {
            switch (field, wire) {
            case (1, 0): answer.id = try reader.varint()
            case (2, 2):
                var checks = ProtoReader(try reader.lengthDelimited())
                while let (field, wire) = try checks.tag() {
                    guard field == 1, wire == 2 else { try checks.skip(wire); continue }
                    var verdict = ProtoReader(try checks.lengthDelimited())
                    var allowed = false
                    // Encoders write fields in order, so `allowed` (field 1) is usually first:
                    // stop there. A verdict without it (denied) is read to its end.
                    while let (field, wire) = try verdict.tag() {
                        if field == 1, wire == 0 {
                            allowed = try verdict.varint() != 0
                            break
                        }
                        try verdict.skip(wire)
                    }
                    if allowed { answer.allowed += 1 } else { answer.denied += 1 }
                }
            case (3, 2):
                answer.isError = true
                try reader.skip(wire)
            default: try reader.skip(wire)
            }
        }
        return answer
    }

    /// A RESP reply to EVALSHA: an array whose first integer is 0 (allowed) or 1 (limited), or
    /// an error line.
    static func nextRESP(_ bytes: UnsafeRawBufferPointer) throws(AnswerStreamError) -> (Answer, Int)? {
        var position = 0
        guard let first = try RESP.skipValue(bytes, &position) else { return nil }
        var answer = Answer(id: 0, allowed: 0, denied: 0, isError: false)
        switch first {
        case .error: answer.isError = true
        case .array(let firstInteger):
            if firstInteger == 0 { answer.allowed = 1 } else if firstInteger == 1 { answer.denied = 1 } else { answer.isError = true }
        case .integer, .other: answer.isError = true
        }
        return (answer, position)
    }

    /// The two replies to `INCRBY` and `EXPIRE`: the count after this request, then 1 (or 0);
    /// allowed while the count is at most `limit`.
    static func nextIncrement(_ bytes: UnsafeRawBufferPointer, limit: UInt64) throws(AnswerStreamError) -> (Answer, Int)? {
        var position = 0
        guard let count = try RESP.skipValue(bytes, &position), try RESP.skipValue(bytes, &position) != nil else { return nil }
        var answer = Answer(id: 0, allowed: 0, denied: 0, isError: false)
        if case .integer(let value) = count {
            if value >= 0, UInt64(value) <= limit { answer.allowed = 1 } else { answer.denied = 1 }
        } else {
            answer.isError = true
        }
        return (answer, position)
    }
}

/// ``FieldReader`` (the daemon's own reader) with its nils turned into errors for the scanner.
struct ProtoReader {
    var fields: FieldReader

    init(_ bytes: UnsafeRawBufferPointer) { fields = FieldReader(bytes) }

    static let malformed = AnswerStreamError(description: "a malformed protobuf answer")

    /// The next field's number and wire type, or nil at the end.
    mutating func tag() throws(AnswerStreamError) -> (Int, Int)? {
        guard !fields.atEnd else { return nil }
        guard let tag = fields.tag() else { throw Self.malformed }
        return tag
    }

    mutating func varint() throws(AnswerStreamError) -> UInt64 {
        guard let value = fields.varint() else { throw Self.malformed }
        return value
    }

    mutating func lengthDelimited() throws(AnswerStreamError) -> UnsafeRawBufferPointer {
        guard let bytes = fields.lengthDelimited() else { throw Self.malformed }
        return bytes
    }

    mutating func skip(_ wire: Int) throws(AnswerStreamError) {
        guard fields.skip(wire) else { throw Self.malformed }
    }
}

/// Just enough RESP2 to read script replies.
enum RESP {
    enum Value: Equatable {
        case error
        /// An array; its first element if that is an integer (else -1).
        case array(firstInteger: Int64)
        case integer(Int64)
        case other
    }

    /// Skips one complete value at `position`; nil (position unchanged) if it is not all here.
    static func skipValue(_ bytes: UnsafeRawBufferPointer, _ position: inout Int) throws(AnswerStreamError) -> Value? {
        var p = position
        guard let (kind, line) = try readLine(bytes, &p) else { return nil }
        let value: Value
        switch kind {
        case UInt8(ascii: "+"): value = .other
        case UInt8(ascii: "-"): value = .error
        case UInt8(ascii: ":"): value = .integer(try integer(line))
        case UInt8(ascii: "$"):
            let length = try integer(line)
            if length >= 0 {
                guard length <= AnswerScanner.maximumFrame else { throw AnswerStreamError(description: "a RESP string of \(length) bytes") }
                guard bytes.count - p >= Int(length) + 2 else { return nil }
                p += Int(length) + 2
            }
            value = .other
        case UInt8(ascii: "*"):
            let count = try integer(line)
            guard count <= 1_000_000 else { throw AnswerStreamError(description: "a RESP array of \(count) elements") }
            var first: Int64 = -1
            for index in 0..<max(0, count) {
                if index == 0, p < bytes.count, bytes[p] == UInt8(ascii: ":") {
                    var q = p
                    guard let (_, digits) = try readLine(bytes, &q) else { return nil }
                    first = try integer(digits)
                    p = q
                    continue
                }
                guard try skipValue(bytes, &p) != nil else { return nil }
            }
            value = .array(firstInteger: first)
        default:
            throw AnswerStreamError(description: "a RESP reply starting with byte \(kind)")
        }
        position = p
        return value
    }

    /// Reads `<kind><text>\r\n`; returns the kind and the text.
    static func readLine(_ bytes: UnsafeRawBufferPointer, _ position: inout Int) throws(AnswerStreamError) -> (UInt8, UnsafeRawBufferPointer)? {
        guard position < bytes.count else { return nil }
        var end = position + 1
        while end + 1 < bytes.count {
            if bytes[end] == 13, bytes[end + 1] == 10 {
                let line = UnsafeRawBufferPointer(rebasing: bytes[(position + 1)..<end])
                let kind = bytes[position]
                position = end + 2
                return (kind, line)
            }
            end += 1
            guard end - position < 1 << 20 else { throw AnswerStreamError(description: "a RESP line without an end") }
        }
        return nil
    }

    static func integer(_ text: UnsafeRawBufferPointer) throws(AnswerStreamError) -> Int64 {
        var value: Int64 = 0
        var negative = false
        for (index, byte) in text.enumerated() {
            if index == 0, byte == UInt8(ascii: "-") { negative = true; continue }
            guard byte >= 48, byte <= 57, value < Int64.max / 10 - 10 else {
                throw AnswerStreamError(description: "a RESP integer that is not one")
            }
            value = value * 10 + Int64(byte - 48)
        }
        return negative ? -value : value
    }
}

/// Just enough HTTP/2 and gRPC framing for a load client (RFC 9113, gRPC over HTTP/2): the
/// connection preface, a unary call as a HEADERS frame (HPACK without Huffman or indexing) and a
/// DATA frame, and answers read from frame headers and the response's first field.
public enum GRPCWire {
    /// `POST /envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` with gRPC's headers.
    static let headerBlock: [UInt8] = {
        var block: [UInt8] = [0x83, 0x86] // :method POST, :scheme http (static table)
        func literal(index: UInt8, _ value: String) {
            block.append(index) // literal without indexing, name from the static table (4-bit prefix)
            block.append(UInt8(value.utf8.count))
            block += Array(value.utf8)
        }
        literal(index: 0x04, "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")
        literal(index: 0x01, "sluice") // :authority
        block += [0x0F, 0x10] // content-type (static index 31)
        block.append(UInt8("application/grpc".utf8.count))
        block += Array("application/grpc".utf8)
        block += [0x00, 0x02] + Array("te".utf8) + [0x08] + Array("trailers".utf8)
        return block
    }()

    static func appendFrameHeader(length: Int, type: UInt8, flags: UInt8, stream: UInt32, to out: inout [UInt8]) {
        out += [UInt8(truncatingIfNeeded: length >> 16), UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length), type, flags,
                UInt8(truncatingIfNeeded: stream >> 24) & 0x7F, UInt8(truncatingIfNeeded: stream >> 16), UInt8(truncatingIfNeeded: stream >> 8),
                UInt8(truncatingIfNeeded: stream)]
    }

    /// One unary call on `stream`: HEADERS (end of headers), then DATA (end of stream) holding
    /// the length-prefixed message.
    static func appendCall(stream: UInt32, message: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        appendFrameHeader(length: headerBlock.count, type: 1, flags: 0x4, stream: stream, to: &out)
        out += headerBlock
        appendFrameHeader(length: 5 + message.count, type: 0, flags: 0x1, stream: stream, to: &out)
        out += [0, UInt8(truncatingIfNeeded: message.count >> 24), UInt8(truncatingIfNeeded: message.count >> 16),
                UInt8(truncatingIfNeeded: message.count >> 8), UInt8(truncatingIfNeeded: message.count)]
        out.append(contentsOf: message)
    }

    /// What a client sends first: the preface, empty SETTINGS, the connection's receive window
    /// opened to its largest (answers are never held back by flow control).
    public static var preface: [UInt8] {
        var out = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        appendFrameHeader(length: 0, type: 4, flags: 0, stream: 0, to: &out)
        appendFrameHeader(length: 4, type: 8, flags: 0, stream: 0, to: &out)
        let increment: UInt32 = 0x7FFF_FFFF - 65_535
        out += [UInt8(truncatingIfNeeded: increment >> 24), UInt8(truncatingIfNeeded: increment >> 16), UInt8(truncatingIfNeeded: increment >> 8),
                UInt8(truncatingIfNeeded: increment)]
        return out
    }

    /// The SETTINGS acknowledgement a client owes the server's first SETTINGS.
    public static var settingsAck: [UInt8] {
        var out: [UInt8] = []
        appendFrameHeader(length: 0, type: 4, flags: 0x1, stream: 0, to: &out)
        return out
    }

    /// The next call's answer: frames are read up to the first that ends a stream (trailers);
    /// the call is allowed when its message's `overall_code` (field 1) is OK, denied when
    /// OVER_LIMIT, an error otherwise (a status without a message). Frames on stream 0
    /// (SETTINGS, WINDOW_UPDATE, PING) are skipped; GOAWAY is an error of the stream.
    static func nextAnswer(_ bytes: UnsafeRawBufferPointer) throws(AnswerStreamError) -> (Answer, Int)? {
        var position = 0
        var code: UInt64 = 0
        while bytes.count - position >= 9 {
            let length = Int(bytes[position]) << 16 | Int(bytes[position + 1]) << 8 | Int(bytes[position + 2])
            let type = bytes[position + 3], flags = bytes[position + 4]
            let stream = (UInt32(bytes[position + 5]) & 0x7F) << 24 | UInt32(bytes[position + 6]) << 16 | UInt32(bytes[position + 7]) << 8
                | UInt32(bytes[position + 8])
            guard length <= 1 << 24 else { throw AnswerStreamError(description: "an HTTP/2 frame of \(length) bytes") }
            guard bytes.count - position >= 9 + length else { return nil }
            let payload = UnsafeRawBufferPointer(rebasing: bytes[(position + 9)..<(position + 9 + length)])
            position += 9 + length
            if type == 7 { throw AnswerStreamError(description: "the server sent GOAWAY") }
            guard stream != 0 else { continue }
            if type == 0 {
                var body = payload
                if flags & 0x8 != 0, let pad = body.first { body = UnsafeRawBufferPointer(rebasing: body[1..<max(1, body.count - Int(pad))]) }
                if body.count > 5 {
                    var reader = ProtoReader(UnsafeRawBufferPointer(rebasing: body[5...]))
                    while let (field, wire) = try reader.tag() {
                        if field == 1, wire == 0 { code = try reader.varint() } else { try reader.skip(wire) }
                    }
                }
            }
            if (type == 0 || type == 1), flags & 0x1 != 0 {
                return (Answer(id: 0, allowed: code == 1 ? 1 : 0, denied: code == 2 ? 1 : 0, isError: code != 1 && code != 2), position)
            }
        }
        return nil
    }
}
