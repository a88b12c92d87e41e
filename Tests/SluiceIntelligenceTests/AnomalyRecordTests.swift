@testable import SluiceIntelligence
import SluiceTestKit
import Testing

/// The detector's records stay the size docs/ANOMALY.md states (memory per million subjects).
@Suite(.computes) struct AnomalyRecordTests {
    @Test func recordsAreTheirDocumentedSize() {
        #expect(MemoryLayout<AnomalyDetector.Subject>.stride == 120)
        #expect(MemoryLayout<AnomalyDetector.Source>.stride == 40)
    }

    @Test func aLateEventCountsInTheCurrentMinuteAndResetsNothing() {
        var settings = AnomalySettings()
        settings.warmupMs = 0
        let detector = AnomalyDetector(settings: settings)
        let t0: Int64 = 1_710_000_000_000 + 30_000
        // Nine failures for one subject in the current minute, then one late outcome of the
        // minute before (live, a slow reporter), then the tenth: brute force, nothing reset.
        var alerts: [AnomalyAlert] = []
        for index in 0..<9 {
            alerts += detector.observeOutcome(.init(timestampMs: t0 + Int64(index) * 1_000, tenant: "t", subject: "u", ip: "10.0.0.1",
                                                    route: "POST /login", status: 401))
        }
        alerts += detector.observeOutcome(.init(timestampMs: t0 - 45_000, tenant: "t", subject: "u", ip: "10.0.0.1", route: "POST /login",
                                                status: 200))
        #expect(alerts.isEmpty)
        alerts += detector.observeOutcome(.init(timestampMs: t0 + 10_000, tenant: "t", subject: "u", ip: "10.0.0.1", route: "POST /login",
                                                status: 401))
        #expect(alerts.map(\.kind) == ["brute_force"])
        #expect(detector.subjects.count == 1 && detector.subjects[position: 0].failures == 10)
    }
}
