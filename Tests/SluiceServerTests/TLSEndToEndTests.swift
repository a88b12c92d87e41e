import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SluiceClient
import SluiceConfiguration
import SluiceProto
import SluiceTestKit
import SluiceLoad
import Testing

/// TLS on the real `sluiced`'s TCP listeners, with certificates made by `openssl` for each test.
@Suite("TLS listeners", .ownThreads, .enabled(if: TestCertificates.installed), .serialized)
struct TLSEndToEndTests {
    /// A daemon with one TLS listener on a free port (and a Unix socket to wait on).
    struct Daemon {
        let process: ChildProcess
        let port: Int
        let directory: String

        init(certificates: TestCertificates, clientCA: String? = nil, auth: String = "none", extra: String = "") async throws {
            directory = NSTemporaryDirectory() + "sluiced-tls-\(UInt32.random(in: .min ... .max))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            port = try #require(RedisServer.freePort())
            let tls = "{ certificate: \"\(certificates.certificate)\", key: \"\(certificates.key)\""
                + (clientCA.map { ", client_ca: \"\($0)\"" } ?? "") + " }"
            try ("""
                listen:
                  unix: ["\(directory)/s.sock"]
                  tcp:
                    - { address: "127.0.0.1:\(port)", tls: \(tls), auth: \(auth) }
                rules:
                  api: { limit: 1000, period: 1s }
                """ + "\n" + extra).write(toFile: directory + "/sluice.yaml", atomically: true, encoding: .utf8)
            (process, _) = try DaemonProcessTests.launch(["--config", directory + "/sluice.yaml", "--snapshot", "off", "--metrics", "off",
                                                           "--store", "off", "--log-level", "warning"])
            #expect(try await DaemonProcessTests.waitForSocket(directory + "/s.sock"))
        }

        var endpoint: Endpoint { .tcp(host: "127.0.0.1", port: port) }

        func stop() {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    static func allowed(_ client: SluiceClient) async throws -> Bool {
        try await client.verdict(Make.check("k", rule: "api", nowMs: 0)).allowed
    }

    @Test("a client trusting the authority is served over TLS; a stranger's authority, an expired certificate and a plaintext client are refused; the daemon serves on")
    func handshakes() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let daemon = try await Daemon(certificates: certificates)
        defer { daemon.stop() }

        let trusted = try await SluiceClient.connect(to: daemon.endpoint, tls: ClientTLS(authority: certificates.authority))
        #expect(try await Self.allowed(trusted))
        // By name too: the certificate is for localhost.
        let byName = try await SluiceClient.connect(to: .tcp(host: "localhost", port: daemon.port), tls: ClientTLS(authority: certificates.authority))
        #expect(try await Self.allowed(byName))
        await byName.close()

        // sluicectl too, with --tls-ca (or $SLUICE_TLS_CA).
        let ping = try await DaemonProcessTests.sluicectl(["ping", "-e", "127.0.0.1:\(daemon.port)", "--tls-ca", certificates.authority])
        #expect(ping.status == 0, "\(ping)")
        let plainPing = try await DaemonProcessTests.sluicectl(["ping", "-e", "127.0.0.1:\(daemon.port)", "--timeout", "2"])
        #expect(plainPing.status == 2, "\(plainPing.status) \(plainPing.out) \(plainPing.err)")
        #expect(plainPing.err.contains("--tls-ca"), "the error suggests TLS: \(plainPing.err)")

        // Another authority: the client refuses the daemon's certificate, in words.
        let stranger = try TestCertificates.make()
        defer { stranger.remove() }
        let refused = await #expect(throws: (any Error).self) {
            let client = try await SluiceClient.connect(to: daemon.endpoint, tls: ClientTLS(authority: stranger.authority))
            _ = try await Self.allowed(client)
        }
        #expect("\(refused.map { "\($0)" } ?? "")".lowercased().contains("certificate"), "\(String(describing: refused))")

        // Plain bytes on the TLS port: the handshake fails and the connection is closed; the
        // daemon does not fall over.
        let plain = try await SluiceClient.connect(to: daemon.endpoint)
        await #expect(throws: (any Error).self) { _ = try await Self.allowed(plain) }
        #expect(try await Self.allowed(trusted), "the TLS client is still served")
        await trusted.close()
        #expect(daemon.process.isRunning)

