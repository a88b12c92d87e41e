import SluiceClient
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import Testing

/// What envoy ratelimit's users expect of a rule, on native rules: `shadow`, `unlimited`,
/// `replaces`, and week and month periods, through a real daemon (request clock).
@Suite("Rule modes end to end")
struct RuleModeEndToEndTests {
    static let yaml = """
    rules:
      trial: { limit: 2, period: 1h, shadow: true }
      internal: { unlimited: true }
      per_user: { limit: 2, period: 1h }
      per_account: { limit: 3, period: 1h, replaces: [per_user] }
      weekly: { limit: 1, period: week, algorithm: fixed_window }
      monthly: { limit: 1, period: 1mo, algorithm: fixed_window }
    features:
      reputation: { enabled: true }
    """

    @Test("shadow: checks past the limit are allowed with would_deny, counted as shadow_over_limit, and leave reputation alone")
    func shadow() async throws {
        try await TestDaemon.with(yaml: Self.yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            var verdicts: [WireVerdict] = []
            for _ in 0..<4 { verdicts.append(try await client.verdict(Make.check("k", rule: "trial"))) }
            #expect(verdicts.allSatisfy { $0.allowed })
            #expect(verdicts.map(\.wouldDeny) == [false, false, true, true])
            #expect(verdicts[2].wouldDenyReason == .overLimit)
            #expect(verdicts[2].retryAfterMs == 0)
            let state = daemon.daemon.dispatcher.state
            #expect(LiveStateTests.total(state, rule: "trial", decision: "shadow_over_limit") == 2)
            #expect(LiveStateTests.total(state, rule: "trial", decision: "allowed") == 2)
            #expect(LiveStateTests.total(state, rule: "trial", decision: "over_limit") == 0)
            // A denial would have been a rate_limited event; a shadowed one is not.
            let reputation = try await client.send({ var r = WireRequest(); r.getReputation.subject = "k"; return r }())
            if case .getReputation(let answer) = reputation.body { #expect(!answer.tracked) } else { Issue.record("\(reputation)") }
            await client.close()
        }
    }

    @Test("unlimited: always allowed, nothing stored; replaces: the replaced rule's check in the same request is allowed without counting")
    func unlimitedAndReplaces() async throws {
        try await TestDaemon.with(yaml: Self.yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.tcp)
            for _ in 0..<5 {
                let verdict = try await client.verdict(Make.check("svc", rule: "internal", hits: 1_000))
                #expect(verdict.allowed && verdict.reason == .withinLimit)
            }
            #expect(daemon.daemon.dispatcher.backend.statistics().entries == 0)
            for _ in 0..<3 {
                let response = try await client.send(Make.request(Make.check("acct", rule: "per_account"), Make.check("user", rule: "per_user")))
                guard case .check(let answer) = response.body else { Issue.record("\(response)"); return }
                #expect(answer.verdicts.map(\.allowed) == [true, true])
            }
            // per_user counted nothing above: alone, it has both its checks.
            #expect(try await client.verdict(Make.check("user", rule: "per_user")).remaining == 1)
            #expect(!(try await client.verdict(Make.check("acct", rule: "per_account")).allowed))
            await client.close()
        }
    }

    @Test("week and month periods: fixed windows of 7 and 30 days at multiples of them since the epoch")
    func calendarUnits() async throws {
        try await TestDaemon.with(yaml: Self.yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let week: UInt64 = 604_800_000, month: UInt64 = 2_592_000_000
            let weekStart = epochMs / week * week, monthStart = epochMs / month * month
            #expect(try await client.verdict(Make.check("w", rule: "weekly", nowMs: weekStart)).allowed)
            let denied = try await client.verdict(Make.check("w", rule: "weekly", nowMs: weekStart + week - 1))
            #expect(!denied.allowed && denied.retryAfterMs == 1)
            #expect(try await client.verdict(Make.check("w", rule: "weekly", nowMs: weekStart + week)).allowed)
            #expect(try await client.verdict(Make.check("m", rule: "monthly", nowMs: monthStart)).allowed)
            #expect(!(try await client.verdict(Make.check("m", rule: "monthly", nowMs: monthStart + month - 1)).allowed))
            #expect(try await client.verdict(Make.check("m", rule: "monthly", nowMs: monthStart + month)).allowed)
            await client.close()
        }
    }

    @Test("mistakes in rule modes are refused with the key")
    func mistakes() {
        #expect(ConfigurationTests.failure("rules: { a: { unlimited: true, limit: 1 } }").contains("rules.a.limit"))
        #expect(ConfigurationTests.failure("rules: { a: { unlimited: true, shadow: true } }").contains("rules.a.shadow"))
        #expect(ConfigurationTests.failure("rules: { a: { limit: 1, period: 1s, replaces: [a] } }").contains("rules.a.replaces[0]"))
        #expect(ConfigurationTests.failure("rules: { a: { limit: 1, period: fortnight } }").contains("1mo (30 days)"))
    }
}
