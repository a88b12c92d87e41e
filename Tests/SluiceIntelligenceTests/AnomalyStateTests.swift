import Foundation
import SluiceCore
@testable import SluiceIntelligence
import SluiceTestKit
import Testing

/// The detector's learned state across a restart: a restored detector is as warm as the one saved,
/// and a damaged file is refused whole, never a crash.
@Suite(.computes) struct AnomalyStateTests {
    static let t0 = AnomalyDetectorTests.t0
    static let minute = AnomalyDetectorTests.minute

    /// A detector that has learned 30 minutes of background and a steady key.
    static func learned(_ settings: AnomalySettings) -> AnomalyDetector {
        let detector = AnomalyDetector(settings: settings)
        var rows = AnomalyDetectorTests.background(from: t0, to: t0 + 30 * minute)
        for step in stride(from: Int64(0), to: 30 * minute, by: 5_000) {
            rows.append(.init(timestampMs: t0 + step, tenant: "t", subject: "key_a", ip: "10.1.1.1", route: "POST /api/v1/events", status: 201))
        }
        _ = AnomalyDetectorTests.run(detector, rows)
        return detector
    }

    var settings: AnomalySettings {
        var settings = AnomalySettings()
        settings.warmupMs = 10 * Self.minute
        settings.subjectWarmupMs = 10 * Self.minute
        return settings
    }

    @Test func aRestoredDetectorIsAsWarmAsTheOneSaved() throws {
        let saved = Self.learned(settings)
        let bytes = saved.encodedState()
        let restored = AnomalyDetector(settings: settings)
        try restored.restoreState(bytes)
        #expect(restored.tracked == saved.tracked)
        let key = AnomalyDetector.subjectKey(.init(timestampMs: 0, tenant: "t", subject: "key_a"))
        #expect(restored.subjects[key]?.baseline == saved.subjects[key]?.baseline)
        #expect(restored.subjects[key]?.firstSeen == Self.t0)
        #expect(restored.allRequests.normal == saved.allRequests.normal)
        #expect(restored.encodedState().count == bytes.count)
        // Right after the restart (a minute later), the key floods: alerted at once, against the
        // normal it had, with no new warm-up; its address is not a new source.
        let restart = Self.t0 + 31 * Self.minute
        let alerts = (0..<300).flatMap { index in
            restored.observe(.init(timestampMs: restart + Int64(index) * 100, tenant: "t", subject: "key_a", ip: "10.1.1.1",
                                   route: "POST /api/v1/events", status: 201))
        }
        #expect(alerts.map(\.kind) == ["rate_spike"], "\(alerts)")
        #expect((alerts.first?.timestampMs ?? 0) - restart <= 25_000, "within seconds, then held for spike_persistence")
        // A fresh detector would have said nothing: it is in its warm-up.
        let fresh = AnomalyDetector(settings: settings)
        #expect((0..<300).flatMap { index in
            fresh.observe(.init(timestampMs: restart + Int64(index) * 100, tenant: "t", subject: "key_a", ip: "10.1.1.1",
                                route: "POST /api/v1/events", status: 201))
        }.isEmpty)
    }

    @Test func aRestoreKeepsAtMostTheCaps() throws {
        let bytes = Self.learned(settings).encodedState()
        var small = settings
        small.maxSubjects = 10
        small.maxSources = 5
        let restored = AnomalyDetector(settings: small)
        try restored.restoreState(bytes)
        #expect(restored.tracked.subjects == 10 && restored.tracked.sources == 5)
    }

    @Test func aVersionOneFileIsStillRead() throws {
        // Version 1: two global normals, records without burst peaks, no peer groups.
        var bytes = Array("SLAD".utf8)
        bytes.appendLittleEndian(UInt32(1))
        bytes.appendLittleEndian(UInt64(bitPattern: Self.t0))
        bytes.appendLittleEndian(UInt64(bitPattern: -(1 << 60)))
        for value in [120.0, 360.0, 40.0, 360.0] { bytes.appendLittleEndian(value.bitPattern) }
        bytes.appendLittleEndian(UInt64(1))
        bytes.appendLittleEndian(UInt64(42))
        for time in [Self.t0, Self.t0, Self.t0 + 1_000, -(1 << 60)] { bytes.appendLittleEndian(UInt64(bitPattern: time)) }
        bytes.appendLittleEndian(Float(0.5).bitPattern)
        for _ in 0..<2 {
            bytes.appendLittleEndian(Float(3).bitPattern)
            bytes.appendLittleEndian(UInt32(10))
        }
        bytes.appendLittleEndian(UInt64(0))
        bytes.appendLittleEndian(StableChecksum.of(bytes[...]))
        let detector = AnomalyDetector(settings: settings)
        try detector.restoreState(bytes)
        #expect(detector.tracked == (1, 0))
        #expect(detector.subjects[42]?.baseline == 0.5 && detector.subjects[42]?.peak == 0)
        #expect(detector.youngRequests.normal == 120 && detector.allRequests.normal == 40 && detector.diffuseFailures.normal == 0)
        // Written again, it is version 2.
        #expect(detector.encodedState()[4] == 2)
    }

    @Test func peakPeersAndDiffuseFailuresSurviveARestart() throws {
        let saved = Self.learned(settings)
        let key = AnomalyDetector.subjectKey(.init(timestampMs: 0, tenant: "t", subject: "key_a"))
        saved.subjects[key]?.peak = 7.5
        let restored = AnomalyDetector(settings: settings)
        try restored.restoreState(saved.encodedState())
        #expect(restored.subjects[key]?.peak == 7.5)
        #expect(restored.peers.groups.count == saved.peers.groups.count)
        #expect(restored.peerGroups.map(\.minutes) == saved.peerGroups.map(\.minutes))
    }

    @Test func damagedTruncatedOrForeignBytesAreRefusedWholeAndChangeNothing() throws {
        let bytes = Self.learned(settings).encodedState()
        let detector = AnomalyDetector(settings: settings)
        _ = detector.observe(.init(timestampMs: Self.t0, tenant: "t", subject: "keep", ip: "10.9.9.9", route: "GET /", status: 200))
        var random = SeededGenerator(seed: 7)
        var refused = 0
        // Every truncation point, bit flips anywhere, absurd counts, garbage, another version.
        var cases: [[UInt8]] = [[], Array("SLAD".utf8), Array(repeating: 0xFF, count: 64), Array("not a state file".utf8)]
        for length in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 300)) { cases.append(Array(bytes[..<length])) }
        for _ in 0..<300 {
            var flipped = bytes
            flipped[Int.random(in: 0..<flipped.count, using: &random)] ^= UInt8(1 << Int.random(in: 0..<8, using: &random))
            cases.append(flipped)
        }
        var version = bytes
        version[4] = 9
        cases.append(version)
        for damaged in cases {
            do {
                try detector.restoreState(damaged)
            } catch {
                refused += 1
            }
        }
        #expect(refused == cases.count, "every damaged file is refused")
        #expect(detector.tracked == (1, 1), "nothing changed")
        // An absurd record count under a valid checksum is refused before anything is allocated.
        var absurd = Array(bytes[..<(4 + 4 + 8 + 8 + 48)])
        absurd.appendLittleEndian(UInt64.max)
        absurd.appendLittleEndian(StableChecksum.of(absurd[...]))
        #expect(throws: AnomalyDetector.StateError.self) { try detector.restoreState(absurd) }
    }
}
