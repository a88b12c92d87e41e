import SluiceCore
import SluiceTestKit
import Foundation
@testable import SluiceIntelligence
import Testing

/// Peers, spread and the failure surge: the signals that judge a subject by what others like it
/// do and by its own bursts, on synthetic sequences in simulated time.
@Suite(.computes) struct AnomalyPeerTests {
    static let t0 = AnomalyDetectorTests.t0
    static let minute = AnomalyDetectorTests.minute
    var settings: AnomalySettings { AnomalyDetectorTests().settings }

    @Test func aFadingHistogramsQuantileIsTheUpperEdgeOfItsBinAndNeedsItsMinimum() {
        var histogram = FadingLogHistogram()
        for value in 0..<1_000 { histogram.add(Double(value % 100), at: Self.t0, halfLife: 3_600_000) }
        #expect(histogram.quantile(0.99, minimum: 2_000) == nil)
        let p99 = histogram.quantile(0.99, minimum: 100) ?? 0
        #expect(p99 >= 99 && p99 <= 99 * 1.2, "\(p99)")
        let p50 = histogram.quantile(0.5, minimum: 100) ?? 0
        #expect(p50 >= 49 && p50 <= 49 * 1.2, "\(p50)")
        // A half-life later, the old counts weigh half.
        histogram.add(0, at: Self.t0 + 3_600_000, halfLife: 3_600_000)
        #expect(histogram.total == 501)
    }

    @Test func aRoutesKindIsItsMethodAndFirstSegment() {
        #expect(PeerGroups.routeKind("GET /catalog/items/7") == "GET /catalog")
        #expect(PeerGroups.routeKind("POST /session") == "POST /session")
        #expect(PeerGroups.routeKind("GET /?q=1") == "GET /")
        #expect(PeerGroups.routeKind("GET") == "GET")
    }

    /// Browsers of one tenant: `count` users, each a page every `every` ms on its own address,
    /// reading items from a catalogue at random.
    static func browsers(_ count: Int, from: Int64, to: Int64, every: Int64, seed: UInt64) -> [CheckEvent] {
        var generator = SeededGenerator(seed: seed)
        var rows: [CheckEvent] = []
        for user in 0..<count {
            var time = from + Int64(generator.next() % UInt64(every))
            while time < to {
                rows.append(.init(timestampMs: time, tenant: "shop", subject: "user\(user)", ip: "198.51.\(user / 250).\(user % 250)",
                                  route: "GET /catalog/items/\(1 + generator.next() % 50_000)", status: 200))
                time += every / 2 + Int64(generator.next() % UInt64(every))
            }
        }
        return rows
    }

    @Test func aSubjectIsJudgedAgainstItsPeersOnceTheyHaveEnoughMinutes() {
        let detector = AnomalyDetector(settings: settings)
        let rows = Self.browsers(60, from: Self.t0, to: Self.t0 + 20 * Self.minute, every: 2_500, seed: 1)
        _ = AnomalyDetectorTests.run(detector, rows)
        let group = detector.peers.group(tenant: "shop", subject: "user1", route: "GET /catalog/items/1")
        let threshold = detector.peerThreshold(\.distinct, of: Int(group))
        // About 24 pages a minute each: their busiest minutes, with margin.
        #expect(threshold.map { $0 >= 30 && $0 <= 60 } == true, "\(String(describing: threshold))")
    }
}

extension AnomalyPeerTests {
    /// Ordinary traffic that thresholds far too low call anomalous: bursty users, each a few
    /// minutes of quick requests now and then.
    static func burstyUsers(_ count: Int, from: Int64, to: Int64, seed: UInt64) -> [CheckEvent] {
        var generator = SeededGenerator(seed: seed)
        var rows: [CheckEvent] = []
        for user in 0..<count {
            var time = from + Int64(generator.next() % 600_000)
            while time < to {
                // A session: 20 to 80 requests, 0.3 to 2 s apart, then 5 to 25 minutes away.
                for _ in 0..<(20 + generator.next() % 60) {
                    rows.append(.init(timestampMs: time, tenant: "t", subject: "user\(user)", ip: "198.51.\(user / 250).\(user % 250)",
                                      route: "GET /feed", status: 200))
                    time += 300 + Int64(generator.next() % 1_700)
                }
                time += 300_000 + Int64(generator.next() % 1_200_000)
            }
        }
        return rows
    }

