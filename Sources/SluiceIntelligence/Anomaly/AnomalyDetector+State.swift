import Foundation
import SluiceCore

/// The detector's learned state across a restart (docs/ANOMALY.md, Restarts): what each subject
/// and address has taught it (their normals, when they were first and last seen, their last
/// alert) and the global normals, so a restarted daemon neither waits out the warm-up again nor
/// takes every address for a new one. The windows of the last 30 s and the current minute's
/// counts are not kept: they refill within a minute.
///
/// Format, little-endian (the table snapshot's reader and checksum): "SLAD", version 2, then the
/// fields below, then the ``StableChecksum`` of every byte before it. Version 2 added the
/// diffuse failures' normal, each subject's burst peak and sustained distinct count, and the
/// peer groups' histograms; version 1 files are still read (those start from nothing). A file that does not decode whole (wrong magic or version, a count the bytes
/// do not hold, a checksum that does not match, a value out of range) is refused as a whole.
extension AnomalyDetector {
    /// Why state bytes could not be read (the table snapshot's error).
    public typealias StateError = SnapshotError

    static let stateMagic: [UInt8] = Array("SLAD".utf8)
    static let stateVersion: UInt32 = 2
    static func subjectBytes(version: UInt32) -> Int { 8 + 4 * 8 + 4 + 2 * (4 + 4) + (version >= 2 ? 8 : 0) }
    static let histogramBytes = (FadingLogHistogram.bins + 1) * 4 + 8
    static let groupBytes = 8 + 3 * histogramBytes
    static let sourceBytes = 8 + 3 * 8 + 4 + 4

