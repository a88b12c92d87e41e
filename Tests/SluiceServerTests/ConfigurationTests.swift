import Foundation
@testable import SluiceConfiguration
import SluiceCore
@testable import SluiceServer
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    func failure(_ yaml: String) -> String { Self.failure(yaml) }

    /// The message of the error parsing `yaml` gives (and that it is `invalid_configuration`).
    static func failure(_ yaml: String) -> String {
        do {
            _ = try ConfigurationLoader.parse(yaml, source: "sluice.yaml")
            return "no error"
        } catch {
            #expect(error.code == .invalidConfiguration)
            return error.message
        }
    }

    @Test("the embedded default parses and matches the documented defaults")
    func embeddedDefault() throws {
        let configuration = try ConfigurationLoader.embeddedDefault()
        #expect(configuration.unixListeners == [.init(path: "/tmp/sluice.sock", mode: 0o660)])
        #expect(configuration.tcpListeners == [.init(host: "127.0.0.1", port: 7420, auth: .none)])
        #expect(configuration.maxFrameBytes == 1 << 20)
        #expect(configuration.maxBatch == 1_000)
        #expect(configuration.clock == .monotonic)
        #expect(configuration.defaultAlgorithm == .gcra)
        #expect(configuration.rules["default"]?.limits.count == 2)
        #expect(configuration.rules["default"]?.limits[1].spec.period == 86_400_000_000_000)
        // An empty file means every default.
        let empty = try ConfigurationLoader.parse("", source: "empty.yaml")
        #expect(empty.maxEntries == 5_000_000)
    }

    @Test("connection limits: the embedded default says the built-in values; 0 and off mean never; bad values name the key")
    func connectionLimits() throws {
        let embedded = try ConfigurationLoader.embeddedDefault()
        let builtIn = Configuration()
        #expect(embedded.idleTimeoutMs == builtIn.idleTimeoutMs && builtIn.idleTimeoutMs == 600_000)
        #expect(embedded.readTimeoutMs == builtIn.readTimeoutMs && builtIn.readTimeoutMs == 10_000)
        #expect(embedded.writeTimeoutMs == builtIn.writeTimeoutMs && builtIn.writeTimeoutMs == 30_000)
        #expect(embedded.evictIdleAfterMs == builtIn.evictIdleAfterMs && embedded.unixReserve == builtIn.unixReserve)
        #expect(embedded.maxQueueDelayMs == builtIn.maxQueueDelayMs && builtIn.maxQueueDelayMs == 100)
        let set = try ConfigurationLoader.parse(
            "server: { idle_timeout: 0, read_timeout: off, write_timeout: 5s, evict_idle_after: 250ms, unix_reserve: 0, max_queue_delay: 2s }",
            source: "c.yaml")
        #expect(set.idleTimeoutMs == 0 && set.readTimeoutMs == 0 && set.evictIdleAfterMs == 250 && set.unixReserve == 0)
        #expect(set.maxQueueDelayMs == 2_000 && set.writeTimeoutMs == 5_000)
        for (yaml, key) in [("server: { idle_timeout: -1s }", "server.idle_timeout"), ("server: { read_timeout: 31d }", "server.read_timeout"),
                            ("server: { write_timeout: 1x }", "server.write_timeout"),
                            ("server: { unix_reserve: -1 }", "server.unix_reserve"), ("server: { max_queue_delay: soon }", "server.max_queue_delay")] {
            #expect(failure(yaml).contains(key), "\(yaml)")
        }
    }

    @Test("the embedded default's commented anomaly example is valid once uncommented")
    func embeddedAnomalyExample() throws {
        let lines = DefaultConfiguration.yaml.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = try #require(lines.firstIndex { $0.hasPrefix("# anomaly:") })
        let example = lines[start...].prefix { $0.hasPrefix("#") }.map { String($0.dropFirst(2)) }.joined(separator: "\n")
        let configuration = try ConfigurationLoader.parse(example + "\nfeatures: { anomaly: { enabled: true } }", source: "example.yaml")
        #expect(configuration.anomalyLog == "/tmp/sluice-alerts.jsonl")
        #expect(configuration.anomalyResponses["credential_stuffing"]?.action == .block)
        #expect(configuration.anomalyWebhook != nil)
    }

    @Test("detection's peer, persistence, surge and budget settings are read, and out-of-range values refused by key")
    func anomalyGeneralisationSettings() throws {
        let configuration = try ConfigurationLoader.parse("""
        anomaly:
          spike_persistence: 20s
          new_subject_persistence: 1m
          peak_factor: 3
          peer_quantile: 0.99
          peer_margin: 2
          peer_minimum_minutes: 100
          sequential_steps: 30
          sustained_distinct: 25
          failure_surge_minimum: 12
          failure_surge_factor: 6
          surge_sources: 50
          alert_budget_per_hour: 4
        tenants: { shop: { anomaly: { sequential_steps: 40, sustained_distinct: 30 } } }
        """, source: "anomaly.yaml")
        let settings = configuration.anomalyWithTenants
        #expect(settings.spikePersistenceMs == 20_000 && settings.newSubjectPersistenceMs == 60_000)
        #expect(settings.peakFactor == 3 && settings.peerQuantile == 0.99 && settings.peerMargin == 2 && settings.peerMinimumSamples == 100)
        #expect(settings.sequentialSteps == 30 && settings.sustainedDistinct == 25)
        #expect(settings.failureSurgeMinimum == 12 && settings.failureSurgeFactor == 6 && settings.surgeSources == 50)
        #expect(settings.alertBudgetPerHour == 4)
        #expect(settings.forSubjects(of: "shop").sequentialSteps == 40 && settings.forSubjects(of: "shop").sustainedDistinct == 30)
        for bad in ["peer_quantile: 1.5", "alert_budget_per_hour: 0", "failure_surge_factor: 1", "sequential_steps: 1", "spike_persistence: -1s"] {
            #expect(throws: SluiceError.self) { try ConfigurationLoader.parse("anomaly: { \(bad) }", source: "bad.yaml") }
        }
        #expect(throws: SluiceError.self) { try ConfigurationLoader.parse("anomaly: { responses: { failure_surge: { action: penalty, ttl: 1m } } }", source: "bad.yaml") }
    }

    @Test("a full file is read: listeners, limits, tenants, durations, per-limit algorithms")
    func fullFile() throws {
        let configuration = try ConfigurationLoader.parse("""
        listen:
          unix: [ /run/a.sock, { path: /run/b.sock, mode: "0600" } ]
          tcp: [ "0.0.0.0:9000", "[::1]:9001" ]
        server: { max_frame_bytes: 4096, max_connections: 10, max_batch: 5, max_key_bytes: 64, threads: 1, clock: request }
        table: { shards: 64, max_entries: 1_000 }
        defaults: { algorithm: token_bucket }
        strict_tenants: true
        rules:
          api: { limit: 100, period: 1m }
          mixed:
            algorithm: sliding_window
            limits:
              - { limit: 10, period: 500ms }
              - { limit: 1000, period: 1h, algorithm: fixed_window }
              - { limit: 3, period: 2000 }
        tenants:
          acme: { rules: { api: { limit: 5, period: 1s, burst: 10 } } }
        """, source: "full.yaml")
        #expect(configuration.unixListeners.map(\.path) == ["/run/a.sock", "/run/b.sock"])
        #expect(configuration.unixListeners[1].mode == 0o600)
        #expect(configuration.tcpListeners == [.init(host: "0.0.0.0", port: 9000), .init(host: "::1", port: 9001)])
        #expect(configuration.maxFrameBytes == 4096 && configuration.maxBatch == 5 && configuration.clock == .request)
        #expect(configuration.shards == 64 && configuration.maxEntries == 1_000)
        #expect(configuration.rules["api"]?.limits[0].spec.algorithm == .tokenBucket, "defaults.algorithm applies")
        let mixed = try #require(configuration.rules["mixed"])
        #expect(mixed.limits.map(\.spec.algorithm) == [.slidingWindow, .fixedWindow, .slidingWindow])
        #expect(mixed.limits.map(\.spec.period) == [500_000_000, 3_600_000_000_000, 2_000_000_000])
        #expect(configuration.rule("api", tenant: "acme")?.limits[0].spec.burst == 10)
        #expect(configuration.rule("api", tenant: "other")?.limits[0].spec.limit == 100)
        #expect(configuration.knows(tenant: "acme") && configuration.knows(tenant: "") && !configuration.knows(tenant: "x"))
    }

    @Test("snapshot: path and interval; an empty path keeps nothing; the default keeps /tmp/sluice.snapshot every 30 s")
    func snapshotSection() throws {
        let configured = try ConfigurationLoader.parse("snapshot: { path: /var/lib/sluice/table, interval: 5s }", source: "s.yaml")
        #expect(configured.snapshotPath == "/var/lib/sluice/table" && configured.snapshotIntervalMs == 5_000)
        #expect(try ConfigurationLoader.parse("snapshot: { path: \"\" }", source: "s.yaml").snapshotPath == nil)
        #expect(try ConfigurationLoader.parse("", source: "s.yaml").snapshotPath == nil, "no file, no snapshot")
        let embedded = try ConfigurationLoader.embeddedDefault()
        #expect(embedded.snapshotPath == "/tmp/sluice.snapshot" && embedded.snapshotIntervalMs == 30_000)
        do {
            _ = try ConfigurationLoader.parse("snapshot:\n  interval: 10ms\n", source: "s.yaml")
            Issue.record("a 10 ms interval was accepted")
        } catch {
            #expect(error.message.contains("snapshot.interval") && error.message.contains("at least 1s"))
        }
    }

    @Test("store: the SQLite file or PostgreSQL's URL, each with its own backend, and the password kept out of logs")
    func storeBackends() throws {
        let postgres = try ConfigurationLoader.parse("""
            store: { backend: postgres, url: "postgres://sluice:s3cret@db:5432/limits", timeout: 2s }
            """, source: "sluice.yaml").store
        #expect(postgres.backend == .postgres && postgres.isPersistent && postgres.timeout == 2_000_000_000)
        #expect(postgres.location == "postgres://sluice:***@db:5432/limits")
        let sqlite = try ConfigurationLoader.parse("store: { path: /var/lib/sluice/sluice.db }\n", source: "sluice.yaml").store
        #expect(sqlite.backend == .sqlite && sqlite.isPersistent && sqlite.location == "/var/lib/sluice/sluice.db")
        #expect(!Configuration().store.isPersistent)
        #expect(failure("store: { backend: mysql }\n").contains("store.backend: expected sqlite or postgres, got 'mysql'"))
        #expect(failure("store: { backend: postgres }\n").contains("backend postgres needs store.url"))
        #expect(failure("store: { backend: postgres, url: \"postgres://h/d\", path: /a.db }\n").contains("store.path: is for backend sqlite"))
        #expect(failure("store: { url: \"postgres://h/d\" }\n").contains("store.url: is for backend postgres"))
        #expect(failure("store: { backend: postgres, url: \"mysql://h/d\" }\n").contains("store.url: expected postgres://"))
        #expect(failure("store: { backend: postgres, url: \"postgres://h/d\", timeout: 10m }\n").contains("store.timeout: expected 1ms to 5m"))
    }

    @Test("errors name the file, line, key path and what was expected")
    func errorMessages() {
        #expect(failure("rules:\n  login:\n    limit: 5\n    perod: 1m\n") ==
                "sluice.yaml:4:5: rules.login.perod: unknown key; expected one of algorithm, backend, baseline, burst, limit, limits, mode, period, replaces, service, shadow, unlimited")
        #expect(failure("rules:\n  login: { limit: 5, period: 1x }\n").contains("rules.login.period: expected a duration"))
        #expect(failure("rules:\n  login: { limit: 0, period: 1s }\n").contains("rules.login.limit: expected a whole number from 1"))
        #expect(failure("rules:\n  login: { period: 1s }\n").contains("rules.login.limit: required"))
        #expect(failure("rules:\n  login: { limit: 1, period: 1s, algorithm: leaky }\n").contains("expected one of gcra, token_bucket"))
        #expect(failure("rules:\n  r: { limit: 1, period: 1s, limits: [] }\n").contains("not both"))
        #expect(failure("server: { max_batch: -1 }\n").contains("server.max_batch"))
        #expect(failure("server: { clock: wall }\n").contains("expected monotonic or request"))
        #expect(failure("listen: { tcp: [ nonsense ] }\n").contains("listen.tcp[0]: expected HOST:PORT"))
        #expect(failure("listen: { unix: [ { path: /a, mode: \"999\" } ] }\n").contains("octal file mode"))
        #expect(failure("tabel: {}\n").contains("tabel: unknown key"))
        #expect(failure("rules: [1, 2]\n").contains("rules: expected a mapping"))
        #expect(failure("rules: {\n").contains("not valid YAML"))
        #expect(failure("rules:\n  r: { limit: 1, period: 0ms }\n").contains("expected a duration"))
        #expect(failure("rules:\n  r: { limit: 1, period: 500 }\n").contains("period must be between 1 ms") == false)
    }

    @Test("a missing file is reported with its path")
    func missingFile() {
        #expect(throws: SluiceError.self) { try ConfigurationLoader.load(file: "/nonexistent/sluice.yaml") }
        do {
            _ = try ConfigurationLoader.load(file: "/nonexistent/sluice.yaml")
        } catch {
            #expect(error.message.hasPrefix("/nonexistent/sluice.yaml: cannot read the file"))
        }
    }

    @Test("operations sections: metrics address, admin over TCP, log level and format, queued bytes; the default serves metrics on loopback")
    func operationsSections() throws {
        let yaml = """
        metrics: { listen: "[::1]:9100" }
        admin: { allow_tcp: true }
        log: { level: debug, format: json }
        server: { max_queued_bytes: 262144 }
        """
        let configured = try ConfigurationLoader.parse(yaml, source: "o.yaml")
        #expect(configured.metricsListener == .init(host: "::1", port: 9100))
        #expect(configured.adminOverTCP)
        #expect(configured.logLevel == "debug" && configured.logFormat == .json)
        #expect(configured.maxQueuedBytes == 262_144)
        #expect(try ConfigurationLoader.parse("metrics: { listen: \"off\" }", source: "o.yaml").metricsListener == nil)
        let embedded = try ConfigurationLoader.embeddedDefault()
        #expect(embedded.metricsListener == .init(host: "127.0.0.1", port: 7421))
        #expect(!embedded.adminOverTCP && embedded.logFormat == .text && embedded.logLevel == "info")
        #expect(failure("metrics: { listen: everywhere }\n").contains("metrics.listen: expected HOST:PORT"))
        #expect(failure("log: { format: xml }\n").contains("log.format: expected text or json"))
        #expect(failure("log: { level: loud }\n").contains("log.level: expected one of trace"))
        #expect(failure("admin: { allow_tcp: maybe }\n").contains("admin.allow_tcp: expected true or false"))
        #expect(failure("server: { max_queued_bytes: 10 }\n").contains("server.max_queued_bytes"))
    }

    @Test("JSON log lines escape quotes, backslashes and control characters")
    func jsonEscaping() throws {
        var line = ""
        JSONLogHandler.appendString("a \"quoted\" \\ path\nnext\u{1}", to: &line)
        #expect(line == #""a \"quoted\" \\ path\nnext\u0001""#)
        let parsed = try JSONSerialization.jsonObject(with: Data("[\(line)]".utf8)) as? [String]
        #expect(parsed == ["a \"quoted\" \\ path\nnext\u{1}"])
        #expect(JSONLogHandler.timestamp().count == 24)
    }
}
