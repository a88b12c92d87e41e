import Foundation
import NIOCore
import NIOPosix
import SluiceCore
import SluiceRedis
import SluiceTestKit
import Testing
@testable import SluiceServer

/// Fast mode against a real redis-server: daemons decide on their own tables and sync through
/// Redis; simulated time (each check's own), syncs called by the test.
@Suite("Redis backend, fast mode", .ownThreads, .enabled(if: RedisServer.installed))
struct RedisFastModeTests {
    static let second: Int64 = 1_000_000_000
    static let start: Int64 = 1_767_225_600 * second

    static func backend(_ socket: String, _ configure: (inout RedisBackend.Settings) -> Void = { _ in }) -> RedisBackend {
        var settings = RedisBackend.Settings()
        settings.fast = true
        settings.syncInterval = .zero
        // Time is simulated here, and nothing measures a deadline: a loaded machine's slow
        // reply must not fail a sync (5 s did, at the start of a full run).
        settings.timeout = .seconds(30)
        // Keys outlive their state by an hour of real time: the checks' time is simulated, and a
        // loaded machine lets more real time pass than the run simulates (with the default second
        // of slack Redis expired keys mid-run in a full test run).
        settings.slackMs = 3_600_000
        configure(&settings)
        return RedisBackendTests.backend(socket, settings)
    }

    static func check(_ backend: any LimiterBackend, _ key: String, _ limit: BoundLimit, now: Int64, hits: UInt64 = 1) -> Decision {
        var item = BatchCheck(key: Fingerprint.of(tenant: "t", key: key), limits: .single(limit), hits: hits, now: now)
        return withUnsafePointer(to: &item) { backend.check($0) }
    }

    /// Three (or `daemons`) backends each offered one check a millisecond, three times the limit
    /// between them, for `seconds`, synced every `interval` ms; returns what they admitted and
    /// what one exact table admits of the same checks.
    static func run(_ socket: String, daemons count: Int, interval: Int, seconds: Int, spec: LimitSpec, key: String) async throws
        -> (fast: Int, exact: Int) {
        let daemons = (0..<count).map { _ in backend(socket) }
        defer { for daemon in daemons { daemon.client.shutdown() } }
        try await RedisBackendTests.eventually { daemons.allSatisfy { $0.client.connected == 2 } }
        let limit = BoundLimit.rule("fast-\(key)", index: 0, spec: spec)
        let exact = LimiterTable(shardCount: 1, maxEntries: 100)
        var admitted = 0, exactAdmitted = 0
        for millisecond in 0..<(seconds * 1_000) {
            let now = start + Int64(millisecond) * 1_000_000
            for daemon in daemons {
                if check(daemon, key, limit, now: now).allowed { admitted += 1 }
                if exact.check(key: Fingerprint.of(tenant: "t", key: key), limit: limit, hits: 1, now: now).allowed { exactAdmitted += 1 }
            }
            if millisecond % interval == interval - 1 {
                for daemon in daemons { try await daemon.sync(now: now).get() }
            }
        }
        for daemon in daemons where daemon.decidedDegraded > 0 || daemon.counts.errorCounts.contains(where: { $0.count > 0 }) {
            Issue.record("a sync failed: \(daemon.counts.errorCounts.filter { $0.count > 0 }), \(daemon.decidedDegraded) checks degraded")
        }
        return (admitted, exactAdmitted)
    }

