import Foundation
import SluiceClient
import SluiceCore
import SluiceIntelligence
import SluiceProto
import Testing
@testable import SluiceServer

/// A surge's response through a real daemon and socket: a botnet of new addresses, concentrated
/// in a few prefixes, is blocked by prefix and the rest of the new sources tightened, while the
/// regular population (known before the surge, one of them inside a blocked prefix) is served as
/// before; with `shed`, unknown sources are shed except a spared tier's; and a flash crowd of
/// regular users raises no surge response against them.
@Suite(.serialized) struct SurgeResponseEndToEndTests {
    static let limit = WireLimit.with {
        $0.limit = 10
        $0.periodMs = 1_000
    }

    static func check(_ subject: String, ip: String, at offsetMs: Int64) -> WireCheck {
        var check = Make.check("api:\(subject)", limit: limit, nowMs: epochMs + UInt64(offsetMs))
        check.subject = subject
        check.ip = ip
        check.route = "GET /api/items"
        return check
    }

    static func batch(_ checks: [WireCheck]) -> WireRequest {
        var request = WireRequest()
        request.check.checks = checks
        return request
    }

    /// The regular population: 40 users on their own addresses (one inside the botnet's /24),
    /// a check every 5 s each.
    static func regular(_ index: Int) -> (subject: String, ip: String) {
        ("user\(index)", index == 0 ? "203.0.113.200" : "10.1.0.\(index)")
    }

    /// Eight minutes of the regular population: the detector learns it, and it is "known".
    static func warmUp(_ client: SluiceClient) async throws {
        var requests: [WireRequest] = []
        for step in 0..<96 {
            requests.append(batch((0..<40).map { regular($0) }.map { check($0.subject, ip: $0.ip, at: Int64(step) * 5_000) }))
        }
        _ = try await client.send(pipelined: requests)
    }

    /// Waits (the pump runs every 100 ms) until a surge's response is in force at `now`.
    static func surge(_ daemon: TestDaemon, at nowMs: Int64) async throws -> SurgeGuard? {
        let book = daemon.daemon.dispatcher.anomaly.responses
        for _ in 0..<100 {
            if let surge = book.surge(at: (Int64(epochMs) + nowMs) * 1_000_000) { return surge }
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    @Test func aBotnetIsBlockedByPrefixAndOtherNewSourcesTightenedWhileKnownUsersAreServed() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let yaml = """
        anomaly:
          warmup: 2m
          alert_log: "\(directory)/alerts.jsonl"
          responses:
            new_source_surge: { action: block, ttl: 10m, factor: 0.1, prefix_share: 0.2 }
        features: { anomaly: { enabled: true } }
        """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            try await Self.warmUp(client)
            // 200 new addresses, half in 203.0.113.0/24 and half in 2001:db8:66::/48, a check a
            // second each for 40 s, beside the regular population.
            let start: Int64 = 8 * 60_000
            var requests: [WireRequest] = []
            for second in 0..<40 {
                let at = start + Int64(second) * 1_000
                var checks = (0..<200).map { bot in
                    Self.check("bot\(bot)", ip: bot < 100 ? "203.0.113.\(bot)" : "2001:db8:66:\(bot)::1", at: at)
                }
                if second % 5 == 0 { checks += (0..<40).map { Self.regular($0) }.map { Self.check($0.subject, ip: $0.ip, at: at) } }
                requests.append(Self.batch(checks))
            }
            _ = try await client.send(pipelined: requests)
            let end = start + 40_000
            let surge = try #require(try await Self.surge(daemon, at: end))
            #expect(surge.action == .block)
            #expect(Set(surge.prefixNames) == ["203.0.113.0/24", "2001:db8:66::/48"], "\(surge.prefixNames)")

            // A bot, from either prefix: denied, REASON_ANOMALY, the surge named.
            for ip in ["203.0.113.7", "2001:db8:66:12::1", "2001:0DB8:0066:0099::7"] {
                let bot = try await client.verdict(Self.check("bot-new-\(ip)", ip: ip, at: end))
                #expect(!bot.allowed && bot.reason == .anomaly && bot.anomaly == "new_source_surge", "\(ip): \(bot)")
            }
            // Every regular user is served, the one inside the botnet's /24 too, untouched.
            for index in 0..<40 {
                let user = Self.regular(index)
                let verdict = try await client.verdict(Self.check(user.subject, ip: user.ip, at: end))
                #expect(verdict.allowed && verdict.anomaly.isEmpty, "\(user): \(verdict)")
            }
            // A known user on a new address (a phone changing networks) is known by its subject.
            let moved = try await client.verdict(Self.check("user5", ip: "198.18.7.7", at: end))
            #expect(moved.allowed && moved.anomaly.isEmpty)
            // A new source outside the prefixes: limits a tenth (10/s -> 1/s), the surge named.
            let first = try await client.verdict(Self.check("newcomer", ip: "198.18.0.1", at: end))
            let second = try await client.verdict(Self.check("newcomer", ip: "198.18.0.1", at: end))
            #expect(first.allowed && first.anomaly == "new_source_surge")
            #expect(!second.allowed && second.reason != .anomaly)
            // After the TTL, bots are checked against their limits again.
            let later = try await client.verdict(Self.check("bot3", ip: "203.0.113.3", at: end + 11 * 60_000))
            #expect(later.allowed && later.anomaly.isEmpty)
            await client.close()
        }
    }

