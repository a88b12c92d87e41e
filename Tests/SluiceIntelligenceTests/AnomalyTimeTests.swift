import SluiceCore
import Foundation
@testable import SluiceIntelligence
import SluiceTestKit
import Testing

/// Times from clients and traces are whatever they say: no time, however absurd, may make the
/// detector's arithmetic trap (a ReportOutcome at 2^64 - 1 ms once killed the daemon).
@Suite(.computes) struct AnomalyTimeTests {
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
        // A file written by something else: every time in it absurd, its checksum valid. (A
        // record keeps its times in 32 bits, so the absurd ones are written into the bytes: one
        // subject's four times, then one address's three.)
        #expect(saved.subjects.count == 1 && saved.sources.count == 1)
        var bytes = saved.encodedState()
        let subjectTimes = 4 + 4 + 8 + 8 + 3 * 16 + 8 + 8
        let sourceTimes = subjectTimes + AnomalyDetector.subjectBytes(version: AnomalyDetector.stateVersion) + 8
        // The detector's start and last global alert come first.
        for offset in [8, 16] + (0..<4).map({ subjectTimes + 8 * $0 }) + (0..<3).map({ sourceTimes + 8 * $0 }) {
            for byte in 0..<8 { bytes[offset + byte] = UInt8(truncatingIfNeeded: UInt64(bitPattern: value) >> (8 * UInt64(byte))) }
        }
        bytes.removeLast(8)
        bytes.appendLittleEndian(StableChecksum.of(bytes[...]))
        let restored = AnomalyDetector(settings: AnomalySettings())
        try restored.restoreState(bytes)
        #expect(restored.subjects.count == 1 && restored.sources.count == 1)
        let range = AnomalyDetector.never...AnomalyDetector.timeRange.upperBound
        restored.subjects.forEach { _, subject in #expect(range.contains(subject.lastAlert) && range.contains(subject.firstSeen)) }
        restored.sources.forEach { _, source in #expect(range.contains(source.lastAlert) && range.contains(source.lastSeen)) }
        for time in Self.extremes {
            _ = restored.observe(Self.failure(at: time, ip: "192.0.2.9"))
            _ = restored.observeOutcome(Self.failure(at: time, ip: "192.0.2.9"))
            restored.sweepIfDue(now: time)
        }
        #expect(restored.hasLearned)
    }
}
