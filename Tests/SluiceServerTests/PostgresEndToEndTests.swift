import Foundation
#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import SluiceClient
import SluiceProto
import SluiceTestKit
import SluiceLoad
import Testing

/// The real `sluiced` keeping its state in a real PostgreSQL 15 server.
@Suite("sluiced on a PostgreSQL store", .ownThreads, .enabled(if: PostgresServer.installed), .serialized)
struct PostgresEndToEndTests {
    static func durableEvents(_ notes: [String], subject: String) -> WireRequest {
        var request = WireRequest()
        request.recordEvents.durable = true
        request.recordEvents.events = notes.map { note in
            Sluice_V1_ReputationEvent.with {
                $0.subject = subject
                $0.kind = "auth_failure"
                $0.note = note
            }
        }
        return request
    }

    static func start(_ arguments: [String], socket: String) async throws -> ChildProcess {
        let (process, _) = try DaemonProcessTests.launch(["--unix", socket, "--snapshot", "off", "--metrics", "off", "--log-level", "warning"] + arguments)
        #expect(try await DaemonProcessTests.waitForSocket(socket))
        return process
    }

    @Test("kill -9 in the middle of durable events loses none that were acknowledged; a daemon started on the same database serves the scores")
    func killNineLosesNoAcknowledgedEvent() async throws {
        let server = try await PostgresServer.shared()
        let database = try await blocking { try server.createDatabase() }
        let directory = NSTemporaryDirectory() + "sluiced-pg-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/s.sock"
        let process = try await Self.start(["--store", server.socketURL(database: database)], socket: socket)
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        let acked = try await DurabilityProcessTests.acknowledgedUntilKilled(socket: socket, process: process, writers: 3, killAfter: 1_000)
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(acked.count >= 500, "too few events acknowledged before the kill to mean anything: \(acked.count)")
        let stored = Set(try await blocking { try server.psql("SELECT note FROM reputation_events", database: database) }.split(separator: "\n").map(String.init))
        let lost = acked.filter { !stored.contains($0) }
        #expect(lost.isEmpty, "\(lost.count) acknowledged events lost, e.g. \(lost.prefix(3))")

        // Another daemon on the same database (a restart, or a replica): the scores are there.
        let again = try await Self.start(["--store", server.tcpURL(database: database)], socket: socket)
        defer { if again.isRunning { kill(again.processIdentifier, SIGKILL) } }
        try await DurabilityProcessTests.servesTheScoresThenStops(again, socket: socket)
    }

    @Test("PostgreSQL down under two daemons: checks are still answered, durable events are answered unavailable, /readyz and /metrics say so, every event is kept, written once it is back, and reaches the other daemon")
    func anOutageRefusesDurableEventsAndKeepsTheRest() async throws {
        let server = try await PostgresServer.start()
        defer { server.stop() }
        let directory = NSTemporaryDirectory() + "sluiced-pg-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/s.sock", config = directory + "/sluice.yaml"
        try """
            store: { backend: postgres, url: "\(server.socketURL())", timeout: 1s, commit_interval: 50ms }
            rules:
              login: { limit: 10, period: 1h }
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let port = try #require(RedisServer.freePort())
        let process = try await Self.start(["--config", config, "--metrics", "127.0.0.1:\(port)"], socket: socket)
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // A second daemon on the same database: the other replica behind the load balancer.
        let other = try await Self.start(["--config", config], socket: directory + "/other.sock")
        defer { if other.isRunning { kill(other.processIdentifier, SIGKILL) } }
        let client = try await SluiceClient.connect(to: .unix(path: socket))
        let otherClient = try await SluiceClient.connect(to: .unix(path: directory + "/other.sock"))
        let before = try await client.send(Self.durableEvents(["before"], subject: "alice"))
        #expect(before.recordEvents.committed)
        #expect(try HTTPGet.get(port: port, path: "/readyz").body.contains("store postgres: up"))

        try await blocking { server.stop(keepData: true) }
        // The first durable event after the outage began fails at its commit, within the
        // timeout and a margin: applied, not committed, and kept to be written (the answer says so).
        let started = ContinuousClock.now
        let failed = try await client.send(Self.durableEvents(["during-durable"], subject: "alice"))
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(!failed.recordEvents.committed)
        if case .error(let error) = failed.body {
            #expect(error.code == .unavailable, "\(error)")
        } else {
            Issue.record("a durable event was acknowledged with PostgreSQL down: \(failed)")
        }
        #expect(failed.error.message.contains("applied but not committed"), "\(failed.error.message)")
        // Another while it is down: the same answer, the same promise.
        let again = try await client.send(Self.durableEvents(["during-durable-2"], subject: "alice"))
        #expect(again.error.code == .unavailable)
        // Non-durable events are applied and kept; checks are answered.
        var plain = Self.durableEvents((0..<5).map { "during-\($0)" }, subject: "bob")
        plain.recordEvents.durable = false
        let kept = try await client.send(plain)
        #expect(kept.recordEvents.recorded == 5)
        let verdict = try await client.verdict(Make.check("alice", rule: "login"))
        #expect(verdict.allowed)
        #expect(try await otherClient.verdict(Make.check("alice", rule: "login")).allowed)
        // Still ready (checks are served), and saying why durable requests fail.
        let ready = try HTTPGet.get(port: port, path: "/readyz")
        #expect(ready.status == 200 && ready.body.contains("store postgres: failing, changes kept in memory, durable requests answered unavailable"),
                "\(ready)")
        let metrics = try HTTPGet.get(port: port, path: "/metrics").body
        #expect((sample("sluice_store_commits_total{result=\"failed\"}", in: metrics) ?? 0) >= 1)
        #expect((sample("sluice_store_pending_events", in: metrics) ?? 0) >= 5)

        try await server.restart()
        // Back: the kept events (the plain ones, and the durable ones that were told they would
        // be) are written by a later commit, once each, without a restart.
        var written = ""
        for _ in 0..<200 {
            written = try await blocking { try server.psql("SELECT count(*) FROM reputation_events WHERE note LIKE 'during-%'") }
            if written == "7" { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(written == "7")
        // The other daemon catches up in commit order: bob's kept events reach its book.
        var caughtUp = false
        for _ in 0..<100 where !caughtUp {
            var get = WireRequest()
            get.getReputation.subject = "bob"
            caughtUp = try await otherClient.send(get).getReputation.reputation.events == 5
            if !caughtUp { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(caughtUp)
        // Durable events commit again.
        var accepted = false
        for _ in 0..<100 where !accepted {
            accepted = try await client.send(Self.durableEvents(["after"], subject: "carol")).recordEvents.committed
            if !accepted { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(accepted)
        #expect(try HTTPGet.get(port: port, path: "/readyz").body.contains("store postgres: up"))
        await client.close()
        await otherClient.close()
        kill(process.processIdentifier, SIGTERM)
        await process.waitForExit(within: .seconds(60))
        #expect(process.terminationStatus == 0)
    }
}