        // An expired certificate on the daemon: clients refuse it.
        let expired = try certificates.issue("expired", commonName: "localhost", expired: true)
        for (from, to) in [(expired.certificate, certificates.certificate), (expired.key, certificates.key)] {
            try FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: from, toPath: to)
        }
        let stale = try await Daemon(certificates: certificates)
        defer { stale.stop() }
        let outdated = await #expect(throws: (any Error).self) {
            let client = try await SluiceClient.connect(to: stale.endpoint, tls: ClientTLS(authority: certificates.authority))
            _ = try await Self.allowed(client)
        }
        #expect("\(outdated.map { "\($0)" } ?? "")".lowercased().contains("certificate"), "\(String(describing: outdated))")
    }

    @Test("with client_ca a client must show a certificate the authority signed (mutual TLS)")
    func mutualTLS() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let alice = try certificates.issue("alice", commonName: "alice", client: true)
        let daemon = try await Daemon(certificates: certificates, clientCA: certificates.authority)
        defer { daemon.stop() }
        let withCertificate = try await SluiceClient.connect(
            to: daemon.endpoint, tls: ClientTLS(authority: certificates.authority, certificate: alice.certificate, key: alice.key))
        #expect(try await Self.allowed(withCertificate))
        await withCertificate.close()
        await #expect(throws: (any Error).self) {
            let client = try await SluiceClient.connect(to: daemon.endpoint, tls: ClientTLS(authority: certificates.authority))
            _ = try await Self.allowed(client)
        }
        // A certificate another authority signed is refused too.
        let stranger = try TestCertificates.make()
        defer { stranger.remove() }
        let mallory = try stranger.issue("mallory", commonName: "mallory", client: true)
        await #expect(throws: (any Error).self) {
            let client = try await SluiceClient.connect(
                to: daemon.endpoint, tls: ClientTLS(authority: certificates.authority, certificate: mallory.certificate, key: mallory.key))
            _ = try await Self.allowed(client)
        }
        #expect(daemon.process.isRunning)
    }

    @Test("a client certificate names its identity: a mapped one acts for its tenant only; an unmapped one must present a token")
    func certificatesMapToIdentities() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let alice = try certificates.issue("alice", commonName: "alice-api", client: true)
        let bob = try certificates.issue("bob", commonName: "bob-api", client: true)
        let token = AccessToken.make()
        let daemon = try await Daemon(certificates: certificates, clientCA: certificates.authority, auth: "token", extra: """
            tenants:
              acme: { rules: { api: { limit: 1000, period: 1s } } }
            auth:
              certificates: [{ subject: alice-api, tenant: acme, roles: [check] }]
              tokens: [{ id: "\(token.id)", name: bob, tenant: "*", roles: [check], hash: "\(token.digest)" }]
            """)
        defer { daemon.stop() }
        let asAlice = try await SluiceClient.connect(
            to: daemon.endpoint, tls: ClientTLS(authority: certificates.authority, certificate: alice.certificate, key: alice.key))
        #expect(try await asAlice.verdict(Make.check("k", rule: "api", nowMs: 0)).allowed)
        let foreign = try await asAlice.send(Make.request(Make.check("k", rule: "api", nowMs: 0, tenant: "globex")))
        #expect(foreign.error.code == .forbidden, "\(foreign)")
        await asAlice.close()
        let bobTLS = ClientTLS(authority: certificates.authority, certificate: bob.certificate, key: bob.key)
        let asBob = try await SluiceClient.connect(to: daemon.endpoint, tls: bobTLS)
        #expect(try await asBob.send(Make.request(Make.check("k", rule: "api", nowMs: 0))).error.code == .unauthenticated)
        await asBob.close()
        let bobWithToken = try await SluiceClient.connect(to: daemon.endpoint, tls: bobTLS, token: token.token)
        #expect(try await bobWithToken.verdict(Make.check("k", rule: "api", nowMs: 0, tenant: "globex")).allowed)
        await bobWithToken.close()
    }

    /// curl's status code and body for `url` (nil: curl could not connect or verify).
    static func curl(_ arguments: [String]) throws -> (status: Int, body: String)? {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-s", "-w", "\n%{http_code}"] + arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = Pipe()
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0, let newline = text.lastIndex(of: "\n"), let status = Int(text[text.index(after: newline)...]) else {
            return nil
        }
        return (status, String(text[..<newline]))
    }

    @Test("the metrics endpoint serves TLS and asks /metrics for a bearer token; /healthz stays open; the token is read again at reload", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")))
    func metricsOverTLSWithABearerToken() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let directory = NSTemporaryDirectory() + "sluiced-metrics-tls-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let port = try #require(RedisServer.freePort())
        try "first-token-0123456789\n".write(toFile: "\(directory)/metrics-token", atomically: true, encoding: .utf8)
        try """
            listen: { unix: ["\(directory)/s.sock"], tcp: [] }
            metrics:
              listen: "127.0.0.1:\(port)"
              tls: { certificate: "\(certificates.certificate)", key: "\(certificates.key)" }
              bearer_token_file: metrics-token
            """.write(toFile: "\(directory)/sluice.yaml", atomically: true, encoding: .utf8)
        let (process, _) = try DaemonProcessTests.launch(["--config", "\(directory)/sluice.yaml", "--snapshot", "off", "--store", "off",
                                                          "--log-level", "warning"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await DaemonProcessTests.waitForSocket("\(directory)/s.sock"))
        let url = "https://localhost:\(port)"
        let trust = ["--cacert", certificates.authority]
        let withToken = try await blocking { try Self.curl(trust + ["-H", "Authorization: Bearer first-token-0123456789", "\(url)/metrics"]) }
        #expect(withToken?.status == 200 && withToken?.body.contains("sluice_connections_open") == true)
        let without = try await blocking { try Self.curl(trust + ["\(url)/metrics"]) }
        #expect(without?.status == 401)
        let wrong = try await blocking { try Self.curl(trust + ["-H", "Authorization: Bearer first-token-0123456780", "\(url)/metrics"]) }
        #expect(wrong?.status == 401)
        let health = try await blocking { try Self.curl(trust + ["\(url)/healthz"]) }
        #expect(health?.status == 200)
        // Plain HTTP, or a client that does not trust the authority, gets nothing.
        #expect(try await blocking { try Self.curl(["http://127.0.0.1:\(port)/healthz"]) } == nil)
        #expect(try await blocking { try Self.curl(["\(url)/healthz"]) } == nil)
        // Rotation: a new token in the file, then a reload.
        try "second-token-0123456789\n".write(toFile: "\(directory)/metrics-token", atomically: true, encoding: .utf8)
        kill(process.processIdentifier, SIGHUP)
        var rotated: (status: Int, body: String)?
        for _ in 0..<100 {
            rotated = try await blocking { try Self.curl(trust + ["-H", "Authorization: Bearer second-token-0123456789", "\(url)/metrics"]) }
            if rotated?.status == 200 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(rotated?.status == 200)
        let old = try await blocking { try Self.curl(trust + ["-H", "Authorization: Bearer first-token-0123456789", "\(url)/metrics"]) }
        #expect(old?.status == 401)
        kill(process.processIdentifier, SIGTERM)
        await process.waitForExit(within: .seconds(60))
        #expect(process.terminationStatus == 0)
    }

    @Test("a rotated certificate is read at SIGHUP: new connections get it, open ones go on; a bad file refuses the reload and the old one stays")
    func rotation() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let daemon = try await Daemon(certificates: certificates)
        defer { daemon.stop() }
        let before = try await SluiceClient.connect(to: daemon.endpoint, tls: ClientTLS(authority: certificates.authority))
        #expect(try await Self.allowed(before))

        // A new authority's certificate in place of the old files, then SIGHUP.
        let next = try TestCertificates.make()
        defer { next.remove() }
        for (from, to) in [(next.certificate, certificates.certificate), (next.key, certificates.key)] {
            try FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: from, toPath: to)
        }
        kill(daemon.process.processIdentifier, SIGHUP)
        var rotated = false
        for _ in 0..<100 where !rotated {
            rotated = (try? await SluiceClient.connect(to: daemon.endpoint, tls: ClientTLS(authority: next.authority))) != nil
            if rotated {
                let client = try await SluiceClient.connect(to: daemon.endpoint, tls: ClientTLS(authority: next.authority))
                rotated = (try? await Self.allowed(client)) == true
                await client.close()
            }
            if !rotated { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(rotated, "new connections did not get the new certificate")
        #expect(try await Self.allowed(before), "the connection opened before the rotation goes on")
        await before.close()

        // A key that is not a key: the reload is refused, the certificate in force stays.
        try "not a key".write(toFile: certificates.key, atomically: true, encoding: .utf8)
        let reload = try await DaemonProcessTests.sluicectl(["reload", "-e", "unix:\(daemon.directory)/s.sock"])
        #expect(reload.status == 2)
        #expect(reload.err.contains("TLS key") && reload.err.contains(certificates.key), "\(reload.err)")
        let after = try await SluiceClient.connect(to: daemon.endpoint, tls: ClientTLS(authority: next.authority))
        #expect(try await Self.allowed(after))
        await after.close()
    }

    @Test("a TLS listener whose files cannot be read refuses the start, in words")
    func badFilesRefuseTheStart() throws {
        let directory = NSTemporaryDirectory() + "sluiced-tls-bad-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try """
            listen:
              tcp: [{ address: "127.0.0.1:0", auth: none, tls: { certificate: "\(directory)/missing.pem", key: "\(directory)/missing.key" } }]
            """.write(toFile: directory + "/sluice.yaml", atomically: true, encoding: .utf8)
        let (process, pipe) = try DaemonProcessTests.launch(["--config", directory + "/sluice.yaml", "--snapshot", "off", "--metrics", "off"])
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(output.contains("TLS certificate \(directory)/missing.pem"), "\(output)")
        let noKey = ConfigurationTests.failure("listen: { tcp: [{ address: \"127.0.0.1:0\", tls: { certificate: /a.pem } }] }")
        #expect(noKey.contains("listen.tcp[0].tls.key"), "\(noKey)")
    }
}
