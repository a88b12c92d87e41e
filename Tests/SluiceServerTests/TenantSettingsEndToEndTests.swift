import Foundation
import SluiceClient
@testable import SluiceConfiguration
import SluiceIntelligence
import SluiceCore
import SluiceProto
@testable import SluiceServer
import Testing

/// Tenants' own feature flags and reputation weights (`tenants.NAME.features`,
/// `tenants.NAME.reputation.weights`) on real daemons: each tenant's checks take its own, the
/// others the global ones.
@Suite("Per-tenant settings")
struct TenantSettingsEndToEndTests {
    static let base = ReputationEndToEndTests.base

    static func check(_ subject: String, tenant: String) -> WireCheck {
        var check = Make.check(subject, rule: "api", nowMs: base, tenant: tenant)
        check.subject = subject
        return check
    }

    /// Drives `subject` of `tenant` down with `count` auth failures, then checks it.
    static func verdictAfterFailures(_ subject: String, tenant: String, count: Int, client: SluiceClient) async throws -> WireVerdict {
        let recorded = try await client.send(ReputationEndToEndTests.events(subject, "auth_failure", count: count, tenant: tenant))
        #expect(recorded.recordEvents.recorded == UInt32(count), "\(recorded)")
        return try await client.verdict(check(subject, tenant: tenant))
    }

