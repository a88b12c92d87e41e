import SluiceCore
import SluiceRedis
import SluiceServer

/// Redis replies as the client reads them: a stream read whole and the same stream read as it
/// arrives in pieces (boundaries drawn from the input) give the same replies and end the same
/// way (the same error, or waiting for more); and every reply read, written back out, reads
/// back as itself. Small limits, so that inputs reach them.
///
/// Input: 8 bytes seeding the read sizes, then the stream a server sent.
enum RedisReplyTarget {
    static let reader: RESPReader = {
        var limits = RESPReader.Limits()
        limits.bulkBytes = 4_096
        limits.elements = 512
        limits.lineBytes = 256
        limits.depth = 8
        return RESPReader(limits: limits)
    }()

    /// The replies of `bytes`, and how the stream ended: the error, or nil (waiting for more).
    static func readAll(_ bytes: UnsafeRawBufferPointer) -> ([RESPValue], RESPError?) {
        var values: [RESPValue] = []
        var position = 0
        do {
            while let value = try reader.read(bytes, at: &position) { values.append(value) }
            return (values, nil)
        } catch {
            return (values, error)
        }
    }

    static func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        guard bytes.count >= 8 else { return nil }
        var random = SplitMix(state: bytes.loadUnaligned(as: UInt64.self))
        let stream = UnsafeRawBufferPointer(rebasing: bytes[8...])
        let (whole, ending) = readAll(stream)
        // As it arrives: what has come so far, read as far as it goes after each piece.
        var arrived: [UInt8] = []
        var position = 0
        var pieces: [RESPValue] = []
        var pieceEnding: RESPError?
        var offset = 0
        reading: while offset < stream.count {
            let size = min(random.size(upTo: 64), stream.count - offset)
            arrived.append(contentsOf: stream[(stream.startIndex + offset)..<(stream.startIndex + offset + size)])
            offset += size
            do {
                try arrived.withUnsafeBytes { raw in
                    while let value = try reader.read(raw, at: &position) { pieces.append(value) }
                }
            } catch {
                pieceEnding = error as? RESPError
                break reading
            }
        }
        guard pieces == whole else { return "read in pieces, \(pieces.count) replies; read whole, \(whole.count)" }
        guard pieceEnding?.code == ending?.code else {
            return "read in pieces the stream ended \(pieceEnding.map(\.description) ?? "waiting"); whole, \(ending.map(\.description) ?? "waiting")"
        }
        // Read back with the default limits: a status line's invalid UTF-8 reads as U+FFFD,
        // three bytes a byte, so what is written out can be longer than what was read.
        // What the backend makes of a reply, as a check's verdict or as fast mode's state, is
        // nil or sound for any reply: a server's numbers cannot trap it.
        for value in whole {
            if let problem = interpret(value) { return problem }
        }
        let unlimited = RESPReader()
        for value in whole {
            var written: [UInt8] = []
            write(value, into: &written)
            var at = 0
            let reread = written.withUnsafeBytes { try? unlimited.read($0, at: &at) }
            guard reread == value, at == written.count else { return "\(value) written out does not read back as itself" }
        }
        return nil
    }

    static let limits: [BoundLimit] = [Algorithm.gcra, .tokenBucket, .slidingWindow, .fixedWindow, .concurrency].enumerated().compactMap {
        guard let spec = try? LimitSpec(limit: 10, period: 1_000_000_000, algorithm: $0.element) else { return nil }
        return BoundLimit.rule("fuzz", index: $0.offset, spec: spec)
    }

    /// A reply read as the check script's answer for one and for two limits, and as the sync
    /// script's state for every algorithm; a problem, or nil.
    static func interpret(_ value: RESPValue) -> String? {
        let key = Fingerprint.of(tenant: "t", key: "k")
        for limits in [BatchCheck.Limits.single(limits[0]), .rule(Array(limits.prefix(2)))] {
            let item = BatchCheck(key: key, limits: limits, hits: 1, now: 1_767_225_600_000_000_000)
            if let decision = RedisBackend.decision(value, item: item), decision.retryAfter < 0 || decision.resetAfter < 0 {
                return "\(value) read as a decision with a negative time: \(decision)"
            }
        }
        for limit in limits {
            if let state = RedisBackend.fastState(value, spec: limit.spec), !state.matches(limit.spec.algorithm) {
                return "\(value) read as a \(limit.spec.algorithm) state of another algorithm: \(state)"
            }
        }
        return nil
    }

    /// `value` as a server writes it.
    static func write(_ value: RESPValue, into out: inout [UInt8]) {
        func line(_ kind: Character, _ text: String) {
            out.append(contentsOf: Array("\(kind)\(text)\r\n".utf8))
        }
        switch value {
        case .simple(let text): line("+", text)
        case .error(let text): line("-", text)
        case .integer(let number): line(":", String(number))
        case .bulk(nil): line("$", "-1")
        case .bulk(let bytes?):
            line("$", String(bytes.count))
            out.append(contentsOf: bytes)
            out.append(contentsOf: [13, 10])
        case .array(nil): line("*", "-1")
        case .array(let elements?):
            line("*", String(elements.count))
            for element in elements { write(element, into: &out) }
        }
    }
}
