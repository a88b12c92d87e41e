// sluice-bench: the load harness. Drives a Sluice daemon (or Redis with a GCRA script, or a
// length-prefixed echo server) over a Unix socket or TCP, closed or open loop, and reports
// throughput and HdrHistogram latency. docs/BENCHMARKS.md shows how each figure was made.
import ArgumentParser
import Foundation
import SluiceClient
import SluiceCore
import SluiceLoad
import SluiceProto

@main
struct SluiceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice-bench",
        abstract: "Load-test a Sluice daemon (or Redis with a GCRA Lua script, or an echo server).",
        discussion: """
        Closed loop by default: each connection keeps --depth requests in flight. With --rate the
        loop is open: requests leave on schedule whatever the answers do, and latency is measured
        from each request's intended send time, so a stall shows in the percentiles instead of
        hiding in fewer requests (no coordinated omission).

        Examples:
          sluice-bench -e unix:/tmp/sluice.sock -c 50 -d 16 --duration 10s
          sluice-bench --batch 100 --keys 1000000 --distribution zipf:1.1 --duration 10s --json
          sluice-bench --rate 20000 --duration 30s --rule default
          sluice-bench --replay ../shared/traces/dev-sample.csv.gz --pace 60 --limit 20/1s
          sluice-bench --target redis -e unix:/tmp/redis.sock --redis-sha SHA --duration 10s
        """,
        version: SluiceVersion.current
    )

    @Option(name: [.short, .long], help: "unix:PATH, a path, HOST:PORT or [IPv6]:PORT.")
    var endpoint = "unix:/tmp/sluice.sock"

    @Option(help: "sluice, redis (EVALSHA of scripts/gcra.lua), redis-incr (envoy ratelimit's pipelined INCRBY + EXPIRE, a fixed window), http (Sluice's POST /v1/check, one check a request), grpc (Envoy's ShouldRateLimit as raw HTTP/2 frames, one descriptor a call; --domain, --descriptor-key) or echo (a length-prefixed echo server).")
    var target = "sluice"

    @Option(help: "The SHA1 of the GCRA script loaded into Redis (redis-cli SCRIPT LOAD).")
    var redisSHA: String?

    @Option(name: [.short, .long], help: "Connections.") var connections = 50
    @Option(name: [.short, .long], help: "Requests in flight per connection at most (pipeline depth).") var depth = 1
    @Option(name: [.short, .long], help: "Checks per request (1-1000; Sluice only).") var batch = 1
    @Option(help: "Client threads (each runs an epoll loop over its share of the connections).") var threads = 1

    @Option(help: "Distinct keys.") var keys = 100_000
    @Option(help: "uniform, or zipf:EXPONENT (e.g. zipf:1.1).") var distribution = "uniform"
    @Option(help: "Hits per check (unset: the daemon's default of 1; 0 peeks).") var hits: UInt64?
    @Option(help: "Check against this configured rule instead of an inline limit.") var rule: String?
    @Option(help: "Inline limit as COUNT/PERIOD, e.g. 100/1s, 10000/1d.") var limit = "100/1s"
    @Option(help: "Inline burst (0: the limit).") var burst: UInt64 = 0
    @Option(help: "Inline algorithm: gcra, token_bucket, sliding_window, fixed_window, concurrency.") var algorithm = "gcra"
    @Option(help: "Tenant of every check (empty: the default tenant).") var tenant = ""

    @Option(help: "How long to send, e.g. 10s, 500ms, 2m.") var duration: String?
    @Option(help: "Requests to send in all.") var requests: Int?
    @Option(help: "Open loop: requests per second in all.") var rate: Double?
    @Option(help: "Seconds at the start whose answers are not counted.") var warmup: Double = 0
    @Option(help: "Seed for the key stream.") var seed: UInt64 = 1

    @Option(help: "Replay a trace (shared/traces/FORMAT.md; .csv or .csv.gz).") var replay: String?
    @Option(help: "Replay pace: recorded, max, or a speed-up factor such as 60.") var pace = "recorded"
    @Option(help: "What a trace row checks against: subject, ip or subject-route.") var replayKey = "subject"
    @Flag(help: "Send each row's tenant as the check's tenant (the daemon must know every tenant).")
    var replayTenants = false
    @Option(help: "Replay at most this many rows.") var replayRows: Int?

    @Option(help: "Upstream mode: HOST:PORT of a service to call after each allowed check (docs/ADAPTIVE.md). Needs --rule and --duration.")
    var upstream: String?
    @Option(help: "Upstream mode: the rate, rising linearly over --duration, as FROM:TO requests per second.") var ramp = "500:5000"
    @Option(help: "Upstream mode: tiers and their shares of the traffic, e.g. vip:0.1,best_effort:0.9 (subjects are TIER-N).")
    var tiers = "vip:0.1,best_effort:0.9"
    @Option(help: "Upstream mode: subjects per tier.") var subjectsPerTier = 50
    @Option(help: "Upstream mode: how long a request waits for the upstream, e.g. 1s.") var upstreamTimeout = "1s"
    @Option(help: "Upstream mode: write each second's figures per tier here (JSON lines).") var timeline: String?

    @Option(help: "epoll (the default: raw sockets, fastest), nio (the Swift client: speaks TLS; compare plain and TLS with it) or grpc (Envoy's ShouldRateLimit calls, grpc-swift-2).")
    var engine = "epoll"
    @Option(help: "The nio engine: TLS, trusting this authority (PEM).") var tlsCa: String?
    @Option(help: "An API token each connection presents first (a listener that requires one).") var token: String?
    @Option(help: "The grpc engine: the Envoy domain of every call.") var domain = "bench"
    @Option(help: "The grpc engine: the descriptor entry's key (its value is the random key).") var descriptorKey = "user"

    @Flag(help: "Print the summary as JSON on standard output.") var json = false
    @Flag(help: "No progress line, even on a terminal.") var quiet = false

    mutating func run() throws {
        if let upstream {
            try runUpstream(upstream)
            return
        }
        guard let parsedEndpoint = LoadEndpoint(endpoint) else {
            throw ValidationError("--endpoint \(endpoint): expected unix:PATH, a path, HOST:PORT or [IPv6]:PORT")
        }
        let targetProtocol: TargetProtocol
        switch target {
        case "sluice": targetProtocol = .sluice
        case "echo": targetProtocol = .echo
        case "http": targetProtocol = .http
        case "grpc": targetProtocol = .grpc(domain: domain, descriptorKey: descriptorKey)
        case "redis":
            guard let sha = redisSHA, sha.count == 40 else {
                throw ValidationError("--target redis needs --redis-sha (40 hex digits, from redis-cli SCRIPT LOAD)")
            }
            targetProtocol = .redis(sha: sha)
        case "redis-incr":
            targetProtocol = .redisIncrement(limit: try Self.parseLimit(limit).0)
        default: throw ValidationError("--target must be sluice, http, grpc, redis, redis-incr or echo")
        }
        guard (1...1000).contains(batch) else { throw ValidationError("--batch must be 1 to 1000") }
        if case .grpc = targetProtocol, token != nil {
            throw ValidationError("--target grpc sends no token: use a listener with auth: none, or --engine grpc --token")
        }
        let (count, periodMs) = try Self.parseLimit(limit)
        let spec = Sluice_V1_Limit.with {
            $0.limit = count
            $0.periodMs = periodMs
            $0.burst = burst
            $0.algorithm = Self.algorithms[algorithm] ?? .unspecified
        }
        guard Self.algorithms[algorithm] != nil else {
            throw ValidationError("--algorithm must be one of \(Self.algorithms.keys.sorted().joined(separator: ", "))")
        }
        if engine == "grpc" {
            guard let duration else { throw ValidationError("--engine grpc needs --duration") }
            let seconds = try Self.parseDuration(duration)
            let target: Endpoint
            do { target = try Endpoint(parsing: endpoint) } catch { throw ValidationError("--endpoint \(endpoint): \(error)") }
            var settings = GRPCEngine.Settings(host: "127.0.0.1", port: 0, unixPath: nil, connections: connections, depth: depth, keys: keys,
                                               seconds: seconds, warmup: warmup, domain: domain, descriptorKey: descriptorKey, token: token, rate: rate)
            switch target {
            case .unix(let path): settings.unixPath = path
            case .tcp(let host, let port): (settings.host, settings.port) = (host, port)
            }
            let summary = try GRPCEngine.run(settings)
            print(String(decoding: try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys]), as: UTF8.self))
            return
        }
        if engine == "nio" || tlsCa != nil {
            guard engine == "nio" else { throw ValidationError("--tls-ca needs --engine nio") }
            guard let duration else { throw ValidationError("--engine nio needs --duration") }
            let seconds = try Self.parseDuration(duration)
            let target: Endpoint
            do { target = try Endpoint(parsing: endpoint) } catch { throw ValidationError("--endpoint \(endpoint): \(error)") }
            let summary = try NIOEngine.run(.init(endpoint: target, tls: tlsCa.map { ClientTLS(authority: $0) }, token: token,
                                                  connections: connections, depth: depth, batch: batch, keys: keys, seconds: seconds,
                                                  warmup: warmup, tenant: tenant, rule: rule, limit: spec))
            if json {
                print(String(decoding: try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print(summary)
            }
            return
        }
        let redisArguments = RedisGCRAArguments(burst: burst == 0 ? count : burst, count: count, periodMs: periodMs)
        let encoder = RequestEncoder(targetProtocol: targetProtocol)
        func makeCheck(key: String, tenant: String, subject: String, hits: UInt64?, nowMs: UInt64) -> Sluice_V1_Check {
            Sluice_V1_Check.with {
                $0.tenant = tenant
                $0.key = key
                $0.subject = subject
                $0.nowMs = nowMs
                if let hits { $0.hits = hits }
                if let rule = self.rule { $0.rule = rule } else { $0.limit = spec }
            }
        }

        let source: LoadSource
        var describedSource: [String: String] = [:]
        if let replay {
            let rows = try TraceReader.read(path: replay, limit: replayRows)
            guard let first = rows.first else { throw ValidationError("\(replay) holds no rows") }
            guard let keyMode = ReplayKey(rawValue: replayKey) else {
                throw ValidationError("--replay-key must be subject, ip or subject-route")
            }
            let replayPace: ReplayPace
            switch pace {
            case "recorded": replayPace = .recorded
            case "max": replayPace = .asFastAsPossible
            default:
                guard let factor = Double(pace), factor > 0 else { throw ValidationError("--pace must be recorded, max or a factor > 0") }
                replayPace = .scaled(factor)
            }
            var entries: [[UInt8]] = []
            entries.reserveCapacity(rows.count)
            var schedule: [[(offset: Int64, entry: Int32)]] = Array(repeating: [], count: connections)
            for row in rows {
                let key = switch keyMode {
                case .subject: row.subject
                case .ip: row.ip
                case .subjectRoute: row.subject + " " + row.route
                }
                let check = makeCheck(key: key, tenant: replayTenants ? row.tenant : "", subject: row.subject,
                                      hits: hits ?? row.cost, nowMs: UInt64(max(0, row.timestampMs)))
                // A subject's rows stay on one connection, so they arrive in trace order.
                // The project's stable hash, as the replay test uses (Swift's Hasher is seeded per process).
                var hasher = StableHasher()
                hasher.combine(row.subject)
                let connection = Int(hasher.finalize().low % UInt64(connections))
                schedule[connection].append((Int64(row.timestampMs - first.timestampMs) * 1_000_000, Int32(entries.count)))
                entries.append(try encoder.encodeEntry(check, redisArguments: redisArguments))
            }
            source = .replay(entries: EntryTable(entries), schedule: schedule, pace: replayPace)
            describedSource = ["replay": replay, "rows": String(rows.count), "pace": pace, "replay_key": replayKey]
        } else {
            let keyDistribution: KeyDistribution
            if distribution == "uniform" {
                keyDistribution = .uniform
            } else if distribution.hasPrefix("zipf"), let exponent = Double(distribution.dropFirst(5).isEmpty ? "1" : String(distribution.dropFirst(5))), exponent > 0 {
                keyDistribution = .zipf(exponent: exponent)
            } else {
                throw ValidationError("--distribution must be uniform or zipf:EXPONENT")
            }
            guard keys >= 1 else { throw ValidationError("--keys must be at least 1") }
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            let entries = try (0..<keys).map { index in
                try encoder.encodeEntry(makeCheck(key: "k\(index)", tenant: tenant, subject: "", hits: hits, nowMs: now),
                                        redisArguments: redisArguments)
            }
            source = .generated(entries: EntryTable(entries), sampler: KeySampler(count: keys, distribution: keyDistribution))
            describedSource = ["keys": String(keys), "distribution": distribution]
        }

        var plan = LoadPlan(endpoint: parsedEndpoint, targetProtocol: targetProtocol, source: source)
        plan.connections = connections
        plan.depth = depth
        plan.batch = batch
        plan.threads = threads
        plan.duration = try duration.map(Self.parseDuration)
        plan.requests = requests
        plan.rate = rate
        plan.warmup = warmup
        plan.seed = seed
        plan.token = token
        plan.progress = !quiet && isatty(2) != 0
        if replay == nil, plan.duration == nil, plan.requests == nil { plan.duration = 10 }
        let result = try LoadDriver.run(plan)

        let mode = plan.rate != nil || (replay != nil && pace != "max") ? "open" : "closed"
        if json {
            var summary: [String: Any] = [
                "target": target, "endpoint": parsedEndpoint.description, "connections": connections, "depth": depth,
                "batch": batch, "threads": threads, "loop": mode,
                "requests": result.requests, "decisions": result.decisions, "allowed": result.allowed,
                "denied": result.denied, "errors": result.errors, "unanswered": result.unanswered,
                "connection_errors": result.connectionErrors, "seconds": result.seconds,
                "requests_per_s": result.requestsPerSecond, "decisions_per_s": result.decisionsPerSecond,
                "latency_us": result.latencyMicroseconds,
            ]
            if let rate { summary["rate"] = rate }
            for (key, value) in describedSource { summary[key] = value }
            let data = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            let l = result.latencyMicroseconds
            print("""
            \(target) \(parsedEndpoint): \(connections) connections x depth \(depth), batch \(batch), \(mode) loop, \(String(format: "%.1f", result.seconds)) s
              \(result.requests) requests (\(Int(result.requestsPerSecond))/s), \(result.decisions) decisions (\(Int(result.decisionsPerSecond))/s)
              allowed \(result.allowed), denied \(result.denied), errors \(result.errors), unanswered \(result.unanswered), broken connections \(result.connectionErrors)
              latency us: p50 \(Self.f(l["p50"]))  p90 \(Self.f(l["p90"]))  p99 \(Self.f(l["p99"]))  p99.9 \(Self.f(l["p99.9"]))  max \(Self.f(l["max"]))  mean \(Self.f(l["mean"]))
            """)
        }
        if result.connectionErrors > 0 || result.requests == 0 { throw ExitCode(1) }
    }

    func runUpstream(_ upstream: String) throws {
        guard let address = LoadEndpoint(upstream), case .tcp(let host, let port) = address else {
            throw ValidationError("--upstream \(upstream): expected HOST:PORT")
        }
        let sluice: Endpoint
        do { sluice = try Endpoint(parsing: endpoint) } catch { throw ValidationError("--endpoint \(endpoint): \(error)") }
        guard let rule else { throw ValidationError("--upstream needs --rule (the rule naming the upstream's service)") }
        guard let duration else { throw ValidationError("--upstream needs --duration") }
        let rates = ramp.split(separator: ":").compactMap { Double($0) }
        guard rates.count == 2, rates.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw ValidationError("--ramp must be FROM:TO requests per second, both above 0 (e.g. 500:5000)")
        }
        var parsedTiers: [UpstreamRun.Tier] = []
        for part in tiers.split(separator: ",") {
            let pieces = part.split(separator: ":")
            guard pieces.count == 2, let share = Double(pieces[1]), share > 0 else {
                throw ValidationError("--tiers must be NAME:SHARE,... with shares above 0 (e.g. vip:0.1,best_effort:0.9)")
            }
            parsedTiers.append(.init(name: String(pieces[0]), share: share))
        }
        guard !parsedTiers.isEmpty else { throw ValidationError("--tiers names no tier") }
        guard subjectsPerTier > 0 else { throw ValidationError("--subjects-per-tier must be at least 1") }
        let run = UpstreamRun(sluice: sluice, upstreamHost: host, upstreamPort: port, rule: rule, tiers: parsedTiers,
                              subjectsPerTier: subjectsPerTier, rateFrom: rates[0], rateTo: rates[1],
                              duration: try Self.parseDuration(duration), timeout: try Self.parseDuration(upstreamTimeout),
                              timeline: timeline, seed: seed)
        let summary = try run.run()
        if json {
            let data = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("tier          offered  admitted        ok  timed_out      shed   limited  success%   p99_ms")
        let perTier = summary["tiers"] as? [String: [String: Any]] ?? [:]
        for tier in parsedTiers {
            let entry = perTier[tier.name] ?? [:]
            func count(_ key: String) -> String { String(describing: entry[key] ?? 0) }
            print(tier.name.padding(toLength: 12, withPad: " ", startingAt: 0),
                  [count("offered"), count("admitted"), count("ok"), count("timed_out"), count("shed"), count("limited")]
                    .map { String(repeating: " ", count: max(0, 9 - $0.count)) + $0 }.joined(separator: " "),
                  String(format: "%9.2f", entry["success_percent"] as? Double ?? 0),
                  String(format: "%8.1f", entry["p99_ms"] as? Double ?? 0))
        }
    }

    static func f(_ value: Double?) -> String { value.map { String(format: "%.1f", $0) } ?? "-" }

    static let algorithms: [String: Sluice_V1_Algorithm] = [
        "gcra": .gcra, "token_bucket": .tokenBucket, "sliding_window": .slidingWindow,
        "fixed_window": .fixedWindow, "concurrency": .concurrency,
    ]

    static func parseDuration(_ text: String) throws -> Double {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)), value > 0 { return value * scale }
        }
        if let value = Double(text), value > 0 { return value }
        throw ValidationError("duration \(text): expected e.g. 10s, 500ms, 2m")
    }

    static func parseLimit(_ text: String) throws -> (UInt64, UInt64) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let count = UInt64(parts[0]), count > 0 else {
            throw ValidationError("--limit \(text): expected COUNT/PERIOD, e.g. 100/1s")
        }
        let periodText = String(parts[1])
        if periodText.hasSuffix("d"), let days = Double(periodText.dropLast()) { return (count, UInt64(days * 86_400_000)) }
        return (count, UInt64(try parseDuration(periodText) * 1000))
    }
}
