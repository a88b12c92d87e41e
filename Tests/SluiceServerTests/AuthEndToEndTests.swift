import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#endif
import SluiceClient
import SluiceCore
@testable import SluiceConfiguration
import SluiceProto
import SluiceTestKit
@testable import SluiceServer
import Testing

/// Identities, roles and tenant isolation on real daemons, over real TCP and Unix sockets.
@Suite("Authentication and tenant isolation", .ownThreads)
struct AuthEndToEndTests {
    typealias Role = Configuration.Auth.Role

    /// Tokens made for a test: each one's secret, and the `auth.tokens` entries holding their hashes.
    struct Tokens {
        var secrets: [String: String] = [:]
        var yaml = ""

        mutating func add(_ name: String, tenant: String, roles: [Role]) {
            let made = AccessToken.make()
            secrets[name] = made.token
            yaml += "    - { id: \"\(made.id)\", name: \(name), tenant: \"\(tenant)\", roles: [\(roles.map(\.rawValue).joined(separator: ", "))], hash: \"\(made.digest)\" }\n"
        }

        subscript(name: String) -> String { secrets[name]! }
    }

    static func configuration(_ tokens: Tokens, extra: String = "") -> String {
        """
        rules:
          shared: { limit: 100, period: 1s, service: public }
        tenants:
          acme: { rules: { api: { limit: 1, period: 1m, service: acme-api } } }
          globex: { rules: { api: { limit: 1, period: 1m, service: globex-api } } }
        tiers:
          vip: { multiplier: 2, priority: 10 }
        features: { reputation: { enabled: true }, adaptive: { enabled: true }, anomaly: { enabled: true } }
        auth:
          max_failures: 3
          tokens:
        \(tokens.yaml)\(extra)
        """
    }

    /// A daemon whose TCP listener requires a token (and whose Unix socket too, when `unixAuth`).
    static func withDaemon<T>(_ tokens: Tokens, extra: String = "", unixAuth: Bool = false,
                              _ body: (TestDaemon) async throws -> T) async throws -> T {
        try await TestDaemon.with(yaml: configuration(tokens, extra: extra), { configuration in
            configuration.tcpListeners = [.init(host: "127.0.0.1", port: 0)]
            if unixAuth { configuration.unixListeners[0].auth = .token }
        }, body)
    }

    /// One request of each kind the protocol has, naming `tenant` wherever it names one.
    static func everyKind(tenant: String) -> [(String, WireRequest)] {
        func make(_ fill: (inout WireRequest) -> Void) -> WireRequest {
            var request = WireRequest()
            fill(&request)
            return request
        }
        return [
            ("check", make { $0.check.checks = [Make.check("k-\(tenant)", rule: "api", tenant: tenant)] }),
            ("release", make { $0.release = .with { $0.tenant = tenant; $0.key = "k"; $0.rule = "api"; $0.leaseID = 1; $0.nowMs = epochMs } }),
            ("record_events", make { $0.recordEvents.events = [.with { $0.tenant = tenant; $0.subject = "s"; $0.kind = "auth_failure"; $0.atMs = epochMs }] }),
            ("report_outcome", make { $0.reportOutcome.outcomes = [.with { $0.tenant = tenant; $0.subject = "s"; $0.status = 401; $0.timeMs = epochMs }] }),
            ("report_load", make { $0.reportLoad = .with { $0.service = "\(tenant)-api"; $0.latencyP99Us = 1_000 } }),
            ("get_reputation", make { $0.getReputation = .with { $0.tenant = tenant; $0.subject = "s" } }),
            ("list_reputations", make { $0.listReputations = .with { $0.tenant = tenant } }),
            ("set_reputation", make { $0.setReputation = .with { $0.tenant = tenant; $0.subject = "s"; $0.action = .set; $0.score = 40 } }),
            ("set_tier", make { $0.setTier = .with { $0.tenant = tenant; $0.subject = "s"; $0.tier = "vip" } }),
            ("get_tier", make { $0.getTier = .with { $0.tenant = tenant; $0.subject = "s" } }),
            ("list_tiers", make { $0.listTiers = .with { $0.tenant = tenant } }),
            ("remove_tier", make { $0.removeTier = .with { $0.tenant = tenant; $0.subject = "s" } }),
            ("watch_alerts", make { $0.watchAlerts = .with { $0.tenant = tenant } }),
        ]
    }

