import SluiceCore
import Foundation
@testable import SluiceIntelligence
import SluiceTestKit
import Testing

/// Each signal on small synthetic sequences. Time is the observations' own (simulated), so the
/// sequences are exact and take milliseconds to run.
@Suite(.computes) struct AnomalyDetectorTests {
    static let t0: Int64 = 1_710_000_000_000
    static let minute: Int64 = 60_000

    var settings: AnomalySettings {
        var settings = AnomalySettings()
        settings.warmupMs = 10 * Self.minute
        settings.subjectWarmupMs = 10 * Self.minute
        return settings
    }

    /// Background traffic: `users` established users on their own IPs, each a request every
    /// `every` ms, over [from, to); plus `newcomers` new IPs a minute, one request each.
    static func background(from: Int64, to: Int64, users: Int = 50, every: Int64 = 10_000, newcomers: Int = 4)
        -> [CheckEvent] {
        var rows: [CheckEvent] = []
        var time = from
        var newcomer = 0
        while time < to {
            for user in 0..<users where (time / 1_000 + Int64(user)) % (every / 1_000) == 0 {
                rows.append(.init(timestampMs: time, tenant: "t", subject: "u\(user)", ip: "10.0.0.\(user)",
                                  route: "GET /api/items/\(user % 7)", status: 200))
            }
            if time % (Self.minute / Int64(newcomers)) == 0 {
                newcomer += 1
                rows.append(.init(timestampMs: time, tenant: "t", subject: "ip:10.9.\(newcomer / 250).\(newcomer % 250)",
                                  ip: "10.9.\(newcomer / 250).\(newcomer % 250)", route: "GET /", status: 200))
            }
            time += 1_000
        }
        return rows
    }

    static func run(_ detector: AnomalyDetector, _ rows: [CheckEvent]) -> [AnomalyAlert] {
        rows.sorted { $0.timestampMs < $1.timestampMs }.flatMap { detector.observe($0) }
    }