    @Test("three daemons offered three times a GCRA limit admit it within 1 % (synced every 5 ms); each algorithm holds across them")
    func threeDaemonsHoldTheLimit() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let gcra = try await Self.run(server.socket, daemons: 3, interval: 5, seconds: 4,
                                      spec: try LimitSpec(limit: 1_000, period: Self.second, burst: 100), key: "gcra")
        #expect((4_090...4_100).contains(gcra.exact), "the burst, then 1,000 a second: \(gcra)")
        #expect(Double(abs(gcra.fast - gcra.exact)) <= 0.01 * 1_000, "\(gcra)")
        for algorithm in [Algorithm.tokenBucket, .slidingWindow, .fixedWindow] {
            let result = try await Self.run(server.socket, daemons: 3, interval: 5, seconds: 3,
                                            spec: try LimitSpec(limit: 500, period: Self.second, algorithm: algorithm), key: "\(algorithm)")
            // Windows count whole windows: over three, 1,500 pass however the daemons share them.
            #expect(Double(result.fast) <= Double(result.exact) * 1.03 && Double(result.fast) >= Double(result.exact) * 0.97,
                    "\(algorithm): \(result)")
        }
    }

    @Test("a sync sends at most sync_max_entries, admitted hits first; the rest follow with the next syncs, and none is lost")
    func boundedSync() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let one = Self.backend(server.socket) { $0.maxSyncEntries = 10 }, two = Self.backend(server.socket)
        defer {
            one.client.shutdown()
            two.client.shutdown()
        }
        try await RedisBackendTests.eventually { one.client.connected == 2 && two.client.connected == 2 }
        // Limit 1 an hour: 25 keys admitted once each, then 10 other keys only peeked at
        // (nothing to count, only their view to refresh).
        let limit = BoundLimit.rule("bounded", index: 0, spec: try LimitSpec(limit: 1, period: 3_600 * Self.second))
        for index in 0..<25 { #expect(Self.check(one, "k\(index)", limit, now: Self.start).allowed) }
        try await one.sync(now: Self.start).get()
        #expect(one.fast.pending.count == 15, "10 sent, 15 wait")
        for index in 0..<10 { _ = Self.check(one, "peek\(index)", limit, now: Self.start, hits: 0) }
        #expect(one.fast.pending.count == 25)
        try await one.sync(now: Self.start).get()
        #expect(one.fast.pending.count == 15 && one.fast.pending.values { $0.hits > 0 }.count == 5, "admitted hits go first")
        try await one.sync(now: Self.start).get()
        #expect(one.fast.pending.count == 5 && one.fast.pending.values { $0.hits > 0 }.isEmpty)
        try await one.sync(now: Self.start).get()
        #expect(one.fast.pending.isEmpty && one.fast.syncs.load(ordering: .relaxed) == 4)
        // Every admitted hit reached Redis: the other daemon, synced, denies all 25 keys.
        for index in 0..<25 { _ = Self.check(two, "k\(index)", limit, now: Self.start) }
        try await two.sync(now: Self.start).get()
        var denied = 0
        for index in 0..<25 where !Self.check(two, "k\(index)", limit, now: Self.start + Self.second).allowed { denied += 1 }
        #expect(denied == 25)
    }

    @Test("what a daemon admits reaches Redis: one daemon's hits hold on another after a sync, and on a new one that never saw them")
    func admittedHitsAreShared() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let one = Self.backend(server.socket), two = Self.backend(server.socket)
        defer { one.client.shutdown(); two.client.shutdown() }
        try await RedisBackendTests.eventually { one.client.connected == 2 && two.client.connected == 2 }
        let limit = BoundLimit.rule("shared", index: 0, spec: try LimitSpec(limit: 10, period: 3_600 * Self.second))
        for _ in 0..<10 { #expect(Self.check(one, "ivy", limit, now: Self.start).allowed) }
        #expect(!Self.check(one, "ivy", limit, now: Self.start).allowed)
        // Before a sync, the other daemon does not know (the price of fast mode)...
        #expect(Self.check(two, "ivy", limit, now: Self.start).allowed)
        try await one.sync(now: Self.start).get()
        try await two.sync(now: Self.start).get()
        // ...after it, both hold the 11 admitted: the hour's limit is used up on both.
        #expect(!Self.check(two, "ivy", limit, now: Self.start + Self.second).allowed)
        #expect(!Self.check(one, "ivy", limit, now: Self.start + Self.second).allowed)
        let three = Self.backend(server.socket)
        defer { three.client.shutdown() }
        try await RedisBackendTests.eventually { three.client.connected == 2 }
        // A daemon that never saw the key learns it at its first sync after its first check.
        _ = Self.check(three, "ivy", limit, now: Self.start + Self.second)
        try await three.sync(now: Self.start + Self.second).get()
        #expect(!Self.check(three, "ivy", limit, now: Self.start + 2 * Self.second).allowed)
        #expect(one.decidedDegraded == 0 && two.decidedInRedis >= 1)
    }

    @Test("with Redis gone, fast mode keeps deciding on the on_failure path and sends the hits it admitted once Redis is back")
    func redisGoneAndBack() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let backend = Self.backend(server.socket) { settings in
            settings.timeout = .milliseconds(200)
            settings.breakerThreshold = 1
            settings.breakerCooldown = 1
            settings.expectedDaemons = 2
        }
        defer { backend.client.shutdown() }
        try await RedisBackendTests.eventually { backend.client.connected == 2 }
        let limit = BoundLimit.rule("gone", index: 0, spec: try LimitSpec(limit: 10, period: 3_600 * Self.second))
        let admin = try await RedisConnection.connect(to: .unix(path: server.socket), on: MultiThreadedEventLoopGroup.singleton.next()).get()
        defer { _ = admin.close() }
        _ = try await admin.send(RESPCommand("CLIENT", "PAUSE", 60_000, "WRITE"), deadline: .now() + .seconds(5)).get()
        #expect(Self.check(backend, "jo", limit, now: Self.start).allowed)
        // The sync times out: the breaker opens, and checks take on_failure local: half of 10.
        try await backend.sync(now: Self.start).get()
        #expect(backend.breakerState == "open")
        var allowed = 1
        for _ in 0..<10 where Self.check(backend, "jo", limit, now: Self.start).allowed { allowed += 1 }
        #expect(allowed == 5, "this daemon's share while Redis is away")
        _ = try await admin.send(RESPCommand("CLIENT", "UNPAUSE"), deadline: .now() + .seconds(5)).get()
        // A sync after the cooldown is the probe: it closes the breaker and delivers the 5
        // admitted hits. On a loaded machine a probe can time out too (Redis still working off
        // what the pause held): the hits are kept and the next probe sends them.
        var probes = 0
        while backend.breakerState != "closed", probes < 100 {
            try await Task.sleep(for: .milliseconds(50))
            try await backend.sync(now: Self.start).get()
            probes += 1
        }
        #expect(backend.breakerState == "closed")
        let stored = try await admin.send(RESPCommand("GET", .string(RedisBackend.keyName(Fingerprint.of(tenant: "t", key: "jo"), limit))),
                                          deadline: .now() + .seconds(5)).get()
        // GCRA: 5 hits of 360 s each from `start`, in microseconds; more when a sync that timed
        // out was run by Redis once unpaused, and its hits are sent again (at least once: a hit
        // is never lost, and one counted twice errs on the side of the limit).
        let hits = stored.string.flatMap { Int64($0) }.map { ($0 - Self.start / 1_000) / 360_000_000 }
        #expect(hits.map { $0 >= 5 && $0 <= 5 + 5 * Int64(probes) } == true, "\(stored), \(probes) probes")
    }

    /// The figures of docs/DISTRIBUTED.md: over-admission by daemons and sync interval, each
    /// daemon offered 1,000 checks a second against a GCRA limit of 1,000 a second (so N times
    /// the limit in all) for 2 s. The bound: about `(N - 1) × R × T` at the limit's edge, where R
    /// is what a daemon admits a second there, here 1,000 / N.
    @Test("over-admission of fast mode by daemons and sync interval stays within (N - 1) x R x T",
          arguments: [(2, 1), (2, 5), (2, 20), (3, 1), (3, 5), (3, 20), (5, 5)])
    func overAdmission(daemons: Int, interval: Int) async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let result = try await Self.run(server.socket, daemons: daemons, interval: interval, seconds: 2,
                                        spec: try LimitSpec(limit: 1_000, period: Self.second, burst: 100), key: "over")
        let over = result.fast - result.exact
        let bound = Double(daemons - 1) * 1_000 * Double(interval) / 1_000 + 2
        print("fast mode: \(daemons) daemons, sync every \(interval) ms: \(result.fast) admitted, exact \(result.exact), "
              + "over by \(over) (\(Double(over) / 10) % of the limit)")
        // Hits admitted early are taken from the capacity after them: at the end of a run the
        // fleet may also be behind the exact count by as much.
        #expect(Double(abs(over)) <= bound, "\(result), bound \(bound)")
    }
}