    /// The error code of `request`'s answer (nil: not an error). A stream's first answer.
    static func code(of request: WireRequest, on client: SluiceClient) async throws -> WireError.Code? {
        if case .watchAlerts = request.body {
            do {
                for try await _ in client.stream(request) { return nil }
                return nil
            } catch ClientError.refused(let error) {
                return error.code
            }
        }
        let response = try await client.send(request)
        if case .error(let error) = response.body { return error.code }
        return nil
    }

    @Test("a token listener answers CODE_UNAUTHENTICATED until a token is presented; a wrong one the same way; after max_failures the connection is closed")
    func unauthenticatedAndWrongTokens() async throws {
        var tokens = Tokens()
        tokens.add("acme-checker", tenant: "acme", roles: [.check])
        try await Self.withDaemon(tokens) { daemon in
            let client = try await SluiceClient.connect(to: daemon.tcp)
            let before = try await client.send(Make.request(Make.check("k", rule: "api", tenant: "acme")))
            #expect(before.error.code == .unauthenticated)
            #expect(before.error.message.contains("Authenticate"))
            var wrong = WireRequest()
            let real = tokens["acme-checker"]
            wrong.authenticate.token = String(real.dropLast()) + (real.last == "A" ? "B" : "A")
            let refused = try await client.send(wrong)
            #expect(refused.error.code == .unauthenticated)
            // Nothing that helps guessing: a well-formed unknown id and garbage read the same.
            var unknown = WireRequest()
            unknown.authenticate.token = "sluice_000000000000_nothing"
            #expect(try await client.send(unknown).error.message == refused.error.message)
            // Three failures: closed after the third answer.
            await #expect(throws: (any Error).self) { _ = try await client.send(unknown) }

            // The right token is accepted on a new connection, and says who it is.
            let good = try await SluiceClient.connect(to: daemon.tcp)
            var authenticate = WireRequest()
            authenticate.authenticate.token = real
            let answer = try await good.send(authenticate).authenticate
            #expect(answer.identity == "acme-checker" && answer.tenant == "acme" && !answer.allTenants && answer.roles == ["check"])
            #expect(try await good.verdict(Make.check("k", rule: "api", tenant: "acme")).allowed)
            await good.close()

            // The client's own token option.
            await #expect(throws: ClientError.self) { _ = try await SluiceClient.connect(to: daemon.tcp, token: "sluice_000000000000_x") }
            let viaOption = try await SluiceClient.connect(to: daemon.tcp, token: real)
            #expect(try await viaOption.verdict(Make.check("other", rule: "api", tenant: "acme")).allowed)
            await viaOption.close()
        }
    }

    @Test("every request kind is served for the identity's own tenant and refused CODE_FORBIDDEN for another", arguments: ["tcp", "unix"])
    func everyKindIsHeldToItsTenant(transport: String) async throws {
        var tokens = Tokens()
        tokens.add("acme-operator", tenant: "acme", roles: [.operator])
        tokens.add("root", tenant: "*", roles: [.operator])
        try await Self.withDaemon(tokens, unixAuth: true) { daemon in
            let endpoint = transport == "tcp" ? daemon.tcp : daemon.unix
            let acme = try await SluiceClient.connect(to: endpoint, token: tokens["acme-operator"])
            let root = try await SluiceClient.connect(to: endpoint, token: tokens["root"])
            for ((kind, own), (_, other)) in zip(Self.everyKind(tenant: "acme"), Self.everyKind(tenant: "globex")) {
                let ownCode = try await Self.code(of: own, on: acme)
                #expect(ownCode != .forbidden && ownCode != .unauthenticated, "\(kind) for its own tenant: \(String(describing: ownCode))")
                #expect(try await Self.code(of: other, on: acme) == .forbidden, "\(kind) for another tenant")
                let rootCode = try await Self.code(of: other, on: root)
                #expect(rootCode != .forbidden && rootCode != .unauthenticated, "\(kind) by an identity of every tenant: \(String(describing: rootCode))")
            }
            // Requests about the whole daemon need an identity of every tenant.
            var listAll = WireRequest()
            listAll.listReputations.allTenants = true
            var flags = WireRequest()
            flags.flags = .init()
            var reload = WireRequest()
            reload.reload = .init()
            for request in [listAll, flags, reload] {
                #expect(try await Self.code(of: request, on: acme) == .forbidden)
            }
            #expect(try await Self.code(of: listAll, on: root) == nil)
            #expect(try await Self.code(of: flags, on: root) == nil)
            // A service named by a global rule is everyone's: a tenant may not report it loaded.
            var shared = WireRequest()
            shared.reportLoad = .with { $0.service = "public"; $0.latencyP99Us = 1_000 }
            #expect(try await Self.code(of: shared, on: acme) == .forbidden)
            await acme.close()
            await root.close()
        }
    }

