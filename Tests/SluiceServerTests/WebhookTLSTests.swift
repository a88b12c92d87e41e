import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SluiceClient
@testable import SluiceConfiguration
import SluiceIntelligence
@testable import SluiceServer
import SluiceTestKit
import Testing

/// HTTPS anomaly webhooks against a TLS receiver the test starts with certificates `openssl`
/// makes: a private authority trusted through `ca_file`, one the system's store does not know,
/// headers, Slack's body, and a receiver that never answers.
@Suite("HTTPS webhooks", .ownThreads, .enabled(if: TestCertificates.installed), .serialized)
struct WebhookTLSTests {
    /// What the receiver got: each request's head and body.
    struct Received: Sendable {
        var heads: [HTTPRequestHead] = []
        var bodies: [String] = []
    }

    /// An HTTPS server on 127.0.0.1 that keeps what it receives and answers `status`, or nothing
    /// at all when `silent`.
    final class Receiver: Sendable {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let received = NIOLockedValueBox(Received())
        let channel: any Channel
        var port: Int { channel.localAddress?.port ?? 0 }

        init(certificates: TestCertificates, host: String = "127.0.0.1", status: HTTPResponseStatus = .ok, silent: Bool = false) async throws {
            let chain = try NIOSSLCertificate.fromPEMFile(certificates.certificate).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: certificates.key, format: .pem)
            let context = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key)))
            let received = received
            channel = try await ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(Handler(received: received, status: status, silent: silent))
                    }
                }
                .bind(host: host, port: 0).get()
        }

        func stop() async throws {
            try await channel.close()
            try await group.shutdownGracefully()
        }

        var snapshot: Received { received.withLockedValue { $0 } }
    }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let received: NIOLockedValueBox<Received>
        let status: HTTPResponseStatus
        let silent: Bool
        var head: HTTPRequestHead?
        var body = ""

        init(received: NIOLockedValueBox<Received>, status: HTTPResponseStatus, silent: Bool) {
            self.received = received
            self.status = status
            self.silent = silent
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = ""
            case .body(var buffer): body += buffer.readString(length: buffer.readableBytes) ?? ""
            case .end:
                if let head { received.withLockedValue { $0.heads.append(head); $0.bodies.append(body) } }
                guard !silent else { return }
                var response = HTTPResponseHead(version: .http1_1, status: status)
                response.headers.add(name: "Content-Length", value: "0")
                context.write(wrapOutboundOut(.head(response)), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    static let alert = AnomalyAlert(timestampMs: 1_767_225_600_000, scope: .ip, subject: nil, ip: "192.0.2.7", tenant: "acme",
                                    kind: "credential_stuffing", score: 3.5, detail: "40 failed logins for 20 subjects in 1 m")

    static func settings(_ yaml: String) throws -> WebhookSettings {
        let configuration = try ConfigurationLoader.parse("anomaly: { webhook: \(yaml) }", source: "test.yaml")
        return try #require(configuration.anomalyWebhook)
    }

    /// Waits until the webhook has no alert left to send; its counts then.
    static func settled(_ webhook: AlertWebhook, within seconds: Int = 30) async throws -> (delivered: UInt64, failed: UInt64) {
        for _ in 0..<(seconds * 20) {
            let counts = webhook.counts
            if counts.delivered + counts.failed > 0, webhook.state.withLockedValue({ !$0.sending }) { return (counts.delivered, counts.failed) }
            try await Task.sleep(for: .milliseconds(50))
        }
        return (webhook.counts.delivered, webhook.counts.failed)
    }

    @Test("an alert through a real daemon reaches an HTTPS receiver whose private authority is ca_file, with the configured headers")
    func privateAuthorityThroughTheDaemon() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let receiver = try await Receiver(certificates: certificates)
        let yaml = """
        anomaly:
          warmup: 1ms
          webhook:
            url: "https://localhost:\(receiver.port)/hooks/sluice?team=ops"
            ca_file: \(certificates.authority)
            headers: { Authorization: "Bearer s3cret", X-Team: ops }
            timeout: 10s
        features: { anomaly: { enabled: true } }
        """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            _ = try await client.send(AnomalyEndToEndTests.outcomes(0..<20, ip: "192.0.2.7", status: 401))
            for _ in 0..<300 where receiver.snapshot.bodies.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
            let received = receiver.snapshot
            let head = try #require(received.heads.first)
            #expect(head.method == .POST)
            #expect(head.uri == "/hooks/sluice?team=ops")
            #expect(head.headers["Authorization"] == ["Bearer s3cret"])
            #expect(head.headers["X-Team"] == ["ops"])
            #expect(head.headers["Content-Type"] == ["application/json"])
            #expect(head.headers["User-Agent"].first?.hasPrefix("sluiced/") == true)
            let alerts = try #require(try JSONSerialization.jsonObject(with: Data((received.bodies.first ?? "").utf8)) as? [[String: Any]])
            #expect(alerts.first?["kind"] as? String == "credential_stuffing")
            #expect(alerts.first?["ip"] as? String == "192.0.2.7")
            await client.close()
        }
        try await receiver.stop()
    }

    // AsyncHTTPClient's pool tries the connection again until the attempt's deadline: a refused
    // certificate costs `timeout` an attempt.
    @Test("an authority the system's store does not hold is refused: nothing is sent, the alerts are counted failed after the retries")
    func unknownAuthorityIsRefused() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let receiver = try await Receiver(certificates: certificates)
        let webhook = AlertWebhook(logger: Logger(label: "test"))
        webhook.send([Self.alert, Self.alert], to: try Self.settings("{ url: \"https://localhost:\(receiver.port)/x\", retries: 1, backoff: 10ms, timeout: 1s }"))
        let counts = try await Self.settled(webhook)
        #expect(counts.delivered == 0)
        #expect(counts.failed == 2)
        #expect(webhook.counts.attempts == 2, "the first attempt and one retry")
        #expect(receiver.snapshot.bodies.isEmpty)
        // The same receiver, trusted through ca_file: delivered.
        webhook.send([Self.alert], to: try Self.settings("{ url: \"https://localhost:\(receiver.port)/x\", ca_file: \(certificates.authority) }"))
        for _ in 0..<600 where webhook.counts.delivered == 0 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(webhook.counts.delivered == 1)
        try await receiver.stop()
    }

    @Test("a certificate for another address is refused even when its authority is trusted")
    func hostNameIsVerified() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        // The receiver's certificate is for localhost and 127.0.0.1; it listens on 127.0.0.2.
        let receiver = try await Receiver(certificates: certificates, host: "127.0.0.2")
        let webhook = AlertWebhook(logger: Logger(label: "test"))
        webhook.send([Self.alert], to: try Self.settings(
            "{ url: \"https://127.0.0.2:\(receiver.port)/x\", ca_file: \(certificates.authority), retries: 0, timeout: 1s }"))
        let counts = try await Self.settled(webhook)
        #expect(counts == (0, 1))
        #expect(receiver.snapshot.bodies.isEmpty)
        try await receiver.stop()
    }

    @Test("a receiver that never answers costs one timeout an attempt, and the alerts are counted failed")
    func silentReceiverTimesOut() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let receiver = try await Receiver(certificates: certificates, silent: true)
        let webhook = AlertWebhook(logger: Logger(label: "test"))
        let started = ContinuousClock.now
        webhook.send([Self.alert], to: try Self.settings(
            "{ url: \"https://localhost:\(receiver.port)/x\", ca_file: \(certificates.authority), retries: 1, backoff: 10ms, timeout: 300ms }"))
        let counts = try await Self.settled(webhook)
        let elapsed = ContinuousClock.now - started
        #expect(counts == (0, 1))
        #expect(receiver.snapshot.bodies.count == 2, "both attempts reached the receiver")
        #expect(elapsed >= .milliseconds(600), "two attempts of 300 ms: \(elapsed)")
        #expect(elapsed < .seconds(20), "\(elapsed)")
        try await receiver.stop()
    }

    @Test("format: slack sends Slack's {\"text\": ...} with a line per alert; a 4xx is retried then counted failed")
    func slackFormat() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let receiver = try await Receiver(certificates: certificates)
        let webhook = AlertWebhook(logger: Logger(label: "test"))
        webhook.send([Self.alert, Self.alert], to: try Self.settings(
            "{ url: \"https://localhost:\(receiver.port)/services/T0/B0/XYZ\", ca_file: \(certificates.authority), format: slack }"))
        let counts = try await Self.settled(webhook)
        #expect(counts == (2, 0))
        let message = try #require(try JSONSerialization.jsonObject(with: Data((receiver.snapshot.bodies.first ?? "").utf8)) as? [String: Any])
        #expect(message.keys.sorted() == ["text"])
        let text = try #require(message["text"] as? String)
        #expect(text.hasPrefix("Sluice: 2 anomaly alerts"))
        #expect(text.contains("credential_stuffing (tenant acme, ip 192.0.2.7, score 3.5)"))
        try await receiver.stop()

        let refusing = try await Receiver(certificates: certificates, status: .badRequest)
        let second = AlertWebhook(logger: Logger(label: "test"))
        second.send([Self.alert], to: try Self.settings(
            "{ url: \"https://localhost:\(refusing.port)/x\", ca_file: \(certificates.authority), retries: 2, backoff: 10ms }"))
        #expect(try await Self.settled(second) == (0, 1))
        #expect(refusing.snapshot.bodies.count == 3)
        try await refusing.stop()
    }

    @Test("the webhook's settings are validated with a sentence")
    func settingsAreValidated() throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let https = try Self.settings("{ url: \"https://hooks.example.com/services/T0/B0/XYZ\" }")
        #expect(https.secure && https.port == 443 && https.host == "hooks.example.com" && https.path == "/services/T0/B0/XYZ")
        #expect(https.redactedURL == "https://hooks.example.com:443/…", "the secret path stays out of logs")
        #expect(try Self.settings("{ url: \"http://[::1]:9000/x\" }").host == "::1")
        for (yaml, words) in [
            ("{ url: \"ftp://example.com/x\" }", "https://HOST"),
            ("{ url: \"https://user:pw@example.com/x\" }", "https://HOST"),
            ("{ url: \"https://example.com/x\", ca_file: /nonexistent/ca.pem }", "cannot read"),
            ("{ url: \"https://example.com/x\", ca_file: \(certificates.key) }", "no PEM certificate"),
            ("{ url: \"http://example.com/x\", ca_file: \(certificates.authority) }", "only for an https"),
            ("{ url: \"https://example.com/x\", format: teams }", "json, slack"),
            ("{ url: \"https://example.com/x\", headers: { \"Bad Name\": x } }", "not an HTTP header name"),
            ("{ url: \"https://example.com/x\", headers: { Content-Length: \"3\" } }", "set by the daemon"),
            ("{ url: \"https://example.com/x\", headers: { X-A: \"a\\r\\nX-B: b\" } }", "line break"),
            ("{ url: \"https://example.com/a b\" }", "https://HOST"),
        ] {
            let failure = ConfigurationTests.failure("anomaly: { webhook: \(yaml) }")
            #expect(failure.contains("anomaly.webhook") && failure.contains(words), "\(yaml): \(failure)")
        }
    }
}
