import Foundation
import SluiceCore

/// The detector's learned state across a restart (docs/ANOMALY.md, Restarts): what each subject
/// and address has taught it (their normals, when they were first and last seen, their last
/// alert) and the global normals, so a restarted daemon neither waits out the warm-up again nor
/// takes every address for a new one. The windows of the last 30 s and the current minute's
/// counts are not kept: they refill within a minute.
///
/// Format, little-endian (the table snapshot's reader and checksum): "SLAD", version 1, then the
/// fields below, then the ``StableChecksum`` of every byte before it. A file that does not decode whole (wrong magic or version, a count the bytes
/// do not hold, a checksum that does not match, a value out of range) is refused as a whole.
extension AnomalyDetector {
    /// Why state bytes could not be read (the table snapshot's error).
    public typealias StateError = SnapshotError

    static let stateMagic: [UInt8] = Array("SLAD".utf8)
    static let stateVersion: UInt32 = 1
    static let subjectBytes = 8 + 4 * 8 + 4 + 2 * (4 + 4)
    static let sourceBytes = 8 + 3 * 8 + 4 + 4

    /// The learned state, encoded.
    public func encodedState() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(96 + subjects.count * Self.subjectBytes + sources.count * Self.sourceBytes)
        out += Self.stateMagic
        out.appendLittleEndian(Self.stateVersion)
        out.appendLittleEndian(UInt64(bitPattern: start ?? -1))
        out.appendLittleEndian(UInt64(bitPattern: lastGlobalAlert))
        for rate in [youngRequests, allRequests] {
            out.appendLittleEndian(rate.normal.bitPattern)
            out.appendLittleEndian(rate.samples.bitPattern)
        }
        out.appendLittleEndian(UInt64(subjects.count))
        for (key, subject) in subjects {
            out.appendLittleEndian(key)
            for value in [subject.lastBaselineUpdate, subject.firstSeen, subject.lastSeen, subject.lastAlert] {
                out.appendLittleEndian(UInt64(bitPattern: value))
            }
            out.appendLittleEndian(subject.baseline.bitPattern)
            for distinct in [subject.ids, subject.sources] {
                out.appendLittleEndian(distinct.normal.bitPattern)
                out.appendLittleEndian(distinct.samples)
            }
        }
        out.appendLittleEndian(UInt64(sources.count))
        for (key, source) in sources {
            out.appendLittleEndian(key)
            for value in [source.firstSeen, source.lastSeen, source.lastAlert] { out.appendLittleEndian(UInt64(bitPattern: value)) }
            out.appendLittleEndian(source.subjects.normal.bitPattern)
            out.appendLittleEndian(source.subjects.samples)
        }
        out.appendLittleEndian(StableChecksum.of(out[...]))
        return out
    }

    /// Replaces what the detector has learned with `bytes` (from ``encodedState()``), keeping at
    /// most `maxSubjects` and `maxSources` records. On any error nothing changes.
    public func restoreState(_ bytes: [UInt8]) throws(StateError) {
        guard bytes.count >= 8 + 8, Array(bytes[0..<4]) == Self.stateMagic else {
            throw StateError("not an anomaly state file (no SLAD header)")
        }
        let end = bytes.count - 8
        var trailer = SnapshotReader(bytes[end...])
        guard try trailer.read() as UInt64 == StableChecksum.of(bytes[..<end]) else {
            throw StateError("checksum mismatch: the file is damaged")
        }
        var reader = SnapshotReader(bytes[4..<end])
        let version: UInt32 = try reader.read()
        guard version == Self.stateVersion else { throw StateError("version \(version); this sluiced reads version \(Self.stateVersion)") }
        let savedStart = Int64(bitPattern: try reader.read())
        let savedGlobalAlert = try Self.time(&reader)
        var rates: [GlobalRate] = []
        for _ in 0..<2 {
            var rate = GlobalRate()
            rate.normal = Double(bitPattern: try reader.read())
            rate.samples = Double(bitPattern: try reader.read())
            guard rate.normal.isFinite, rate.normal >= 0, rate.samples.isFinite, (0...360).contains(rate.samples) else {
                throw StateError("a global normal out of range")
            }
            rates.append(rate)
        }
        let subjectCount = try Self.count(&reader, of: Self.subjectBytes)
        var restoredSubjects: [UInt64: Subject] = [:]
        restoredSubjects.reserveCapacity(min(subjectCount, settings.maxSubjects))
        for _ in 0..<subjectCount {
            let key: UInt64 = try reader.read()
            var subject = Subject(lastBaselineUpdate: try Self.time(&reader), firstSeen: try Self.time(&reader),
                                  lastSeen: try Self.time(&reader))
            subject.lastAlert = try Self.time(&reader)
            subject.baseline = Float(bitPattern: try reader.read())
            subject.ids = try Self.distinct(&reader)
            subject.sources = try Self.distinct(&reader)
            guard subject.baseline.isFinite, subject.baseline >= 0 else { throw StateError("a subject's normal out of range") }
            if restoredSubjects.count < settings.maxSubjects { restoredSubjects[key] = subject }
        }
        let sourceCount = try Self.count(&reader, of: Self.sourceBytes)
        var restoredSources: [UInt64: Source] = [:]
        restoredSources.reserveCapacity(min(sourceCount, settings.maxSources))
        for _ in 0..<sourceCount {
            let key: UInt64 = try reader.read()
            var source = Source(firstSeen: try Self.time(&reader), lastSeen: try Self.time(&reader))
            source.lastAlert = try Self.time(&reader)
            source.subjects = try Self.distinct(&reader)
            if restoredSources.count < settings.maxSources { restoredSources[key] = source }
        }
        guard reader.remaining == 0 else { throw StateError("\(reader.remaining) bytes too many") }
        start = savedStart >= 0 ? min(savedStart, Self.timeRange.upperBound) : nil
        lastGlobalAlert = savedGlobalAlert
        youngRequests = rates[0]
        allRequests = rates[1]
        subjects = restoredSubjects
        sources = restoredSources
        // Restored records are nobody's in the tenants' record quotas until they are forgotten.
        recordTenants = [:]
        recordCounts = [:]
    }

    /// A record count, checked against the bytes left (so an absurd count allocates nothing).
    static func count(_ reader: inout SnapshotReader, of recordBytes: Int) throws(StateError) -> Int {
        let count: UInt64 = try reader.read()
        guard count <= UInt64(reader.remaining / recordBytes) else {
            throw StateError("a count of \(count) records the file does not hold")
        }
        return Int(count)
    }

    /// A saved time, brought into ``timeRange`` (or "never"), as every time detection takes.
    static func time(_ reader: inout SnapshotReader) throws(StateError) -> Int64 {
        let time = Int64(bitPattern: try reader.read())
        return min(max(time, never), timeRange.upperBound)
    }

    static func distinct(_ reader: inout SnapshotReader) throws(StateError) -> DistinctPerMinute {
        var distinct = DistinctPerMinute()
        distinct.normal = Float(bitPattern: try reader.read())
        distinct.samples = try reader.read()
        guard distinct.normal.isFinite, distinct.normal >= 0 else { throw StateError("a distinct count's normal out of range") }
        return distinct
    }
}