    @Test("a check that names no tenant acts for the identity's tenant, on the fast path, pipelined and through swift-protobuf")
    func emptyTenantIsTheIdentitys() async throws {
        var tokens = Tokens()
        tokens.add("acme", tenant: "acme", roles: [.check])
        try await Self.withDaemon(tokens) { daemon in
            let client = try await SluiceClient.connect(to: daemon.tcp, token: tokens["acme"])
            // acme's own rule `api` (1 a minute): the unnamed tenant is acme, so the second is denied.
            #expect(try await client.verdict(Make.check("alice", rule: "api")).allowed)
            #expect(try await !client.verdict(Make.check("alice", rule: "api", tenant: "acme")).allowed)
            // Pipelined frames decided as one batch: one naming another tenant ends it with its error.
            let answers = try await client.send(pipelined: [
                Make.request(Make.check("bob", rule: "api")),
                Make.request(Make.check("bob", rule: "api", tenant: "globex")),
                Make.request(Make.check("carol", rule: "api")),
            ])
            #expect(answers[0].check.verdicts.first?.allowed == true)
            #expect(answers[1].error.code == .forbidden && answers[1].error.checkIndex == 0)
            #expect(answers[2].check.verdicts.first?.allowed == true)
            // A batch with one foreign check is refused whole, naming its index.
            let mixed = try await client.send(Make.request(Make.check("dave", rule: "api"), Make.check("dave", rule: "api", tenant: "globex")))
            #expect(mixed.error.code == .forbidden && mixed.error.checkIndex == 1)
            #expect(try await client.verdict(Make.check("dave", rule: "api")).allowed, "the refused batch consumed nothing")
            await client.close()
        }
    }

    @Test("each role allows its own requests only", arguments: [Role.check, .report, .read])
    func rolesAllowTheirRequests(role: Role) async throws {
        var tokens = Tokens()
        tokens.add("one", tenant: "acme", roles: [role])
        try await Self.withDaemon(tokens) { daemon in
            let client = try await SluiceClient.connect(to: daemon.tcp, token: tokens["one"])
            for (kind, request) in Self.everyKind(tenant: "acme") {
                let needed = AccessPolicy.role(for: request.body)!
                let code = try await Self.code(of: request, on: client)
                if needed == role {
                    #expect(code != .forbidden, "\(role) may \(kind)")
                } else {
                    #expect(code == .forbidden, "\(role) may not \(kind)")
                }
            }
            var ping = WireRequest()
            ping.ping = .init()
            #expect(try await Self.code(of: ping, on: client) == nil, "any identity may ping")
            await client.close()
        }
    }

