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
        #expect(ConfigurationTests.failure("tenants: { a: { quotas: { max_keys: 5 } } }").contains("from 64 to"))
        #expect(ConfigurationTests.failure("tenants: { a: { quotas: { max_records: 5 } } }").contains("unknown key"))
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
            // 2,000 checks sent at once, 50 a request: whatever the machine's speed, far past 200 + 200 a second.
            let requests = (0..<40).map { round in
                WireRequest.with { $0.check.checks = (0..<50).map { Make.check("n\(round)-\($0)", rule: "api", tenant: "noisy") } }
            }
            let started = ContinuousClock.now
            let answers = try await noisy.send(pipelined: requests)
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            var admitted = 0, refused = 0
            for answer in answers {
                if case .error(let error) = answer.body {
                    #expect(error.code == .quotaExceeded && error.retryAfterMs > 0, "\(error)")
                    refused += 1
                } else {
                    admitted += answer.check.verdicts.count
                }
            }
            #expect(refused > 0)
            #expect(Double(admitted) <= 200 + 200 * seconds + 50, "admitted \(admitted) in \(seconds) s")
            var quietDecided = 0
            for round in 0..<20 where try await quiet.verdict(Make.check("q\(round)", rule: "api", tenant: "quiet")).allowed {
                quietDecided += 1
            }
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
            for _ in 0..<500 where third == nil {
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

    /// The quiet tenant checks `keys` keys of a one-a-minute rule (each allowed), the noisy one
    /// checks `flood` new keys, then the quiet tenant checks its keys again: how many are still
    /// denied (their state kept).
    static func quietKeysKept(_ daemon: TestDaemon, keys: Int, flood: Int) async throws -> Int {
        let client = try await SluiceClient.connect(to: daemon.unix)
        defer { Task { await client.close() } }
        func batch(_ tenant: String, _ range: Range<Int>) -> WireRequest {
            WireRequest.with { $0.check.checks = range.map { Make.check("\(tenant)-\($0)", rule: "once", tenant: tenant) } }
        }
        for start in stride(from: 0, to: keys, by: 500) {
            let answer = try await client.send(batch("quiet", start..<min(keys, start + 500)))
            #expect(answer.check.verdicts.allSatisfy { $0.allowed })
        }
        for start in stride(from: 0, to: flood, by: 1_000) {
            _ = try await client.send(batch("noisy", start..<min(flood, start + 1_000)))
        }
        var kept = 0
        for start in stride(from: 0, to: keys, by: 500) {
            kept += try await client.send(batch("quiet", start..<min(keys, start + 500))).check.verdicts.count { !$0.allowed }
        }
        return kept
    }

    static let keysYAML = """
        table: { max_entries: 4000 }
        rules: { once: { limit: 1, period: 1h } }
        tenants:
          quiet: {}
          noisy: { quotas: { max_keys: 512 } }
        """

    @Test("max_keys: a tenant flooding new keys evicts only its own (from a table of its size); another tenant's keys keep their state")
    func keyFloodEvictsOnlyTheFloodersKeys() async throws {
        try await TestDaemon.with(yaml: Self.keysYAML) { daemon in
            let kept = try await Self.quietKeysKept(daemon, keys: 1_000, flood: 20_000)
            #expect(kept == 1_000, "every quiet key kept its state")
            let partitions = try #require(daemon.daemon.dispatcher.state.current.partitions)
            #expect(partitions.list.map(\.tenant) == ["noisy"])
            let own = partitions.list[0].table.statistics()
            #expect(own.entries <= own.maxEntries && own.maxEntries <= 1_024 && own.evictions > 0, "\(own)")
            let shared = daemon.daemon.dispatcher.backend.statistics()
            #expect(shared.entries == 1_000 && shared.evictions == 0, "the shared table holds the quiet keys only: \(shared)")
        }
        // The same flood without the quota: the shared table evicts the quiet tenant's keys.
        try await TestDaemon.with(yaml: Self.keysYAML.replacingOccurrences(of: "{ quotas: { max_keys: 512 } }", with: "{}")) { daemon in
            let kept = try await Self.quietKeysKept(daemon, keys: 1_000, flood: 20_000)
            #expect(kept < 500, "without max_keys the flood evicts the quiet tenant's keys (\(kept) kept)")
        }
    }

    @Test("a tenant's own table is kept in a snapshot beside the shared one and read back at start")
    func ownTableSurvivesARestart() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let yaml = Self.keysYAML + "\nsnapshot: { path: \"\(directory)/table.snapshot\" }\n"
        let check = Make.request(Make.check("k", rule: "once", tenant: "noisy"))
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await client.send(check).check.verdicts.first?.allowed == true)
            await client.close()
        }
        #expect(FileManager.default.fileExists(atPath: PartitionSnapshots.path("\(directory)/table.snapshot", tenant: "noisy")))
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await client.send(check).check.verdicts.first?.allowed == false, "its state came back")
            await client.close()
        }
    }
}
