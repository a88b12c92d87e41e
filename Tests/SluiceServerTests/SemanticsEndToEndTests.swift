import SluiceClient
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import Testing

/// Every semantic of the protocol, through a real daemon on a real socket (request clock, so time
/// is exact).
@Suite("Semantics end to end")
struct SemanticsEndToEndTests {
    static let rules = """
    rules:
      login:
        limits:
          - { limit: 10, period: 1s, burst: 3 }
          - { limit: 5, period: 1d }
      sliding: { limit: 4, period: 10s, algorithm: sliding_window }
      jobs: { limit: 2, period: 30s, algorithm: concurrency }
    tenants:
      acme:
        rules:
          login: { limit: 1, period: 1m }
    strict_tenants: true
    """

    @Test("bucket algorithms: exactly burst pass, the next waits period/limit, then one more passes",
          arguments: [Sluice_V1_Algorithm.gcra, .tokenBucket, .unspecified])
    func bucketSemantics(algorithm: Sluice_V1_Algorithm) async throws {
        try await TestDaemon.with { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let limit = WireLimit(limit: 10, periodMs: 1_000, burst: 4, algorithm: algorithm)
            for i in 0..<4 {
                let verdict = try await client.verdict(Make.check("k", limit: limit))
                #expect(verdict.allowed, "check \(i)")
                #expect(verdict.remaining == UInt64(3 - i))
            }
            let denied = try await client.verdict(Make.check("k", limit: limit))
            #expect(!denied.allowed)
            #expect(denied.retryAfterMs == 100)
            #expect(denied.reason == .overLimit)
            #expect(denied.algorithm == (algorithm == .unspecified ? .gcra : algorithm))
            let stillDenied = try await client.verdict(Make.check("k", limit: limit, nowMs: epochMs + 99))
            #expect(!stillDenied.allowed)
            let allowed = try await client.verdict(Make.check("k", limit: limit, nowMs: epochMs + 100))
            #expect(allowed.allowed)
            await client.close()
        }
    }

    @Test("fixed and sliding windows through the socket")
    func windows() async throws {
        try await TestDaemon.with(yaml: Self.rules) { daemon in
            let client = try await SluiceClient.connect(to: daemon.tcp)
            let fixed = WireLimit(limit: 3, periodMs: 60_000, algorithm: .fixedWindow)
            for _ in 0..<3 { #expect(try await client.verdict(Make.check("f", limit: fixed)).allowed) }
            let denied = try await client.verdict(Make.check("f", limit: fixed))
            #expect(!denied.allowed)
            #expect(denied.retryAfterMs == 60_000, "epochMs is on a minute boundary")
            #expect(try await client.verdict(Make.check("f", limit: fixed, nowMs: epochMs + 60_000)).allowed)

            for _ in 0..<4 { #expect(try await client.verdict(Make.check("s", rule: "sliding")).allowed) }
            let slidingDenied = try await client.verdict(Make.check("s", rule: "sliding", nowMs: epochMs + 12_500))
            // 2.5 s into the next window 75 % of 4 = 3 still count: one more fits, then none.
            #expect(slidingDenied.allowed)
            let second = try await client.verdict(Make.check("s", rule: "sliding", nowMs: epochMs + 12_500))
            #expect(!second.allowed)
            #expect(second.rule == "sliding")
            #expect(second.algorithm == .slidingWindow)
            await client.close()
        }
    }

    @Test("a rule with several limits decides them together and reports the tightest")
    func multiLimit() async throws {
        try await TestDaemon.with(yaml: Self.rules) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            for _ in 0..<3 { #expect(try await client.verdict(Make.check("u", rule: "login")).allowed) }
            let burstDenied = try await client.verdict(Make.check("u", rule: "login"))
            #expect(!burstDenied.allowed)
            #expect(burstDenied.limitIndex == 0)
            #expect(burstDenied.retryAfterMs == 100)
            // Two more after the burst refills use up the daily 5; the daily limit then decides.
            #expect(try await client.verdict(Make.check("u", rule: "login", nowMs: epochMs + 1_000)).allowed)
            let last = try await client.verdict(Make.check("u", rule: "login", nowMs: epochMs + 1_000))
            #expect(last.allowed)
            #expect(last.limitIndex == 1)
            #expect(last.remaining == 0)
            let dayDenied = try await client.verdict(Make.check("u", rule: "login", nowMs: epochMs + 2_000))
            #expect(!dayDenied.allowed)
            #expect(dayDenied.limitIndex == 1)
            #expect(dayDenied.limit == 5)
            #expect(dayDenied.retryAfterMs > 3_600_000)
            await client.close()
        }
    }

    @Test("tenants: their own rules shadow global ones; strict tenants refuse strangers")
    func tenants() async throws {
        try await TestDaemon.with(yaml: Self.rules) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await client.verdict(Make.check("u", rule: "login", tenant: "acme")).allowed)
            let second = try await client.verdict(Make.check("u", rule: "login", tenant: "acme"))
            #expect(!second.allowed, "acme's login rule allows 1 per minute")
            #expect(try await client.verdict(Make.check("u", rule: "login")).allowed, "the default tenant is separate")
            let stranger = try await client.send(Make.request(Make.check("u", rule: "login", tenant: "nobody")))
            #expect(stranger.error.code == .unknownTenant)
            #expect(stranger.error.message.contains("nobody"))
            await client.close()
        }
    }