    @Test("an address that fails too often is refused for a while, even with a right token, and told when to retry")
    func failuresAreThrottledPerAddress() async throws {
        var tokens = Tokens()
        tokens.add("acme", tenant: "acme", roles: [.check])
        try await Self.withDaemon(tokens, extra: "  failures_per_minute: 3\n") { daemon in
            let started = ContinuousClock.now
            for _ in 0..<3 {
                await #expect(throws: ClientError.self) { _ = try await SluiceClient.connect(to: daemon.tcp, token: "sluice_000000000000_x") }
            }
            // The window is a minute of real time: a machine so loaded that these took longer
            // has seen it end (the window's arithmetic is tested with given times below).
            guard ContinuousClock.now - started < .seconds(50) else { return }
            do {
                _ = try await SluiceClient.connect(to: daemon.tcp, token: tokens["acme"])
                Issue.record("a throttled address was let in")
            } catch ClientError.refused(let error) {
                #expect(error.code == .unauthenticated && error.retryAfterMs > 0 && error.retryAfterMs <= 60_000)
            }
            let counts = daemon.daemon.dispatcher.gatekeeper.results
            #expect(counts.read(Gatekeeper.Result.rejected.rawValue) == 3)
            #expect(counts.read(Gatekeeper.Result.throttled.rawValue) == 1)
            // Other listeners' clients (the Unix socket) are not held back.
            let local = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await local.verdict(Make.check("k", rule: "api", tenant: "globex")).allowed)
            await local.close()
        }
    }

    @Test("the failure window: throttled at the limit within a minute, free again after it, each address on its own; the memory of addresses is bounded")
    func failureWindow() {
        var auth = Configuration.Auth()
        auth.failuresPerMinute = 2
        let gate = Gatekeeper()
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
        for second in [0, 10] {
            guard case .failure(let error) = gate.authenticate(token: "wrong", address: "a", auth: auth, now: start + .seconds(Int64(second))) else {
                Issue.record("a wrong token was accepted")
                return
            }
            #expect(error.retryAfterMs == 0)
        }
        guard case .failure(let throttled) = gate.authenticate(token: "wrong", address: "a", auth: auth, now: start + .seconds(20)) else { return }
        #expect(throttled.retryAfterMs == 40_000, "until the minute that began with the first failure ends")
        guard case .failure(let other) = gate.authenticate(token: "wrong", address: "b", auth: auth, now: start + .seconds(20)) else { return }
        #expect(other.retryAfterMs == 0, "another address is not held back")
        guard case .failure(let later) = gate.authenticate(token: "wrong", address: "a", auth: auth, now: start + .seconds(61)) else { return }
        #expect(later.retryAfterMs == 0, "a new minute")
        for index in 0..<(Gatekeeper.addressLimit + 10) { gate.recordFailure("x\(index)", now: start + .seconds(62)) }
        #expect(gate.windows.withLockedValue { $0.count } <= Gatekeeper.addressLimit)
    }

    @Test("a Unix peer's uid maps to an identity; an unmapped one must authenticate on a token socket")
    func unixPeersMapToIdentities() async throws {
        var tokens = Tokens()
        tokens.add("root", tenant: "*", roles: [.operator])
        try await Self.withDaemon(tokens, extra: "  unix_peers: [{ uid: \(getuid()), name: local-acme, tenant: acme, roles: [check] }]\n",
                                  unixAuth: true) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await client.verdict(Make.check("k", rule: "api")).allowed)
            #expect(try await Self.code(of: Make.request(Make.check("k", rule: "api", tenant: "globex")), on: client) == .forbidden)
            var stats = WireRequest()
            stats.stats = .init()
            #expect(try await Self.code(of: stats, on: client) == .forbidden, "check role only")
            await client.close()
        }
        try await Self.withDaemon(tokens, extra: "  unix_peers: [{ uid: \(getuid() &+ 1), tenant: acme, roles: [check] }]\n",
                                  unixAuth: true) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await Self.code(of: Make.request(Make.check("k", rule: "api")), on: client) == .unauthenticated)
            await client.close()
        }
    }

    @Test("a listener requiring tokens with none configured, or auth: none off loopback, refuses the start in words")
    func impossibleListenersRefuseTheStart() throws {
        var configuration = Configuration()
        configuration.tcpListeners = [.init(host: "127.0.0.1", port: 0)]
        #expect(throws: SluiceError.self) { try configuration.checkAuthentication() }
        configuration.tcpListeners = [.init(host: "0.0.0.0", port: 0, auth: .none)]
        do {
            try configuration.checkAuthentication()
            Issue.record("auth: none on 0.0.0.0 was accepted")
        } catch {
            #expect(error.message.contains("loopback"))
        }
        #expect(ConfigurationTests.failure("listen: { tcp: [{ address: \"0.0.0.0:7000\", auth: none }] }").contains("loopback"))
        #expect(ConfigurationTests.failure("auth: { tokens: [{ id: abc, hash: x, tenant: a, roles: [check] }] }").contains("12 lowercase hex"))
        #expect(ConfigurationTests.failure("auth: { tokens: [{ id: \"0123456789ab\", hash: sluice_0123456789ab_secret, tenant: a, roles: [check] }] }")
            .contains("never the token itself"))
        #expect(ConfigurationTests.failure("auth: { tokens: [{ id: \"0123456789ab\", hash: \"\(AccessToken.make().digest)\", tenant: a, roles: [admin] }] }")
            .contains("expected check, report, read or operator"))
    }
}