    @Test func aFloodAgainstTheSubjectsOwnBaselineIsCaughtWithinSecondsAndAlertedOnceAPerCooldown() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 40 * Self.minute)
        // A key at one request every 5 s for 30 minutes, then 10 a second for 2 minutes.
        for step in stride(from: Int64(0), to: 30 * Self.minute, by: 5_000) {
            rows.append(.init(timestampMs: Self.t0 + step, tenant: "t", subject: "key_a", ip: "10.1.1.1", route: "POST /api/v1/events", status: 201))
        }
        let floodStart = Self.t0 + 30 * Self.minute
        for step in stride(from: Int64(0), to: 2 * Self.minute, by: 100) {
            rows.append(.init(timestampMs: floodStart + step, tenant: "t", subject: "key_a", ip: "10.1.1.1", route: "POST /api/v1/events", status: 201))
        }
        let alerts = Self.run(detector, rows)
        let spikes = alerts.filter { $0.kind == "rate_spike" }
        #expect(spikes.count == 1, "one alert, then the cooldown: \(spikes)")
        #expect(spikes.first?.subject == "key_a")
        // Over its threshold within seconds, then held for spike_persistence (15 s).
        #expect((spikes.first?.timestampMs ?? 0) - floodStart <= 25_000, "within 25 s")
        #expect(alerts.allSatisfy { $0.subject == "key_a" || $0.scope != .subject }, "no background subject: \(alerts)")
    }

    @Test func aSteadyHeavyClientIsItsOwnNormalAndNothingIsAlertedDuringWarmup() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 40 * Self.minute)
        // 8 requests a second from the start, over 40 distinct ids a minute: heavy, but steady.
        for step in stride(from: Int64(0), to: 40 * Self.minute, by: 125) {
            rows.append(.init(timestampMs: Self.t0 + step, tenant: "t", subject: "key_heavy", ip: "10.2.2.2",
                              route: "GET /api/items/\(step / 125 % 45)", status: 200))
        }
        // A burst inside the warm-up is not alerted either.
        for step in stride(from: Int64(0), to: 30_000, by: 50) {
            rows.append(.init(timestampMs: Self.t0 + 2 * Self.minute + step, tenant: "t", subject: "key_early", ip: "10.3.3.3",
                              route: "GET /", status: 200))
        }
        #expect(Self.run(detector, rows).isEmpty)
    }

    @Test func enumerationIsManyDistinctIdsForThisSubject() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 30 * Self.minute)
        // An established user who views a few items now and then, then walks the catalogue at
        // 2 ids a second.
        for step in stride(from: Int64(0), to: 20 * Self.minute, by: 20_000) {
            rows.append(.init(timestampMs: Self.t0 + step, tenant: "t", subject: "u_scraper", ip: "10.4.4.4",
                              route: "GET /api/items/\(step % 3)", status: 200))
        }
        let start = Self.t0 + 20 * Self.minute + 30_000
        for index in 0..<240 {
            rows.append(.init(timestampMs: start + Int64(index) * 500, tenant: "t", subject: "u_scraper", ip: "10.4.4.4",
                              route: "GET /api/items/\(50_000 + index)", status: index % 10 == 0 ? 404 : 200))
        }
        let alerts = Self.run(detector, rows)
        #expect(alerts.map(\.kind) == ["enumeration"], "\(alerts)")
        #expect(alerts.first?.subject == "u_scraper")
        #expect((alerts.first?.timestampMs ?? 0) - start <= 15_000)
    }

    @Test func credentialStuffingIsFailuresFromOneIPNamingManySubjectsButTyposBehindANATAreNot() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 30 * Self.minute)
        // A NAT: 40 users behind one address, a few typos among them.
        for index in 0..<200 {
            rows.append(.init(timestampMs: Self.t0 + 12 * Self.minute + Int64(index) * 3_000, tenant: "t", subject: "nat\(index % 40)",
                              ip: "10.5.5.5", route: "POST /login", status: index % 15 == 0 ? 401 : 200))
        }
        // Two attempts a second from one hosting address, each a different username, 97 % failing.
        let start = Self.t0 + 20 * Self.minute
        for index in 0..<600 {
            rows.append(.init(timestampMs: start + Int64(index) * 500, tenant: "t", subject: "victim\(index)", ip: "192.0.2.7",
                              route: "POST /login", status: index % 33 == 0 ? 200 : 401))
        }
        let alerts = Self.run(detector, rows)
        #expect(alerts.count == 1, "\(alerts)")
        #expect(alerts.first?.scope == .ip && alerts.first?.ip == "192.0.2.7" && alerts.first?.kind == "credential_stuffing")
        #expect((alerts.first?.timestampMs ?? 0) - start <= 10_000)
    }

    @Test func slowStuffingIsCaughtOverFiveMinutesButABusyOfficeWithTyposIsNot() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 40 * Self.minute)
        // An office behind one address: 200 people log in over 10 minutes, 10 % mistype once.
        for index in 0..<200 {
            let time = Self.t0 + 20 * Self.minute + Int64(index) * 3_000
            if index % 10 == 0 {
                rows.append(.init(timestampMs: time, tenant: "t", subject: "staff\(index)", ip: "10.5.5.6", route: "POST /login", status: 401))
            }
            rows.append(.init(timestampMs: time + 1_000, tenant: "t", subject: "staff\(index)", ip: "10.5.5.6", route: "POST /login", status: 200))
        }
        // One username every 8 s from a hosting address (7.5 a minute, under the minute's floor of 12), 97 % failing.
        let start = Self.t0 + 25 * Self.minute
        for index in 0..<75 {
            rows.append(.init(timestampMs: start + Int64(index) * 8_000, tenant: "t", subject: "victim\(index)", ip: "192.0.2.77",
                              route: "POST /login", status: index % 33 == 5 ? 200 : 401))
        }
        let alerts = Self.run(detector, rows)
        // Ten minutes of it: alerted again once the cooldown has passed; the office never.
        #expect(alerts.count == 2, "\(alerts)")
        #expect(alerts.allSatisfy { $0.kind == "credential_stuffing" && $0.ip == "192.0.2.77" }, "\(alerts)")
        #expect(alerts.first?.detail.contains("in 5 minutes") == true)
        #expect((alerts.first?.timestampMs ?? 0) - start <= 3 * Self.minute)
    }

    @Test func aSurgeOfNewSourcesIsAGlobalAlertButNewcomersAtTheUsualPaceAreNot() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 40 * Self.minute, newcomers: 6)
        // 300 new addresses within a minute, each then a request every 3 s for 5 minutes.
        let start = Self.t0 + 30 * Self.minute
        for bot in 0..<300 {
            let first = start + Int64(bot) * 200
            for step in stride(from: Int64(0), to: 5 * Self.minute, by: 3_000) {
                rows.append(.init(timestampMs: first + step, tenant: "t", subject: "ip:198.51.\(bot / 250).\(bot % 250)",
                                  ip: "198.51.\(bot / 250).\(bot % 250)", route: "GET /search", status: 200))
            }
        }
        let alerts = Self.run(detector, rows)
        let global = alerts.filter { $0.scope == .global }
        #expect(global.count == 1, "\(alerts)")
        #expect(global.first?.kind == "new_source_surge", "\(global.map { ($0.timestampMs - start, $0.detail) })")
        #expect((global.first?.timestampMs ?? 0) - start <= 60_000)
        #expect(alerts.allSatisfy { $0.scope == .global }, "no bot is named: \(alerts)")
    }

    @Test func aCrawlOfPagesNamedByWordsIsEnumerationToo() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 30 * Self.minute)
        // A reader of a few pages, then a crawler of 120 product pages a minute, none with an id.
        for step in stride(from: Int64(0), to: 20 * Self.minute, by: 30_000) {
            rows.append(.init(timestampMs: Self.t0 + step, tenant: "t", subject: "u_crawler", ip: "10.4.4.5",
                              route: "GET /products/\(["blue-widget", "red-widget"][Int(step / 30_000 % 2)])?ref=home", status: 200))
        }
        let start = Self.t0 + 22 * Self.minute
        let words = ["oak", "ash", "elm", "fir", "yew", "box", "bay", "fig", "lime", "pine", "teak", "palm"]
        for index in 0..<240 {
            rows.append(.init(timestampMs: start + Int64(index) * 500, tenant: "t", subject: "u_crawler", ip: "10.4.4.5",
                              route: "GET /products/\(words[index % 12])-\(words[index / 12 % 12])-table", status: 200))
        }
        let alerts = Self.run(detector, rows)
        #expect(alerts.map(\.kind) == ["enumeration"], "\(alerts)")
        #expect(alerts.first?.subject == "u_crawler")
        #expect((alerts.first?.timestampMs ?? 0) - start <= 30_000, "over the threshold within seconds, held for spike_persistence")
    }

    @Test func manySourcesIsASubjectSeenFromManyAddressesAgainstItsOwnNormal() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 30 * Self.minute)
        // A key used by a fleet of 15 servers all along: its normal, not an anomaly.
        for step in stride(from: Int64(0), to: 30 * Self.minute, by: 1_000) {
            rows.append(.init(timestampMs: Self.t0 + step, tenant: "t", subject: "key_fleet", ip: "10.6.0.\(step / 1_000 % 15)",
                              route: "POST /api/v1/events", status: 201))
        }
        // An account used from one address, then from 40 addresses within a minute (a leaked
        // session or a distributed takeover), each request a success.
        for step in stride(from: Int64(0), to: 20 * Self.minute, by: 15_000) {
            rows.append(.init(timestampMs: Self.t0 + step, tenant: "t", subject: "u_shared", ip: "10.7.7.7", route: "GET /account", status: 200))
        }
        let start = Self.t0 + 22 * Self.minute
        for index in 0..<40 {
            rows.append(.init(timestampMs: start + Int64(index) * 1_500, tenant: "t", subject: "u_shared", ip: "203.0.113.\(index)",
                              route: "GET /account", status: 200))
        }
        let alerts = Self.run(detector, rows)
        #expect(alerts.map(\.kind) == ["many_sources"], "\(alerts)")
        #expect(alerts.first?.subject == "u_shared" && alerts.first?.scope == .subject)
        #expect((alerts.first?.timestampMs ?? 0) - start <= 30_000)
    }

    @Test func bruteForceIsManyFailuresForOneSubjectButAFewTyposAreNot() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 30 * Self.minute)
        // Users who mistype their password three times, then get in.
        for user in 0..<20 {
            for attempt in 0..<4 {
                rows.append(.init(timestampMs: Self.t0 + 15 * Self.minute + Int64(user) * 10_000 + Int64(attempt) * 4_000, tenant: "t",
                                  subject: "u\(user)", ip: "10.0.0.\(user)", route: "POST /login", status: attempt < 3 ? 401 : 200))
            }
        }
        // One account tried every 2 s from three addresses: password guessing.
        let start = Self.t0 + 22 * Self.minute
        for index in 0..<60 {
            rows.append(.init(timestampMs: start + Int64(index) * 2_000, tenant: "t", subject: "u_target", ip: "198.18.0.\(index % 3)",
                              route: "POST /login", status: 401))
        }
        let alerts = Self.run(detector, rows)
        #expect(alerts.map(\.kind) == ["brute_force"], "\(alerts)")
        #expect(alerts.first?.subject == "u_target")
        #expect((alerts.first?.timestampMs ?? 0) - start <= 30_000)
        // Live, outcomes come apart from the checks, and count the same.
        let live = AnomalyDetector(settings: settings)
        _ = Self.run(live, Self.background(from: Self.t0, to: Self.t0 + 20 * Self.minute))
        let raised = (0..<12).flatMap { index in
            live.observeOutcome(.init(timestampMs: start + Int64(index) * 2_000, tenant: "t", subject: "u_target", ip: "198.18.0.1",
                                      route: "POST /login", status: 403))
        }
        #expect(raised.map(\.kind) == ["brute_force"])
    }

    @Test func manySubjectsIsAnAddressNamingManySubjectsAgainstItsOwnNormal() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 30 * Self.minute)
        // A NAT: 40 users behind one address, about 20 of them a minute, all along.
        for step in stride(from: Int64(0), to: 30 * Self.minute, by: 3_000) {
            rows.append(.init(timestampMs: Self.t0 + step, tenant: "t", subject: "nat\((step / 3_000) * 7 % 40)", ip: "10.5.5.5",
                              route: "GET /feed", status: 200))
        }
        // A client on one address, then rotating through 150 API keys at 3 a second (evading
        // per-key limits), every request a success.
        for step in stride(from: Int64(0), to: 20 * Self.minute, by: 30_000) {
            rows.append(.init(timestampMs: Self.t0 + step, tenant: "t", subject: "key_0", ip: "192.0.2.50", route: "GET /api/v1/quote", status: 200))
        }
        let start = Self.t0 + 22 * Self.minute
        for index in 0..<150 {
            rows.append(.init(timestampMs: start + Int64(index) * 333, tenant: "t", subject: "key_\(index)", ip: "192.0.2.50",
                              route: "GET /api/v1/quote", status: 200))
        }
        let alerts = Self.run(detector, rows)
        #expect(alerts.map(\.kind) == ["many_subjects"], "\(alerts)")
        #expect(alerts.first?.scope == .ip && alerts.first?.ip == "192.0.2.50")
        #expect((alerts.first?.timestampMs ?? 0) - start <= 30_000)
    }

    @Test func overMaxSubjectsNewSubjectsAreCountedInASketchAndAFloodIsStillCaught() {
        var settings = settings
        settings.maxSubjects = 50
        settings.maxSources = 60
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 30 * Self.minute, users: 50, newcomers: 1)
        // Once full: a new key floods at 20 a second; 100 other new subjects send one request each.
        let start = Self.t0 + 25 * Self.minute
        for index in 0..<1_200 {
            rows.append(.init(timestampMs: start + Int64(index) * 50, tenant: "t", subject: "key_flood", ip: "10.0.0.1",
                              route: "POST /api/v1/events", status: 201))
        }
        for index in 0..<100 {
            rows.append(.init(timestampMs: start + Int64(index) * 600, tenant: "t", subject: "once\(index)", ip: "10.0.0.2",
                              route: "GET /", status: 200))
        }
        let alerts = Self.run(detector, rows)
        #expect(detector.tracked.subjects <= 50 && detector.tracked.sources <= 60)
        #expect(detector.untracked.subjects >= 1_300)
        let spikes = alerts.filter { $0.kind == "rate_spike" }
        #expect(spikes.map(\.subject) == ["key_flood"], "once, then its cooldown: \(alerts)")
        #expect(spikes.first?.detail.contains("without a record") == true)
        #expect((spikes.first?.timestampMs ?? 0) - start <= 15_000)
        #expect(!alerts.contains { $0.subject?.hasPrefix("once") == true })
    }

    @Test func aTrafficSurgeFromKnownCallersIsAGlobalAlertButADoublingIsNot() {
        let detector = AnomalyDetector(settings: settings)
        var rows = Self.background(from: Self.t0, to: Self.t0 + 50 * Self.minute)
        /// Every established user sends `extra` more requests a second over [from, to).
        func more(_ extra: Int, from: Int64, to: Int64) {
            for time in stride(from: from, to: to, by: 1_000) {
                for user in 0..<50 where (time / 1_000 + Int64(user)) % 10 < Int64(extra) {
                    rows.append(.init(timestampMs: time, tenant: "t", subject: "u\(user)", ip: "10.0.0.\(user)",
                                      route: "GET /api/items/\(user % 7)", status: 200))
                }
            }
        }
        // A benign doubling for ten minutes (a flash crowd of known users), then, later, seven
        // times the usual traffic from the same users (a flood no single subject shows).
        more(1, from: Self.t0 + 25 * Self.minute, to: Self.t0 + 35 * Self.minute)
        let start = Self.t0 + 42 * Self.minute
        more(6, from: start, to: start + 4 * Self.minute)
        let alerts = Self.run(detector, rows)
        #expect(alerts.map(\.kind) == ["traffic_surge"], "\(alerts.map { ($0.timestampMs - Self.t0, $0.detail) })")
        #expect(alerts.first?.scope == .global)
        #expect((alerts.first?.timestampMs ?? 0) - start <= 30_000)
    }

    @Test func stateForIdleSubjectsAndSourcesExpires() {
        var settings = settings
        settings.idleMs = 5 * Self.minute
        let detector = AnomalyDetector(settings: settings)
        _ = Self.run(detector, Self.background(from: Self.t0, to: Self.t0 + 2 * Self.minute, users: 20))
        #expect(detector.tracked.subjects >= 20)
        // Ten minutes later only one subject is active: the others are forgotten.
        _ = detector.observe(.init(timestampMs: Self.t0 + 12 * Self.minute, tenant: "t", subject: "late", ip: "10.8.8.8", route: "GET /", status: 200))
        #expect(detector.tracked.subjects == 1)
        #expect(detector.tracked.sources == 1)
    }

    @Test func theLastNumberOfAPathIsItsResourceID() {
        #expect(AnomalyDetector.resourceID("GET /api/items/48213") == 48_213)
        #expect(AnomalyDetector.resourceID("GET /api/items/48213/reviews") == 48_213)
        #expect(AnomalyDetector.resourceID("GET /api/v1/orders") == nil)
        #expect(AnomalyDetector.resourceID("GET /api/orders/77?page=2") == 77)
        #expect(AnomalyDetector.resourceID("GET /search") == nil)
        // Generated ids: UUIDs and hashes, told apart; words and versions are not ids.
        let first = AnomalyDetector.resourceID("GET /api/docs/3f2a9c1e-7b4d-4e8f-9a6b-1c2d3e4f5a6b")
        let second = AnomalyDetector.resourceID("GET /api/docs/3f2a9c1e-7b4d-4e8f-9a6b-1c2d3e4f5a6c/history")
        #expect(first != nil && second != nil && first != second)
        #expect(AnomalyDetector.resourceID("GET /blobs/a94a8fe5ccb19ba61c4c0873d391e987982fbbd3") != nil)
        #expect(AnomalyDetector.resourceID("GET /static/deadbeef") == nil, "no digit: a word")
        #expect(AnomalyDetector.resourceID("GET /users/abcdefgh12") == nil, "not hex")
        #expect(AnomalyDetector.resourceID("GET /api/v2/a1b2") == nil, "too short")
        #expect(AnomalyDetector.resourceID("GET /api/items/42/a1b2c3d4e5") == 42, "a number is preferred")
    }
}

