import Foundation
import SluiceClient
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import Testing

/// Reload, rollback, operator requests and the metrics endpoint, through real sockets and files.
@Suite("Operations end to end")
struct OperationsEndToEndTests {
    static let before = """
    rules:
      login: { limit: 2, period: 1m }
      api: { limit: 5, period: 1s }
    """
    static let after = """
    rules:
      login: { limit: 2, period: 1m }
      api: { limit: 10, period: 1s }
      search: { limit: 1, period: 1m }
    """

    static func reload(_ client: SluiceClient) async throws -> WireResponse {
        var request = WireRequest()
        request.reload = Sluice_V1_ReloadRequest()
        return try await client.send(request)
    }

    @Test("reload applies a valid file (unchanged rules keep their counters), rejects an invalid one, and rolls back by reloading the previous file")
    func reloadAndRollBack() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = "\(directory)/sluice.yaml"
        try Self.before.write(toFile: file, atomically: true, encoding: .utf8)
        try await TestDaemon.with(file: file) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await client.verdict(Make.check("alice", rule: "login")).allowed)
            #expect(try await client.verdict(Make.check("alice", rule: "login")).allowed)
            #expect(try await !client.verdict(Make.check("alice", rule: "login")).allowed)

            // A valid change: one rule changed, one added, one untouched.
            try Self.after.write(toFile: file, atomically: true, encoding: .utf8)
            let applied = try await Self.reload(client)
            guard case .reload(let report) = applied.body else { throw TestFailure("expected a reload answer, got \(applied)") }
            #expect(report.rulesAdded == ["search"])
            #expect(report.rulesChanged == ["api"])
            #expect(report.rulesRemoved.isEmpty)
            #expect(report.needsRestart.isEmpty)
            #expect(report.generation == 2)
            #expect(try await !client.verdict(Make.check("alice", rule: "login")).allowed, "an unchanged rule kept its counters")
            #expect(try await client.verdict(Make.check("bob", rule: "search")).allowed)
            #expect(try await client.verdict(Make.check("bob", rule: "api")).limit == 10, "a changed rule applies from the next check")

            // An invalid file is rejected with the key that is wrong; the configuration in force stays.
            try "rules:\n  search: { limit: 1, perod: 1m }\n".write(toFile: file, atomically: true, encoding: .utf8)
            let rejected = try await Self.reload(client)
            guard case .error(let error) = rejected.body else { throw TestFailure("expected an error, got \(rejected)") }
            #expect(error.code == .invalidConfiguration)
            #expect(error.message.contains("rules.search.perod"), "the message names the key: \(error.message)")
            #expect(try await !client.verdict(Make.check("bob", rule: "search")).allowed, "search is still configured")
            #expect(daemon.daemon.configuration.rules["search"] != nil)

            // Rolling back is reloading the previous file.
            try Self.before.write(toFile: file, atomically: true, encoding: .utf8)
            let rolledBack = try await Self.reload(client)
            guard case .reload(let back) = rolledBack.body else { throw TestFailure("expected a reload answer, got \(rolledBack)") }
            #expect(back.rulesRemoved == ["search"])
            #expect(back.rulesChanged == ["api"])
            #expect(back.generation == 3)
            let gone = try await client.send(Make.request(Make.check("bob", rule: "search")))
            #expect(gone.error.code == .unknownRule)
            #expect(try await client.verdict(Make.check("bob", rule: "api")).limit == 5)
            #expect(try await !client.verdict(Make.check("alice", rule: "login")).allowed, "still denied after two reloads")
            await client.close()
        }
    }

    @Test("a reload to a file without rules (empty, comments only) is refused unless it says rules: {}",
          arguments: ["", "# nothing here yet\n", "log:\n  level: info\n"])
    func reloadThatRemovesEveryRule(contents: String) async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = "\(directory)/sluice.yaml"
        try Self.before.write(toFile: file, atomically: true, encoding: .utf8)
        try await TestDaemon.with(file: file) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            try contents.write(toFile: file, atomically: true, encoding: .utf8)
            let refused = try await Self.reload(client)
            #expect(refused.error.code == .invalidConfiguration)
            #expect(refused.error.message.contains("rules: {}"), "\(refused.error.message)")
            #expect(try await client.verdict(Make.check("alice", rule: "login")).allowed, "the rules in force stay")
            #expect(daemon.daemon.configuration.rules.count == 2)

            try (contents + "rules: {}\n").write(toFile: file, atomically: true, encoding: .utf8)
            let emptied = try await Self.reload(client)
            guard case .reload(let report) = emptied.body else { throw TestFailure("expected a reload answer, got \(emptied)") }
            #expect(report.rulesRemoved == ["api", "login"])
            #expect(try await client.send(Make.request(Make.check("alice", rule: "login"))).error.code == .unknownRule)
            await client.close()
        }
    }

    @Test("settings fixed at start are reported as needing a restart and keep their running values")
    func needsRestart() async throws {
        let running = try ConfigurationLoader.parse("table:\n  max_entries: 1000\nrules:\n  a: { limit: 1, period: 1s }\n", source: "f")
        let loaded = try ConfigurationLoader.parse("table:\n  max_entries: 2000\nserver:\n  max_batch: 7\nrules:\n  a: { limit: 1, period: 1s }\n",
                                                   source: "f")
        let (applied, report) = running.reloadPlan(applying: loaded)
        #expect(report.needsRestart == ["table.max_entries"])
        #expect(applied.maxEntries == 1000)
        #expect(applied.maxBatch == 7, "max_batch applies live")
        #expect(report.rulesAdded.isEmpty && report.rulesChanged.isEmpty && report.rulesRemoved.isEmpty)
    }

    @Test("operator requests: served on the Unix socket, refused on TCP unless admin.allow_tcp; snapshot writes the file")
    func operatorRequests() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/table.snapshot"
        try await TestDaemon.with(yaml: "rules:\n  a: { limit: 1, period: 1m }\n", { $0.snapshotPath = path }) { daemon in
            let tcp = try await SluiceClient.connect(to: daemon.tcp)
            var snapshot = WireRequest()
            snapshot.id = 41
            snapshot.snapshot = Sluice_V1_SnapshotRequest()
            let refused = try await tcp.send(snapshot)
            #expect(refused.id == 41)
            #expect(refused.error.code == .forbidden)
            // The connection goes on serving checks after the refusal.
            #expect(try await tcp.verdict(Make.check("k", rule: "a")).allowed)
            await tcp.close()

            let unix = try await SluiceClient.connect(to: daemon.unix)
            // Pipelined around the deferred answer: every answer comes back, in order.
            var ping = WireRequest()
            ping.id = 40
            ping.ping.payload = Data([1])
            var after = Make.request(Make.check("k", rule: "a"))
            after.id = 42
            let answers = try await unix.send(pipelined: [ping, snapshot, after])
            #expect(answers.map(\.id) == [40, 41, 42])
            guard case .snapshot(let written) = answers[1].body else { throw TestFailure("expected a snapshot answer, got \(answers[1])") }
            #expect(written.path == path)
            #expect(written.entries == 1)
            #expect(FileManager.default.fileExists(atPath: path))
            let bytes = try #require(FileManager.default.contents(atPath: path))
            #expect(written.bytes == UInt64(bytes.count))
            #expect(try TableSnapshot(decoding: Array(bytes)).entries.count == 1)
            #expect(answers[2].check.verdicts.first?.allowed == false)

            // Reload of a daemon whose configuration came from no file.
            let noFile = try await Self.reload(unix)
            #expect(noFile.error.code == .unavailable || noFile.error.code == .invalidConfiguration)
            await unix.close()
        }
        try await TestDaemon.with(yaml: "admin:\n  allow_tcp: true\n") { daemon in
            let tcp = try await SluiceClient.connect(to: daemon.tcp)
            var snapshot = WireRequest()
            snapshot.snapshot = Sluice_V1_SnapshotRequest()
            let answer = try await tcp.send(snapshot)
            #expect(answer.error.code == .unavailable, "allowed on TCP, but snapshots are off: \(answer)")
            #expect(answer.error.message.contains("snapshot.path"))
            await tcp.close()
        }
    }

    @Test("metrics: checks by tenant, rule and decision, errors by code, latency, table; never a key; health and readiness")
    func metricsEndpoint() async throws {
        let yaml = """
        rules:
          login: { limit: 3, period: 1m }
        tenants:
          acme:
            rules:
              export: { limit: 1, period: 1h }
        """
        try await TestDaemon.with(yaml: yaml, { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { daemon in
            let port = try #require(daemon.daemon.metricsAddress?.port)
            let client = try await SluiceClient.connect(to: daemon.unix)
            for _ in 0..<4 { _ = try await client.verdict(Make.check("secret-key-1", rule: "login")) }
            _ = try await client.verdict(Make.check("secret-key-2", rule: "export", tenant: "acme"))
            _ = try await client.verdict(Make.check("secret-key-2", rule: "export", tenant: "acme"))
            _ = try await client.verdict(Make.check("secret-key-3", rule: "login", tenant: "stranger"))
            _ = try await client.verdict(Make.check("secret-key-4", limit: WireLimit(limit: 5, periodMs: 1_000)))
            let unknown = try await client.send(Make.request(Make.check("secret-key-5", rule: "nope")))
            #expect(unknown.error.code == .unknownRule)

            let (status, body) = try HTTPGet.get(port: port, path: "/metrics")
            #expect(status == 200)
            #expect(sample(#"sluice_checks_total{tenant="_default",rule="login",decision="allowed"}"#, in: body) == 3)
            #expect(sample(#"sluice_checks_total{tenant="_default",rule="login",decision="over_limit"}"#, in: body) == 1)
            #expect(sample(#"sluice_checks_total{tenant="acme",rule="export",decision="allowed"}"#, in: body) == 1)
            #expect(sample(#"sluice_checks_total{tenant="acme",rule="export",decision="over_limit"}"#, in: body) == 1)
            #expect(sample(#"sluice_checks_total{tenant="_other",rule="login",decision="allowed"}"#, in: body) == 1)
            #expect(sample(#"sluice_checks_total{tenant="_default",rule="_inline",decision="allowed"}"#, in: body) == 1)
            #expect(sample(#"sluice_errors_total{code="CODE_UNKNOWN_RULE"}"#, in: body) == 1)
            #expect(sample("sluice_decision_duration_seconds_count", in: body) == 8)
            #expect(sample(#"sluice_decision_duration_seconds_bucket{le="+Inf"}"#, in: body) == 8)
            #expect(sample("sluice_table_entries", in: body) == 4)
            #expect(sample("sluice_connections_open", in: body) == 1)
            let loopDelay = try #require(sample(#"sluice_event_loop_delay_max_seconds{loop="0"}"#, in: body), "one series per event loop")
            #expect(loopDelay >= 0 && loopDelay < 60)
            #expect(sample(#"sluice_build_info{version="\#(SluiceVersion.current)"}"#, in: body) == 1)
            let heap = try #require(sample("sluice_heap_in_use_bytes", in: body))
            #expect(heap > Double(1 << 20) && heap < Double(1 << 40), "what malloc holds: megabytes, not nothing")
            #expect(sample(#"sluice_config_reloads_total{result="ok"}"#, in: body) == 0)
            // The process metrics every exporter has, for dashboards written for any service.
            let resident = try #require(sample("process_resident_memory_bytes", in: body))
            #expect(resident >= heap / 2 && resident < Double(1 << 40))
            let cpu = try #require(sample("process_cpu_seconds_total", in: body))
            #expect(cpu > 0 && cpu < 3_600)
            let descriptors = try #require(sample("process_open_fds", in: body))
            #expect(descriptors >= 3 && descriptors <= (sample("process_max_fds", in: body) ?? 0))
            let started = try #require(sample("process_start_time_seconds", in: body))
            #expect(abs(started - Date().timeIntervalSince1970) < 3_600, "since the epoch, within the hour")
            // Every family says what it is and what it counts.
            let families = Set(body.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }.map { line in
                String(line.prefix { $0 != "{" && $0 != " " }).replacingOccurrences(of: #"_(bucket|sum|count)$"#, with: "", options: .regularExpression)
            })
            for family in families {
                #expect(body.contains("# HELP \(family) ") && body.contains("# TYPE \(family) "), "\(family) has HELP and TYPE")
            }
            #expect(!body.contains("secret-key"), "no key ever becomes a label")
            #expect(!body.contains("stranger"), "an undeclared tenant is counted as _other")

            // Counters only grow between scrapes.
            _ = try await client.verdict(Make.check("secret-key-1", rule: "login"))
            let (_, later) = try HTTPGet.get(port: port, path: "/metrics")
            #expect(sample(#"sluice_checks_total{tenant="_default",rule="login",decision="over_limit"}"#, in: later) == 2)
            #expect(sample(#"sluice_checks_total{tenant="_default",rule="login",decision="allowed"}"#, in: later) == 3)
            await client.close()

            #expect(try HTTPGet.get(port: port, path: "/healthz").status == 200)
            #expect(try HTTPGet.get(port: port, path: "/readyz").status == 200)
            #expect(try HTTPGet.get(port: port, path: "/nope").status == 404)
            #expect(try HTTPGet.get(port: port, path: "/metrics", method: "POST").status == 405)
            // Shutdown's first step makes the daemon unready while the endpoint still answers.
            await daemon.daemon.stopServing()
            let (unready, reason) = try HTTPGet.get(port: port, path: "/readyz")
            #expect(unready == 503)
            #expect(reason.contains("shutting down"))
        }
    }

    @Test("counts survive a reload that renumbers the series")
    func metricsAcrossReload() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = "\(directory)/sluice.yaml"
        try Self.before.write(toFile: file, atomically: true, encoding: .utf8)
        try await TestDaemon.with(file: file, { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { daemon in
            let port = try #require(daemon.daemon.metricsAddress?.port)
            let client = try await SluiceClient.connect(to: daemon.unix)
            _ = try await client.verdict(Make.check("k", rule: "login"))
            // "api" and "login" shift places once "aaa" sorts first.
            try (Self.before + "\n  aaa: { limit: 1, period: 1s }\n").write(toFile: file, atomically: true, encoding: .utf8)
            guard case .reload = try await Self.reload(client).body else { throw TestFailure("reload failed") }
            _ = try await client.verdict(Make.check("k", rule: "login"))
            let (_, body) = try HTTPGet.get(port: port, path: "/metrics")
            #expect(sample(#"sluice_checks_total{tenant="_default",rule="login",decision="allowed"}"#, in: body) == 2)
            #expect(sample(#"sluice_config_reloads_total{result="ok"}"#, in: body) == 1)
            #expect(sample("sluice_config_generation", in: body) == 2)
            await client.close()
        }
    }
}
