import Foundation
import SluiceClient
import SluiceConfiguration
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
          api:
            limits:
              - { limit: 100, period: 1m, burst: 4 }
              - { limit: 6, period: 1h, algorithm: fixed_window }
        """
    }

    @Test("a limit of 10 holds across two daemons: 10 of 30 checks allowed, wherever they land")
    func sharedAcrossDaemons() async throws {
        let redis = try RedisServer()
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
                #expect(backend.decidedInRedis == 23 && backend.decidedDegraded == 0)
            }
        }
    }

    @Test("with Redis gone, a daemon keeps answering every check: each decides its share of the limit locally")
    func degradedLocal() async throws {
        let redis = try RedisServer()
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
}
