import SluiceConfiguration
import SluiceCore
import Testing

@Suite("Configuration: backend and redis")
struct RedisConfigurationTests {
    static func failure(_ yaml: String) -> String {
        do {
            _ = try ConfigurationLoader.parse(yaml, source: "test.yaml")
            return "no error"
        } catch {
            return error.description
        }
    }

    @Test("backend defaults to local; redis: reads addresses, timeouts, policies and clocks; changing them needs a restart")
    func reads() throws {
        #expect(try ConfigurationLoader.parse("", source: "t").backend == .local)
        let configuration = try ConfigurationLoader.parse("""
            backend: redis
            redis: { url: "redis://10.0.0.5:6380", password: s3cret, username: sluice, connections: 4, timeout: 50ms,
                     on_failure: fail_closed, expected_daemons: 3, clock: daemon, max_pending: 500 }
            """, source: "t")
        #expect(configuration.backend == .redis)
        let redis = configuration.redis
        #expect(redis.address == .tcp(host: "10.0.0.5", port: 6380))
        #expect(redis.password == "s3cret" && redis.username == "sluice")
        #expect(redis.connections == 4 && redis.timeout == 50_000_000 && redis.maxPending == 500)
        #expect(redis.onFailure == .failClosed && redis.expectedDaemons == 3 && redis.daemonClock)
        #expect(try ConfigurationLoader.parse("redis: { url: \"redis://cache\" }", source: "t").redis.address == .tcp(host: "cache", port: 6379))
        #expect(redis.batchWindow == 0 && redis.writesInFlight == 1 && redis.maxBatch == 128, "the defaults")
        #expect(try ConfigurationLoader.parse("redis: { writes_in_flight: 4 }", source: "t").redis.writesInFlight == 4)
        #expect(redis.mode == .exact && redis.syncInterval == 5_000_000 && redis.checksPerCall == 64 && redis.denialCacheSize == 100_000)
        let fast = try ConfigurationLoader.parse("redis: { mode: fast, sync_interval: 2ms, checks_per_call: 1, deny_cache_size: 0 }",
                                                 source: "t").redis
        #expect(fast.mode == .fast && fast.syncInterval == 2_000_000 && fast.checksPerCall == 1 && fast.denialCacheSize == 0)
        #expect(fast.syncMaxEntries == 4_096, "the default")
        #expect(try ConfigurationLoader.parse("redis: { sync_max_entries: 1000 }", source: "t").redis.syncMaxEntries == 1_000)
        let batching = try ConfigurationLoader.parse("redis: { batch_window: 500us, max_batch: 64 }", source: "t").redis
        #expect(batching.batchWindow == 500_000 && batching.maxBatch == 64)
        #expect(try ConfigurationLoader.parse("redis: { batch_window: 0 }", source: "t").redis.batchWindow == 0)
        #expect(try ConfigurationLoader.parse("redis: { url: \"redis://[::1]:7000\" }", source: "t").redis.address == .tcp(host: "::1", port: 7000))
        #expect(try ConfigurationLoader.parse("redis: { url: \"unix:///run/redis.sock\" }", source: "t").redis.address == .unix(path: "/run/redis.sock"))
        let cluster = try ConfigurationLoader.parse("redis: { cluster: [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2\"] }", source: "t").redis
        #expect(cluster.cluster == [.tcp(host: "10.0.0.1", port: 7000), .tcp(host: "10.0.0.2", port: 6379)])
        #expect(configuration.redis.cluster.isEmpty, "one server unless redis.cluster names nodes")
        let modes = try ConfigurationLoader.parse("redis: { mode: fast }\nrules: { a: { limit: 1, period: 1s, mode: exact }, b: { limit: 1, period: 1s, mode: fast } }",
                                                  source: "t")
        #expect(modes.rules["a"]?.mode == .exact && modes.rules["b"]?.mode == .fast && modes.decidesExactly)
        #expect(modes.modeExceptions == Set(modes.rules["a"]?.limits.map(\.identity) ?? []), "b's mode is redis.mode's: no exception")
        let allFast = try ConfigurationLoader.parse("backend: redis\nredis: { mode: fast }\nrules: { a: { limit: 1, period: 1s } }", source: "t")
        #expect(!allFast.decidesExactly)
        let madeExact = try ConfigurationLoader.parse("backend: redis\nredis: { mode: fast }\nrules: { a: { limit: 1, period: 1s, mode: exact } }",
                                                      source: "t")
        #expect(allFast.reloadPlan(applying: madeExact).report.needsRestart.contains("rules.*.mode"),
                "a daemon whose every rule was fast answers at once: an exact rule needs a restart")
        #expect(!madeExact.reloadPlan(applying: allFast).report.needsRestart.contains("rules.*.mode"), "it ran syncs: fast mode is there")
        let allExact = try ConfigurationLoader.parse("backend: redis\nrules: { a: { limit: 1, period: 1s } }", source: "t")
        let madeFast = try ConfigurationLoader.parse("backend: redis\nrules: { a: { limit: 1, period: 1s, mode: fast } }", source: "t")
        #expect(allExact.reloadPlan(applying: madeFast).report.needsRestart.contains("rules.*.mode"),
                "a daemon whose every rule was exact runs no syncs: a fast rule needs a restart")
        let perRule = try ConfigurationLoader.parse("rules: { a: { limit: 1, period: 1s, backend: redis }, b: { limit: 1, period: 1s } }", source: "t")
        #expect(perRule.backend == .local && perRule.usesRedis && perRule.rules["a"]?.backend == .redis && perRule.rules["b"]?.backend == nil)
        #expect(perRule.backendExceptions == Set(perRule.rules["a"]?.limits.map(\.identity) ?? []))
        #expect(try ConfigurationLoader.parse("", source: "t").reloadPlan(applying: perRule).report.needsRestart.contains("rules.*.backend"),
                "no Redis connection to move a rule to without a restart")
        let (_, report) = try ConfigurationLoader.parse("", source: "t").reloadPlan(applying: configuration)
        #expect(report.needsRestart.contains("backend") && report.needsRestart.contains("redis"))
    }

    @Test("bad values name the key and say what is expected", arguments: [
        ("backend: memcached", "expected local or redis"),
        ("redis: { url: \"http://x\" }", "expected redis://host:port or unix:///path.sock"),
        ("redis: { url: \"redis://:pw@host\" }", "put the password in redis.password"),
        ("redis: { url: \"redis://host:99999\" }", "expected a port from 1 to 65535"),
        ("redis: { url: \"unix://relative.sock\" }", "expected unix:///absolute/path.sock"),
        ("redis: { on_failure: maybe }", "expected local, fail_open or fail_closed"),
        ("redis: { clock: wall }", "expected redis or daemon"),
        ("redis: { timeout: 0 }", "redis.timeout"),
        ("redis: { batch_window: 20ms }", "redis.batch_window"),
        ("redis: { conections: 2 }", "conections"),
        ("redis: { mode: eventual }", "expected exact or fast"),
        ("rules: { a: { limit: 1, period: 1s, backend: memcached } }", "rules.a.backend"),
        ("redis: { sync_interval: 20s }", "redis.sync_interval"),
        ("redis: { checks_per_call: 0 }", "redis.checks_per_call"),
        ("redis: { deny_cache_size: -1 }", "redis.deny_cache_size"),
        ("redis: { cluster: [] }", "expected from 1 to 1000 node addresses"),
        ("redis: { sync_max_entries: 0 }", "redis.sync_max_entries"),
        ("redis: { writes_in_flight: -1 }", "redis.writes_in_flight"),
        ("rules: { a: { limit: 1, period: 1s, mode: eventual } }", "rules.a.mode"),
        ("redis: { cluster: \"redis://a:7000\" }", "expected a list"),
        ("redis: { cluster: [\"redis://a:7000\", \"http://b\"] }", "redis.cluster[1]"),
        ("redis: { url: \"redis://a\", cluster: [\"redis://b:7000\"] }", "either redis.url (one server) or redis.cluster"),
    ])
    func refused(yaml: String, expected: String) {
        let message = Self.failure(yaml)
        #expect(message.contains(expected), "\(yaml): \(message)")
    }
}
