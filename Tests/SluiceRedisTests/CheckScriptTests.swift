import NIOCore
import NIOPosix
import SluiceCore
import SluiceTestKit
import Testing
@testable import SluiceRedis

/// The check script against the local table: the same checks at the same times give the same
/// verdicts. Times are whole milliseconds and each GCRA period divides by its limit to the
/// microsecond, where both are exact; retry and reset times of the other algorithms may differ
/// by under a microsecond (the script rounds up in microseconds, the table in nanoseconds).
@Suite("The check script against the local table", .enabled(if: RedisServer.installed))
struct CheckScriptTests {
    static let second: Int64 = 1_000_000_000

    /// Named rules: one limit of each algorithm, and rules of two and three limits.
    static let rules: [(String, [LimitSpec])] = {
        func spec(_ limit: UInt64, _ period: Int64, burst: UInt64 = 0, _ algorithm: Algorithm) -> LimitSpec {
            try! LimitSpec(limit: limit, period: period, burst: burst, algorithm: algorithm)
        }
        return [
            ("gcra", [spec(10, second, burst: 4, .gcra)]),
            ("token-bucket", [spec(5, second, burst: 3, .tokenBucket)]),
            ("token-bucket-odd", [spec(3, 7 * second / 10, .tokenBucket)]),
            ("sliding-window", [spec(6, 2 * second, .slidingWindow)]),
            ("fixed-window", [spec(4, second, .fixedWindow)]),
            ("burst-and-sustained", [spec(20, second, burst: 5, .gcra), spec(30, 5 * second, .fixedWindow)]),
            ("three", [spec(4, second, .slidingWindow), spec(8, 3 * second, burst: 6, .tokenBucket), spec(50, 60 * second, burst: 10, .gcra)]),
            ("concurrency", [spec(5, 2 * second, .concurrency)]),
            ("rate-and-concurrency", [spec(10, second, burst: 4, .gcra), spec(3, 3 * second, .concurrency)]),
        ]
    }()

    /// With an hour of slack: the test's clock runs ahead of the server's, which expires keys.
    static func arguments(for specs: [LimitSpec], hits: UInt64, nowMicros: Int64, slackMs: Int64 = 3_600_000, lease: UInt64 = 1)
        -> [RESPArgument] {
        [.integer(nowMicros), .integer(Int64(hits)), .integer(slackMs)] + limits(specs, lease: lease)
    }

    /// Each limit's four values; a concurrency limit's lease id in the burst's place.
    static func limits(_ specs: [LimitSpec], lease: UInt64) -> [RESPArgument] {
        specs.flatMap { spec -> [RESPArgument] in
            [.integer(Int64(spec.algorithm.rawValue)), .integer(Int64(spec.limit)), .integer(spec.period / 1_000),
             spec.algorithm == .concurrency ? .string(String(lease)) : .integer(Int64(spec.burst))]
        }
    }

    @Test("random checks over each rule, at whole milliseconds, get the local table's verdicts", arguments: rules.map(\.0))
    func sameVerdicts(rule: String) async throws {
        let specs = try #require(Self.rules.first { $0.0 == rule }?.1)
        let server = try await RedisServer.start()
        defer { server.stop() }
        let redis = try await RedisConnection.connect(to: .unix(path: server.socket), on: MultiThreadedEventLoopGroup.singleton.next()).get()
        defer { _ = redis.close() }
        let table = LimiterTable(shardCount: 1, maxEntries: 10_000)
        let limits = specs.enumerated().map { BoundLimit.rule(rule, index: $0.offset, spec: $0.element) }
        var random = SeededGenerator(seed: UInt64(rule.utf8.count) * 7919)
        var now: Int64 = 1_767_225_600_000 * 1_000_000
        var denied = 0, allowed = 0
        for step in 0..<600 {
            now += Int64(random.next() % 400) * 1_000_000
            let key = "k\(random.next() % 3)"
            let hits = [0, 1, 1, 1, 2, 3, 7][Int(random.next() % 7)]
            let local = table.check(key: Fingerprint.of(tenant: "", key: key), limits: limits, hits: UInt64(hits), now: now)
            let keys: [RESPArgument] = specs.indices.map { .string("sluice:{\(rule):\(key)}:\($0)") }
            let command = RESPCommand(["EVAL", .string(CheckScript.source), .integer(Int64(keys.count))] + keys
                                      + Self.arguments(for: specs, hits: UInt64(hits), nowMicros: now / 1_000,
                                                       lease: UInt64.max - UInt64(step)))
            let reply = try await redis.send(command, deadline: .now() + .seconds(5)).get()
            let fields = try #require(reply.elements?.compactMap { $0.integer }, "\(reply)")
            try #require(fields.count == 8, "\(reply)")
            let context = "step \(step), \(key), \(hits) hits: local \(local), script \(fields)"
            #expect(fields[0] == (local.allowed ? 1 : 0), "\(context)")
            #expect(fields[1] == Int64(local.reason.rawValue), "\(context)")
            #expect(fields[2] == Int64(local.limitIndex), "\(context)")
            #expect(fields[3] == Int64(local.limit), "\(context)")
            #expect(fields[4] == Int64(local.remaining), "\(context)")
            #expect(abs(fields[5] * 1_000 - local.resetAfter) < 1_000, "\(context)")
            #expect(abs(fields[6] * 1_000 - local.retryAfter) < 1_000, "\(context)")
            #expect(fields[7] == now / 1_000)
            if local.allowed { allowed += 1 } else { denied += 1 }
        }
        // The sequence exercises both verdicts.
        #expect(allowed > 50 && denied > 50, "allowed \(allowed), denied \(denied)")
    }

