import Foundation
import NIOCore
import SluiceClient
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import Testing

/// Tenants' quotas on real daemons: a noisy tenant is held to its own, the others are served as before.
@Suite("Tenant quotas")
struct QuotaEndToEndTests {
    @Test("checks per second: GCRA over one atomic, with a burst; a request larger than the burst never fits")
    func rateArithmetic() {
        let rate = TenantRate(tenant: "t", perSecond: 100, burst: 10)
        let start: Int64 = 1_000_000_000_000
        #expect(rate.admit(10, now: start) == nil, "the burst at once")
        let wait = rate.admit(1, now: start)
        #expect(wait == 10_000_000, "one check's interval: 10 ms")
        #expect(rate.admit(1, now: start + 10_000_000) == nil)
        #expect(rate.admit(5, now: start + 60_000_000) == nil, "refilled by five intervals")
        #expect(rate.admit(11, now: start + 10_000_000_000) == .max, "more than the burst at once")
        let refusal = rate.refusal(count: 1, wait: 2_500_000)
        #expect(refusal.code == .quotaExceeded && refusal.retryAfterMs == 3 && refusal.message.contains("100 checks per second"))
        #expect(rate.refusals.load(ordering: .relaxed) == 1)
    }

    @Test("quotas are read per tenant over the top-level defaults, for declared tenants only")
    func configuration() throws {
        let configuration = try ConfigurationLoader.parse("""
            quotas: { checks_per_second: 1000, max_connections: 10 }
            tenants:
              noisy: { quotas: { checks_per_second: 50, burst: 5 } }
              quiet: {}
            """, source: "test.yaml")
        #expect(configuration.quotas(for: "noisy") == .init(checksPerSecond: 50, burst: 5, maxConnections: 10))
        #expect(configuration.quotas(for: "quiet") == .init(checksPerSecond: 1000, maxConnections: 10))
        #expect(configuration.quotas(for: "undeclared") == nil)
        #expect(ConfigurationTests.failure("quotas: { burst: 5 }").contains("checks_per_second"))
        #expect(ConfigurationTests.failure("tenants: { a: { quotas: { max_keys: 5 } } }").contains("unknown key"))
    }

    @Test("a tenant flooding past its checks per second is refused CODE_QUOTA_EXCEEDED with retry_after_ms; another tenant's checks are all decided")
    func noisyTenantIsHeldToItsRate() async throws {
        let yaml = """
            rules: { api: { limit: 1000000, period: 1m } }
            tenants:
              noisy: { quotas: { checks_per_second: 200, burst: 200 } }
              quiet: {}
            """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let noisy = try await SluiceClient.connect(to: daemon.tcp)
            let quiet = try await SluiceClient.connect(to: daemon.unix)
            let started = ContinuousClock.now
            var admitted = 0, refused = 0, quietDecided = 0
            for round in 0..<20 {
                let batch = (0..<50).map { Make.check("n\(round)-\($0)", rule: "api", tenant: "noisy") }
                let answers = try await noisy.send(pipelined: [Make.request(batch[0]), WireRequest.with { $0.check.checks = Array(batch[1...]) }])
                for answer in answers {
                    if case .error(let error) = answer.body {
                        #expect(error.code == .quotaExceeded && error.retryAfterMs > 0, "\(error)")
                        refused += 1
                    } else {
                        admitted += answer.check.verdicts.count
                    }
                }
                let verdict = try await quiet.verdict(Make.check("q\(round)", rule: "api", tenant: "quiet"))
                if verdict.allowed { quietDecided += 1 }
            }
            let elapsed = Double((ContinuousClock.now - started).components.seconds) + Double((ContinuousClock.now - started).components.attoseconds) / 1e18
            #expect(refused > 0)
            #expect(Double(admitted) <= 200 + 200 * elapsed + 50, "admitted \(admitted) in \(elapsed) s")
            #expect(quietDecided == 20, "the quiet tenant is not held back")
            let noisyRate = try #require(daemon.daemon.dispatcher.state.current.quotas?.rates.first { $0.tenant == "noisy" })
            #expect(noisyRate.refusals.load(ordering: .relaxed) == UInt64(refused))
            #expect(daemon.daemon.dispatcher.state.current.quotas?.rates.count == 1, "quiet has no quota")
            await noisy.close()
            await quiet.close()
        }
    }

    @Test("max_connections: a tenant's identities hold at most that many connections; the next is refused and closed; a place comes back when one closes")
    func connectionsPerTenant() async throws {
        var tokens = AuthEndToEndTests.Tokens()
        tokens.add("acme", tenant: "acme", roles: [.check])
        tokens.add("root", tenant: "*", roles: [.check])
        let yaml = AuthEndToEndTests.configuration(tokens).replacingOccurrences(
            of: "acme: { rules: { api: { limit: 1, period: 1m, service: acme-api } } }",
            with: "acme: { rules: { api: { limit: 1, period: 1m, service: acme-api } }, quotas: { max_connections: 2 } }")
        try await TestDaemon.with(yaml: yaml, { $0.tcpListeners = [.init(host: "127.0.0.1", port: 0)] }) { daemon in
            let first = try await SluiceClient.connect(to: daemon.tcp, token: tokens["acme"])
            let second = try await SluiceClient.connect(to: daemon.tcp, token: tokens["acme"])
            do {
                _ = try await SluiceClient.connect(to: daemon.tcp, token: tokens["acme"])
                Issue.record("a third connection of acme was let in")
            } catch ClientError.refused(let error) {
                #expect(error.code == .quotaExceeded && error.message.contains("max_connections"), "\(error)")
            }
            // Identities of every tenant are not counted against acme.
            let root = try await SluiceClient.connect(to: daemon.tcp, token: tokens["root"])
            await first.close()
            var third: SluiceClient?
            for _ in 0..<100 where third == nil {
                third = try? await SluiceClient.connect(to: daemon.tcp, token: tokens["acme"])
                if third == nil { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(third != nil, "the closed connection's place came back")
            #expect(daemon.daemon.dispatcher.connectionQuotas.snapshot.open["acme"] == 2)
            await third?.close()
            await second.close()
            await root.close()
        }
    }
}
