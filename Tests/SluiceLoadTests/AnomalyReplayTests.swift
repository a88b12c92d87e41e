import SluiceCore
import Foundation
import SluiceIntelligence
import SluiceLoad
import SluiceTestKit
import Testing

/// The detector replayed over the labeled sample trace of `../shared/traces` (FORMAT.md), scored
/// by the rules of its `score.py`: a regression floor for recall and false positives.
@Suite(.computes) struct AnomalyReplayTests {
    static let shared: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/traces")

    struct Episode {
        var start: Int64
        var end: Int64
        var subjects: Set<String>
        var ips: Set<String>
        var global: Bool
    }

    /// CI lays a copy of shared/ beside the clone; a checkout without it skips this test (and
    /// `.ci/run` says so), rather than failing on a file that is not the repository's.
    static var sampleExists: Bool { FileManager.default.fileExists(atPath: shared.appendingPathComponent("dev-sample.labels.json").path) }

    @Test(.enabled(if: AnomalyReplayTests.sampleExists, "../shared/traces/dev-sample is not beside the repository"))
    func theSampleTraceIsDetectedWithFewFalsePositives() async throws {
        let trace = Self.shared.appendingPathComponent("dev-sample.csv.gz").path
        let labelsPath = Self.shared.appendingPathComponent("dev-sample.labels.json")
        let labelsData = try #require(FileManager.default.contents(atPath: labelsPath.path),
                                      "the sample trace is read from ../shared/traces beside the repository")
        let labels = try #require(try JSONSerialization.jsonObject(with: labelsData) as? [String: Any])
        let episodes = try #require(labels["episodes"] as? [[String: Any]]).map { episode in
            Episode(start: (episode["start_ms"] as? NSNumber)?.int64Value ?? 0, end: (episode["end_ms"] as? NSNumber)?.int64Value ?? 0,
                    subjects: Set(episode["subjects"] as? [String] ?? []), ips: Set(episode["ips"] as? [String] ?? []),
                    global: episode["scope"] as? String == "global")
        }
        // Half a million rows take seconds in a debug build: on a thread of their own, not one
        // of the two every test shares.
        let (rows, subjects, alerts) = try await blocking { () throws -> (Int, Set<String>, [AnomalyAlert]) in
            let detector = AnomalyDetector()
            var alerts: [AnomalyAlert] = []
            var subjects = Set<String>()
            var rows = 0
            try TraceReader.forEachRow(path: trace) { row in
                rows += 1
                subjects.insert(row.subject)
                alerts += detector.observe(CheckEvent(row))
            }
            return (rows, subjects, alerts)
        }
        #expect(rows == 469_568)
        // What each alert names: a subject alert on ip:X names X, an ip alert on X names ip:X.
        func named(_ alert: AnomalyAlert) -> (subjects: Set<String>, ips: Set<String>) {
            switch alert.scope {
            case .subject:
                let subject = alert.subject ?? ""
                return ([subject], subject.hasPrefix("ip:") ? [String(subject.dropFirst(3))] : [])
            case .ip: return (["ip:\(alert.ip ?? "")"], [alert.ip ?? ""])
            case .global: return ([], [])
            }
        }
        var detected = 0
        for episode in episodes {
            let counting = alerts.filter { $0.timestampMs >= episode.start && $0.timestampMs <= episode.end + 30_000 }
            let namedSubjects = counting.reduce(into: Set<String>()) { $0.formUnion(named($1).subjects) }.intersection(episode.subjects)
            let namedIPs = counting.reduce(into: Set<String>()) { $0.formUnion(named($1).ips) }.intersection(episode.ips)
            if 2 * namedSubjects.count >= episode.subjects.count || 2 * namedIPs.count >= episode.ips.count
                || (episode.global && counting.contains { $0.scope == .global }) {
                detected += 1
            }
        }
        let attackers = episodes.reduce(into: Set<String>()) { $0.formUnion($1.subjects) }
        let benign = subjects.subtracting(attackers)
        let falsePositives = alerts.reduce(into: Set<String>()) { $0.formUnion(named($1).subjects) }.intersection(benign)
        let falseGlobal = alerts.filter { alert in
            alert.scope == .global && !episodes.contains { $0.global && alert.timestampMs >= $0.start && alert.timestampMs <= $0.end + 30_000 }
        }
        #expect(Double(detected) / Double(episodes.count) >= 0.95, "recall \(detected)/\(episodes.count)")
        #expect(Double(falsePositives.count) / Double(benign.count) <= 0.005, "false positives: \(falsePositives.sorted().prefix(10))")
        #expect(falseGlobal.count <= 1, "\(falseGlobal)")
    }
}