/// The whole command line: `sluicectl token` writes the file a real `sluiced` reads; clients
/// present the token with `--token`; a revoked token stops at the reload.
@Suite("sluicectl token and a real sluiced", .ownThreads, .serialized)
struct TokenCommandLineTests {
    /// sluicectl run to completion off the cooperative pool (its wait would hold a thread other
    /// tests' tasks need).
    static func ctl(_ arguments: [String]) async throws -> (status: Int32, out: String, err: String) {
        try await DaemonProcessTests.sluicectl(arguments)
    }

    @Test("token create prints a token once and writes its hash; sluiced serves it on TCP; list shows it; revoke and reload stop it, on open connections too")
    func createListRevoke() async throws {
        let directory = "/tmp/sluice-tokens-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = "\(directory)/tokens.yaml"
        let created = try await Self.ctl(["token", "create", "--file", file, "--name", "acme-api", "--tenant", "acme",
                                                        "--role", "check", "read"])
        #expect(created.status == 0, "\(created.err)")
        let token = created.out.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(AccessToken.parse(token) != nil, "\(token)")
        let stored = try String(contentsOfFile: file, encoding: .utf8)
        #expect(!stored.contains(String(AccessToken.parse(token)!.secret)), "the file holds the hash, never the secret")
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let duplicate = try await Self.ctl(["token", "create", "--file", file, "--name", "acme-api", "--tenant", "acme", "--role", "check"])
        #expect(duplicate.status == 2 && duplicate.err.contains("already"))
        let listed = try await Self.ctl(["token", "list", "--file", file])
        #expect(listed.out.contains("acme-api") && listed.out.contains("tenant=acme") && listed.out.contains("roles=check,read"), "\(listed.out)")

        let port = try #require(RedisServer.freePort()), metrics = try #require(RedisServer.freePort())
        try """
            listen:
              unix: ["\(directory)/s.sock"]
              tcp: ["127.0.0.1:\(port)"]
            auth: { tokens_file: tokens.yaml }
            tenants:
              acme: { rules: { api: { limit: 100, period: 1m } } }
            """.write(toFile: "\(directory)/sluice.yaml", atomically: true, encoding: .utf8)
        let (process, _) = try DaemonProcessTests.launch(["--config", "\(directory)/sluice.yaml", "--snapshot", "off", "--store", "off",
                                                          "--metrics", "127.0.0.1:\(metrics)", "--log-level", "warning", "--clock", "request"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await DaemonProcessTests.waitForSocket("\(directory)/s.sock"))

        let endpoint = "127.0.0.1:\(port)"
        let check = ["check", "-e", endpoint, "--rule", "api", "--now-ms", "\(epochMs)", "k"]
        let unauthenticated = try await Self.ctl(check)
        #expect(unauthenticated.status == 2 && unauthenticated.err.contains("CODE_UNAUTHENTICATED"), "\(unauthenticated.err)")
        let allowed = try await Self.ctl(check + ["--token", token])
        #expect(allowed.status == 0, "\(allowed.err)")
        let foreign = try await Self.ctl(check + ["--token", token, "--tenant", "globex"])
        #expect(foreign.status == 2 && foreign.err.contains("CODE_FORBIDDEN"), "\(foreign.err)")

        // An open connection, authenticated, then the token revoked and the daemon reloaded.
        let open = try await SluiceClient.connect(to: .tcp(host: "127.0.0.1", port: port), token: token)
        #expect(try await open.verdict(Make.check("k2", rule: "api")).allowed)
        let revoked = try await Self.ctl(["token", "revoke", "--file", file, "acme-api"])
        #expect(revoked.status == 0, "\(revoked.err)")
        let reload = try await Self.ctl(["reload", "-e", "unix:\(directory)/s.sock"])
        #expect(reload.status == 0, "\(reload.err) \(reload.out)")
        #expect(try await open.send(Make.request(Make.check("k3", rule: "api"))).error.code == .unauthenticated)
        await open.close()
        #expect(try await Self.ctl(check + ["--token", token]).status == 2)

        let body = try await blocking { try HTTPGet.get(port: metrics, path: "/metrics").body }
        #expect(sample(#"sluice_auth_attempts_total{result="accepted"}"#, in: body) == 3)
        #expect(sample(#"sluice_auth_attempts_total{result="rejected"}"#, in: body) == 1)
        #expect((sample(#"sluice_auth_refused_requests_total{reason="forbidden"}"#, in: body) ?? 0) >= 1)
        kill(process.processIdentifier, SIGTERM)
        await process.waitForExit(within: .seconds(60))
        #expect(process.terminationStatus == 0)
    }
}
