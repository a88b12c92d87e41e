import Foundation

/// The detector's learned state across a restart (docs/ANOMALY.md, Restarts): what each subject
/// and address has taught it (their normals, when they were first and last seen, their last
/// alert) and the global normals, so a restarted daemon neither waits out the warm-up again nor
/// takes every address for a new one. The windows of the last 30 s and the current minute's
/// counts are not kept: they refill within a minute.
///
/// Format, little-endian: "SLAD", version 1, then the fields below, then the FNV-1a of every
/// byte before it. A file that does not decode whole (wrong magic or version, a count the bytes
/// do not hold, a checksum that does not match, a value out of range) is refused as a whole.
extension AnomalyDetector {
    public struct StateError: Error, CustomStringConvertible {
        public var description: String
    }

    static let stateMagic: [UInt8] = Array("SLAD".utf8)
    static let stateVersion: UInt32 = 1
    static let subjectBytes = 8 + 4 * 8 + 4 + 2 * (4 + 4)
    static let sourceBytes = 8 + 3 * 8 + 4 + 4

    /// The learned state, encoded.
    public func encodedState() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(96 + subjects.count * Self.subjectBytes + sources.count * Self.sourceBytes)
        out += Self.stateMagic
        out.append(le: Self.stateVersion)
        out.append(le: UInt64(bitPattern: start ?? -1))
        out.append(le: UInt64(bitPattern: lastGlobalAlert))
        for rate in [youngRequests, allRequests] {
            out.append(le: rate.normal.bitPattern)
            out.append(le: rate.samples.bitPattern)
        }
        out.append(le: UInt64(subjects.count))
        for (key, subject) in subjects {
            out.append(le: key)
            for value in [subject.lastBaselineUpdate, subject.firstSeen, subject.lastSeen, subject.lastAlert] {
                out.append(le: UInt64(bitPattern: value))
            }
            out.append(le: subject.baseline.bitPattern)
            for distinct in [subject.ids, subject.sources] {
                out.append(le: distinct.normal.bitPattern)
                out.append(le: distinct.samples)
            }
        }
        out.append(le: UInt64(sources.count))
        for (key, source) in sources {
            out.append(le: key)
            for value in [source.firstSeen, source.lastSeen, source.lastAlert] { out.append(le: UInt64(bitPattern: value)) }
            out.append(le: source.subjects.normal.bitPattern)
            out.append(le: source.subjects.samples)
        }
        out.append(le: Self.checksum(out[...]))
        return out
    }

    /// Replaces what the detector has learned with `bytes` (from ``encodedState()``), keeping at
    /// most `maxSubjects` and `maxSources` records. On any error nothing changes.
    public func restoreState(_ bytes: [UInt8]) throws(StateError) {
        guard bytes.count >= 8 + 8, Array(bytes[0..<4]) == Self.stateMagic else {
            throw StateError(description: "not an anomaly state file (no SLAD header)")
        }
        let end = bytes.count - 8
        var reader = Reader(bytes: bytes, position: end, end: bytes.count)
        guard try reader.u64() == Self.checksum(bytes[..<end]) else { throw StateError(description: "checksum mismatch: the file is damaged") }
        reader = Reader(bytes: bytes, position: 4, end: end)
        let version = try reader.u32()
        guard version == Self.stateVersion else { throw StateError(description: "version \(version); this sluiced reads version \(Self.stateVersion)") }
        let savedStart = Int64(bitPattern: try reader.u64())
        let savedGlobalAlert = Int64(bitPattern: try reader.u64())
        var rates: [GlobalRate] = []
        for _ in 0..<2 {
            var rate = GlobalRate()
            rate.normal = Double(bitPattern: try reader.u64())
            rate.samples = Double(bitPattern: try reader.u64())
            guard rate.normal.isFinite, rate.normal >= 0, rate.samples.isFinite, (0...360).contains(rate.samples) else {
                throw StateError(description: "a global normal out of range")
            }
            rates.append(rate)
        }
        let subjectCount = try reader.count(of: Self.subjectBytes)
        var restoredSubjects: [UInt64: Subject] = [:]
        restoredSubjects.reserveCapacity(min(subjectCount, settings.maxSubjects))
        for _ in 0..<subjectCount {
            let key = try reader.u64()
            var subject = Subject(lastBaselineUpdate: Int64(bitPattern: try reader.u64()), firstSeen: Int64(bitPattern: try reader.u64()),
                                  lastSeen: Int64(bitPattern: try reader.u64()))
            subject.lastAlert = Int64(bitPattern: try reader.u64())
            subject.baseline = Float(bitPattern: try reader.u32())
            subject.ids = try reader.distinct()
            subject.sources = try reader.distinct()
            guard subject.baseline.isFinite, subject.baseline >= 0 else { throw StateError(description: "a subject's normal out of range") }
            if restoredSubjects.count < settings.maxSubjects { restoredSubjects[key] = subject }
        }
        let sourceCount = try reader.count(of: Self.sourceBytes)
        var restoredSources: [UInt64: Source] = [:]
        restoredSources.reserveCapacity(min(sourceCount, settings.maxSources))
        for _ in 0..<sourceCount {
            let key = try reader.u64()
            var source = Source(firstSeen: Int64(bitPattern: try reader.u64()), lastSeen: Int64(bitPattern: try reader.u64()))
            source.lastAlert = Int64(bitPattern: try reader.u64())
            source.subjects = try reader.distinct()
            if restoredSources.count < settings.maxSources { restoredSources[key] = source }
        }
        guard reader.position == end else { throw StateError(description: "\(end - reader.position) bytes too many") }
        start = savedStart >= 0 ? savedStart : nil
        lastGlobalAlert = savedGlobalAlert
        youngRequests = rates[0]
        allRequests = rates[1]
        subjects = restoredSubjects
        sources = restoredSources
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash
    }

    /// Reads little-endian fields, refusing to read past the end.
    struct Reader {
        let bytes: [UInt8]
        var position: Int
        /// Where the fields end (the checksum follows).
        let end: Int

        mutating func u32() throws(StateError) -> UInt32 {
            guard position + 4 <= end else { throw StateError(description: "the file ends early") }
            defer { position += 4 }
            return (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[position + $1]) << (8 * UInt32($1)) }
        }

        mutating func u64() throws(StateError) -> UInt64 {
            guard position + 8 <= end else { throw StateError(description: "the file ends early") }
            defer { position += 8 }
            return (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[position + $1]) << (8 * UInt64($1)) }
        }

        /// A record count, checked against the bytes left (so an absurd count allocates nothing).
        mutating func count(of recordBytes: Int) throws(StateError) -> Int {
            let count = try u64()
            guard count <= UInt64((end - position) / recordBytes) else {
                throw StateError(description: "a count of \(count) records the file does not hold")
            }
            return Int(count)
        }

        mutating func distinct() throws(StateError) -> DistinctPerMinute {
            var distinct = DistinctPerMinute()
            distinct.normal = Float(bitPattern: try u32())
            distinct.samples = try u32()
            guard distinct.normal.isFinite, distinct.normal >= 0 else { throw StateError(description: "a distinct count's normal out of range") }
            return distinct
        }
    }
}

extension [UInt8] {
    mutating func append(le value: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) { append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    mutating func append(le value: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) { append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
}