extension AnomalyDetectorTests {
    @Test func aTenantsOwnSubjectThresholdsApplyToItsSubjectsOnly() {
        var settings = self.settings
        var strict = settings
        strict.failuresPerSubject = 3
        settings.tenants["strict"] = strict
        let detector = AnomalyDetector(settings: settings)
        _ = Self.run(detector, Self.background(from: Self.t0, to: Self.t0 + 20 * Self.minute))
        let start = Self.t0 + 21 * Self.minute
        // Four failures in a minute for one subject of each tenant: past the strict tenant's 3,
        // under everyone else's 10.
        var raised: [AnomalyAlert] = []
        for tenant in ["strict", "t"] {
            for index in 0..<4 {
                raised += detector.observeOutcome(.init(timestampMs: start + Int64(index) * 5_000, tenant: tenant, subject: "victim-\(tenant)",
                                                        ip: "198.18.0.\(index)", route: "POST /login", status: 401))
            }
        }
        // Eight addresses failing once each is also a (global) failure surge; the subjects' is the point here.
        #expect(raised.filter { $0.scope == .subject }.map(\.kind) == ["brute_force"], "\(raised)")
        #expect(raised.first?.tenant == "strict")
    }
}

extension AnomalyDetectorTests {
    @Test func twoTenantsSubjectsOfOneNameAreTwoRecords() {
        let detector = AnomalyDetector(settings: settings)
        _ = Self.run(detector, Self.background(from: Self.t0, to: Self.t0 + 20 * Self.minute))
        let start = Self.t0 + 21 * Self.minute
        // Six failures each for "shared" in two tenants: 12 would be brute force for one record
        // (failures_per_subject 10); as two records, neither is.
        var raised: [AnomalyAlert] = []
        for index in 0..<12 {
            raised += detector.observeOutcome(.init(timestampMs: start + Int64(index) * 2_000, tenant: index % 2 == 0 ? "acme" : "globex",
                                                    subject: "shared", ip: "198.18.0.\(index)", route: "POST /login", status: 401))
        }
        #expect(raised.filter { $0.kind == "brute_force" }.isEmpty, "\(raised)")
        #expect(AnomalyDetector.subjectKey(.init(timestampMs: 0, tenant: "", subject: "s", ip: "", route: "", status: 0))
            == AnomalyDetector.hash("s"), "the default tenant's keys are as before")
    }
}