    /// The learned state, encoded.
    public func encodedState() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(96 + subjects.count * Self.subjectBytes(version: Self.stateVersion) + sources.count * Self.sourceBytes
                            + peers.groups.count * Self.groupBytes)
        out += Self.stateMagic
        out.appendLittleEndian(Self.stateVersion)
        out.appendLittleEndian(UInt64(bitPattern: start ?? -1))
        out.appendLittleEndian(UInt64(bitPattern: lastGlobalAlert))
        for rate in [youngRequests, allRequests, diffuseFailures] {
            out.appendLittleEndian(rate.normal.bitPattern)
            out.appendLittleEndian(rate.samples.bitPattern)
        }
        out.appendLittleEndian(UInt64(subjects.count))
        subjects.forEach { key, subject in
            out.appendLittleEndian(key)
            for value in [subject.lastBaselineUpdate, subject.firstSeen, subject.lastSeen, subject.lastAlert] {
                out.appendLittleEndian(UInt64(bitPattern: value))
            }
            out.appendLittleEndian(subject.baseline.bitPattern)
            for distinct in [subject.ids, subject.sources] {
                out.appendLittleEndian(distinct.normal.bitPattern)
                out.appendLittleEndian(distinct.samples)
            }
            out.appendLittleEndian(subject.peak.bitPattern)
            out.appendLittleEndian(subject.sustained.bitPattern)
        }
        out.appendLittleEndian(UInt64(sources.count))
        sources.forEach { key, source in
            out.appendLittleEndian(key)
            for value in [source.firstSeen, source.lastSeen, source.lastAlert] { out.appendLittleEndian(UInt64(bitPattern: value)) }
            out.appendLittleEndian(source.subjects.normal.bitPattern)
            out.appendLittleEndian(source.subjects.samples)
        }
        out.appendLittleEndian(UInt64(peers.index.count))
        for (key, group) in peers.index.sorted(by: { $0.value < $1.value }) {
            out.appendLittleEndian(key)
            for histogram in [peers.groups[Int(group)].hits, peers.groups[Int(group)].distinct, peers.groups[Int(group)].sustained] {
                for bin in 0..<FadingLogHistogram.bins { out.appendLittleEndian(histogram[bin].bitPattern) }
                out.appendLittleEndian(histogram.total.bitPattern)
                out.appendLittleEndian(UInt64(bitPattern: histogram.faded))
            }
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
        guard version == 1 || version == Self.stateVersion else {
            throw StateError("version \(version); this sluiced reads versions 1 and \(Self.stateVersion)")
        }
        let savedStart = Int64(bitPattern: try reader.read())
        let savedGlobalAlert = try Self.time(&reader)
        var rates: [GlobalRate] = []
        for _ in 0..<(version >= 2 ? 3 : 2) {
            var rate = GlobalRate()
            rate.normal = Double(bitPattern: try reader.read())
            rate.samples = Double(bitPattern: try reader.read())
            guard rate.normal.isFinite, rate.normal >= 0, rate.samples.isFinite, (0...360).contains(rate.samples) else {
                throw StateError("a global normal out of range")
            }
            rates.append(rate)
        }
        let subjectCount = try Self.count(&reader, of: Self.subjectBytes(version: version))
        var restoredSubjects = RecordTable<Subject>(maxCount: settings.maxSubjects)
        for _ in 0..<subjectCount {
            let key: UInt64 = try reader.read()
            var subject = Subject(lastBaselineUpdate: try Self.time(&reader), firstSeen: try Self.time(&reader),
                                  lastSeen: try Self.time(&reader))
            subject.lastAlert = try Self.time(&reader)
            subject.baseline = Float(bitPattern: try reader.read())
            subject.ids = try Self.distinct(&reader)
            subject.sources = try Self.distinct(&reader)
            if version >= 2 {
                subject.peak = Float(bitPattern: try reader.read())
                subject.sustained = Float(bitPattern: try reader.read())
            }
            guard subject.baseline.isFinite, subject.baseline >= 0, subject.peak.isFinite, subject.peak >= 0,
                  subject.sustained.isFinite, subject.sustained >= 0 else { throw StateError("a subject's normal out of range") }
            if restoredSubjects.count < settings.maxSubjects { restoredSubjects[key] = subject }
        }
        let sourceCount = try Self.count(&reader, of: Self.sourceBytes)
        var restoredSources = RecordTable<Source>(maxCount: settings.maxSources)
        for _ in 0..<sourceCount {
            let key: UInt64 = try reader.read()
            var source = Source(firstSeen: try Self.time(&reader), lastSeen: try Self.time(&reader))
            source.lastAlert = try Self.time(&reader)
            source.subjects = try Self.distinct(&reader)
            if restoredSources.count < settings.maxSources { restoredSources[key] = source }
        }
        var restoredPeers = PeerGroups()
        if version >= 2 {
            let groupCount = try Self.count(&reader, of: Self.groupBytes)
            for _ in 0..<groupCount {
                let key: UInt64 = try reader.read()
                var group = PeerGroup()
                for feature: WritableKeyPath<PeerGroup, FadingLogHistogram> in [\.hits, \.distinct, \.sustained] {
                    var histogram = FadingLogHistogram()
                    for bin in 0..<FadingLogHistogram.bins { histogram[bin] = Float(bitPattern: try reader.read()) }
                    histogram.total = Float(bitPattern: try reader.read())
                    histogram.faded = try Self.time(&reader)
                    guard (0..<FadingLogHistogram.bins).allSatisfy({ histogram[$0].isFinite && histogram[$0] >= 0 }),
                          histogram.total.isFinite, histogram.total >= 0 else { throw StateError("a peer group's counts out of range") }
                    group[keyPath: feature] = histogram
                }
                if key == 0 {
                    restoredPeers.groups[0] = group
                } else if restoredPeers.index[key] == nil, restoredPeers.groups.count < PeerGroups.capacity {
                    restoredPeers.index[key] = UInt16(restoredPeers.groups.count)
                    restoredPeers.groups.append(group)
                    restoredPeers.names.append("(restored)")
                }
            }
        }
        guard reader.remaining == 0 else { throw StateError("\(reader.remaining) bytes too many") }
        start = savedStart >= 0 ? min(savedStart, Self.timeRange.upperBound) : nil
        lastGlobalAlert = savedGlobalAlert
        youngRequests = rates[0]
        allRequests = rates[1]
        diffuseFailures = rates.count > 2 ? rates[2] : GlobalRate()
        peers = restoredPeers
        subjects = restoredSubjects
        sources = restoredSources
        failureLogs = [:]
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
