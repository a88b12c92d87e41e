import Foundation
import SluiceClient
import SluiceConfiguration
import SluiceCore
import SluiceProto
import SluiceTestKit
import Testing
@testable import SluiceServer

/// Real daemons configured with `backend: redis`, sharing one real redis-server.
@Suite("Two sluiced sharing one Redis", .enabled(if: RedisServer.installed))
struct RedisEndToEndTests {
    static func yaml(_ socket: String, onFailure: String = "local", expectedDaemons: Int = 2) -> String {
        """
        backend: redis
        redis: { url: "unix://\(socket)", timeout: 2s, on_failure: \(onFailure), expected_daemons: \(expectedDaemons) }
        rules:
          login: { limit: 10, period: 1h }
          jobs: { limit: 1, period: 1h, algorithm: concurrency }
          api:
            limits:
              - { limit: 100, period: 1m, burst: 4 }
              - { limit: 6, period: 1h, algorithm: fixed_window }
        """
    }

    @Test("a limit of 10 holds across two daemons: 10 of 30 checks allowed, wherever they land")
    func sharedAcrossDaemons() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        try await TestDaemon.with(yaml: Self.yaml(redis.socket), clock: .monotonic) { one in
            try await TestDaemon.with(yaml: Self.yaml(redis.socket), clock: .monotonic) { two in
                let a = try await SluiceClient.connect(to: one.unix), b = try await SluiceClient.connect(to: two.tcp)
                var allowed = 0
                for index in 0..<30 {
                    let verdict = try await (index % 2 == 0 ? a : b).verdict(Make.check("alice", rule: "login"))
                    if verdict.allowed { allowed += 1 }
                    if !verdict.allowed { #expect(verdict.retryAfterMs > 0, "a denial says when to retry") }
                }
                #expect(allowed == 10)
                // A rule of two limits, in one frame of 8 checks to one daemon: 4 pass (the
                // burst), and the hourly window counted only those.
                let response = try await a.send(Make.request(Make.check("bob", rule: "api"), Make.check("bob", rule: "api"),
                                                             Make.check("bob", rule: "api"), Make.check("bob", rule: "api"),
                                                             Make.check("bob", rule: "api"), Make.check("bob", rule: "api"),
                                                             Make.check("bob", rule: "api"), Make.check("bob", rule: "api")))
                guard case .check(let answer) = response.body else {
                    Issue.record("no verdicts: \(response)")
                    return
                }
                #expect(answer.verdicts.map(\.allowed) == [true, true, true, true, false, false, false, false])
                await a.close()
                await b.close()
                let backend = try #require(one.daemon.dispatcher.backend as? RedisBackend)
                // 23 checks reached this daemon: the denials after the first of a key come from
                // the over-limit cache, without a round trip.
                #expect(backend.decidedInRedis + backend.deniedFromCache == 23 && backend.decidedDegraded == 0)
                #expect(backend.deniedFromCache > 0)
            }
        }
    }

    @Test("a restart loses nothing: the snapshot of a daemon whose rules are on Redis holds none of their state, and Redis keeps counting")
    func restartLosesNothing() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/table.snapshot"
        try await TestDaemon.with(yaml: Self.yaml(redis.socket), clock: .monotonic, { $0.snapshotPath = path }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            for _ in 0..<6 { #expect(try await client.verdict(Make.check("ivy", rule: "login")).allowed) }
            await client.close()
        }
        let written = try #require(FileManager.default.contents(atPath: path), "shutdown wrote the snapshot")
        #expect(try TableSnapshot(decoding: Array(written)).entries.isEmpty, "the login rule's state is in Redis, not in the snapshot")
        try await TestDaemon.with(yaml: Self.yaml(redis.socket), clock: .monotonic, { $0.snapshotPath = path }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            var allowed = 0
            for _ in 0..<10 where try await client.verdict(Make.check("ivy", rule: "login")).allowed { allowed += 1 }
            #expect(allowed == 4, "10 an hour: 6 before the restart, 4 after")
            await client.close()
        }
    }

