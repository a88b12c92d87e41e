import Foundation
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif
import SluiceClient
import SluiceProto
import SluiceTestKit
import SluiceLoad
import Testing

/// Three real `sluiced` processes sharing one real PostgreSQL 15 database: what one learns, the
/// others decide with.
@Suite("a fleet of daemons on one PostgreSQL store", .ownThreads, .enabled(if: PostgresServer.installed), .serialized)
struct PostgresFleetTests {
    static let configuration = """
        tiers:
          vip: { multiplier: 4, priority: 10 }
        anomaly:
          warmup: 1ms
          responses:
            credential_stuffing: { action: block, ttl: 1h }
        features: { reputation: { enabled: true }, adaptive: { enabled: true }, anomaly: { enabled: true } }
        """

    /// A running fleet: its daemons' sockets and processes, and a client to each.
    struct Fleet {
        var sockets: [String]
        var processes: [ChildProcess]
        var clients: [SluiceClient]
        let directory: String
        let arguments: [String]
    }

    static func startFleet(_ count: Int, server: PostgresServer, database: String) async throws -> Fleet {
        let directory = NSTemporaryDirectory() + "sluiced-fleet-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = directory + "/sluice.yaml"
        try """
            store: { backend: postgres, url: "\(server.socketURL(database: database))" }
            \(configuration)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        var fleet = Fleet(sockets: [], processes: [], clients: [], directory: directory, arguments: ["--config", config])
        // Started together: the first of them migrates the empty database, under its lock.
        for index in 0..<count { fleet.sockets.append(directory + "/\(index).sock") }
        fleet.processes = try fleet.sockets.map { socket in
            try DaemonProcessTests.launch(["--unix", socket, "--snapshot", "off", "--metrics", "off", "--log-level", "error"] + fleet.arguments).0
        }
        for socket in fleet.sockets {
            #expect(try await DaemonProcessTests.waitForSocket(socket))
            fleet.clients.append(try await SluiceClient.connect(to: .unix(path: socket)))
        }
        return fleet
    }

    static func stop(_ fleet: Fleet) async {
        for client in fleet.clients { await client.close() }
        for process in fleet.processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(atPath: fleet.directory)
    }

    static func events(_ count: Int, subjects: Int, offset: Int, durable: Bool = false) -> WireRequest {
        var request = WireRequest()
        request.recordEvents.durable = durable
        request.recordEvents.events = (0..<count).map { index in
            Sluice_V1_ReputationEvent.with {
                $0.subject = "s\((offset + index) % subjects)"
                $0.kind = index % 3 == 0 ? "auth_failure" : "success"
            }
        }
        return request
    }

    static func reputation(_ subject: String, on client: SluiceClient) async throws -> Sluice_V1_GetReputationResponse {
        var get = WireRequest()
        get.getReputation.subject = subject
        get.getReputation.recentEvents = 1
        return try await client.send(get).getReputation
    }

    /// Polls `condition` every `every` until it holds, for at most `bound`; how long it took, or
    /// nil. (Not much more often: each poll here is a request whose answer reads PostgreSQL, and
    /// the whole test run shares two cores.)
    static func timeUntil(_ bound: Duration = .seconds(10), every: Duration = .milliseconds(10),
                          _ condition: () async throws -> Bool) async throws -> Duration? {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < bound {
            if try await condition() { return ContinuousClock.now - start }
            try await Task.sleep(for: every)
        }
        return nil
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1e3 + Double(duration.components.attoseconds) / 1e15
    }

    @Test("three daemons writing events at once: every daemon counts every event exactly once, and a daemon killed and restarted agrees")
    func concurrentWritersConverge() async throws {
        let server = try await PostgresServer.shared()
        let database = try await blocking { try server.createDatabase() }
        var fleet = try await Self.startFleet(3, server: server, database: database)
        defer { for process in fleet.processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await blocking { try server.psql("SELECT count(*) FROM sluice_migrations", database: database) } == "5")

        // Each daemon: 200 batches of 10 events over the same 10 subjects, all at once.
        let batches = 200, perBatch = 10, subjects = 10
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in fleet.clients {
                group.addTask {
                    for batch in 0..<batches {
                        let answer = try await client.send(Self.events(perBatch, subjects: subjects, offset: batch * perBatch))
                        #expect(answer.recordEvents.recorded == UInt32(perBatch), "\(answer)")
                    }
                }
            }
            try await group.waitForAll()
        }
        let perSubject = UInt64(fleet.clients.count * batches * perBatch / subjects)
        // Within a second or so every daemon has applied every event, each once.
        let converged = try await Self.timeUntil(every: .milliseconds(50)) {
            for client in fleet.clients {
                for subject in 0..<subjects where try await Self.reputation("s\(subject)", on: client).reputation.events != perSubject { return false }
            }
            return true
        }
        #expect(converged != nil, "the daemons did not converge on \(perSubject) events per subject")
        if let converged { print("fleet: 3 daemons converged \(Self.milliseconds(converged)) ms after the last of 6,000 events was answered") }
        var scores: [[Double]] = []
        for client in fleet.clients {
            var row: [Double] = []
            for subject in 0..<subjects { row.append(try await Self.reputation("s\(subject)", on: client).reputation.score) }
            scores.append(row)
        }
        // Read a few milliseconds apart, and decaying toward neutral meanwhile (a half-life of an
        // hour moves them by about 1e-4 a second here): equal within that. One event more or less
        // would move a score by a whole weight.
        for row in scores.dropFirst() {
            for (mine, theirs) in zip(row, scores[0]) { #expect(abs(mine - theirs) < 0.05, "\(scores)") }
        }
        let stored = try await blocking { try server.psql("SELECT count(*), count(DISTINCT id) FROM reputation_events", database: database) }
        #expect(stored == "6000|6000")

        // Killed and started again, daemon 2 rebuilds the same scores from the rows and the
        // events after them (every row says through which event it reflects its subject).
        try await Task.sleep(for: .milliseconds(1_200))   // score rows are written about once a second
        kill(fleet.processes[2].processIdentifier, SIGKILL)
        await fleet.processes[2].waitForExit(within: .seconds(60))
        await fleet.clients[2].close()
        try? FileManager.default.removeItem(atPath: fleet.sockets[2])
        fleet.processes[2] = try DaemonProcessTests.launch(["--unix", fleet.sockets[2], "--snapshot", "off", "--metrics", "off",
                                                            "--log-level", "error"] + fleet.arguments).0
        #expect(try await DaemonProcessTests.waitForSocket(fleet.sockets[2]))
        fleet.clients[2] = try await SluiceClient.connect(to: .unix(path: fleet.sockets[2]))
        for subject in 0..<subjects {
            // Beside daemon 0's score read at the same moment (both decay meanwhile).
            let back = try await Self.reputation("s\(subject)", on: fleet.clients[2]).reputation
            let now = try await Self.reputation("s\(subject)", on: fleet.clients[0]).reputation
            #expect(back.events == perSubject)
            #expect(abs(back.score - now.score) < 0.05, "\(back.score) restarted, \(now.score) on daemon 0")
        }
        await Self.stop(fleet)
    }

    @Test("under a stream of events on every daemon, an event, a tier, an operator's score and a block raised on one are in force on the others within a second")
    func changesReachTheOthersWithinASecond() async throws {
        let server = try await PostgresServer.shared()
        let database = try await blocking { try server.createDatabase() }
        let fleet = try await Self.startFleet(3, server: server, database: database)
        defer { for process in fleet.processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let clients = fleet.clients
        // All the while, every daemon takes a stream of events from others (own connections):
        // what propagates below goes through commits busy with those.
        let writers = Task {
            var streams: [SluiceClient] = []
            for socket in fleet.sockets { streams.append(try await SluiceClient.connect(to: .unix(path: socket))) }
            var batch = 0
            while !Task.isCancelled {
                for stream in streams { _ = try await stream.send(Self.events(10, subjects: 200, offset: batch * 10)) }
                batch += 1
                do { try await Task.sleep(for: .milliseconds(20)) } catch { break }
            }
            for stream in streams { await stream.close() }
            return batch
        }

        // Events: a durable event acknowledged by one daemon (so committed), then polled on the next.
        var delays: [Double] = []
        for round in 0..<30 {
            let from = clients[round % 3], to = clients[(round + 1) % 3]
            var request = WireRequest()
            request.recordEvents.durable = true
            request.recordEvents.events = [.with {
                $0.subject = "fresh\(round)"
                $0.kind = "auth_failure"
            }]
            #expect(try await from.send(request).recordEvents.committed)
            let delay = try await Self.timeUntil { try await Self.reputation("fresh\(round)", on: to).tracked }
            delays.append(delay.map(Self.milliseconds) ?? .infinity)
        }
        delays.sort()
        let median = delays[delays.count / 2]
        print("fleet: event propagation over 30 rounds: median \(median) ms, worst \(delays.last ?? 0) ms")
        // A shared 2-core machine can stall any one poll; the bound holds for nearly all.
        #expect(median < 1_000)
        #expect(delays.filter { $0 < 1_000 }.count >= 27, "\(delays)")

        // A tier set on daemon 0 applies on 1 and 2; removed on 2, it is gone on 0 and 1.
        var set = WireRequest()
        set.setTier = .with {
            $0.subject = "carol"
            $0.tier = "vip"
        }
        #expect(try await clients[0].send(set).tier.assigned)
        for client in clients[1...] {
            let delay = try await Self.timeUntil {
                var get = WireRequest()
                get.getTier.subject = "carol"
                return try await client.send(get).tier.assignment.tier == "vip"
            }
            #expect(delay.map { Self.milliseconds($0) < 1_000 } == true, "tier set: \(String(describing: delay))")
            var check = Make.check("api:carol", limit: .with { $0.limit = 100; $0.periodMs = 60_000 }, nowMs: 0)
            check.subject = "carol"
            #expect(try await client.verdict(check).tier == "vip")
        }
        var remove = WireRequest()
        remove.removeTier.subject = "carol"
        #expect(try await clients[2].send(remove).tier.assigned)
        for client in clients[..<2] {
            let delay = try await Self.timeUntil {
                var get = WireRequest()
                get.getTier.subject = "carol"
                return try await !client.send(get).tier.assigned
            }
            #expect(delay.map { Self.milliseconds($0) < 1_000 } == true, "tier removed: \(String(describing: delay))")
        }

        // An operator's pin on daemon 0 holds on 1 and 2; a reset on 1 clears it on 0 and 2.
        var pin = WireRequest()
        pin.setReputation = .with {
            $0.subject = "dave"
            $0.action = .pin
            $0.score = 90
        }
        #expect(try await clients[0].send(pin).setReputation.reputation.pinned)
        for client in clients[1...] {
            let delay = try await Self.timeUntil {
                let reputation = try await Self.reputation("dave", on: client).reputation
                return reputation.pinned && reputation.score == 90
            }
            #expect(delay.map { Self.milliseconds($0) < 1_000 } == true, "pin: \(String(describing: delay))")
        }
        var reset = WireRequest()
        reset.setReputation = .with {
            $0.subject = "dave"
            $0.action = .reset
        }
        _ = try await clients[1].send(reset)
        for client in [clients[0], clients[2]] {
            let delay = try await Self.timeUntil { try await !Self.reputation("dave", on: client).tracked }
            #expect(delay.map { Self.milliseconds($0) < 1_000 } == true, "reset: \(String(describing: delay))")
        }

        // A block: failed logins naming many subjects from one address, reported to daemon 1,
        // raise credential_stuffing there, blocked for an hour; daemons 0 and 2 then deny that
        // address too.
        // Dated from now on: detection learns from its first observation (the checks above), and
        // takes what is dated before it as learning.
        let now = UInt64(Date().timeIntervalSince1970 * 1_000)
        var outcomes = WireRequest()
        outcomes.reportOutcome.outcomes = (0..<30).map { index in
            Sluice_V1_Outcome.with {
                $0.subject = "victim\(index)"
                $0.ip = "203.0.113.77"
                $0.route = "POST /login"
                $0.status = 401
                $0.timeMs = now + UInt64(index) * 10
            }
        }
        let reported = try await clients[1].send(outcomes)
        #expect(reported.error.code == .unspecified, "\(reported)")
        // A new key each time: polling one key would exhaust its limit and sink its reputation.
        let polls = NIOLockedValueBox(0)
        func blocked(on client: SluiceClient) async throws -> Bool {
            let poll = polls.withLockedValue { count -> Int in
                count += 1
                return count
            }
            var check = Make.check("login:poll\(poll)", limit: .with { $0.limit = 1_000_000; $0.periodMs = 60_000 }, nowMs: 0)
            check.ip = "203.0.113.77"
            let verdict = try await client.verdict(check)
            return !verdict.allowed && verdict.reason == .anomaly
        }
        #expect(try await Self.timeUntil { try await blocked(on: clients[1]) } != nil, "daemon 1 raised no block")
        for client in [clients[0], clients[2]] {
            let delay = try await Self.timeUntil { try await blocked(on: client) }
            #expect(delay.map { Self.milliseconds($0) < 1_000 } == true, "block: \(String(describing: delay))")
        }
        var other = Make.check("login:other", limit: .with { $0.limit = 100; $0.periodMs = 60_000 }, nowMs: 0)
        other.ip = "203.0.113.78"
        let otherVerdict = try await clients[0].verdict(other)
        #expect(otherVerdict.allowed, "\(otherVerdict)")
        // Stored: a daemon started now is blocking the address from its first check.
        #expect(try await blocking { try server.psql("SELECT count(*) FROM anomaly_responses", database: database) } == "1")
        writers.cancel()
        let batches = try await writers.value
        #expect(batches > 10, "the background stream of events hardly ran: \(batches) batches")
        await Self.stop(fleet)
    }
}

/// `sluicectl store`: migrate, status and copy, run as an operator runs them, on real stores.
@Suite("sluicectl store", .ownThreads, .enabled(if: PostgresServer.installed), .serialized)
struct StoreCommandLineTests {
    @Test("a deployment moves from its SQLite file to PostgreSQL with sluicectl store copy: every count verified, the scores served the same")
    func copyFromSQLiteToPostgres() async throws {
        let server = try await PostgresServer.shared()
        let database = try await blocking { try server.createDatabase() }
        let url = server.tcpURL(database: database)
        let directory = NSTemporaryDirectory() + "sluicectl-store-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/sluice.db", socket = directory + "/s.sock"
        let config = directory + "/sluice.yaml"
        try """
            tiers:
              vip: { multiplier: 4, priority: 10 }
            features: { reputation: { enabled: true }, adaptive: { enabled: true } }
            """.write(toFile: config, atomically: true, encoding: .utf8)

        // A daemon on SQLite learns scores and a tier, then stops.
        var daemon = try await PostgresEndToEndTests.start(["--config", config, "--store", file], socket: socket)
        var client = try await SluiceClient.connect(to: .unix(path: socket))
        for batch in 0..<20 {
            var request = PostgresFleetTests.events(50, subjects: 25, offset: batch * 50)
            request.recordEvents.durable = batch % 5 == 0
            _ = try await client.send(request)
        }
        var set = WireRequest()
        set.setTier = .with {
            $0.subject = "s3"
            $0.tier = "vip"
        }
        #expect(try await client.send(set).tier.assigned)
        var before: [String: Sluice_V1_Reputation] = [:]
        for subject in 0..<25 { before["s\(subject)"] = try await PostgresFleetTests.reputation("s\(subject)", on: client).reputation }
        await client.close()
        kill(daemon.processIdentifier, SIGTERM)
        await daemon.waitForExit(within: .seconds(60))
        #expect(daemon.terminationStatus == 0)

        // Migrate ahead of the rollout, copy, verify.
        let migrate = try await DaemonProcessTests.sluicectl(["store", "migrate", url])
        #expect(migrate.status == 0, "\(migrate)")
        #expect(migrate.out.contains("5 migrations applied, 5 known"), "\(migrate.out)")
        #expect(!migrate.out.contains(PostgresServer.password), "the password is never printed")
        let copy = try await DaemonProcessTests.sluicectl(["store", "copy", "--from", "sqlite:" + file, "--to", url])
        #expect(copy.status == 0, "\(copy)")
        #expect(copy.out.contains("source sqlite:\(file): 1000 events, 25 scores, 1 tiers"), "\(copy.out)")
        #expect(copy.out.contains("1000 events, 25 scores, 1 tiers") && copy.out.contains("copied and verified"), "\(copy.out)")
        let status = try await DaemonProcessTests.sluicectl(["store", "status", url, "--json"])
        let object = try #require(DaemonProcessTests.json(status.out), "\(status)")
        #expect(object["backend"] as? String == "postgres" && object["events"] as? Int == 1000 && object["tiers"] as? Int == 1, "\(object)")
        // A second copy into the same database is refused: it is not empty.
        let again = try await DaemonProcessTests.sluicectl(["store", "copy", "--from", file, "--to", url])
        #expect(again.status == 2)
        #expect(again.err.contains("the target already holds 1000 events"), "\(again.err)")
        // A store that cannot be reached: one line, status 2.
        let unreachable = try await DaemonProcessTests.sluicectl(["store", "status", "postgres://sluice@127.0.0.1:1/none", "--timeout", "2"])
        #expect(unreachable.status == 2 && unreachable.err.hasPrefix("sluicectl: "), "\(unreachable)")

        // The daemon, now on PostgreSQL, serves the same scores and the tier.
        daemon = try await PostgresEndToEndTests.start(["--config", config, "--store", url], socket: socket)
        defer { if daemon.isRunning { kill(daemon.processIdentifier, SIGKILL) } }
        client = try await SluiceClient.connect(to: .unix(path: socket))
        for (subject, old) in before {
            let now = try await PostgresFleetTests.reputation(subject, on: client).reputation
            #expect(now.events == old.events, "\(subject)")
            #expect(abs(now.score - old.score) < 0.05, "\(subject): \(old.score) then \(now.score)")
        }
        var get = WireRequest()
        get.getTier.subject = "s3"
        #expect(try await client.send(get).tier.assignment.tier == "vip")
        await client.close()
    }
}
