import Foundation
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceLoad
import SluiceServer

/// The YAML configuration loader: a file is accepted or refused with the file and a line or key,
/// never a crash; what it accepts is a configuration a daemon could run.
enum ConfigurationTarget {
    static func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        let text = String(decoding: bytes, as: UTF8.self)
        do {
            let configuration = try ConfigurationLoader.parse(text, source: "fuzz.yaml")
            for (name, rule) in configuration.rules where rule.limits.isEmpty { return "rule '\(name)' was accepted with no limit" }
            if configuration.maxFrameBytes <= 0 || configuration.maxBatch <= 0 { return "a non-positive server bound was accepted" }
        } catch {
            if !error.message.contains("fuzz.yaml") { return "a refusal that does not name the file: \(error.message)" }
        }
        return nil
    }
}

/// Seals `body` as a file of the format `magic` starts: the magic, the body, and the checksum
/// of both, so that fuzzing reaches the reader's field checks instead of failing the checksum.
/// Input: a first byte whose low bit says whether to seal, then the bytes.
func sealed(_ bytes: UnsafeRawBufferPointer, magic: [UInt8]) -> [UInt8]? {
    guard let first = bytes.first else { return nil }
    let rest = Array(bytes.dropFirst())
    guard first & 1 == 1 else { return rest }
    var file = magic + rest
    file.appendLittleEndian(StableChecksum.of(file[...]))
    return file
}

/// The limiter table's snapshot reader; every state it accepts can be decided against with any
/// limit of its algorithm, at any time a check may carry, without trapping.
enum SnapshotTarget {
    static let times: [Int64] = [0, 1, 1_767_225_600_000_000_000, 7_258_118_399_999_000_000]

    static func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        guard let file = sealed(bytes, magic: Array("SLUICESN".utf8)),
              let snapshot = try? TableSnapshot(decoding: file) else { return nil }
        let table = LimiterTable(shardCount: 4, maxEntries: 256)
        table.restore(snapshot)
        for entry in snapshot.entries.prefix(64) {
            for algorithm in Algorithm.allCases where entry.state.matches(algorithm) {
                for spec in specs(algorithm) {
                    var state = entry.state
                    for now in times + [snapshot.writtenAt] where (0...times[3]).contains(now) {
                        for hits: UInt64 in [0, 1, spec.limit, LimitSpec.maximumLimit] {
                            (_, state) = state.evaluate(hits: hits, now: now, spec: spec)
                            _ = state.recoveredAt(spec)
                        }
                    }
                }
            }
        }
        return nil
    }

    static func specs(_ algorithm: Algorithm) -> [LimitSpec] {
        [(1, 1_000_000), (10, 1_000_000_000), (LimitSpec.maximumLimit, LimitSpec.maximumPeriod)].compactMap {
            try? LimitSpec(limit: $0.0, period: $0.1, burst: $0.0, algorithm: algorithm)
        }
    }
}

/// Anomaly detection's saved-state reader; a detector restored from what it accepts goes on
/// detecting at any time.
enum AnomalyStateTarget {
    static func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        guard let file = sealed(bytes, magic: Array("SLAD".utf8)) else { return nil }
        var settings = AnomalySettings()
        settings.maxSubjects = 64
        settings.maxSources = 64
        let detector = AnomalyDetector(settings: settings)
        guard (try? detector.restoreState(file)) != nil else { return nil }
        if detector.tracked.subjects > 64 || detector.tracked.sources > 64 { return "a restore kept more than the caps" }
        for time: Int64 in [0, 1_767_225_600_000, .max] {
            _ = detector.observe(CheckEvent(timestampMs: time, tenant: "", subject: "a", ip: "192.0.2.1",
                                                    route: "POST /login", status: 401))
        }
        return nil
    }
}

/// The labeled trace reader (`sluicectl replay`, `sluice-bench --trace`); the detector replays
/// every row it accepts.
enum TraceTarget {
    static func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        let detector = AnomalyDetector(settings: AnomalySettings())
        do {
            try TraceReader.forEachRow(Data(bytes), name: "fuzz.csv") { row in
                _ = detector.observe(CheckEvent(row))
            }
        } catch let error as TraceError {
            if !error.description.hasPrefix("fuzz.csv") { return "a refusal that does not name the file: \(error.description)" }
        } catch {
            return "the reader threw \(error), not a TraceError"
        }
        return nil
    }
}