    @Test func shedSparesATierAndAFlashCrowdOfKnownUsersIsServed() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = "\(directory)/alerts.jsonl"
        let yaml = """
        tiers:
          vip: { multiplier: 1, priority: 10 }
        anomaly:
          warmup: 2m
          alert_log: "\(log)"
          responses:
            new_source_surge: { action: shed, ttl: 10m, spare_tiers: [vip] }
            traffic_surge: { action: shed, ttl: 10m }
        features: { reputation: { enabled: true }, adaptive: { enabled: true }, anomaly: { enabled: true } }
        """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            try await Self.warmUp(client)
            // A flash crowd of the regular population: each user 8 checks a second (within
            // its limit of 10) for 40 s, 64 times its usual pace.
            let start: Int64 = 8 * 60_000
            var requests: [WireRequest] = []
            var crowdDenied = 0
            for tick in 0..<320 {
                let at = start + Int64(tick) * 125
                requests.append(Self.batch((0..<40).map { Self.regular($0) }.map { Self.check($0.subject, ip: $0.ip, at: at) }))
            }
            for response in try await client.send(pipelined: requests) {
                crowdDenied += response.check.verdicts.count { !$0.allowed }
            }
            let end = start + 40_000
            // Let the pump see it all; no new-source surge, and whatever a traffic surge does
            // touches no known user.
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await AnomalyEndToEndTests.waitForAlert(in: log) { $0["kind"] as? String == "new_source_surge" } == nil)
            #expect(crowdDenied == 0, "\(crowdDenied) of the crowd's checks were denied")
            for index in 0..<40 {
                let user = Self.regular(index)
                let verdict = try await client.verdict(Self.check(user.subject, ip: user.ip, at: end + 1_000))
                #expect(verdict.allowed && verdict.anomaly.isEmpty, "\(user): \(verdict)")
            }

            // Then a botnet of new addresses; one new subject is a VIP.
            var set = WireRequest()
            set.setTier = .with {
                $0.subject = "partner-new"
                $0.tier = "vip"
            }
            #expect(try await client.send(set).tier.assigned)
            let botStart = start + 20 * 60_000
            requests = (0..<40).map { second in
                Self.batch((0..<200).map { Self.check("bot\($0)", ip: "192.0.2.\($0)", at: botStart + Int64(second) * 1_000) })
            }
            _ = try await client.send(pipelined: requests)
            let botEnd = botStart + 40_000
            let surge = try #require(try await Self.surge(daemon, at: botEnd))
            #expect(surge.action == .shed)
            let bot = try await client.verdict(Self.check("bot-late", ip: "192.0.2.250", at: botEnd))
            #expect(!bot.allowed && bot.reason == .shed && bot.anomaly == "new_source_surge", "\(bot)")
            let vip = try await client.verdict(Self.check("partner-new", ip: "192.0.2.251", at: botEnd))
            #expect(vip.allowed && vip.anomaly.isEmpty, "\(vip)")
            let user = try await client.verdict(Self.check("user7", ip: "10.1.0.7", at: botEnd))
            #expect(user.allowed && user.anomaly.isEmpty)
            await client.close()
        }
        #expect(ConfigurationTests.failure("anomaly: { responses: { rate_spike: { action: shed } } }").contains("shed is for surges"))
        #expect(ConfigurationTests.failure("anomaly: { responses: { new_source_surge: { action: penalty } } }").contains("a surge names no subject"))
        #expect(ConfigurationTests.failure("anomaly: { responses: { rate_spike: { action: block, prefix_share: 0.1 } } }").contains("prefix_share"))
    }
}