    @Test("three daemons under concurrent load, twelve connections at once, admit exactly the limit of each key between them")
    func threeDaemonsConcurrent() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let yaml = Self.yaml(redis.socket, expectedDaemons: 3)
        try await TestDaemon.with(yaml: yaml, clock: .monotonic) { one in
            try await TestDaemon.with(yaml: yaml, clock: .monotonic) { two in
                try await TestDaemon.with(yaml: yaml, clock: .monotonic) { three in
                    var clients: [SluiceClient] = []
                    for daemon in [one, two, three] {
                        for index in 0..<4 { clients.append(try await SluiceClient.connect(to: index % 2 == 0 ? daemon.unix : daemon.tcp)) }
                    }
                    // Three keys, 40 checks each over the twelve connections at once: 10 an
                    // hour each (the login rule), so exactly 30 pass.
                    let allowed = try await withThrowingTaskGroup(of: [String].self) { group in
                        for (index, client) in clients.enumerated() {
                            group.addTask {
                                var passed: [String] = []
                                for round in 0..<10 {
                                    let key = "zed-\((index + round) % 3)"
                                    if try await client.verdict(Make.check(key, rule: "login")).allowed { passed.append(key) }
                                }
                                return passed
                            }
                        }
                        return try await group.reduce(into: [String]()) { $0 += $1 }
                    }
                    #expect(allowed.count == 30, "\(allowed.count) admitted")
                    #expect(Dictionary(grouping: allowed, by: { $0 }).mapValues(\.count) == ["zed-0": 10, "zed-1": 10, "zed-2": 10])
                    for daemon in [one, two, three] {
                        let backend = try #require(daemon.daemon.dispatcher.backend as? RedisBackend)
                        #expect(backend.decidedDegraded == 0)
                    }
                    for client in clients { await client.close() }
                }
            }
        }
    }

    @Test("with Redis gone, a daemon keeps answering every check: each decides its share of the limit locally")
    func degradedLocal() async throws {
        let redis = try await RedisServer.start()
        try await TestDaemon.with(yaml: Self.yaml(redis.socket), clock: .monotonic) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await client.verdict(Make.check("carol", rule: "login")).allowed)
            redis.stop()
            // Half of 10 for one of two daemons; every check answered, none waits past the timeout.
            var allowed = 0
            for _ in 0..<12 where try await client.verdict(Make.check("dan", rule: "login")).allowed { allowed += 1 }
            #expect(allowed == 5)
            await client.close()
            let backend = try #require(daemon.daemon.dispatcher.backend as? RedisBackend)
            #expect(backend.decidedDegraded == 12)
        }
    }

    @Test("sluicectl stats, /readyz and /metrics show the backend: decisions by path, round trips, errors, the breaker")
    func backendIsObservable() async throws {
        let redis = try await RedisServer.start()
        // The 2 s timeout: with Redis killed below, sends fail at once (no connection), so the
        // breaker opens without waiting; a shorter one timed checks out on a loaded machine.
        let yaml = Self.yaml(redis.socket)
        try await TestDaemon.with(yaml: yaml, clock: .monotonic, { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            for _ in 0..<12 { _ = try await client.verdict(Make.check("gina", rule: "login")) }
            var request = WireRequest()
            request.stats = Sluice_V1_StatsRequest()
            let up = try await client.send(request).stats.backend
            #expect(up.kind == "redis" && up.state == "closed" && up.onFailure == "local" && up.address == "unix://\(redis.socket)")
            #expect(up.decidedRemote + up.deniedFromCache == 12 && up.deniedFromCache >= 1 && up.writes >= 1 && up.connectionsUp >= 1)
            let port = try #require(daemon.daemon.metricsAddress?.port)
            var body = try HTTPGet.get(port: port, path: "/metrics").body
            #expect(sample("sluice_redis_decisions_total{path=\"redis\"}", in: body) == Double(up.decidedRemote))
            #expect(sample("sluice_redis_decisions_total{path=\"cache\"}", in: body) == Double(up.deniedFromCache))
            #expect(sample("sluice_redis_breaker_state{state=\"closed\"}", in: body) == 1)
            #expect((sample("sluice_redis_round_trip_seconds_count", in: body) ?? 0) >= 1)
            #expect((sample("sluice_redis_batch_size_count", in: body) ?? 0) >= 1)
            var ready = try HTTPGet.get(port: port, path: "/readyz")
            #expect(ready.status == 200 && ready.body.contains("backend redis: closed"))

            // Redis gone: checks keep being answered (on_failure local), the breaker opens after
            // five failed writes, and each place says so.
            redis.stop()
            for index in 0..<8 { _ = try await client.verdict(Make.check("hal\(index)", rule: "login")) }
            let down = try await client.send(request).stats.backend
            #expect(down.state == "open" && down.decidedDegraded == 8)
            body = try HTTPGet.get(port: port, path: "/metrics").body
            #expect(sample("sluice_redis_breaker_state{state=\"open\"}", in: body) == 1)
            // Once, or more on a machine slow enough for the 1 s cooldown to pass: a probe fails
            // and the breaker opens again.
            #expect((sample("sluice_redis_breaker_opened_total", in: body) ?? 0) >= 1)
            #expect(sample("sluice_redis_decisions_total{path=\"on_failure_local\"}", in: body) == 8)
            let errors = ["connect_failed", "connection_closed", "timeout", "unavailable"].compactMap {
                sample("sluice_redis_errors_total{kind=\"\($0)\"}", in: body)
            }
            #expect(errors.reduce(0, +) >= 5, "\(errors)")
            ready = try HTTPGet.get(port: port, path: "/readyz")
            #expect(ready.status == 200 && ready.body.contains("backend redis: open, checks take on_failure local"), "\(ready.body)")
            await client.close()
        }
    }

    @Test("a lease taken through one daemon holds on the other and is released through it over the socket")
    func leasesAcrossDaemons() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        try await TestDaemon.with(yaml: Self.yaml(redis.socket), clock: .monotonic) { one in
            try await TestDaemon.with(yaml: Self.yaml(redis.socket), clock: .monotonic) { two in
                let a = try await SluiceClient.connect(to: one.unix), b = try await SluiceClient.connect(to: two.unix)
                let held = try await a.verdict(Make.check("export", rule: "jobs"))
                #expect(held.allowed && held.leaseID != 0)
                #expect(try await !b.verdict(Make.check("export", rule: "jobs")).allowed, "one at a time, fleet-wide")
                var release = WireRequest()
                release.id = 9
                release.release.key = "export"
                release.release.rule = "jobs"
                release.release.leaseID = held.leaseID
                let released = try await b.send(release)
                #expect(released.id == 9 && released.release.released)
                #expect(try await b.send(release).release.released == false, "released once")
                #expect(try await b.verdict(Make.check("export", rule: "jobs")).allowed)
                await a.close()
                await b.close()
            }
        }
    }

    @Test("redis.mode fast: two real daemons decide on their own tables and hold a limit between them through their syncs")
    func fastModeAcrossDaemons() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let yaml = Self.yaml(redis.socket).replacingOccurrences(of: "expected_daemons: 2 }", with: "expected_daemons: 2, mode: fast, sync_interval: 1ms }")
        try await TestDaemon.with(yaml: yaml, clock: .monotonic) { one in
            try await TestDaemon.with(yaml: yaml, clock: .monotonic) { two in
                let backend = try #require(one.daemon.dispatcher.backend as? RedisBackend)
                #expect(backend.answersAtOnce, "fast mode answers from the table, on the event loop")
                let a = try await SluiceClient.connect(to: one.unix), b = try await SluiceClient.connect(to: two.unix)
                var allowed = 0
                for index in 0..<30 {
                    if try await (index % 2 == 0 ? a : b).verdict(Make.check("kim", rule: "login")).allowed { allowed += 1 }
                    // Slower than the syncs: each daemon has seen the other's hits.
                    try await Task.sleep(for: .milliseconds(20))
                }
                // Each daemon's view of the key is as old as its last sync of it, which follows
                // its own last check: at the limit's edge each may admit one the other's latest
                // hit has used (N - 1 = 1 here).
                #expect((10...11).contains(allowed), "\(allowed)")
                await a.close()
                await b.close()
            }
        }
    }

    @Test("mode per rule: an exact rule and a fast one on two daemons, either way round; each holds its limit across both",
          arguments: ["exact", "fast"])
    func modePerRule(defaultMode: String) async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let other = defaultMode == "exact" ? "fast" : "exact"
        let yaml = """
            backend: redis
            redis: { url: "unix://\(redis.socket)", timeout: 2s, mode: \(defaultMode), sync_interval: 1ms }
            rules:
              by-default: { limit: 10, period: 1h }
              own-mode: { limit: 10, period: 1h, mode: \(other) }
            """
        try await TestDaemon.with(yaml: yaml, clock: .monotonic) { one in
            try await TestDaemon.with(yaml: yaml, clock: .monotonic) { two in
                let backend = try #require(one.daemon.dispatcher.backend as? RedisBackend)
                #expect(!backend.answersAtOnce, "an exact rule is answered from Redis, later, whichever the default")
                let a = try await SluiceClient.connect(to: one.unix), b = try await SluiceClient.connect(to: two.unix)
                var allowed: [String: Int] = [:]
                let before = backend.decidedInRedis
                for index in 0..<30 {
                    for rule in ["by-default", "own-mode"] where try await (index % 2 == 0 ? a : b).verdict(Make.check("pat", rule: rule)).allowed {
                        allowed[rule, default: 0] += 1
                    }
                    // Slower than the syncs, as in the fast-mode test.
                    try await Task.sleep(for: .milliseconds(20))
                }
                let exact = defaultMode == "exact" ? "by-default" : "own-mode", fast = defaultMode == "exact" ? "own-mode" : "by-default"
                #expect(allowed[exact] == 10, "\(exact) is exact: \(allowed)")
                #expect((10...11).contains(allowed[fast] ?? 0), "\(fast) is fast, within N - 1 of the limit: \(allowed)")
                // This daemon's 15 exact checks went to Redis, or were denied from the cache;
                // its fast ones were synced (each sync adopts the state of the keys it sent).
                #expect(backend.decidedInRedis - before + backend.deniedFromCache >= 15)
                #expect(backend.fast.syncs.load(ordering: .relaxed) > 0, "the fast rule's hits were synced")
                await a.close()
                await b.close()
            }
        }
    }

    @Test("backend per rule: with backend local, a rule saying backend: redis is shared by two daemons while the others stay per daemon, and a reload moves a rule")
    func backendPerRule() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let yaml = { (movedRule: String) in """
            redis: { url: "unix://\(redis.socket)", timeout: 2s }
            rules:
              shared: { limit: 10, period: 1h, backend: redis }
              own: { limit: 10, period: 1h }
              moved: { limit: 10, period: 1h\(movedRule) }
            """ }
        try await TestDaemon.with(yaml: yaml(""), clock: .monotonic) { one in
            try await TestDaemon.with(yaml: yaml(""), clock: .monotonic) { two in
                let a = try await SluiceClient.connect(to: one.unix), b = try await SluiceClient.connect(to: two.unix)
                func allowed(_ rule: String, _ key: String) async throws -> Int {
                    var count = 0
                    for index in 0..<30 where try await (index % 2 == 0 ? a : b).verdict(Make.check(key, rule: rule)).allowed { count += 1 }
                    return count
                }
                #expect(try await allowed("shared", "lee") == 10, "one limit for both daemons")
                #expect(try await allowed("own", "lee") == 20, "each daemon its own")
                #expect(try await allowed("moved", "lee") == 20)
                let backend = try #require(one.daemon.dispatcher.backend as? RedisBackend)
                #expect(backend.decidedLocally == 30 && backend.decidedInRedis + backend.deniedFromCache == 15)
                // A reload that puts `moved` on Redis applies at once, on both.
                _ = one.daemon.dispatcher.state.apply(try ConfigurationLoader.parse(yaml(", backend: redis"), source: "reload"))
                _ = two.daemon.dispatcher.state.apply(try ConfigurationLoader.parse(yaml(", backend: redis"), source: "reload"))
                #expect(try await allowed("moved", "max") == 10)
                await a.close()
                await b.close()
            }
        }
    }
}