    @Test("a feature off globally can be on for one tenant: its subjects are blocked by reputation, another tenant's are not")
    func aTenantTurnsOnAFeature() async throws {
        let yaml = """
            rules: { api: { limit: 1000, period: 1s } }
            reputation: { block_below: 20, weights: { auth_failure: -5 } }
            features: { reputation: { enabled: false } }
            tenants:
              pilot: { features: { reputation: { enabled: true } } }
              other: {}
            """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let pilot = try await Self.verdictAfterFailures("mallory", tenant: "pilot", count: 8, client: client)
            #expect(!pilot.allowed && pilot.reason == .reputation, "\(pilot)")
            let other = try await Self.verdictAfterFailures("mallory", tenant: "other", count: 8, client: client)
            #expect(other.allowed, "the feature is off for the other tenant: \(other)")
            await client.close()
        }
    }

    @Test("a tenant in shadow mode is told what would have been denied, the others are denied; a tenant with the feature off is not touched")
    func shadowAndOffPerTenant() async throws {
        let yaml = """
            rules: { api: { limit: 1000, period: 1s } }
            reputation: { block_below: 20, weights: { auth_failure: -5 } }
            features: { reputation: { enabled: true } }
            tenants:
              careful: { features: { reputation: { shadow: true } } }
              exempt: { features: { reputation: { enabled: false } } }
              plain: {}
            """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let careful = try await Self.verdictAfterFailures("eve", tenant: "careful", count: 8, client: client)
            #expect(careful.allowed && careful.wouldDeny && careful.wouldDenyReason == .reputation, "\(careful)")
            let exempt = try await Self.verdictAfterFailures("eve", tenant: "exempt", count: 8, client: client)
            #expect(exempt.allowed && !exempt.wouldDeny, "\(exempt)")
            let plain = try await Self.verdictAfterFailures("eve", tenant: "plain", count: 8, client: client)
            #expect(!plain.allowed && plain.reason == .reputation, "\(plain)")
            await client.close()
        }
    }

    @Test("a tenant's own event weights: one failure blocks its subject, the same failure leaves another tenant's subject allowed")
    func weightsPerTenant() async throws {
        let yaml = """
            rules: { api: { limit: 1000, period: 1s } }
            reputation: { block_below: 20, weights: { auth_failure: -5 } }
            features: { reputation: { enabled: true } }
            tenants:
              strict: { reputation: { weights: { auth_failure: -45 } } }
              lenient: {}
            """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let strict = try await Self.verdictAfterFailures("bob", tenant: "strict", count: 1, client: client)
            #expect(!strict.allowed && strict.reason == .reputation, "\(strict)")
            let lenient = try await Self.verdictAfterFailures("bob", tenant: "lenient", count: 1, client: client)
            #expect(lenient.allowed, "\(lenient)")
            #expect(try await ReputationEndToEndTests.get("bob", tenant: "strict", client: client).reputation.score < 10)
            #expect(try await ReputationEndToEndTests.get("bob", tenant: "lenient", client: client).reputation.score > 40)
            await client.close()
        }
    }

    @Test("adaptive limits on for one tenant only: its VIP subject gets the tier's limits, the same tier elsewhere changes nothing")
    func adaptivePerTenant() async throws {
        let yaml = """
            rules: { api: { limit: 100, period: 1s } }
            tiers: { vip: { multiplier: 4, priority: 100 } }
            features: { adaptive: { enabled: false } }
            tenants:
              pilot: { features: { adaptive: { enabled: true } } }
              other: {}
            """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            for tenant in ["pilot", "other"] {
                var request = WireRequest()
                request.setTier = .with { $0.tenant = tenant; $0.subject = "carol"; $0.tier = "vip" }
                #expect(try await client.send(request).tier.assigned)
            }
            let pilot = try await client.verdict(Self.check("carol", tenant: "pilot"))
            #expect(pilot.limit == 400 && pilot.tier == "vip", "\(pilot)")
            let other = try await client.verdict(Self.check("carol", tenant: "other"))
            #expect(other.limit == 100 && other.tier.isEmpty, "\(other)")
            await client.close()
        }
    }

    @Test("a tenant's own numbers for a tier: its VIP subjects get its multiplier and limits; another tenant's VIPs the configuration's")
    func tiersPerTenant() async throws {
        let yaml = """
            rules: { api: { limit: 100, period: 1s }, export: { limit: 10, period: 1m } }
            tiers: { vip: { multiplier: 4, priority: 100 } }
            features: { adaptive: { enabled: true } }
            tenants:
              generous: { tiers: { vip: { multiplier: 10, rules: { export: { limit: 1000, period: 1m } } } } }
              plain: {}
            """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            for tenant in ["generous", "plain"] {
                var request = WireRequest()
                request.setTier = .with { $0.tenant = tenant; $0.subject = "carol"; $0.tier = "vip" }
                #expect(try await client.send(request).tier.assigned)
            }
            #expect(try await client.verdict(Self.check("carol", tenant: "generous")).limit == 1_000)
            #expect(try await client.verdict(Self.check("carol", tenant: "plain")).limit == 400)
            var export = Self.check("carol", tenant: "generous")
            export.rule = "export"
            #expect(try await client.verdict(export).limit == 1_000, "its own limits for the rule")
            export.tenant = "plain"
            #expect(try await client.verdict(export).limit == 40)
            await client.close()
        }
        #expect(ConfigurationTests.failure("tiers: { vip: { multiplier: 2 } }\ntenants: { a: { tiers: { gold: { multiplier: 3 } } } }")
            .contains("no tier named 'gold'"))
    }

    @Test("anomaly detection on for one tenant only: its outcomes are taken, another tenant's are not")
    func anomalyPerTenant() async throws {
        let yaml = """
            features: { anomaly: { enabled: false } }
            tenants:
              watched: { features: { anomaly: { enabled: true } } }
              unwatched: {}
            """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            var request = WireRequest()
            request.reportOutcome.outcomes = ["watched", "unwatched", "watched"].map { tenant in
                .with { $0.tenant = tenant; $0.subject = "s"; $0.status = 401; $0.timeMs = Self.base }
            }
            #expect(try await client.send(request).reportOutcome.recorded == 2)
            await client.close()
        }
    }

    @Test("tenant settings are read, key by key over the global flags, and refused in words when wrong")
    func configuration() throws {
        let configuration = try ConfigurationLoader.parse("""
            features: { reputation: { enabled: true, rollout: 50 } }
            tenants:
              a: { features: { reputation: { shadow: true }, adaptive: { enabled: true, rollout: 10 } }, reputation: { weights: { auth_failure: -9, custom_kind: -3 } } }
              b: {}
            """, source: "test.yaml")
        let a = configuration.settings(for: "a")
        #expect(a.features["reputation"] == FeatureFlag(name: "reputation", enabled: true, rolloutPercent: 50, shadow: true))
        #expect(a.features["adaptive"] == FeatureFlag(name: "adaptive", enabled: true, rolloutPercent: 10, shadow: false))
        #expect(a.reputation.model.weights["auth_failure"] == -9 && a.reputation.model.weights["custom_kind"] == -3)
        #expect(configuration.settings(for: "b").features == configuration.features)
        #expect(configuration.enabledAnywhere("adaptive") && !configuration.enabledAnywhere("anomaly"))
        #expect(ConfigurationTests.failure("tenants: { a: { features: { magic: { enabled: true } } } }").contains("unknown key"))
        #expect(ConfigurationTests.failure("tenants: { a: { features: { reputation: { rollout: 120 } } } }").contains("percentage"))
        #expect(ConfigurationTests.failure("tenants: { a: { reputation: { weights: { auth_failure: -500 } } } }").contains("-100"))
        let thresholds = try ConfigurationLoader.parse("""
            anomaly: { failures_per_subject: 12 }
            tenants: { a: { anomaly: { failures_per_subject: 3, spike_factor: 4 } }, b: {} }
            """, source: "test.yaml").anomalyWithTenants
        #expect(thresholds.failuresPerSubject == 12 && thresholds.tenants.keys.sorted() == ["a"])
        #expect(thresholds.tenants["a"]?.failuresPerSubject == 3 && thresholds.tenants["a"]?.spikeFactor == 4)
        #expect(thresholds.forSubjects(of: "b").failuresPerSubject == 12)
        let limits = try ConfigurationLoader.parse("tenants: { a: { quotas: { max_anomaly_records: 500 } }, b: {} }", source: "test.yaml")
        #expect(limits.anomalyWithTenants.tenantRecordLimits == ["a": 500])
        #expect(ConfigurationTests.failure("tenants: { a: { anomaly: { failures_per_ip: 3 } } }").contains("unknown key"))
        #expect(ConfigurationTests.failure("tenants: { a: { anomaly: { failures_per_subject: 1 } } }").contains("from 2 to"))
    }
}