    @Test("one batch mixing tenants, rules and inline limits: each check is decided by its own")
    func mixedBatch() async throws {
        try await TestDaemon.with(yaml: Self.rules) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let a = WireLimit(limit: 7, periodMs: 60_000), b = WireLimit(limit: 9, periodMs: 60_000)
            let answer = try await client.send(Make.request(
                Make.check("m", rule: "login", tenant: "acme"), Make.check("m", rule: "login"),
                Make.check("m", rule: "login", tenant: "acme"), Make.check("m", limit: a), Make.check("m", limit: b),
                Make.check("m", limit: b), Make.check("m", rule: "sliding"), Make.check("m", rule: "login")))
            let verdicts = answer.check.verdicts
            #expect(verdicts.map(\.limit) == [1, 10, 1, 7, 9, 9, 4, 10], "acme's login, the global login, inline 7 and 9, sliding")
            #expect(verdicts.map(\.allowed) == [true, true, false, true, true, true, true, true])
            #expect(verdicts.map(\.rule) == ["login", "login", "login", "", "", "", "sliding", "login"])
            await client.close()
        }
    }

    @Test("hits: unset means 1, 0 peeks, more than capacity is denied as such")
    func hits() async throws {
        try await TestDaemon.with { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let limit = WireLimit(limit: 5, periodMs: 60_000)
            let peek = try await client.verdict(Make.check("h", limit: limit, hits: 0))
            #expect(peek.allowed && peek.remaining == 5)
            #expect(try await client.verdict(Make.check("h", limit: limit)).remaining == 4)
            #expect(try await client.verdict(Make.check("h", limit: limit, hits: 0)).remaining == 4)
            #expect(try await client.verdict(Make.check("h", limit: limit, hits: 4)).remaining == 0)
            let huge = try await client.verdict(Make.check("h", limit: limit, hits: 6))
            #expect(!huge.allowed)
            #expect(huge.reason == .exceedsCapacity)
            await client.close()
        }
    }

    @Test("concurrency leases are acquired by check and returned by release")
    func leases() async throws {
        try await TestDaemon.with(yaml: Self.rules) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let a = try await client.verdict(Make.check("worker", rule: "jobs"))
            let b = try await client.verdict(Make.check("worker", rule: "jobs"))
            #expect(a.allowed && b.allowed && a.leaseID != b.leaseID && a.leaseID != 0)
            let full = try await client.verdict(Make.check("worker", rule: "jobs"))
            #expect(!full.allowed)
            #expect(full.retryAfterMs == 30_000)
            var release = Sluice_V1_ReleaseRequest()
            release.key = "worker"
            release.rule = "jobs"
            release.leaseID = a.leaseID
            release.nowMs = epochMs + 1
            var request = WireRequest()
            request.release = release
            #expect(try await client.send(request).release.released)
            #expect(try await client.send(request).release.released == false, "released once only")
            #expect(try await client.verdict(Make.check("worker", rule: "jobs", nowMs: epochMs + 2)).allowed)
            await client.close()
        }
    }

    @Test("invalid requests get an error with a stable code, the request id and the check index")
    func errors() async throws {
        try await TestDaemon.with(yaml: Self.rules, { $0.maxBatch = 3 }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            func error(_ request: WireRequest) async throws -> WireError {
                var request = request
                request.id = 4_242
                let response = try await client.send(request)
                #expect(response.id == 4_242)
                return response.error
            }
            let ok = Make.check("k", limit: WireLimit(limit: 1, periodMs: 1_000))
            #expect(try await error(Make.request(ok, Make.check("k", rule: "missing"))).code == .unknownRule)
            #expect(try await error(Make.request(ok, Make.check("k", rule: "missing"))).checkIndex == 1)
            #expect(try await error(Make.request(Make.check("", rule: "login"))).code == .invalidArgument)
            #expect(try await error(Make.request(Make.check("k"))).message.contains("neither a rule nor a limit"))
            #expect(try await error(Make.request(Make.check("k", limit: WireLimit(limit: 0, periodMs: 1_000)))).code == .invalidArgument)
            #expect(try await error(Make.request(Make.check("k", limit: WireLimit(limit: 1, periodMs: 0)))).code == .invalidArgument)
            #expect(try await error(Make.request(Make.check("k", limit: WireLimit(limit: 1, periodMs: 1_000), nowMs: 0))).message.contains("now_ms"))
            #expect(try await error(Make.request(ok, ok, ok, ok)).message.contains("max_batch"))
            #expect(try await error(WireRequest()).code == .unsupported)
            #expect(try await error(Make.request()).code == .invalidArgument)
            // Nothing above consumed anything: an invalid batch decides none of its checks.
            #expect(try await client.verdict(ok).allowed)
            await client.close()
        }
    }

    @Test("a batch of 1,000 checks is one round trip with verdicts in order")
    func batch() async throws {
        try await TestDaemon.with { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let limit = WireLimit(limit: 500, periodMs: 60_000, algorithm: .fixedWindow)
            var request = WireRequest()
            request.check.checks = (0..<1_000).map { _ in Make.check("batch", limit: limit) }
            let verdicts = try await client.send(request).check.verdicts
            #expect(verdicts.count == 1_000)
            #expect(verdicts.prefix(500).allSatisfy { $0.allowed })
            #expect(verdicts.suffix(500).allSatisfy { !$0.allowed })
            #expect(verdicts[499].remaining == 0)
            await client.close()
        }
    }

    @Test("ping echoes its payload; stats count what happened")
    func pingAndStats() async throws {
        try await TestDaemon.with { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            var ping = WireRequest()
            ping.ping.payload = .init([9, 8, 7])
            #expect(try await client.send(ping).ping.payload == .init([9, 8, 7]))
            _ = try await client.verdict(Make.check("a", limit: WireLimit(limit: 1, periodMs: 1_000)))
            _ = try await client.verdict(Make.check("a", limit: WireLimit(limit: 1, periodMs: 1_000)))
            var statsRequest = WireRequest()
            statsRequest.stats = .init()
            let stats = try await client.send(statsRequest).stats
            #expect(stats.checks == 2 && stats.allowed == 1 && stats.denied == 1)
            #expect(stats.entries == 1)
            #expect(stats.connectionsOpen == 1)
            #expect(stats.clock == "request")
            #expect(stats.version == SluiceVersion.current)
            await client.close()
        }
    }

    @Test("the monotonic clock ignores now_ms and still limits")
    func monotonicClock() async throws {
        try await TestDaemon.with(clock: .monotonic) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let limit = WireLimit(limit: 2, periodMs: 3_600_000)
            #expect(try await client.verdict(Make.check("m", limit: limit, nowMs: 0)).allowed)
            #expect(try await client.verdict(Make.check("m", limit: limit, nowMs: 1)).allowed)
            let denied = try await client.verdict(Make.check("m", limit: limit, nowMs: 99_999_999_999_999))
            #expect(!denied.allowed)
            #expect(denied.retryAfterMs > 1_700_000 && denied.retryAfterMs <= 1_800_000)
            await client.close()
        }
    }
}
