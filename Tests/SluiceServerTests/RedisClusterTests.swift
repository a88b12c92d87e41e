import Foundation
import NIOCore
import NIOPosix
import SluiceClient
import SluiceCore
import SluiceProto
import SluiceRedis
import SluiceTestKit
import Testing
@testable import SluiceServer

/// The Redis backend on a real 3-node Redis Cluster on loopback (`redis-cli --cluster create`):
/// the same verdicts as the local table, keys over every node, and a slot moved while checks run.
@Suite("Redis backend on a Redis Cluster", .ownThreads, .enabled(if: RedisCluster.installed), .serialized)
struct RedisClusterTests {
    static let second: Int64 = 1_000_000_000
    /// Now, to the millisecond: the keys' lifetimes are counted on the servers' clocks.
    static let start = Int64(Date().timeIntervalSince1970 * 1_000) * 1_000_000

    static func backend(_ cluster: RedisCluster, seeds: [Int]? = nil, _ configure: (inout RedisBackend.Settings) -> Void = { _ in })
        -> RedisBackend {
        var node = RedisClient.Configuration(endpoint: .tcp(host: "127.0.0.1", port: cluster.ports[0]))
        node.reconnect = (.milliseconds(20), .milliseconds(100))
        node.connections = 1
        let client = RedisClusterClient(RedisClusterClient.Configuration(
            seeds: (seeds ?? cluster.ports).map { .tcp(host: "127.0.0.1", port: $0) }, node: node), group: MultiThreadedEventLoopGroup.singleton)
        var settings = RedisBackend.Settings()
        settings.timeout = .seconds(5)
        settings.useDaemonClock = true
        settings.slackMs = 3_600_000
        settings.denialCacheSize = 0
        configure(&settings)
        return RedisBackend(client: client, local: LimiterTable(shardCount: 4, maxEntries: 10_000), settings: settings,
                            group: MultiThreadedEventLoopGroup.singleton)
    }

    static func cluster(_ backend: RedisBackend) throws -> RedisClusterClient { try #require(backend.client as? RedisClusterClient) }

    /// Waits until the client's slot map names every node.
    static func mapped(_ backend: RedisBackend, nodes: Int = 3) async throws {
        let client = try cluster(backend)
        try await RedisBackendTests.eventually {
            let owners = client.slotOwners
            return owners.count == nodes && owners.values.reduce(0, +) == KeySlot.count
        }
        try #require(client.slotOwners.values.reduce(0, +) == KeySlot.count, "slot map: \(client.slotOwners)")
    }

    static func spec(_ limit: UInt64, _ period: Int64, burst: UInt64 = 0, _ algorithm: Algorithm = .gcra) throws -> LimitSpec {
        try LimitSpec(limit: limit, period: period, burst: burst, algorithm: algorithm)
    }

    @Test("every algorithm and multi-limit rules get the local table's verdicts on a 3-node Cluster, with keys spread over every node")
    func sameVerdicts() async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.stop() }
        // One seed only: the other two nodes are found in its slot map.
        let backend = Self.backend(cluster, seeds: [cluster.ports[1]])
        defer { backend.shutdown() }
        try await Self.mapped(backend)
        let second = Self.second
        let rules: [(String, [LimitSpec])] = [
            ("gcra", [try Self.spec(10, second, burst: 4)]),
            ("token-bucket", [try Self.spec(5, second, burst: 3, .tokenBucket)]),
            ("sliding-window", [try Self.spec(6, 2 * second, .slidingWindow)]),
            ("fixed-window", [try Self.spec(4, second, .fixedWindow)]),
            ("burst-sustained-daily", [try Self.spec(20, second, burst: 5), try Self.spec(30, 5 * second, .fixedWindow),
                                       try Self.spec(60, 86_400 * second, .slidingWindow)]),
            ("concurrency", [try Self.spec(3, 2 * second, .concurrency)]),
            ("rate-and-concurrency", [try Self.spec(10, second, burst: 4), try Self.spec(3, 3 * second, .concurrency)]),
        ]
        let local = LimiterTable(shardCount: 1, maxEntries: 100_000)
        var random = SeededGenerator(seed: 0x5EED)
        var now = Self.start
        var allowed = 0, denied = 0
        for step in 0..<150 {
            now += Int64(random.next() % 100) * 1_000_000
            // A batch of 12 checks over 12 keys and every rule: one pipelined write, its calls
            // split by node and grouped by slot.
            let batch = (0..<12).map { _ -> BatchCheck in
                let (name, specs) = rules[Int(random.next() % UInt64(rules.count))]
                let limits = specs.enumerated().map { BoundLimit.rule(name, index: $0.offset, spec: $0.element) }
                let hits = UInt64([0, 1, 1, 1, 2, 3][Int(random.next() % 6)])
                return BatchCheck(key: Fingerprint.of(tenant: "t", key: "user-\(random.next() % 12)"),
                                  limits: limits.count == 1 ? .single(limits[0]) : .rule(limits), hits: hits, now: now)
            }
            let decisions = await RedisBackendTests.decide(backend, batch)
            for (index, (item, decision)) in zip(batch, decisions).enumerated() {
                let expected = withUnsafePointer(to: item) { local.check($0) }
                let context = "step \(step), check \(index): cluster \(decision), local \(expected)"
                #expect(decision.allowed == expected.allowed, "\(context)")
                #expect(decision.reason == expected.reason, "\(context)")
                #expect(decision.limitIndex == expected.limitIndex, "\(context)")
                #expect(decision.remaining == expected.remaining, "\(context)")
                #expect(abs(decision.retryAfter - expected.retryAfter) < 1_000, "\(context)")
                if expected.allowed { allowed += 1 } else { denied += 1 }
            }
        }
        #expect(allowed > 200 && denied > 200, "allowed \(allowed), denied \(denied)")
        #expect(backend.decidedInRedis == 150 * 12 && backend.decidedDegraded == 0)
        // Every node holds some of the keys; each key's limits in one slot (or the script would
        // have failed with CROSSSLOT and the check gone degraded).
        for port in cluster.ports { #expect(try cluster.keys(port) > 10, "node \(port)") }
    }

