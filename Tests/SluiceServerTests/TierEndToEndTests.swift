import Foundation
import SluiceClient
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
import SluiceTestKit
@testable import SluiceServer
import Testing

/// Tiers (the adaptive feature's first part) through real sockets and a real SQLite file.
@Suite struct TierEndToEndTests {
    static func yaml(store: String?, shadow: Bool = false) -> String {
        """
        rules:
          api: { limit: 100, period: 1s }
        tiers:
          vip: { multiplier: 4, priority: 100 }
          best_effort: { multiplier: 0.5, priority: 0 }
        \(store.map { "store: { path: \"\($0)\", commit_interval: 20ms }" } ?? "")
        features:
          adaptive: { enabled: true, rollout: 100, shadow: \(shadow) }
        """
    }

    static func set(_ subject: String, _ tier: String, client: SluiceClient) async throws -> WireResponse {
        var request = WireRequest()
        request.setTier = .with {
            $0.subject = subject
            $0.tier = tier
        }
        return try await client.send(request)
    }

    static func check(_ key: String, subject: String = "") -> WireCheck {
        var check = Make.check(key, rule: "api")
        check.subject = subject
        return check
    }

    @Test func aTierScalesItsSubjectsLimitsNamesItselfInTheVerdictAndSurvivesARestart() async throws {
        let directory = TestDaemon.temporaryDirectory()
        let yaml = Self.yaml(store: "\(directory)/sluice.db")
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let before = try await client.verdict(Self.check("api:alice", subject: "alice"))
            #expect(before.limit == 100)
            #expect(before.tier.isEmpty)
            let assigned = try await Self.set("alice", "vip", client: client)
            #expect(assigned.tier.assigned)
            #expect(assigned.tier.assignment.tier == "vip")
            let vip = try await client.verdict(Self.check("api:alice", subject: "alice"))
            #expect(vip.limit == 400)
            #expect(vip.tier == "vip")
            #expect(vip.multiplier == 4)
            _ = try await Self.set("bob", "best_effort", client: client)
            #expect(try await client.verdict(Self.check("bob")).limit == 50)
            // Unknown tiers are refused; over TCP, assignments are operator requests.
            let unknown = try await Self.set("carol", "platinum", client: client)
            #expect(unknown.error.code == .invalidArgument)
            #expect(unknown.error.message.contains("configured tiers: best_effort, vip"))
            let tcp = try await SluiceClient.connect(to: daemon.tcp)
            #expect(try await Self.set("carol", "vip", client: tcp).error.code == .forbidden)
            await tcp.close()
            var list = WireRequest()
            list.listTiers = Sluice_V1_ListTiersRequest()
            let listed = try await client.send(list).listTiers
            #expect(listed.tiers.map(\.name) == ["vip", "best_effort"])
            #expect(listed.tiers.map(\.subjects) == [1, 1])
            #expect(listed.assignments.map(\.subject) == ["bob", "alice"])
            await client.close()
        }
        // A restart on the same file: the assignments are kept.
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let vip = try await client.verdict(Self.check("api:alice", subject: "alice"))
            #expect(vip.tier == "vip")
            #expect(vip.limit == 400)
            var get = WireRequest()
            get.getTier.subject = "bob"
            #expect(try await client.send(get).tier.assignment.tier == "best_effort")
            var remove = WireRequest()
            remove.removeTier.subject = "bob"
            #expect(try await client.send(remove).tier.assigned)
            #expect(try await client.verdict(Self.check("bob")).limit == 100)
            #expect(!(try await client.send(remove).tier.assigned), "removing twice finds nothing")
            await client.close()
        }
    }

    @Test func inShadowModeTheTierIsNamedButNotApplied() async throws {
        try await TestDaemon.with(yaml: Self.yaml(store: nil, shadow: true)) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            _ = try await Self.set("dave", "best_effort", client: client)
            let verdict = try await client.verdict(Self.check("dave"))
            #expect(verdict.tier == "best_effort")
            #expect(verdict.limit == 100)
            #expect(verdict.multiplier == 0)
            await client.close()
        }
    }

    @Test func withTheFeatureOffTiersAreKeptButNotApplied() async throws {
        let yaml = Self.yaml(store: nil).replacingOccurrences(of: "enabled: true", with: "enabled: false")
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await Self.set("erin", "vip", client: client).tier.assigned)
            let verdict = try await client.verdict(Self.check("erin"))
            #expect(verdict.tier.isEmpty)
            #expect(verdict.limit == 100)
            await client.close()
        }
    }

    @Test func aTierWithItsOwnLimitsForARuleUsesThemInsteadOfTheMultiplier() async throws {
        let yaml = """
        rules:
          api: { limit: 100, period: 1s }
          login: { limit: 5, period: 1m }
        tiers:
          partner:
            multiplier: 2
            rules:
              login: { limit: 50, period: 1m }
        features:
          adaptive: { enabled: true }
        """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            _ = try await Self.set("p1", "partner", client: client)
            var login = Make.check("p1", rule: "login")
            login.subject = "p1"
            let partner = try await client.verdict(login)
            #expect(partner.limit == 50, "the tier's own limit for login")
            #expect(partner.tier == "partner")
            #expect(try await client.verdict(Self.check("p1")).limit == 200, "the multiplier for the other rules")
            #expect(try await client.verdict(Make.check("someone-else", rule: "login")).limit == 5)
            await client.close()
        }
    }

    @Test func aTierNamingARuleThatDoesNotExistIsRefused() {
        #expect(throws: SluiceError.self) {
            try ConfigurationLoader.parse("tiers: { vip: { rules: { logn: { limit: 5, period: 1m } } } }\nrules: { login: { limit: 1, period: 1s } }",
                                          source: "t.yaml")
        }
        let message = ConfigurationTests.failure("tiers: { vip: { rules: { logn: { limit: 5, period: 1m } } } }")
        #expect(message.contains("tiers.vip.rules.logn: no rule named 'logn' is configured"), "\(message)")
        #expect(ConfigurationTests.failure("tiers: { Vip: { multiplier: 2 } }").contains("a tier name is 1 to 64 of a-z"))
        #expect(ConfigurationTests.failure("tiers: { vip: { multiplier: 0 } }").contains("tiers.vip.multiplier"))
    }
}

