import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SluiceClient
import SluiceCore
import SluiceProto
import Testing
import SluiceTestKit
import SluiceLoad

/// The real `sluiced` executable, as a user runs it.
@Suite("sluiced process", .ownThreads)
struct DaemonProcessTests {
    /// The built products sit beside the test bundle.
    static var productsDirectory: URL {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("sluiced").path), url.path != "/" {
            url = url.deletingLastPathComponent()
        }
        return url
    }

    static func launch(_ arguments: [String]) throws -> (ChildProcess, Pipe) {
        let process = ChildProcess()
        process.executableURL = productsDirectory.appendingPathComponent("sluiced")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        try process.run()
        return (process, pipe)
    }

    static func waitForSocket(_ path: String) async throws -> Bool {
        for _ in 0..<300 {
            if let client = try? await SluiceClient.connect(to: .unix(path: path)) {
                await client.close()
                return true
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    @Test("sluiced serves, then exits 0 on SIGTERM and removes its socket", arguments: [SIGTERM, SIGINT])
    func signals(signal: Int32) async throws {
        let directory = "/tmp/sluiced-proc-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/s.sock"
        let snapshot = "\(directory)/table.snapshot"
        let (process, _) = try Self.launch(["--unix", socket, "--tcp", "127.0.0.1:0", "--tcp-auth", "none", "--log-level", "warning",
                                            "--store", "\(directory)/sluice.db", "--snapshot", snapshot, "--metrics", "127.0.0.1:0"])
        #expect(try await Self.waitForSocket(socket))
        let client = try await SluiceClient.connect(to: .unix(path: socket))
        var check = WireCheck()
        check.key = "proc"
        check.rule = "default"
        var request = WireRequest()
        request.check.checks = [check]
        let answer = try await client.send(request)
        #expect(answer.check.verdicts.first?.allowed == true, "\(answer)")
        kill(process.processIdentifier, signal)
        await process.waitForExit(within: .seconds(60))
        #expect(process.terminationStatus == 0)
        #expect(process.terminationReason == .exit)
        #expect(!FileManager.default.fileExists(atPath: socket))
        // The table went to disk on the way out: the default rule's two limits for "proc".
        let bytes = try #require(FileManager.default.contents(atPath: snapshot), "no snapshot was written on \(signal)")
        #expect(try TableSnapshot(decoding: Array(bytes)).entries.count == 2)
        await client.close()
    }

    @Test("a configuration without a store: section runs without a store and logs no error (it logged a failed commit every second)")
    func noStoreLogsNoError() async throws {
        let directory = "/tmp/sluiced-nostore-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/s.sock", config = "\(directory)/sluice.yaml"
        try "rules:\n  login: { limit: 5, period: 1m }\nfeatures:\n  reputation: { enabled: true }\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let (process, pipe) = try Self.launch(["--config", config, "--unix", socket, "--snapshot", "off", "--metrics", "off", "--log-level", "info"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await Self.waitForSocket(socket))
        let client = try await SluiceClient.connect(to: .unix(path: socket))
        var request = WireRequest()
        request.check.checks = [Make.check("someone", rule: "login")]
        #expect(try await client.send(request).check.verdicts.first?.allowed == true)
        // Past a few commit intervals and the once-a-second score commit.
        try await Task.sleep(for: .milliseconds(2_500))
        await client.close()
        kill(process.processIdentifier, SIGTERM)
        await process.waitForExit(within: .seconds(60))
        #expect(process.terminationStatus == 0)
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(output.contains("sluiced ready"))
        let errors = output.split(separator: "\n").filter { $0.contains(" error ") || $0.contains(" critical ") }
        #expect(errors.isEmpty, "\(errors)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).allSatisfy { !$0.hasSuffix(".db") }, "no store file")
    }

    @Test("a bad configuration file stops sluiced with the file, line and key in one sentence")
    func badConfiguration() async throws {
        let path = "/tmp/sluiced-bad-\(UInt32.random(in: .min ... .max)).yaml"
        try "rules:\n  login:\n    limit: 5\n    perod: 1m\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let run = try await Self.run("sluiced", ["--config", path])
        #expect(run.status == 2)
        #expect(run.err == "sluiced: \(path):4:5: rules.login.perod: unknown key; expected one of algorithm, backend, baseline, burst, limit, limits, mode, period, replaces, service, shadow, unlimited\n")
    }

    @Test("--print-default-config prints a file that --check-config accepts")
    func printDefault() async throws {
        let printed = try await Self.run("sluiced", ["--print-default-config"])
        #expect(printed.status == 0)
        let path = "/tmp/sluiced-default-\(UInt32.random(in: .min ... .max)).yaml"
        try printed.out.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let check = try await Self.run("sluiced", ["--config", path, "--check-config"])
        #expect(check.status == 0)
        #expect(check.out.contains("ok (1 rules"))
    }

    /// Reads `pipe` until a line satisfies `match` (or ~10 s pass); returns every line read.
    static func readLines(_ pipe: Pipe, until match: (String) -> Bool) -> [String] {
        var lines: [String] = []
        var partial = ""
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let data = pipe.fileHandleForReading.availableData
            guard !data.isEmpty else { break }
            partial += String(decoding: data, as: UTF8.self)
            while let newline = partial.firstIndex(of: "\n") {
                let line = String(partial[..<newline])
                partial = String(partial[partial.index(after: newline)...])
                lines.append(line)
                if match(line) { return lines }
            }
        }
        return lines
    }

    static func json(_ line: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }

    @Test("SIGHUP reloads a valid file and keeps the old configuration on an invalid one; --log-format json writes one JSON object per line")
    func hangupReloadAndJSONLogs() async throws {
        let directory = "/tmp/sluiced-hup-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/s.sock"
        let file = "\(directory)/sluice.yaml"
        try "rules:\n  a: { limit: 100, period: 1s }\n".write(toFile: file, atomically: true, encoding: .utf8)
        let (process, pipe) = try Self.launch(["--config", file, "--unix", socket, "--snapshot", "off",
                                               "--metrics", "127.0.0.1:0", "--log-format", "json"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let startup = Self.readLines(pipe) { Self.json($0)?["msg"] as? String == "sluiced ready" }
        let metricsLine = try #require(startup.compactMap(Self.json).first { $0["msg"] as? String == "serving metrics" })
        let address = try #require(metricsLine["metrics.listen"] as? String)
        let port = try #require(Int(address.split(separator: ":").last ?? ""))
        #expect(try await Self.waitForSocket(socket))
        let client = try await SluiceClient.connect(to: .unix(path: socket))
        var checkB = WireRequest()
        checkB.check.checks = [{ var c = WireCheck(); c.key = "k"; c.rule = "b"; return c }()]
        #expect(try await client.send(checkB).error.code == .unknownRule)

        try "rules:\n  a: { limit: 100, period: 1s }\n  b: { limit: 100, period: 1s }\n".write(toFile: file, atomically: true, encoding: .utf8)
        kill(process.processIdentifier, SIGHUP)
        let reloaded = Self.readLines(pipe) { Self.json($0)?["msg"] as? String == "configuration reloaded" }
        #expect(reloaded.compactMap(Self.json).contains { $0["config.generation"] as? String == "2" })
        #expect(try await client.send(checkB).check.verdicts.first?.allowed == true)

        try "rules:\n  b: { limit: -1, period: 1s }\n".write(toFile: file, atomically: true, encoding: .utf8)
        kill(process.processIdentifier, SIGHUP)
        let rejected = Self.readLines(pipe) { ($0.contains("configuration not reloaded")) }
        let rejection = try #require(rejected.compactMap(Self.json).first { ($0["msg"] as? String)?.contains("not reloaded") == true })
        #expect(rejection["level"] as? String == "error")
        #expect((rejection["error.message"] as? String)?.contains("rules.b.limit") == true)
        #expect(try await client.send(checkB).check.verdicts.first?.allowed == true, "the previous configuration stays in force")

        let (_, body) = try HTTPGet.get(port: port, path: "/metrics")
        #expect(sample(#"sluice_config_reloads_total{result="ok"}"#, in: body) == 1)
        #expect(sample(#"sluice_config_reloads_total{result="rejected"}"#, in: body) == 1)
        #expect(sample(#"sluice_checks_total{tenant="_default",rule="b",decision="allowed"}"#, in: body) == 2)
        await client.close()

        kill(process.processIdentifier, SIGTERM)
        await process.waitForExit(within: .seconds(60))
        #expect(process.terminationStatus == 0)
        let rest = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let all = startup + reloaded + rejected + rest.split(separator: "\n").map(String.init)
        #expect(all.count >= 8)
        for line in all where !line.isEmpty {
            let object = Self.json(line)
            #expect(object != nil, "not a JSON object: \(line)")
            #expect(object?["ts"] is String && object?["level"] is String && object?["msg"] is String)
        }
        #expect(!rest.contains("\"k\""), "nothing per request at the default level")
    }

    /// Resident memory of `pid`, in bytes.
    static func residentBytes(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) else { return nil }
        return kilobytes * 1_024
    }

    @Test("a client that writes requests and never reads answers is pushed back: the daemon's memory stays bounded, others are served")
    func neverReadingClient() async throws {
        let directory = "/tmp/sluiced-flood-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/s.sock"
        let (process, _) = try Self.launch(["--unix", socket, "--snapshot", "off", "--store", "off", "--metrics", "off",
                                            "--log-level", "warning"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await Self.waitForSocket(socket))
        let pid = process.processIdentifier
        let baseline = try #require(Self.residentBytes(pid))

        // Pings of 16 KiB: each answer is as large as its request, so unread answers pile up.
        var ping = WireRequest()
        ping.ping.payload = Data(repeating: 7, count: 16 << 10)
        let body: [UInt8] = try ping.serializedBytes()
        var frame: [UInt8] = withUnsafeBytes(of: UInt32(body.count).bigEndian, Array.init)
        frame += body
        var raw: RawSocket? = try RawSocket(unix: socket)
        let fd = try #require(raw).fd
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var written = 0
        var offset = 0
        let deadline = Date().addingTimeInterval(3)
        let cap = 512 << 20
        while Date() < deadline, written < cap {
            let n = frame.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n > 0 {
                written += n
                offset = (offset + n) % frame.count
            } else {
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        let resident = try #require(Self.residentBytes(pid))
        print("never-reading client: \(written) bytes accepted, daemon grew by \(resident - baseline) bytes")
        #expect(written < 64 << 20, "the daemon stopped reading: \(written) bytes were accepted in 3 s")
        #expect(resident - baseline < 48 << 20, "memory grew by \(resident - baseline) bytes")

        // Everyone else is still served while that connection is stuck.
        let other = try await SluiceClient.connect(to: .unix(path: socket))
        var check = WireRequest()
        check.check.checks = [{ var c = WireCheck(); c.key = "other"; c.rule = "default"; return c }()]
        #expect(try await other.send(check).check.verdicts.first?.allowed == true)
        await other.close()
        // Closed first: a connection that never reads is otherwise closed by the drain's deadline.
        raw = nil
        kill(pid, SIGTERM)
        await process.waitForExit(within: .seconds(60))
        #expect(process.terminationStatus == 0)
    }

    /// Runs sluicectl to completion: its exit status, standard output and standard error.
    static func sluicectl(_ arguments: [String]) async throws -> (status: Int32, out: String, err: String) {
        try await run("sluicectl", arguments)
    }

    /// Runs a built executable (or one at an absolute path) to completion: its exit status,
    /// standard output and standard error. It runs and is waited for on a thread of its own
    /// (``blocking(_:)``), never on one of the pool's.
    static func run(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, out: String, err: String) {
        try await blocking { try runBlocking(executable, arguments) }
    }

    static func runBlocking(_ executable: String, _ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let process = ChildProcess()
        process.executableURL = executable.hasPrefix("/") ? URL(fileURLWithPath: executable)
            : productsDirectory.appendingPathComponent(executable)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
    }

    @Test("sluicectl replay writes the alerts of a trace in the alert format, and refuses a bad configuration")
    func replayCommandLine() async throws {
        let directory = "/tmp/sluicectl-replay-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let trace = LoadHarnessTests.sample
        // No warm-up: nothing is learned first, so the first seconds of traffic are a global surge
        // against a normal of next to nothing.
        try "anomaly: { warmup: 1ms }\n".write(toFile: "\(directory)/sluice.yaml", atomically: true, encoding: .utf8)
        let run = try await Self.sluicectl(["replay", trace, "--alerts", "\(directory)/alerts.jsonl", "--config", "\(directory)/sluice.yaml"])
        #expect(run.status == 0, "\(run.err)")
        #expect(run.err.contains("3000 rows"), "\(run.err)")
        #expect(!run.err.contains("\r") && !run.err.contains("replaying"), "no progress line when standard error is not a terminal")
        let lines = try String(contentsOfFile: "\(directory)/alerts.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(!lines.isEmpty)
        for line in lines {
            let alert = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(alert["ts_ms"] is NSNumber && alert["score"] is NSNumber && alert["kind"] is String)
            #expect(["subject", "ip", "global"].contains(alert["scope"] as? String ?? ""))
        }
        #expect(lines.contains { $0.contains("\"scope\":\"global\"") && $0.contains("traffic_surge") })
        try "anomaly: { spike_factr: 3 }\n".write(toFile: "\(directory)/bad.yaml", atomically: true, encoding: .utf8)
        let bad = try await Self.sluicectl(["replay", trace, "--alerts", "\(directory)/x.jsonl", "--config", "\(directory)/bad.yaml"])
        #expect(bad.status == 2)
        #expect(bad.err.contains("anomaly.spike_factr: unknown key"))
        let missing = try await Self.sluicectl(["replay", "\(directory)/none.csv.gz", "--alerts", "\(directory)/x.jsonl"])
        #expect(missing.status == 2 && missing.err.contains("cannot read the file"))
        // --state: written at the end, read at the start of the next replay; a damaged one is refused.
        let state = "\(directory)/detector.anomaly"
        let first = try await Self.sluicectl(["replay", trace, "--alerts", "\(directory)/a.jsonl", "--state", state])
        #expect(first.status == 0 && first.err.contains("state: ") && FileManager.default.fileExists(atPath: state), "\(first.err)")
        let again = try await Self.sluicectl(["replay", trace, "--alerts", "\(directory)/b.jsonl", "--state", state])
        #expect(again.status == 0, "\(again.err)")
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: state))
        let damaged = try await Self.sluicectl(["replay", trace, "--alerts", "\(directory)/c.jsonl", "--state", state])
        #expect(damaged.status == 2 && damaged.err.contains("not an anomaly state file"), "\(damaged.err)")
    }

    @Test("on a terminal, sluicectl replay draws a progress line with its share and counts, and erases it before the summary",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script")))
    func replayProgressOnATerminal() async throws {
        let directory = "/tmp/sluicectl-progress-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Three 4 MiB chunks and a bit: the line is drawn after each.
        var csv = "ts_ms,tenant,subject,ip,route,status,cost\n"
        for index in 0..<180_000 {
            csv += "\(1_710_243_000_000 + index * 10),acme,key_\(index % 977),198.51.100.\(index % 200),GET /api/v1/orders,200,1\n"
        }
        try csv.write(toFile: "\(directory)/t.csv", atomically: true, encoding: .utf8)
        let sluicectl = Self.productsDirectory.appendingPathComponent("sluicectl").path
        // script(1) runs the command on a pseudo-terminal and copies what it wrote.
        let command = "TERM=xterm \(sluicectl) replay \(directory)/t.csv --alerts \(directory)/a.jsonl"
        let run = try await Self.run("/usr/bin/script", ["-qefc", command, "/dev/null"])
        #expect(run.status == 0, "\(run)")
        #expect(run.out.contains("\r\u{1B}[Kreplaying t.csv"), "\(run.out)")
        #expect(run.out.contains("%  ") && run.out.contains(" rows, "), "\(run.out)")
        let summary = try #require(run.out.range(of: "180000 rows"))
        #expect(run.out[..<summary.lowerBound].hasSuffix("\r\u{1B}[K"), "the line is erased before the summary: \(run.out)")
    }

    @Test("sluicectl alerts prints recent alerts, follows new ones as they are raised, and refuses bad options")
    func alertsCommandLine() async throws {
        let directory = "/tmp/sluicectl-alerts-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/s.sock"
        let file = "\(directory)/sluice.yaml"
        try "anomaly: { warmup: 1ms }\nfeatures: { anomaly: { enabled: true } }\n".write(toFile: file, atomically: true, encoding: .utf8)
        let (process, _) = try Self.launch(["--config", file, "--unix", socket, "--metrics", "off", "--log-level", "error"])
        defer { process.terminate(); process.waitUntilExit() }
        #expect(try await Self.waitForSocket(socket))
        let client = try await SluiceClient.connect(to: .unix(path: socket))
        defer { Task { await client.close() } }
        // The detector counts per wall-clock minute: the first flood (2 s long) must not straddle one.
        var start = UInt64(Date().timeIntervalSince1970 * 1_000)
        if start % 60_000 > 57_000 {
            try await Task.sleep(for: .milliseconds(60_100 - Int(start % 60_000)))
            start = UInt64(Date().timeIntervalSince1970 * 1_000)
        }
        /// Twenty failed logins naming twenty users from `ip`.
        func stuff(from ip: String, at base: UInt64) async throws {
            var request = WireRequest()
            request.reportOutcome.outcomes = (0..<20).map { index in
                .with { $0.subject = "user\(index)"; $0.ip = ip; $0.route = "POST /login"; $0.status = 401; $0.timeMs = base + UInt64(index) * 100 }
            }
            _ = try await client.send(request)
        }
        try await stuff(from: "192.0.2.1", at: start)
        try await Task.sleep(for: .milliseconds(300))
        let recent = try await Self.sluicectl(["alerts", "-e", "unix:\(socket)", "--recent", "5", "--count", "1", "--json"])
        #expect(recent.status == 0, "\(recent.err)")
        let alert = try #require(Self.json(recent.out.trimmingCharacters(in: .newlines)))
        #expect(alert["kind"] as? String == "credential_stuffing" && alert["ip"] as? String == "192.0.2.1" && alert["scope"] as? String == "ip")

        // Following: alerts raised after it started, in the human format.
        let follower = ChildProcess()
        follower.executableURL = Self.productsDirectory.appendingPathComponent("sluicectl")
        follower.arguments = ["alerts", "-e", "unix:\(socket)", "--recent", "0", "--count", "1"]
        let out = Pipe()
        follower.standardOutput = out
        try follower.run()
        for round in 0..<50 where follower.isRunning {
            try await Task.sleep(for: .milliseconds(200))
            try await stuff(from: "198.51.100.\(round + 1)", at: start + 10_000 + UInt64(round) * 2_000)
        }
        await follower.waitForExit(within: .seconds(60))
        #expect(follower.terminationStatus == 0)
        let line = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(line.contains("credential_stuffing ip 198.51.100."), "\(line)")
        #expect(line.contains("failures") && line.contains("naming"), "\(line)")

        let refused = try await Self.sluicectl(["alerts", "-e", "unix:\(socket)", "--recent", "5000"])
        #expect(refused.status == 2)
        #expect(refused.err.contains("INVALID_ARGUMENT") && refused.err.contains("recent must be 0 to 1000"), "\(refused.err)")
    }

    @Test("sluicectl reload, snapshot and stats against a running sluiced")
    func operatorCommandLine() async throws {
        let directory = "/tmp/sluiced-ctl-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/s.sock"
        let file = "\(directory)/sluice.yaml"
        let snapshot = "\(directory)/table.snapshot"
        try "rules:\n  a: { limit: 1, period: 1m }\n".write(toFile: file, atomically: true, encoding: .utf8)
        let (process, _) = try Self.launch(["--config", file, "--unix", socket, "--snapshot", snapshot, "--metrics", "off",
                                            "--log-level", "warning"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await Self.waitForSocket(socket))
        let endpoint = ["--endpoint", "unix:\(socket)"]

        #expect(try await Self.sluicectl(["check", "--rule", "a", "caller"] + endpoint).status == 0)
        #expect(try await Self.sluicectl(["check", "--rule", "a", "caller"] + endpoint).status == 1, "denied")

        try "rules:\n  a: { limit: 1, period: 1m }\n  b: { limit: 5, period: 1s }\n".write(toFile: file, atomically: true, encoding: .utf8)
        let reload = try await Self.sluicectl(["reload"] + endpoint)
        #expect(reload.status == 0)
        #expect(reload.out.contains("generation 2") && reload.out.contains("rules added:   b"), "\(reload.out)")

        try "rules:\n  a: { limit: 1, period: 1m, burst: -3 }\n".write(toFile: file, atomically: true, encoding: .utf8)
        let refused = try await Self.sluicectl(["reload"] + endpoint)
        #expect(refused.status == 2)
        #expect(refused.err.contains("CODE_INVALID_CONFIGURATION") && refused.err.contains("rules.a.burst"), "\(refused.err)")

        let written = try await Self.sluicectl(["snapshot", "--json"] + endpoint)
        #expect(written.status == 0)
        let report = try #require(Self.json(written.out.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(report["path"] as? String == snapshot)
        #expect(report["entries"] as? Int == 1)
        #expect(FileManager.default.fileExists(atPath: snapshot))

        let stats = try await Self.sluicectl(["stats", "--json"] + endpoint)
        let fields = try #require(Self.json(stats.out.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(fields["config_generation"] as? Int == 2, "the refused reload changed nothing")
        #expect(fields["config_source"] as? String == file)
        #expect(fields["snapshot_path"] as? String == snapshot)
        #expect(try await Self.sluicectl(["check", "--rule", "b", "caller"] + endpoint).status == 0)
        kill(process.processIdentifier, SIGTERM)
        await process.waitForExit(within: .seconds(60))
        #expect(process.terminationStatus == 0)
    }
}
