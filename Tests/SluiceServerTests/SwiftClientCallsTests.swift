import Foundation
@testable import SluiceClient
import SluiceTestKit
import Testing

/// SluiceClient's typed calls, as an application uses them, against a real daemon with tiers,
/// shedding, reputation and anomaly responses on; and the example executable.
@Suite("Swift client calls", .ownThreads)
struct SwiftClientCallsTests {
    static let yaml = """
    rules:
      api: { limit: 100, period: 1m, service: checkout }
      pool: { limit: 2, period: 1m, algorithm: concurrency }
    tiers:
      vip: { multiplier: 4, priority: 100 }
    anomaly:
      warmup: 1ms
      responses:
        credential_stuffing: { action: block, ttl: 1h }
    features:
      adaptive: { enabled: true }
      anomaly: { enabled: true }
      reputation: { enabled: true, shadow: true }
    """

    static func daemon<T>(_ body: (TestDaemon, SluiceClient) async throws -> T) async throws -> T {
        try await TestDaemon.with(yaml: yaml, clock: .monotonic) { daemon in
            let sluice = try await SluiceClient.connect(to: daemon.unix)
            defer { Task { await sluice.close() } }
            return try await body(daemon, sluice)
        }
    }

    @Test("checks by rule, by an inline limit and in a batch; a refused batch is a DaemonError naming its check")
    func checks() async throws {
        try await Self.daemon { _, sluice in
            try await sluice.ping()
            let ruled = try await sluice.check("user:1", rule: "api", ip: "198.51.100.7", route: "GET /items/1")
            #expect(ruled.allowed && ruled.limit == 100 && ruled.remaining == 99 && ruled.rule == "api")
            var inline = try await sluice.check("login:203.0.113.7", limit: 2, per: .seconds(60), algorithm: .slidingWindow)
            #expect(inline.allowed && inline.limit == 2 && inline.algorithm == .slidingWindow)
            inline = try await sluice.check("login:203.0.113.7", limit: 2, per: .seconds(60), algorithm: .slidingWindow, hits: 2)
            #expect(!inline.allowed && inline.reason == .overLimit && inline.retryAfterMs > 0)
            let peek = try await sluice.check("user:1", rule: "api", hits: 0)
            #expect(peek.remaining == 99, "a peek consumes nothing")
            let batch = try await sluice.check((0..<5).map { index in Sluice_V1_Check.with { $0.key = "b\(index)"; $0.rule = "api" } })
            #expect(batch.count == 5 && batch.allSatisfy(\.allowed))
            let refused = await #expect(throws: DaemonError.self) {
                try await sluice.check([.with { $0.key = "a"; $0.rule = "api" }, .with { $0.key = "b"; $0.rule = "no-such-rule" }])
            }
            #expect(refused?.code == .unknownRule && refused?.checkIndex == 1)
            #expect(refused?.description.hasPrefix("unknown_rule: ") == true, "\(String(describing: refused))")
            // The connection serves on after a refusal, and many tasks share it.
            let verdicts = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<50 { group.addTask { try await sluice.check("many:\(index % 5)", rule: "api").allowed } }
                return try await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(verdicts == 50)
        }
    }

    @Test("a concurrency lease is released early; a second release finds it gone")
    func leases() async throws {
        try await Self.daemon { _, sluice in
            let first = try await sluice.check("conn", rule: "pool")
            let second = try await sluice.check("conn", rule: "pool")
            let third = try await sluice.check("conn", rule: "pool")
            #expect(first.allowed && second.allowed && !third.allowed)
            #expect(try await sluice.release(lease: first.leaseID, key: "conn", rule: "pool"))
            #expect(try await !sluice.release(lease: first.leaseID, key: "conn", rule: "pool"))
            #expect(try await sluice.check("conn", rule: "pool").allowed)
        }
    }

    @Test("reputation events and the subject's record; a tier in the verdict; load reports")
    func reputationTiersAndLoad() async throws {
        try await Self.daemon { _, sluice in
            let events = Array(repeating: Sluice_V1_ReputationEvent.with { $0.subject = "mallory"; $0.kind = "auth_failure" }, count: 6)
            #expect(try await sluice.recordEvents(events) == 6)
            let record = try await sluice.reputation(of: "mallory")
            #expect(record.tracked && record.reputation.score < 50)
            let verdict = try await sluice.check("mallory", rule: "api")
            #expect(verdict.reputationPresence != nil && verdict.reputation < 50)

            var assign = WireRequest()
            assign.setTier = .with { $0.subject = "acme"; $0.tier = "vip" }   // an operator's call (sluicectl tiers set)
            _ = try await sluice.send(assign)
            let vip = try await sluice.check("acme", rule: "api")
            #expect(vip.tier == "vip" && vip.limit == 400 && vip.multiplier == 4)

            let healthy = try await sluice.reportLoad(service: "checkout", inFlight: 2, latencyP50: .milliseconds(2), latencyP99: .milliseconds(10))
            #expect(healthy.loadFactor == 1 && healthy.tiers.map(\.tier) == ["vip", ""])
            var loaded = healthy
            for _ in 0..<3 { loaded = try await sluice.reportLoad(service: "checkout", latencyP99: .seconds(5), errorRate: 0.5) }
            #expect(loaded.loadFactor < 1 && loaded.smoothedP99Us > healthy.smoothedP99Us)
            let unknown = await #expect(throws: DaemonError.self) { try await sluice.reportLoad(service: "not-a-service") }
            #expect(unknown?.code == .invalidArgument)
        }
    }

    @Test("outcomes raise an alert on the stream, and the address's next check is blocked with the alert's kind")
    func alertsAndAnomalyVerdicts() async throws {
        try await Self.daemon { daemon, sluice in
            let follower = try await SluiceClient.connect(to: daemon.unix)
            let alerts = follower.alerts(kinds: ["credential_stuffing"])
            let first = Task { () -> Sluice_V1_Alert? in
                for try await alert in alerts { return alert }
                return nil
            }
            try await Task.sleep(for: .milliseconds(200))
            let now = UInt64(Date().timeIntervalSince1970 * 1_000)
            let outcomes = (0..<20).map { index in
                Sluice_V1_Outcome.with {
                    $0.subject = "user\(index)"
                    $0.ip = "192.0.2.55"
                    $0.route = "POST /login"
                    $0.status = 401
                    $0.timeMs = now + UInt64(index) * 100
                }
            }
            #expect(try await sluice.reportOutcomes(outcomes) == 20)
            let alert = try await first.value
            #expect(alert?.kind == "credential_stuffing" && alert?.ip == "192.0.2.55")
            var verdict = try await sluice.check("victim", rule: "api", ip: "192.0.2.55")
            for _ in 0..<50 where verdict.allowed {
                try await Task.sleep(for: .milliseconds(100))
                verdict = try await sluice.check("victim", rule: "api", ip: "192.0.2.55")
            }
            #expect(!verdict.allowed && verdict.reason == .anomaly && verdict.anomaly == "credential_stuffing")
            await follower.close()

            let refused = try await SluiceClient.connect(to: daemon.unix)
            var iterator = refused.alerts(recent: 5_000).makeAsyncIterator()
            let error = await #expect(throws: DaemonError.self) { _ = try await iterator.next() }
            #expect(error?.code == .invalidArgument)
            await refused.close()
        }
    }

    @Test("the example program: 0 when allowed, 1 when denied with when to retry, 2 for an unknown rule or no daemon")
    func example() async throws {
        try await TestDaemon.with(yaml: "rules: { login: { limit: 1, period: 1m } }", clock: .monotonic) { daemon in
            let endpoint = daemon.unix.description
            let allowed = try await DaemonProcessTests.run("sluice-client-example", [endpoint, "login:203.0.113.7", "login"])
            #expect(allowed.status == 0 && allowed.out.hasPrefix("allowed remaining=0"), "\(allowed)")
            #expect(allowed.out.contains("RateLimit-Policy: \"login\";q=1;w=60"), "\(allowed.out)")
            let denied = try await DaemonProcessTests.run("sluice-client-example", [endpoint, "login:203.0.113.7", "login"])
            #expect(denied.status == 1 && denied.out.contains("denied") && denied.out.contains("retry in"), "\(denied)")
            #expect(denied.out.contains("Retry-After: "), "\(denied.out)")
            let unknown = try await DaemonProcessTests.run("sluice-client-example", [endpoint, "k", "nope"])
            #expect(unknown.status == 2 && unknown.out.contains("unknown_rule"), "\(unknown)")
        }
        let absent = try await DaemonProcessTests.run("sluice-client-example", ["unix:/nonexistent/sluice.sock", "k"])
        #expect(absent.status == 2 && absent.out.contains("cannot connect"), "\(absent)")
    }

    @Test("durations become milliseconds and microseconds without trapping")
    func durations() {
        #expect(SluiceClient.units(.seconds(60), perSecond: 1_000) == 60_000)
        #expect(SluiceClient.units(.microseconds(1_500), perSecond: 1_000_000) == 1_500)
        #expect(SluiceClient.units(.milliseconds(-5), perSecond: 1_000) == 0)
        #expect(SluiceClient.units(.seconds(Int64.max), perSecond: 1_000_000) == .max)
    }
}
