import SluiceCore
import Foundation
@testable import SluiceIntelligence
import Testing

/// Times from clients and traces are whatever they say: no time, however absurd, may make the
/// detector's arithmetic trap (a ReportOutcome at 2^64 - 1 ms once killed the daemon).
@Suite struct AnomalyTimeTests {
    static let extremes: [Int64] = [.min, .min + 1, -(1 << 62), -1, 0, 1, 1 << 52, (1 << 52) + 1, 1 << 62, .max - 1, .max]

    static func failure(at time: Int64, subject: String = "a", ip: String = "") -> CheckEvent {
        .init(timestampMs: time, tenant: "", subject: subject, ip: ip, route: "POST /login", status: 401)
    }

    @Test(arguments: extremes)
    func anOutcomeAtAnyTimeAfterAnOrdinaryOneIsCountedWithoutTrapping(time: Int64) {
        var settings = AnomalySettings()
        settings.warmupMs = 1
        let detector = AnomalyDetector(settings: settings)
        _ = detector.observeOutcome(Self.failure(at: 1_767_225_600_000))
        // The sequence of the crash: the same subject and address, then every other order.
        _ = detector.observeOutcome(Self.failure(at: time))
        _ = detector.observeRequest(Self.failure(at: time))
        _ = detector.observe(Self.failure(at: time, subject: "b", ip: "192.0.2.1"))
        detector.sweepIfDue(now: time)
        _ = detector.observeOutcome(Self.failure(at: 1_767_225_600_000))
        #expect(detector.tracked.subjects >= 1)
    }

    @Test(arguments: extremes)
    func everyPairOfExtremeTimesIsSafeInEitherOrder(first: Int64) {
        for second in Self.extremes {
            let detector = AnomalyDetector(settings: AnomalySettings())
            var alerts: [AnomalyAlert] = []
            for (index, time) in [first, second, first].enumerated() {
                alerts += detector.observe(Self.failure(at: time, subject: "s\(index % 2)", ip: "198.51.100.\(index % 2)"))
                alerts += detector.observeOutcome(Self.failure(at: time))
            }
            // Alerts carry the time the detector worked with, inside its range.
            #expect(alerts.allSatisfy { AnomalyDetector.timeRange.contains($0.timestampMs) })
        }
    }

    @Test(arguments: [Int64.min, -(1 << 61), Int64.max])
    func aRestoredStateWithAbsurdTimesIsBroughtIntoRange(value: Int64) throws {
        let saved = AnomalyDetector(settings: AnomalySettings())
        _ = saved.observe(Self.failure(at: 1_767_225_600_000, ip: "192.0.2.9"))
        _ = saved.observeOutcome(Self.failure(at: 1_767_225_600_000, ip: "192.0.2.9"))
        // A file written by something else: every time in it absurd, its checksum valid.
        for key in Array(saved.subjects.keys) {
            saved.subjects[key]?.lastAlert = value
            saved.subjects[key]?.firstSeen = value
            saved.subjects[key]?.lastSeen = value
            saved.subjects[key]?.lastBaselineUpdate = value
        }
        for key in Array(saved.sources.keys) {
            saved.sources[key]?.lastAlert = value
            saved.sources[key]?.firstSeen = value
            saved.sources[key]?.lastSeen = value
        }
        saved.lastGlobalAlert = value
        saved.start = value
        let restored = AnomalyDetector(settings: AnomalySettings())
        try restored.restoreState(saved.encodedState())
        let range = AnomalyDetector.never...AnomalyDetector.timeRange.upperBound
        #expect(restored.subjects.values.allSatisfy { range.contains($0.lastAlert) && range.contains($0.firstSeen) })
        #expect(restored.sources.values.allSatisfy { range.contains($0.lastAlert) && range.contains($0.lastSeen) })
        for time in Self.extremes {
            _ = restored.observe(Self.failure(at: time, ip: "192.0.2.9"))
            _ = restored.observeOutcome(Self.failure(at: time, ip: "192.0.2.9"))
            restored.sweepIfDue(now: time)
        }
        #expect(restored.hasLearned)
    }
}