/// ReportLoad: each report steps the service's load controller.
@Suite struct ReportLoadEndToEndTests {
    static func report(_ service: String, p99Ms: UInt64, errorRate: Double = 0, client: SluiceClient) async throws -> WireResponse {
        var request = WireRequest()
        request.reportLoad = .with {
            $0.service = service
            $0.latencyP99Us = p99Ms * 1_000
            $0.errorRate = errorRate
        }
        return try await client.send(request)
    }

    @Test func junkServiceNamesAreRefusedAndNeitherBecomeLabelsNorCrowdOutTheRealService() async throws {
        let yaml = """
        adaptive: { max_services: 4 }
        features: { adaptive: { enabled: true } }
        rules: { api: { limit: 100, period: 1s, service: checkout } }
        tenants: { acme: { rules: { search: { limit: 10, period: 1s, service: search } } } }
        """
        try await TestDaemon.with(yaml: yaml, { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            for index in 0..<100 {
                #expect(try await Self.report("junk-\(index)", p99Ms: 10, client: client).error.code == .invalidArgument)
            }
            #expect(try await Self.report("checkout", p99Ms: 10, client: client).reportLoad.loadFactor == 1)
            #expect(try await Self.report("search", p99Ms: 10, client: client).reportLoad.loadFactor == 1, "a tenant's rule names it")
            let port = try #require(daemon.daemon.metricsAddress?.port)
            let body = try HTTPGet.get(port: port, path: "/metrics").body
            #expect(!body.contains("junk-"))
            #expect(sample("sluice_adaptive_load_factor{service=\"checkout\"}", in: body) == 1)
            await client.close()
        }
    }

    @Test func overloadedReportsCutTheFactorSheddingBestEffortFirstAndHealthyOnesRestoreIt() async throws {
        let yaml = """
        tiers:
          vip: { multiplier: 4, priority: 100, reserve: 0.9 }
          best_effort: { multiplier: 1, priority: 0 }
        adaptive: { target_p99: 100ms, cooldown: 0, decrease: 0.5, increase: 0.25, max_services: 2 }
        features: { adaptive: { enabled: true } }
        rules:
          pay: { limit: 100, period: 1s, service: checkout }
          find: { limit: 100, period: 1s, service: search }
          show: { limit: 100, period: 1s, service: ads }
        """
        // The shedding tick (every second) could restore the factor between two reports on a
        // loaded machine: the test's reports are the only steps.
        try await TestDaemon.with(yaml: yaml, timers: TestClock(liveBelow: .seconds(1)), { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let healthy = try await Self.report("checkout", p99Ms: 50, client: client).reportLoad
            #expect(healthy.loadFactor == 1)
            // The tiers, highest priority first, then subjects without a tier ("").
            #expect(healthy.tiers.map(\.tier) == ["vip", "best_effort", ""])
            #expect(healthy.tiers.map(\.multiplier) == [1, 1, 1])
            // Overloaded (p99 far above 100 ms): halved at each report.
            _ = try await Self.report("checkout", p99Ms: 2_000, client: client)
            let cut = try await Self.report("checkout", p99Ms: 2_000, client: client).reportLoad
            #expect(cut.loadFactor == 0.25)
            // 75 % of the traffic to shed, over three classes weighing the same (no check was
            // made, so no demand is measured): best effort and untiered subjects give all they
            // have, VIP the rest down to its reserve (0.9).
            #expect(cut.tiers.first { $0.tier == "best_effort" }?.multiplier == 0)
            #expect(abs((cut.tiers.first { $0.tier == "vip" }?.multiplier ?? 0) - 0.9) < 1e-9)
            // Errors count as overload too; then healthy reports bring it back, a step at a time.
            #expect(try await Self.report("checkout", p99Ms: 10, errorRate: 0.5, client: client).reportLoad.loadFactor == 0.125)
            var factors: [Double] = []
            for _ in 0..<12 { factors.append(try await Self.report("checkout", p99Ms: 10, client: client).reportLoad.loadFactor) }
            #expect(factors.last == 1)
            #expect(zip(factors, factors.dropFirst()).allSatisfy { $1 - $0 <= 0.25 + 1e-9 })
            // Bounded: a third service is refused; bad reports are refused with a sentence.
            _ = try await Self.report("search", p99Ms: 10, client: client)
            #expect(try await Self.report("ads", p99Ms: 10, client: client).error.code == .overloaded)
            #expect(try await Self.report("", p99Ms: 10, client: client).error.message.contains("service must not be empty"))
            // A name no rule gives is refused: it would be a metric label and a controller.
            let junk = try await Self.report("junk-1", p99Ms: 10, client: client)
            #expect(junk.error.code == .invalidArgument && junk.error.message.contains("not named by any rule"), "\(junk)")
            #expect(try await Self.report("search", p99Ms: 10, errorRate: 2, client: client).error.message.contains("outside 0…1"))
            let port = try #require(daemon.daemon.metricsAddress?.port)
            let body = try HTTPGet.get(port: port, path: "/metrics").body
            #expect(sample("sluice_adaptive_load_factor{service=\"checkout\"}", in: body) == 1)
            await client.close()
        }
    }
}