    @Test("the batch script decides checks in chunks exactly as one call each would, a key checked twice in a chunk included",
          arguments: rules.map(\.0))
    func batchMatchesSingle(rule: String) async throws {
        let specs = try #require(Self.rules.first { $0.0 == rule }?.1)
        let server = try await RedisServer.start()
        defer { server.stop() }
        let redis = try await RedisConnection.connect(to: .unix(path: server.socket), on: MultiThreadedEventLoopGroup.singleton.next()).get()
        defer { _ = redis.close() }
        var random = SeededGenerator(seed: UInt64(rule.utf8.count) * 104_729)
        var now: Int64 = 1_767_225_600_000 * 1_000
        var checks: [(key: String, check: CheckScript.Check)] = []
        for step in 0..<400 {
            now += Int64(random.next() % 300) * 1_000
            let key = "k\(random.next() % 3)"
            let hits = Int64([0, 1, 1, 1, 2, 3, 7][Int(random.next() % 7)])
            let limits = Self.limits(specs, lease: UInt64.max - UInt64(step))
            checks.append((key, CheckScript.Check(keys: [], nowMicros: now, hits: hits, limits: limits)))
        }
        // The same checks, once a call each (keys "single:…") and in chunks of 1 to 40 (keys
        // "batch:…"): every reply the same.
        func keyed(_ prefix: String, _ entry: (key: String, check: CheckScript.Check)) -> CheckScript.Check {
            var check = entry.check
            check.keys = specs.indices.map { .string("\(prefix):{\(rule):\(entry.key)}:\($0)") }
            return check
        }
        var single: [RESPValue] = []
        for entry in checks {
            let call = CheckScript.call(keyed("single", entry), slackMs: 3_600_000)
            single.append(try await redis.send(RESPCommand(["EVAL", .string(CheckScript.source), .integer(Int64(call.keys.count))] + call.keys
                                                           + call.arguments), deadline: .now() + .seconds(5)).get())
        }
        var batched: [RESPValue] = []
        var start = 0
        while start < checks.count {
            let end = min(checks.count, start + 1 + Int(random.next() % 40))
            let call = CheckScript.batchCall(checks[start..<end].map { keyed("batch", $0) }, slackMs: 3_600_000)
            let reply = try await redis.send(RESPCommand(["EVAL", .string(CheckScript.batchSource), .integer(Int64(call.keys.count))]
                                                         + call.keys + call.arguments), deadline: .now() + .seconds(5)).get()
            let replies = try #require(reply.elements, "\(reply)")
            try #require(replies.count == end - start)
            batched += replies
            start = end
        }
        #expect(batched == single)
        #expect(single.allSatisfy { $0.elements?.count == 8 })
        // Both verdicts occur.
        #expect(Set(single.compactMap { $0.elements?.first?.integer }) == [0, 1])
    }

    @Test("with no time given the script takes the server's TIME, and keys expire when their state has recovered")
    func serverTime() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let redis = try await RedisConnection.connect(to: .unix(path: server.socket), on: MultiThreadedEventLoopGroup.singleton.next()).get()
        defer { _ = redis.close() }
        // One more hit every 6 minutes, burst 2: the third check is denied however slow the machine.
        let spec = try LimitSpec(limit: 10, period: 3_600 * Self.second, burst: 2)
        func check() async throws -> [Int64] {
            let command = RESPCommand(["EVAL", .string(CheckScript.source), 1, "sluice:{t}:0"] + Self.arguments(for: [spec], hits: 1, nowMicros: 0, slackMs: 0))
            let reply = try await redis.send(command, deadline: .now() + .seconds(30)).get()
            return try #require(reply.elements?.compactMap { $0.integer })
        }
        let first = try await check(), second = try await check(), third = try await check()
        #expect(first[0] == 1 && second[0] == 1 && third[0] == 0, "burst 2: \(first) \(second) \(third)")
        let timeReply = try await redis.send(RESPCommand("TIME"), deadline: .now() + .seconds(30)).get()
        let time = try #require(timeReply.elements?.compactMap { $0.string })
        let serverNow = Int64(time[0])! * 1_000_000 + Int64(time[1])!
        // The script's time is the server's: just before its TIME, not 0 and not the caller's.
        #expect(third[7] <= serverNow && serverNow - third[7] < 30_000_000, "script \(third[7]), server \(serverNow)")
        #expect(first[7] <= second[7] && second[7] <= third[7])
        // The key lives as long as its state matters: under two emission intervals (12 minutes).
        let ttlReply = try await redis.send(RESPCommand("PTTL", "sluice:{t}:0"), deadline: .now() + .seconds(30)).get()
        let ttl = try #require(ttlReply.integer)
        #expect(ttl > 0 && ttl <= 720_001, "\(ttl)")
    }

    @Test("an unknown algorithm is an error reply naming it, and writes nothing")
    func unknownAlgorithm() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let redis = try await RedisConnection.connect(to: .unix(path: server.socket), on: MultiThreadedEventLoopGroup.singleton.next()).get()
        defer { _ = redis.close() }
        let reply = try await redis.send(RESPCommand("EVAL", .string(CheckScript.source), 1, "k", 0, 1, 0, 9, 5, 1_000_000, 5),
                                         deadline: .now() + .seconds(5)).get()
        #expect(reply.errorMessage?.contains("unknown algorithm 9") == true, "\(reply)")
        #expect(try await redis.send(RESPCommand("DBSIZE"), deadline: .now() + .seconds(5)).get() == .integer(0))
    }
}