extension TenantSettingsEndToEndTests {
    @Test("a tenant's own anomaly responses replace the global ones for its alerts; the others keep the global ones")
    func anomalyResponsesPerTenant() throws {
        let configuration = try ConfigurationLoader.parse("""
            features: { anomaly: { enabled: true } }
            anomaly: { responses: { credential_stuffing: { action: block, ttl: 1h } } }
            tenants:
              lenient: { anomaly: { responses: { credential_stuffing: { action: alert } } } }
              cautious: { anomaly: { responses: { credential_stuffing: { action: tighten, factor: 0.5, ttl: 10m } } } }
              plain: {}
            """, source: "test.yaml")
        let book = AnomalyResponseBook()
        let at = Int64(Self.base)
        let alerts = ["lenient", "cautious", "plain"].map { tenant in
            AnomalyAlert(timestampMs: at, scope: .subject, subject: "mallory", ip: nil, tenant: tenant, kind: "credential_stuffing",
                         score: 3, detail: "test")
        }
        AnomalyService.respond(to: alerts, configuration: configuration, responses: book, detector: AnomalyDetector()) { _, _, _ in }
        let now = at * 1_000_000
        #expect(book.entry(for: Fingerprint.of(tenant: "lenient", key: "mallory"), at: now) == nil, "alert only")
        let cautious = try #require(book.entry(for: Fingerprint.of(tenant: "cautious", key: "mallory"), at: now))
        #expect(!cautious.block && cautious.factor == 0.5)
        #expect(book.entry(for: Fingerprint.of(tenant: "plain", key: "mallory"), at: now)?.block == true)
        #expect(ConfigurationTests.failure("tenants: { a: { anomaly: { responses: { nonsense: { action: block } } } } }").contains("unknown alert kind"))
    }
}