extension AnomalyDetectorTests {
    @Test func aTenantPastItsRecordQuotaTakesNoOtherTenantsRoom() {
        var settings = self.settings
        settings.maxSubjects = 1_000
        settings.tenantRecordLimits["noisy"] = 20
        let detector = AnomalyDetector(settings: settings)
        let start = Self.t0
        // The noisy tenant names 500 new subjects; the quiet one 50.
        for index in 0..<500 {
            _ = detector.observe(.init(timestampMs: start + Int64(index), tenant: "noisy", subject: "n\(index)", ip: "10.9.0.1",
                                       route: "GET /", status: 200))
        }
        for index in 0..<50 {
            _ = detector.observe(.init(timestampMs: start + 1_000 + Int64(index), tenant: "quiet", subject: "q\(index)", ip: "10.9.0.2",
                                       route: "GET /", status: 200))
        }
        #expect(detector.tracked.subjects == 70, "20 of the noisy tenant's, all 50 of the quiet one's")
        #expect(detector.recordCounts["noisy"] == 20)
        #expect(detector.untracked.subjects >= 480, "the rest counted in the sketch")
        // Forgotten when idle: the quota's room comes back.
        detector.sweep(now: start + settings.idleMs + 10_000)
        #expect(detector.tracked.subjects == 0 && detector.recordCounts["noisy"] == 0)
    }
}