    @Test("a slot moved while two daemons check a key in it is followed (TRYAGAIN, ASK, then the new owner): every check decided in Redis, exactly the limit admitted")
    func slotMovedDuringLoad() async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.stop() }
        // `idle` reads the map before the move and checks nothing during it: its map is stale.
        let one = Self.backend(cluster), two = Self.backend(cluster), idle = Self.backend(cluster)
        defer {
            one.shutdown()
            two.shutdown()
            idle.shutdown()
        }
        try await Self.mapped(one)
        try await Self.mapped(two)
        try await Self.mapped(idle)
        // Two limits, so two keys move one at a time: between them a call finds one key here and
        // one gone (TRYAGAIN). 300 an hour in a fixed window decides; the GCRA never does.
        let limits: [BoundLimit] = [.rule("hot", index: 0, spec: try Self.spec(300, 3_600 * Self.second, .fixedWindow)),
                                    .rule("hot", index: 1, spec: try Self.spec(10_000, 3_600 * Self.second, burst: 10_000))]
        let key = Fingerprint.of(tenant: "t", key: "hot")
        let slot = KeySlot.of(RedisBackend.keyName(key, limits[0]))
        #expect(slot == KeySlot.of(RedisBackend.keyName(key, limits[1])))
        let from = try #require(try cluster.owner(of: slot))
        let to = try #require(cluster.ports.first { $0 != from })

        let running = ManagedAtomicFlag()
        let counts = Counts()
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                // Paced (a batch of 4 per worker every millisecond at most): the load must run
                // through the move, not take the machine from the tests running beside it.
                for worker in 0..<4 {
                    let backend = worker % 2 == 0 ? one : two
                    group.addTask {
                        while running.isSet {
                            let decisions = await RedisBackendTests.decide(backend, (0..<4).map { _ in
                                BatchCheck(key: key, limits: .rule(limits), hits: 1, now: Int64(Date().timeIntervalSince1970 * 1e9))
                            })
                            counts.add(allowed: decisions.filter(\.allowed).count, total: decisions.count)
                            try? await Task.sleep(for: .milliseconds(1))
                        }
                    }
                }
            }
        }
        try await RedisBackendTests.eventually { counts.total >= 200 }
        // Keys one at a time, with checks running between the steps.
        try await cluster.moveSlot(slot, from: from, to: to, keysPerStep: 1, pause: .milliseconds(100))
        let moved = counts.total
        try await RedisBackendTests.eventually { counts.total >= moved + 400 }
        running.clear()
        await load.value

        #expect(try cluster.owner(of: slot) == to)
        #expect(try cluster.keys(to) >= 2)
        #expect(counts.allowed == 300, "\(counts.allowed) of \(counts.total) admitted")
        #expect(one.decidedDegraded == 0 && two.decidedDegraded == 0, "\(one.counts.errorCounts) \(String(describing: one.clusterCounts))")
        #expect(one.decidedInRedis + two.decidedInRedis == UInt64(counts.total))
        let redirects = try [one, two].map { try Self.cluster($0).statistics.counts }.reduce([0, 0, 0, 0]) { zip($0, $1).map { $0 + $1 } }
        // After the move: a MOVED taught the map, or a read of the map (after an ASK) found it.
        for backend in [one, two] { #expect(try Self.cluster(backend).owner(of: slot) == .tcp(host: "127.0.0.1", port: to)) }
        #expect(redirects[2] > 0, "TRYAGAIN retried while the keys were split: \(redirects)")
        #expect(redirects[1] > 0, "ASK followed once both keys had gone, before the move was final: \(redirects)")
        #expect(try Self.cluster(one).slotOwners.count == 3)
        // The stale map sends the next check to the old owner, whose MOVED is followed.
        let late = await RedisBackendTests.decide(idle, [BatchCheck(key: key, limits: .rule(limits), hits: 1, now: Int64(Date().timeIntervalSince1970 * 1e9))])
        #expect(!late[0].allowed && late[0].limit == 300, "decided in Redis, over the limit: \(late[0])")
        #expect(try Self.cluster(idle).statistics.moved.load(ordering: .relaxed) == 1)
        #expect(try Self.cluster(idle).owner(of: slot) == .tcp(host: "127.0.0.1", port: to))
        #expect(idle.decidedInRedis == 1 && idle.decidedDegraded == 0)
    }

    @Test("fast mode on a 3-node Cluster: three daemons offered three times each limit, on keys over every node, admit it within 3 % (or 5)")
    func fastModeOnCluster() async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.stop() }
        let daemons = (0..<3).map { _ in
            Self.backend(cluster) { settings in
                settings.fast = true
                settings.syncInterval = .zero
            }
        }
        defer { for daemon in daemons { daemon.shutdown() } }
        for daemon in daemons { try await Self.mapped(daemon) }
        // 12 keys (over the three nodes' slots), 200 a second each after a burst of 20; every
        // daemon offers each key a check a millisecond for 1 s, syncing every 5 ms: each sync
        // gathers its entries by slot, one call per slot.
        let limit = BoundLimit.rule("fast-cluster", index: 0, spec: try Self.spec(200, Self.second, burst: 20))
        let keys = (0..<12).map { Fingerprint.of(tenant: "t", key: "fast-\($0)") }
        let exact = LimiterTable(shardCount: 1, maxEntries: 1_000)
        var admitted = [Int](repeating: 0, count: keys.count), exactAdmitted = [Int](repeating: 0, count: keys.count)
        for millisecond in 0..<1_000 {
            let now = Self.start + Int64(millisecond) * 1_000_000
            for daemon in daemons {
                for (index, key) in keys.enumerated() {
                    var item = BatchCheck(key: key, limits: .single(limit), hits: 1, now: now)
                    if withUnsafePointer(to: &item, { daemon.check($0) }).allowed { admitted[index] += 1 }
                    if exact.check(key: key, limit: limit, hits: 1, now: now).allowed { exactAdmitted[index] += 1 }
                }
            }
            if millisecond % 5 == 4 {
                for daemon in daemons { try await daemon.sync(now: now).get() }
            }
        }
        for (index, (fast, exact)) in zip(admitted, exactAdmitted).enumerated() {
            #expect(Double(abs(fast - exact)) <= max(5, 0.03 * Double(exact)), "key \(index): fast \(fast), one exact table \(exact)")
        }
        for daemon in daemons {
            #expect(daemon.decidedDegraded == 0 && !daemon.counts.errorCounts.contains { $0.count > 0 },
                    "errors: \(daemon.counts.errorCounts.filter { $0.count > 0 }), \(daemon.decidedDegraded) degraded")
        }
        for port in cluster.ports { #expect(try cluster.keys(port) > 0, "node \(port) holds some of the keys") }
    }

    @Test("two daemons configured with redis.cluster share each limit across the Cluster's nodes; stats and /metrics show it")
    func daemonsOnCluster() async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.stop() }
        let yaml = """
            backend: redis
            redis: { cluster: [\(cluster.ports.prefix(2).map { "\"redis://127.0.0.1:\($0)\"" }.joined(separator: ", "))], timeout: 2s }
            rules:
              login: { limit: 10, period: 1h }
              api:
                limits:
                  - { limit: 100, period: 1m, burst: 4 }
                  - { limit: 6, period: 1h, algorithm: fixed_window }
            """
        try await TestDaemon.with(yaml: yaml, clock: .monotonic, { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { one in
            try await TestDaemon.with(yaml: yaml, clock: .monotonic) { two in
                let a = try await SluiceClient.connect(to: one.unix), b = try await SluiceClient.connect(to: two.tcp)
                // Twelve keys, over the three nodes: each admits 10 of 20, wherever they land.
                for user in 0..<12 {
                    var allowed = 0
                    for index in 0..<20 where try await (index % 2 == 0 ? a : b).verdict(Make.check("user-\(user)", rule: "login")).allowed {
                        allowed += 1
                    }
                    #expect(allowed == 10, "user-\(user): \(allowed)")
                }
                // A rule of two limits in one frame: 4 pass (the burst), decided together.
                let response = try await a.send(Make.request(Make.check("bob", rule: "api"), Make.check("bob", rule: "api"),
                                                             Make.check("bob", rule: "api"), Make.check("bob", rule: "api"),
                                                             Make.check("bob", rule: "api"), Make.check("bob", rule: "api")))
                guard case .check(let answer) = response.body else {
                    Issue.record("no verdicts: \(response)")
                    return
                }
                #expect(answer.verdicts.map(\.allowed) == [true, true, true, true, false, false])
                var request = WireRequest()
                request.stats = Sluice_V1_StatsRequest()
                let stats = try await a.send(request).stats.backend
                #expect(stats.kind == "redis" && stats.state == "closed" && stats.address.hasPrefix("cluster redis://127.0.0.1:"))
                #expect(stats.decidedDegraded == 0 && stats.connectionsUp >= 3, "a connection to each node: \(stats)")
                let port = try #require(one.daemon.metricsAddress?.port)
                let body = try HTTPGet.get(port: port, path: "/metrics").body
                #expect((sample("sluice_redis_cluster_slot_map_reads_total", in: body) ?? 0) >= 1)
                #expect(sample("sluice_redis_cluster_redirects_total{kind=\"moved\"}", in: body) != nil)
                await a.close()
                await b.close()
            }
        }
        for port in cluster.ports { #expect(try cluster.keys(port) > 0, "node \(port) holds keys") }
    }

    @Test("a primary killed under load: its checks take on_failure until a replica is promoted, then every key is decided in Redis again, without a restart")
    func failover() async throws {
        // Three primaries with a replica each; a primary unreachable for 1 s is failed over.
        let cluster = try await RedisCluster.start(nodes: 6, replicas: 1, nodeTimeoutMs: 1_000)
        defer { cluster.stop() }
        let backend = Self.backend(cluster) { settings in
            settings.timeout = .milliseconds(500)
            settings.breakerCooldown = 200_000_000
        }
        defer { backend.shutdown() }
        try await Self.mapped(backend)
        let limit = BoundLimit.rule("failover", index: 0, spec: try Self.spec(1_000_000, 3_600 * Self.second))
        let keys = (0..<60).map { BatchCheck(key: Fingerprint.of(tenant: "t", key: "f\($0)"), limits: .single(limit), hits: 1, now: Self.start) }
        _ = await RedisBackendTests.decide(backend, keys)
        #expect(backend.decidedInRedis == 60)
        // The primary of the first key's slot goes.
        let slot = KeySlot.of(RedisBackend.keyName(keys[0].key, limit))
        let primary = try #require(try cluster.owner(of: slot))
        let index = try #require(cluster.ports.firstIndex(of: primary))
        cluster.servers[index].stop()
        let survivor = try #require(cluster.ports.first { $0 != primary })
        // Checks keep being answered while the Cluster fails over: on_failure for what cannot
        // reach Redis.
        var answered = 0
        let degradedBefore = backend.decidedDegraded
        for _ in 0..<600 {
            answered += await RedisBackendTests.decide(backend, keys).count
            if cluster.isOK(asking: survivor), try cluster.owner(of: slot, asking: survivor) != primary { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try cluster.owner(of: slot, asking: survivor) != primary, "a replica took the slot over")
        #expect(backend.decidedDegraded > degradedBefore, "checks of the lost primary took on_failure meanwhile")
        // Once the Cluster is ok again, the map is read again and all 60 keys are decided in Redis.
        var recovered = false
        for _ in 0..<200 where !recovered {
            let before = backend.decidedInRedis
            _ = await RedisBackendTests.decide(backend, keys)
            recovered = backend.decidedInRedis - before == 60
            if !recovered { try await Task.sleep(for: .milliseconds(50)) }
        }
        let owners = try Self.cluster(backend).slotOwners
        #expect(recovered, "every key decided in Redis again: \(backend.breakerState), map \(owners)")
        #expect(try Self.cluster(backend).owner(of: slot) != .tcp(host: "127.0.0.1", port: primary))
        #expect(answered > 0)
    }

    /// A backend for a Cluster about to lose a node: the nodes left go on serving their slots
    /// (without `cluster-require-full-coverage no` the Cluster refuses every slot once the lost
    /// node is marked failed); a breaker opens after two failures and stays open; fail_closed.
    static func losingOneNode(_ cluster: RedisCluster, fast: Bool) async throws -> RedisBackend {
        for port in cluster.ports { _ = try cluster.cli(port, "CONFIG", "SET", "cluster-require-full-coverage", "no") }
        let backend = Self.backend(cluster) { settings in
            settings.fast = fast
            settings.syncInterval = .zero
            settings.timeout = .milliseconds(300)
            settings.breakerThreshold = 2
            settings.breakerCooldown = 60_000_000_000
            settings.degraded = .failClosed
        }
        try await Self.mapped(backend)
        return backend
    }

    @Test("one node of a Cluster gone: its slots' checks take on_failure, at once once its breaker opens; the other nodes' are still decided in Redis")
    func oneNodeDown() async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.stop() }
        let backend = try await Self.losingOneNode(cluster, fast: false)
        defer { backend.shutdown() }
        let limit = BoundLimit.rule("node-down", index: 0, spec: try Self.spec(1_000_000, 3_600 * Self.second))
        let keys = (0..<60).map { BatchCheck(key: Fingerprint.of(tenant: "t", key: "n\($0)"), limits: .single(limit), hits: 1, now: Self.start) }
        #expect(await RedisBackendTests.decide(backend, keys).allSatisfy(\.allowed))
        #expect(backend.decidedInRedis == 60)
        let lost = cluster.ports[0]
        var onLost: [BatchCheck] = [], elsewhere: [BatchCheck] = []
        for key in keys {
            if try cluster.owner(of: KeySlot.of(RedisBackend.keyName(key.key, limit))) == lost { onLost.append(key) } else { elsewhere.append(key) }
        }
        try #require(!onLost.isEmpty && !elsewhere.isEmpty, "keys on every node")
        cluster.servers[0].stop()
        // Until the lost node's breaker opens, its checks wait out the timeout (fail_closed:
        // denied); the other nodes' checks are answered by Redis all along.
        for round in 0..<3 {
            let before = backend.decidedInRedis
            let decisions = await RedisBackendTests.decide(backend, keys)
            for (key, decision) in zip(keys, decisions) {
                let lostKey = onLost.contains { $0.key == key.key }
                #expect(decision.allowed != lostKey, "round \(round): \(lostKey ? "lost" : "live") node's key: \(decision)")
            }
            #expect(backend.decidedInRedis - before == UInt64(elsewhere.count), "round \(round)")
        }
        #expect(backend.breakerState == "open" && backend.breakerNodes.open == 1, "\(backend.breakerNodes)")
        // The lost node's checks are now answered at once, without asking it.
        let started = ContinuousClock.now
        let lostDecisions = await RedisBackendTests.decide(backend, onLost)
        #expect(ContinuousClock.now - started < .milliseconds(150), "well within the 300 ms timeout")
        #expect(lostDecisions.allSatisfy { !$0.allowed })
        let before = backend.decidedInRedis
        #expect(await RedisBackendTests.decide(backend, elsewhere).allSatisfy(\.allowed))
        #expect(backend.decidedInRedis - before == UInt64(elsewhere.count))
    }

    @Test("fast mode, one node of a Cluster gone: the others' keys keep syncing; the lost node's take on_failure once its breaker opens")
    func fastModeOneNodeDown() async throws {
        let cluster = try await RedisCluster.start()
        defer { cluster.stop() }
        let backend = try await Self.losingOneNode(cluster, fast: true)
        defer { backend.shutdown() }
        let limit = BoundLimit.rule("fast-node-down", index: 0, spec: try Self.spec(1_000_000, 3_600 * Self.second))
        let keys = (0..<30).map { Fingerprint.of(tenant: "t", key: "fd\($0)") }
        let lost = cluster.ports[0]
        let onLost = try Set(keys.filter { try cluster.owner(of: KeySlot.of(RedisBackend.keyName($0, limit))) == lost })
        try #require(!onLost.isEmpty && onLost.count < keys.count, "keys on every node")
        func checkAll(_ now: Int64) -> [Bool] {
            keys.map { key in
                var item = BatchCheck(key: key, limits: .single(limit), hits: 1, now: now)
                return withUnsafePointer(to: &item) { backend.check($0) }.allowed
            }
        }
        #expect(checkAll(Self.start).allSatisfy { $0 })
        try await backend.sync(now: Self.start).get()
        #expect(backend.fast.pending.isEmpty && backend.fast.syncs.load(ordering: .relaxed) == 1)
        cluster.servers[0].stop()
        // Each round: every key checked (decided here), then a sync. The lost node's entries
        // stay pending; the others' are synced every time.
        for round in 1...4 {
            let now = Self.start + Int64(round) * Self.second
            let allowed = checkAll(now)
            try await backend.sync(now: now).get()
            #expect(backend.fast.syncs.load(ordering: .relaxed) == UInt64(1 + round), "round \(round): the other nodes synced")
            #expect(backend.fast.pending.count == onLost.count, "round \(round): only the lost node's keys wait")
            if round >= 4 {
                // Two failed syncs opened its breaker (round 2); from then its keys take fail_closed.
                for (key, ok) in zip(keys, allowed) { #expect(ok != onLost.contains(key), "round \(round)") }
            }
        }
        #expect(backend.breakerNodes.open == 1 && backend.breakerState == "open")
    }

    @Test("a Cluster whose nodes are all gone: checks take the on_failure path at once, never hang")
    func clusterDown() async throws {
        let cluster = try await RedisCluster.start()
        let backend = Self.backend(cluster) { settings in
            settings.timeout = .milliseconds(200)
            settings.degraded = .failClosed
        }
        defer { backend.shutdown() }
        try await Self.mapped(backend)
        let limit = BoundLimit.rule("down", index: 0, spec: try Self.spec(5, 3_600 * Self.second))
        let check = BatchCheck(key: Fingerprint.of(tenant: "t", key: "x"), limits: .single(limit), hits: 1, now: Self.start)
        #expect(await RedisBackendTests.decide(backend, [check])[0].allowed)
        cluster.stop()
        let started = ContinuousClock.now
        for _ in 0..<20 {
            let decision = await RedisBackendTests.decide(backend, [check])[0]
            #expect(!decision.allowed && decision.limit == 0, "fail_closed answers: \(decision)")
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(backend.decidedDegraded == 20)
    }
}

/// Counts the load's checks from many tasks.
final class Counts: @unchecked Sendable {
    let lock = NSLock()
    var allowedCount = 0, totalCount = 0

    func add(allowed: Int, total: Int) {
        lock.withLock {
            allowedCount += allowed
            totalCount += total
        }
    }

    var allowed: Int { lock.withLock { allowedCount } }
    var total: Int { lock.withLock { totalCount } }
}

/// A flag set until cleared, read from many tasks.
final class ManagedAtomicFlag: @unchecked Sendable {
    let lock = NSLock()
    var value = true

    var isSet: Bool { lock.withLock { value } }
    func clear() { lock.withLock { value = false } }
}