    @Test func theAlertBudgetHoldsSubjectAlertsToAboutItsRateWhateverTheThresholds() {
        var careless = settings
        // Thresholds no operator should set: every session is a "spike".
        careless.spikeFactor = 1.1
        careless.spikeMinimumRate = 0.05
        careless.newSubjectFactor = 1
        careless.spikePersistenceMs = 0
        careless.newSubjectPersistenceMs = 0
        careless.peakFactor = 0
        let rows = Self.burstyUsers(400, from: Self.t0, to: Self.t0 + 3 * 3_600_000, seed: 3)
        var unbudgeted = careless
        unbudgeted.alertBudgetPerHour = .infinity
        let flood = AnomalyDetectorTests.run(AnomalyDetector(settings: unbudgeted), rows).filter { $0.scope == .subject }
        let detector = AnomalyDetector(settings: careless)
        let alerts = AnomalyDetectorTests.run(detector, rows).filter { $0.scope == .subject }
        // The last hour, once the budget has learned the scores: about 10, not hundreds.
        let lastHour = alerts.filter { $0.timestampMs >= Self.t0 + 2 * 3_600_000 }.count
        let lastHourUnbudgeted = flood.filter { $0.timestampMs >= Self.t0 + 2 * 3_600_000 }.count
        #expect(lastHourUnbudgeted > 200, "the careless thresholds alert on ordinary sessions: \(lastHourUnbudgeted)")
        #expect(lastHour <= 20, "the budget holds them to about 10 an hour: \(lastHour)")
        #expect(detector.budget > 1)
    }
}

extension AnomalyPeerTests {
    /// Users logging in over an hour, a few mistyping: the failures of known subjects.
    static func logins(from: Int64, to: Int64) -> [CheckEvent] {
        stride(from: from, to: to, by: 2_000).flatMap { time -> [CheckEvent] in
            let user = Int(time / 2_000 % 300)
            let ip = "198.51.\(user / 250).\(user % 250)"
            var rows = [CheckEvent(timestampMs: time, tenant: "t", subject: "user\(user)", ip: ip, route: "POST /login",
                                   status: user % 40 == 0 ? 401 : 200)]
            rows.append(.init(timestampMs: time + 500, tenant: "t", subject: "user\(user)", ip: ip, route: "GET /home", status: 200))
            return rows
        }
    }

    @Test func stuffingSpreadOverHundredsOfAddressesIsAFailureSurgeButAFewBusyAddressesAreNot() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.logins(from: Self.t0, to: Self.t0 + 60 * Self.minute)
        // 400 addresses, each trying two names from a list once, over 20 minutes.
        let thin = Self.t0 + 30 * Self.minute
        for index in 0..<800 {
            rows.append(.init(timestampMs: thin + Int64(index) * 1_500, tenant: "t", subject: "list-\(index)", ip: "203.0.\(index / 2 / 200).\(index / 2 % 200)",
                              route: "POST /login", status: 401))
        }
        let alerts = AnomalyDetectorTests.run(detector, rows)
        let surges = alerts.filter { $0.kind == "failure_surge" }
        #expect(surges.first.map { $0.scope == .global && $0.timestampMs - thin <= 3 * Self.minute } == true, "\(alerts)")
        #expect(surges.first?.detail.contains("for subjects not seen before") == true)
        #expect(!alerts.contains { $0.scope == .ip }, "no address stands out: \(alerts)")

        // Four addresses at 2 attempts a second each: their own (address) alerts, no global one.
        let concentrated = AnomalyDetector(settings: settings)
        var busy = Self.logins(from: Self.t0, to: Self.t0 + 60 * Self.minute)
        for index in 0..<4_000 {
            busy.append(.init(timestampMs: thin + Int64(index) * 125, tenant: "t", subject: "list-\(index)", ip: "192.0.2.\(index % 4)",
                              route: "POST /login", status: 401))
        }
        let raised = AnomalyDetectorTests.run(concentrated, busy)
        #expect(!raised.contains { $0.scope == .global }, "\(raised.filter { $0.scope == .global })")
        #expect(Set(raised.filter { $0.kind == "credential_stuffing" }.compactMap(\.ip)).count == 4)
    }
}

extension AnomalyPeerTests {
    @Test func aSurgesShapeNamesItsPrefixesAndRoutes() {
        #expect(SurgeShape.prefix("203.0.113.77") == "203.0.113.0/24")
        #expect(SurgeShape.prefix("2001:db8:1234:5::1") == "2001:db8:1234::/48")
        #expect(SurgeShape.prefix("2001:db8::1") == "2001:db8:0::/48")
        #expect(SurgeShape.prefix("not an address") == "not an address")
        var shape = SurgeShape()
        for index in 0..<800 {
            let ip = index % 5 == 0 ? "198.51.100.\(index % 250)" : "203.0.\(index % 200).\(index % 7)"
            shape.count(.init(timestampMs: Self.t0 + Int64(index), tenant: "t", subject: "ip:\(ip)", ip: ip,
                              route: index % 3 == 0 ? "GET /search?q=\(index)" : "GET /"), at: Self.t0 + Int64(index))
        }
        // A fifth of the requests from one /24, the rest spread; a third on /search (one in 8 counted).
        #expect(shape.summary.contains("198.51.100.0/24 20 %"), "\(shape.summary)")
        #expect(shape.summary.contains("GET /search 34 %") && shape.summary.contains("GET / 66 %"), "\(shape.summary)")
    }
}
