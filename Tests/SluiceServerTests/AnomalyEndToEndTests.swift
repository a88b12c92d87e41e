import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceClient
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import Testing

/// Live anomaly detection through real sockets: checks carrying ip and route, outcomes reported
/// with ReportOutcome, alerts in the alert log and the metrics.
@Suite struct AnomalyEndToEndTests {
    static func outcomes(_ range: Range<Int>, ip: String, status: UInt32) -> WireRequest {
        var request = WireRequest()
        request.reportOutcome.outcomes = range.map { index in
            Sluice_V1_Outcome.with {
                $0.subject = "victim\(index)"
                $0.ip = ip
                $0.route = "POST /login"
                $0.status = status
                $0.timeMs = epochMs + UInt64(index) * 500
            }
        }
        return request
    }

    /// Polls the alert log until `predicate` holds for one of its alerts (the pump runs every 100 ms).
    static func waitForAlert(in path: String, _ predicate: ([String: Any]) -> Bool) async throws -> [String: Any]? {
        for _ in 0..<50 {
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                for line in text.split(separator: "\n") {
                    if let alert = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], predicate(alert) { return alert }
                }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    @Test func outcomesAndChecksRaiseAlertsInTheLogAndTheMetrics() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = "\(directory)/alerts.jsonl"
        let yaml = """
        anomaly: { warmup: 1ms, subject_warmup: 1s, alert_log: "\(log)" }
        features: { anomaly: { enabled: true } }
        """
        try await TestDaemon.with(yaml: yaml, { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            // Credential stuffing: 20 failed logins from one address, 20 usernames, in 10 s.
            let recorded = try await client.send(Self.outcomes(0..<20, ip: "192.0.2.7", status: 401))
            #expect(recorded.reportOutcome.recorded == 20)
            let stuffing = try await Self.waitForAlert(in: log) { $0["kind"] as? String == "credential_stuffing" }
            #expect(stuffing?["scope"] as? String == "ip")
            #expect(stuffing?["ip"] as? String == "192.0.2.7")
            // A flood: a new key at 20 checks a second for 30 s, with its address and route.
            for index in 0..<600 {
                var check = Make.check("key_flood", limit: .with { $0.limit = 1_000_000; $0.periodMs = 1_000 },
                                       nowMs: epochMs + 20_000 + UInt64(index) * 50)
                check.ip = "198.51.100.9"
                check.route = "POST /api/v1/events"
                _ = try await client.verdict(check)
            }
            let flood = try await Self.waitForAlert(in: log) { $0["kind"] as? String == "rate_spike" }
            #expect(flood?["subject"] as? String == "key_flood")
            let port = try #require(daemon.daemon.metricsAddress?.port)
            let body = try HTTPGet.get(port: port, path: "/metrics").body
            #expect(sample("sluice_anomaly_alerts_total{kind=\"credential_stuffing\"}", in: body) == 1)
            #expect(sample("sluice_anomaly_alerts_total{kind=\"rate_spike\"}", in: body) == 1)
            #expect(sample("sluice_anomaly_alerts_total{kind=\"brute_force\"}", in: body) == 0)
            #expect(sample("sluice_anomaly_tenant_alerts_total{tenant=\"(default)\",kind=\"rate_spike\"}", in: body) == 1)
            #expect(sample("sluice_anomaly_tenant_alerts_total{tenant=\"(default)\",kind=\"credential_stuffing\"}", in: body) == 1)
            #expect(sample("sluice_anomaly_tracked{entity=\"subject\"}", in: body) == 21, "the victims and the key")
            #expect(sample("sluice_anomaly_untracked_total{entity=\"subject\"}", in: body) == 0)
            // Bad outcomes are refused whole, with the index of the first bad one.
            var bad = Self.outcomes(0..<3, ip: "192.0.2.8", status: 200)
            bad.reportOutcome.outcomes[1].status = 42
            let refused = try await client.send(bad)
            #expect(refused.error.code == .invalidArgument)
            #expect(refused.error.checkIndex == 1)
            #expect(refused.error.message.contains("not an HTTP status"))
            await client.close()
        }
    }

    /// Reads the stream until `count` alerts arrived (or 5 s passed), returning them.
    static func next(_ count: Int, from iterator: inout AsyncThrowingStream<WireResponse, any Error>.AsyncIterator)
        async throws -> [Sluice_V1_Alert] {
        var alerts: [Sluice_V1_Alert] = []
        while alerts.count < count, let response = try await iterator.next() {
            alerts += response.watchAlerts.alerts
        }
        return alerts
    }

    @Test func watchAlertsPushesNewAlertsToEveryFollowerAsTheyAreRaisedFilteredAsAsked() async throws {
        let yaml = """
        anomaly: { warmup: 1ms, subject_warmup: 1s }
        features: { anomaly: { enabled: true } }
        """
        try await TestDaemon.with(yaml: yaml, { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { daemon in
            // One follower of credential stuffing on the Unix socket, one of everything on TCP.
            let stuffingClient = try await SluiceClient.connect(to: daemon.unix)
            var stuffingRequest = WireRequest()
            stuffingRequest.watchAlerts.kinds = ["credential_stuffing"]
            var stuffing = stuffingClient.stream(stuffingRequest).makeAsyncIterator()
            let opened = try await stuffing.next()
            #expect(opened?.watchAlerts.alerts.isEmpty == true, "answered at once, with no recent alerts")
            let everythingClient = try await SluiceClient.connect(to: daemon.tcp)
            var everythingRequest = WireRequest()
            everythingRequest.watchAlerts = .init()
            var everything = everythingClient.stream(everythingRequest).makeAsyncIterator()
            _ = try await everything.next()
            // Requests share the streaming connection: answered in turn.
            var ping = WireRequest()
            ping.ping.payload = Data([1, 2])
            #expect(try await stuffingClient.send(ping).ping.payload == Data([1, 2]))

            let sender = try await SluiceClient.connect(to: daemon.unix)
            _ = try await sender.send(Self.outcomes(0..<20, ip: "192.0.2.7", status: 401))
            let pushed = try await Self.next(1, from: &stuffing)
            #expect(pushed.map(\.kind) == ["credential_stuffing"])
            #expect(pushed.first?.scope == "ip" && pushed.first?.ip == "192.0.2.7")
            #expect(pushed.first?.detail.contains("failures") == true)
            #expect(try await Self.next(1, from: &everything).map(\.kind) == ["credential_stuffing"])

            // 20 a second for a minute from a new key: held past new_subject_persistence (45 s).
            for index in 0..<1_200 {
                var check = Make.check("key_flood", limit: .with { $0.limit = 1_000_000; $0.periodMs = 1_000 },
                                       nowMs: epochMs + 20_000 + UInt64(index) * 50)
                check.ip = "198.51.100.9"
                _ = try await sender.verdict(check)
            }
            // The whole daemon's traffic surged too (a global alert may come first).
            var spike: [Sluice_V1_Alert] = []
            for _ in 0..<3 where !spike.contains(where: { $0.kind == "rate_spike" }) { spike += try await Self.next(1, from: &everything) }
            #expect(spike.filter { $0.kind != "traffic_surge" }.map(\.kind) == ["rate_spike"])
            #expect(spike.last?.subject == "key_flood")

            // A late follower asks for the recent ones first; a bad request is refused with a reason.
            let late = try await SluiceClient.connect(to: daemon.unix)
            var lateRequest = WireRequest()
            lateRequest.watchAlerts.recent = 10
            lateRequest.watchAlerts.kinds = ["credential_stuffing", "rate_spike"]
            var lateStream = late.stream(lateRequest).makeAsyncIterator()
            #expect(try await lateStream.next()?.watchAlerts.alerts.map(\.kind) == ["credential_stuffing", "rate_spike"])
            var bad = WireRequest()
            bad.watchAlerts.recent = 5_000
            var badStream = late.stream(bad).makeAsyncIterator()
            await #expect(throws: ClientError.self) { _ = try await badStream.next() }

            let port = try #require(daemon.daemon.metricsAddress?.port)
            #expect(sample("sluice_anomaly_watchers", in: try HTTPGet.get(port: port, path: "/metrics").body) == 3)
            // A follower that goes away is forgotten.
            await everythingClient.close()
            await late.close()
            let service = daemon.daemon.dispatcher.anomaly
            for _ in 0..<50 where service.watchers > 1 { try await Task.sleep(for: .milliseconds(20)) }
            #expect(service.watchers == 1)
            // The stuffing follower never got the rate spike.
            _ = try await sender.send(Self.outcomes(0..<20, ip: "192.0.2.99", status: 403))
            #expect(try await Self.next(1, from: &stuffing).map(\.ip) == ["192.0.2.99"])
            await stuffingClient.close()
            await sender.close()
        }
    }

    @Test func whatDetectionLearnedSurvivesARestartSoAFloodRightAfterItIsCaught() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let snapshot = "\(directory)/table.snapshot"
        let log = "\(directory)/alerts.jsonl"
        let yaml = """
        anomaly: { warmup: 2m, subject_warmup: 1m, alert_log: "\(log)" }
        features: { anomaly: { enabled: true } }
        """
        let limit = WireLimit.with { $0.limit = 1_000_000; $0.periodMs = 1_000 }
        /// Sends `key`'s checks at `every` ms over [from, to) (request clock).
        func send(_ client: SluiceClient, from: UInt64, to: UInt64, every: UInt64) async throws {
            for now in stride(from: from, to: to, by: Int(every)) {
                var check = Make.check("key_steady", limit: limit, nowMs: now)
                check.ip = "198.51.100.20"
                check.route = "POST /api/v1/events"
                _ = try await client.verdict(check)
            }
        }
        // Five minutes of a steady key, one check every 5 s: learned, past the warm-up.
        try await TestDaemon.with(yaml: yaml, { $0.snapshotPath = snapshot }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            try await send(client, from: epochMs, to: epochMs + 5 * 60_000, every: 5_000)
            await client.close()
        }
        #expect(FileManager.default.fileExists(atPath: snapshot + ".anomaly"), "saved with the last snapshot")
        // Restarted: the key floods at 20 a second at once. Without what was learned, this would
        // fall in a new warm-up and raise nothing.
        try await TestDaemon.with(yaml: yaml, { $0.snapshotPath = snapshot }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let restart = epochMs + 5 * 60_000
            try await send(client, from: restart, to: restart + 30_000, every: 50)
            let flood = try await Self.waitForAlert(in: log) { $0["kind"] as? String == "rate_spike" }
            #expect(flood?["subject"] as? String == "key_steady")
            #expect(((flood?["ts_ms"] as? NSNumber)?.uint64Value ?? 0) - restart <= 25_000)
            #expect(!(try String(contentsOfFile: log, encoding: .utf8)).contains("new_source_surge"), "its address is not new")
            await client.close()
        }
        // A damaged state file is moved aside and detection starts over; the daemon starts.
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: snapshot + ".anomaly"))
        try await TestDaemon.with(yaml: yaml, { $0.snapshotPath = snapshot }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            var ping = WireRequest()
            ping.ping = .init()
            #expect(try await client.send(ping).ping == .init())
            await client.close()
        }
        let aside = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.contains(".anomaly.unreadable-") }
        #expect(aside.count == 1)
    }

    @Test func responsesBlockTheSubjectOrTheAddressForTheirTTLAndTheVerdictSaysWhy() async throws {
        let yaml = """
        anomaly:
          warmup: 1ms
          subject_warmup: 1s
          responses:
            rate_spike: { action: block, ttl: 10m }
            credential_stuffing: { action: block, ttl: 1h }
        features: { anomaly: { enabled: true } }
        """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            _ = try await client.send(Self.outcomes(0..<20, ip: "192.0.2.7", status: 401))
            var flooded: [UInt64] = []
            for index in 0..<600 {
                var check = Make.check("key_flood", limit: .with { $0.limit = 1_000_000; $0.periodMs = 1_000 },
                                       nowMs: epochMs + 20_000 + UInt64(index) * 50)
                check.ip = "198.51.100.9"
                flooded.append(check.nowMs)
                _ = try await client.verdict(check)
            }
            // The pump runs every 100 ms: wait for the responses to be in force.
            let service = daemon.daemon.dispatcher.anomaly
            for _ in 0..<50 where service.responses.count < 2 { try await Task.sleep(for: .milliseconds(100)) }
            #expect(service.responses.count == 2)
            // The flooding key is denied, REASON_ANOMALY, the kind named, until the block ends.
            let later = (flooded.last ?? epochMs) + 1_000
            let blocked = try await client.verdict(Make.check("key_flood", limit: .with { $0.limit = 1_000_000; $0.periodMs = 1_000 },
                                                              nowMs: later))
            #expect(!blocked.allowed)
            #expect(blocked.reason == .anomaly)
            #expect(blocked.anomaly == "rate_spike")
            #expect(blocked.retryAfterMs > 9 * 60_000 && blocked.retryAfterMs <= 10 * 60_000)
            // Any subject from the stuffing address is denied; others are not.
            var fromAddress = Make.check("someone", limit: .with { $0.limit = 10; $0.periodMs = 1_000 }, nowMs: later)
            fromAddress.ip = "192.0.2.7"
            let denied = try await client.verdict(fromAddress)
            #expect(denied.reason == .anomaly && denied.anomaly == "credential_stuffing")
            fromAddress.ip = "192.0.2.8"
            #expect(try await client.verdict(fromAddress).allowed)
            // After the TTL the key is served again.
            let expired = try await client.verdict(Make.check("key_flood", limit: .with { $0.limit = 1_000_000; $0.periodMs = 1_000 },
                                                              nowMs: later + 11 * 60_000))
            #expect(expired.allowed)
            #expect(expired.anomaly.isEmpty)
            await client.close()
        }
        #expect(ConfigurationTests.failure("anomaly: { responses: { flood: { action: block } } }").contains("unknown alert kind"))
        let small = ConfigurationTests.failure("anomaly: { max_subjects: 10 }")
        #expect(small.contains("anomaly.max_subjects") && small.contains("1000"), "\(small)")
    }

    /// A webhook receiver: answers 503 to the first `failures` requests, then 200; keeps the bodies.
    final class Receiver: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let log: NIOLockedValueBox<(requests: Int, bodies: [String])>
        let failures: Int
        let body = NIOLockedValueBox("")

        init(log: NIOLockedValueBox<(requests: Int, bodies: [String])>, failures: Int) {
            self.log = log
            self.failures = failures
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head: body.withLockedValue { $0 = "" }
            case .body(var buffer): body.withLockedValue { $0 += buffer.readString(length: buffer.readableBytes) ?? "" }
            case .end:
                let text = body.withLockedValue { $0 }
                let count = log.withLockedValue { log -> Int in
                    log.requests += 1
                    log.bodies.append(text)
                    return log.requests
                }
                let status: HTTPResponseStatus = count <= failures ? .serviceUnavailable : .ok
                var head = HTTPResponseHead(version: .http1_1, status: status)
                head.headers.add(name: "Content-Length", value: "0")
                context.write(wrapOutboundOut(.head(head)), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }

    @Test func alertsArePostedToTheWebhookAndRetriedWithBackoffUntilAccepted() async throws {
        let log = NIOLockedValueBox<(requests: Int, bodies: [String])>((0, []))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Receiver(log: log, failures: 2))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        let yaml = """
        anomaly: { warmup: 1ms, webhook: { url: "http://127.0.0.1:\(port)/hooks/sluice", retries: 3, backoff: 50ms, timeout: 2s } }
        features: { anomaly: { enabled: true } }
        """
        try await TestDaemon.with(yaml: yaml, { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            _ = try await client.send(Self.outcomes(0..<20, ip: "192.0.2.7", status: 401))
            for _ in 0..<300 where log.withLockedValue({ $0.requests }) < 3 { try await Task.sleep(for: .milliseconds(100)) }
            let (requests, bodies) = log.withLockedValue { ($0.requests, $0.bodies) }
            // Two 503s, then accepted: the same batch each time, a JSON array of alerts.
            #expect(requests == 3)
            #expect(Set(bodies).count == 1)
            let alerts = try #require(try JSONSerialization.jsonObject(with: Data((bodies.first ?? "").utf8)) as? [[String: Any]])
            #expect(alerts.first?["kind"] as? String == "credential_stuffing")
            #expect(alerts.first?["ip"] as? String == "192.0.2.7")
            let metricsPort = try #require(daemon.daemon.metricsAddress?.port)
            // The receiver counts a request before the daemon has read its answer: poll for the count.
            let delivered = "sluice_anomaly_webhook_alerts_total{result=\"delivered\"}"
            var body = try HTTPGet.get(port: metricsPort, path: "/metrics").body
            for _ in 0..<100 where sample(delivered, in: body) != 1 {
                try await Task.sleep(for: .milliseconds(100))
                body = try HTTPGet.get(port: metricsPort, path: "/metrics").body
            }
            #expect(sample(delivered, in: body) == 1)
            await client.close()
        }
        try await server.close()
        try await group.shutdownGracefully()
    }

    @Test func responsesApplyOnlyToTheRolloutWhileDetectionSeesEveryone() async throws {
        let yaml = """
        anomaly: { warmup: 1ms, responses: { credential_stuffing: { action: block, ttl: 1h } } }
        features: { anomaly: { enabled: true, rollout: 0 } }
        """
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            _ = try await client.send(Self.outcomes(0..<20, ip: "192.0.2.7", status: 401))
            let service = daemon.daemon.dispatcher.anomaly
            for _ in 0..<50 where service.recent.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
            // Detected and in the book...
            #expect(service.recent.map(\.kind) == ["credential_stuffing"])
            #expect(service.responses.count == 1)
            // ... but no subject is in a 0 % rollout: nothing is blocked.
            var check = Make.check("someone", limit: .with { $0.limit = 10; $0.periodMs = 1_000 }, nowMs: epochMs + 20_000)
            check.ip = "192.0.2.7"
            let verdict = try await client.verdict(check)
            #expect(verdict.allowed)
            #expect(verdict.anomaly.isEmpty)
            await client.close()
        }
    }

    @Test func withTheFeatureOffOutcomesAreAcceptedAndNothingIsDetected() async throws {
        try await TestDaemon.with(yaml: "anomaly: { warmup: 1ms }") { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let answer = try await client.send(Self.outcomes(0..<20, ip: "192.0.2.7", status: 401))
            #expect(answer.reportOutcome.recorded == 0)
            try await Task.sleep(for: .milliseconds(300))
            #expect(daemon.daemon.dispatcher.anomaly.recent.isEmpty)
            await client.close()
        }
    }
}
