import ArgumentParser
import Foundation
import SluiceClient
import SluiceCore
import SluiceProto

@main
struct Sluicectl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluicectl",
        abstract: "Talk to a running sluiced.",
        discussion: "Exit status: 0 success (check: allowed), 1 denied, 2 error.",
        version: SluiceVersion.current,
        subcommands: [Ping.self, Check.self, Release.self, Stats.self, Reload.self, Snapshot.self, ReputationCommand.self, TiersCommand.self, Flags.self,
                      Replay.self, Report.self, Alerts.self, Top.self, StoreCommand.self, TokenCommand.self]
    )

    /// Runs the command the arguments name. Usage errors exit 2, as every other error does
    /// (argument-parser's own status for them is 64), and the connection options may come before
    /// the subcommand (`sluicectl -e HOST:PORT stats`) as well as after it.
    static func main() async {
        let arguments = hoistingConnectionOptions(Array(CommandLine.arguments.dropFirst()))
        do {
            var command = try parseAsRoot(arguments)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            guard code == .validationFailure else { exit(withError: error) }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(2)
        }
    }

    /// The options every subcommand that talks to a daemon takes (``ConnectionOptions``), moved
    /// from before the subcommand's name to after it.
    static let connectionOptions: Set<String> = ["-e", "--endpoint", "--timeout", "--tls-ca", "--tls-cert", "--tls-key", "--token", "--token-file"]

    static func hoistingConnectionOptions(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            if argument == "--tls" {
                leading.append(argument)
                index += 1
            } else if connectionOptions.contains(name) {
                let takesNext = !argument.contains("=") && index + 1 < arguments.count
                leading += arguments[index..<(takesNext ? index + 2 : index + 1)]
                index += takesNext ? 2 : 1
            } else {
                break
            }
        }
        guard !leading.isEmpty, index < arguments.count else { return arguments }
        // The subcommand's path: every word up to the first option (store copy, token create).
        var path = index
        while path < arguments.count, !arguments[path].hasPrefix("-") { path += 1 }
        return Array(arguments[index..<path]) + leading + Array(arguments[path...])
    }
}

struct ConnectionOptions: ParsableArguments {
    @Option(name: [.short, .long], help: "unix:PATH, a socket path, or HOST:PORT (default: $SLUICE_ENDPOINT or unix:/tmp/sluice.sock).")
    var endpoint: String?

    @Option(name: .long, help: "Seconds to wait for the daemon.")
    var timeout: Double = 5

    @Option(name: .long, help: "TLS: the authority (PEM) the daemon's certificate must chain to (default: $SLUICE_TLS_CA; with neither, plain TCP unless --tls).")
    var tlsCa: String?

    @Option(name: .long, help: "TLS: this client's certificate (PEM), for a listener that requires one (default: $SLUICE_TLS_CERT).")
    var tlsCert: String?

    @Option(name: .long, help: "TLS: the key of --tls-cert (PEM) (default: $SLUICE_TLS_KEY).")
    var tlsKey: String?

    @Flag(name: .long, help: "TLS to a TCP endpoint, trusting the system's roots (implied by --tls-ca).")
    var tls = false

    @Option(name: .long, help: "An API token to authenticate with (default: $SLUICE_TOKEN). Visible to other users in the process list: prefer --token-file or the variable.")
    var token: String?

    @Option(name: .long, help: "A file holding the API token (default: $SLUICE_TOKEN_FILE).")
    var tokenFile: String?

    /// The token the options, the environment or a file give; nil: none.
    func presentedToken() throws -> String? {
        let environment = ProcessInfo.processInfo.environment
        if let token = token ?? environment["SLUICE_TOKEN"], !token.isEmpty { return token }
        guard let file = tokenFile ?? environment["SLUICE_TOKEN_FILE"] else { return nil }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw Failure("cannot read the token file \(file)") }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The TLS settings the options and environment give; nil: plain.
    var clientTLS: ClientTLS? {
        let environment = ProcessInfo.processInfo.environment
        let authority = tlsCa ?? environment["SLUICE_TLS_CA"]
        let certificate = tlsCert ?? environment["SLUICE_TLS_CERT"], key = tlsKey ?? environment["SLUICE_TLS_KEY"]
        guard tls || authority != nil || certificate != nil else { return nil }
        return ClientTLS(authority: authority, certificate: certificate, key: key)
    }

    func connect() async throws -> SluiceClient {
        let text = endpointName
        let target: Endpoint
        do {
            target = try Endpoint(parsing: text)
        } catch {
            throw Failure("--endpoint: \(error)")
        }
        let token = try presentedToken()
        do {
            return try await SluiceClient.connect(to: target, timeout: .milliseconds(Int64(timeout * 1_000)), tls: clientTLS, token: token)
        } catch ClientError.refused(let error) {
            throw Failure("\(error.code.name): \(error.message)")
        } catch {
            throw Failure("cannot connect to \(endpointName): \(ConnectFailure.describe(error))")
        }
    }

    /// The endpoint as given, or the default.
    var endpointName: String { endpoint ?? ProcessInfo.processInfo.environment["SLUICE_ENDPOINT"] ?? "unix:/tmp/sluice.sock" }

    func send(_ request: WireRequest) async throws -> WireResponse {
        let client = try await connect()
        defer { Task { await client.close() } }
        let response = try await withThrowingTaskGroup(of: WireResponse.self) { group in
            group.addTask {
                try await client.send(request)
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(Int64(timeout * 1_000)))
                throw Failure("no answer within \(timeout) s")
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
        if case .error(let error) = response.body {
            throw Failure("\(error.code.name): \(error.message)")
        }
        return response
    }
}

/// An error printed as one line, exit status 2.
struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension AsyncParsableCommand {
    static func reportFailures(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let failure as Failure {
            FileHandle.standardError.write(Data("sluicectl: \(failure.description)\n".utf8))
            throw ExitCode(2)
        } catch let exit as ExitCode {
            throw exit
        } catch where "\(error)".hasPrefix("frameTooLarge") {
            // A length no daemon sends: most likely a TLS listener's first bytes read as a frame.
            FileHandle.standardError.write(Data("sluicectl: the answer is not Sluice's framing (\(error)); if the listener speaks TLS, use --tls-ca (or --tls)\n".utf8))
            throw ExitCode(2)
        } catch {
            FileHandle.standardError.write(Data("sluicectl: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// Prints one JSON object per line with every field present (proto3 JSON would drop false and 0,
/// and a script should not have to know that a missing "allowed" means false).
func printJSON(_ object: [String: Any]) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

extension Sluice_V1_Algorithm {
    /// The configuration file's name for the algorithm.
    var name: String { core?.description ?? "unspecified" }
}

extension Sluice_V1_Reason {
    /// The same numbers as `DecisionReason` (sluice.proto's `Reason`), so its names.
    var name: String { DecisionReason(rawValue: UInt8(clamping: rawValue)).map(\.name) ?? "unspecified" }
}

extension Sluice_V1_Verdict {
    var jsonObject: [String: Any] {
        ["allowed": allowed, "limit": limit, "remaining": remaining, "reset_after_ms": resetAfterMs,
         "retry_after_ms": retryAfterMs, "rule": rule, "algorithm": algorithm.name, "lease_id": leaseID,
         "reason": reason.name, "limit_index": limitIndex]
            .merging(reputationFields) { a, _ in a }
    }

    /// Reputation's fields, present only when reputation applied.
    var reputationFields: [String: Any] {
        var fields: [String: Any] = [:]
        if case .reputation(let score)? = reputationPresence { fields["reputation"] = score }
        if multiplier != 0 { fields["multiplier"] = multiplier }
        if !tier.isEmpty { fields["tier"] = tier }
        if wouldDeny {
            fields["would_deny"] = true
            fields["would_deny_reason"] = wouldDenyReason.name
        }
        return fields
    }
}

extension Sluice_V1_StatsResponse {
    var jsonObject: [String: Any] {
        ["version": version, "uptime_ms": uptimeMs, "clock": clock, "checks": checks, "allowed": allowed,
         "denied": denied, "entries": entries, "max_entries": maxEntries, "evictions": evictions,
         "reclaimed": reclaimed, "shards": shards, "connections_open": connectionsOpen,
         "connections_total": connectionsTotal, "requests": requests, "errors": errors,
         "events_dropped": eventsDropped, "config_generation": configGeneration, "config_source": configSource,
         "snapshot_path": snapshotPath,
         "backend": ["kind": backend.kind, "address": backend.address, "state": backend.state, "on_failure": backend.onFailure,
                     "connections_up": backend.connectionsUp, "decided_remote": backend.decidedRemote,
                     "denied_from_cache": backend.deniedFromCache, "decided_degraded": backend.decidedDegraded,
                     "writes": backend.writes] as [String: Any]]
    }

    /// The backend in one line: where limits are decided and how that is going.
    var backendLine: String {
        guard backend.kind == "redis" else { return backend.kind.isEmpty ? "local" : backend.kind }
        return "redis \(backend.address): breaker \(backend.state), \(backend.connectionsUp) connections up, on_failure \(backend.onFailure); "
            + "\(backend.decidedRemote) decided in Redis, \(backend.deniedFromCache) denied from the over-limit cache, "
            + "\(backend.decidedDegraded) on the on_failure path"
    }
}

struct Ping: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check that the daemon answers, and how fast (round trips on one connection).")
    @OptionGroup var connection: ConnectionOptions
    @Option(name: .long, help: "How many pings.") var count: Int = 5

    func run() async throws {
        try await Self.reportFailures {
            let client = try await connection.connect()
            defer { Task { await client.close() } }
            var request = WireRequest()
            request.ping = Sluice_V1_PingRequest()
            var times: [Duration] = []
            for _ in 0..<max(1, count) {
                let start = ContinuousClock.now
                let response = try await client.send(request)
                guard case .ping = response.body else { throw Failure("unexpected answer to ping: \(response)") }
                times.append(ContinuousClock.now - start)
            }
            func micros(_ d: Duration) -> String {
                let us = Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
                return us >= 1_000 ? String(format: "%.2f ms", us / 1_000) : String(format: "%.0f µs", us)
            }
            let sorted = times.sorted()
            print("pong: \(times.count) round trips, min \(micros(sorted[0])), median \(micros(sorted[sorted.count / 2])), max \(micros(sorted[sorted.count - 1]))")
        }
    }
}

struct LimitOptions: ParsableArguments {
    @Option(name: .long, help: "A configured rule's name.")
    var rule: String?

    @Option(name: .long, help: "An inline limit: units per period.")
    var limit: UInt64?

    @Option(name: .long, help: "The inline limit's period: 500ms, 1s, 1m, 1h, 1d (default 1s).")
    var period: String = "1s"

    @Option(name: .long, help: "The inline limit's burst (default: the limit).")
    var burst: UInt64 = 0

    @Option(name: .long, help: "gcra, token_bucket, sliding_window, fixed_window or concurrency.")
    var algorithm: String?

    static func milliseconds(_ text: String) throws -> UInt64 {
        let units: [(String, UInt64)] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let value = UInt64(text.dropLast(suffix.count)) { return value * scale }
        }
        guard let value = UInt64(text) else { throw Failure("--period: expected 500ms, 1s, 1m, 1h or 1d, got '\(text)'") }
        return value
    }

    func apply(rule: inout String?, inline: inout Sluice_V1_Limit?) throws {
        switch (self.rule, limit) {
        case (let name?, nil):
            rule = name
        case (nil, let count?):
            var wire = Sluice_V1_Limit(limit: count, periodMs: try Self.milliseconds(period), burst: burst)
            if let algorithm {
                guard let value = Algorithm(name: algorithm) else {
                    throw Failure("--algorithm: expected one of \(Algorithm.allCases.map(\.description).joined(separator: ", "))")
                }
                wire.algorithm = Sluice_V1_Algorithm(value)
            }
            inline = wire
        default:
            throw Failure("give either --rule NAME or --limit N [--period 1s]")
        }
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Ask whether KEY may spend HITS now, and print the verdict.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The key the limit counts against.") var key: String
    @OptionGroup var limitOptions: LimitOptions
    @Option(name: .long, help: "The tenant (default: the default tenant).") var tenant: String = ""
    @Option(name: .long, help: "The subject (default: the key).") var subject: String = ""
    @Option(name: .long, help: "The cost; 0 peeks without consuming.") var hits: UInt64 = 1
    @Option(name: .long, help: "Milliseconds since the epoch (daemons run with --clock request).") var nowMs: UInt64 = 0
    @Option(name: .long, help: "Send the check this many times in one batch.") var count: Int = 1
    @Flag(name: .long, help: "Print the verdicts as JSON.") var json = false

    func run() async throws {
        var allowed = true
        try await Self.reportFailures {
            var check = WireCheck()
            check.tenant = tenant
            check.key = key
            check.subject = subject
            check.hits = hits
            check.nowMs = nowMs
            var rule: String?
            var inline: Sluice_V1_Limit?
            try limitOptions.apply(rule: &rule, inline: &inline)
            if let rule { check.rule = rule }
            if let inline { check.limit = inline }
            var request = WireRequest()
            request.check.checks = Array(repeating: check, count: max(1, count))
            let response = try await connection.send(request)
            for verdict in response.check.verdicts {
                allowed = verdict.allowed
                if json {
                    try printJSON(verdict.jsonObject)
                } else {
                    var line = "\(verdict.allowed ? "allowed" : "denied ") limit=\(verdict.limit) remaining=\(verdict.remaining)"
                    line += " reset_after=\(verdict.resetAfterMs)ms retry_after=\(verdict.retryAfterMs)ms"
                    if !verdict.rule.isEmpty { line += " rule=\(verdict.rule)" }
                    line += " algorithm=\(verdict.algorithm.name)"
                    if verdict.leaseID != 0 { line += " lease=\(verdict.leaseID)" }
                    if !verdict.allowed { line += " reason=\(verdict.reason.name)" }
                    if case .reputation(let score)? = verdict.reputationPresence { line += String(format: " reputation=%.1f", score) }
                    if verdict.multiplier != 0 { line += String(format: " multiplier=%.2f", verdict.multiplier) }
                    if verdict.wouldDeny { line += " would_deny=\(verdict.wouldDenyReason.name)" }
                    if !verdict.tier.isEmpty { line += " tier=\(verdict.tier)" }
                    print(line)
                }
            }
        }
        if !allowed { throw ExitCode(1) }
    }
}

struct Release: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Return a concurrency lease early.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The key the lease was acquired for.") var key: String
    @Argument(help: "The lease id printed by check.") var leaseID: UInt64
    @OptionGroup var limitOptions: LimitOptions
    @Option(name: .long, help: "The tenant.") var tenant: String = ""

    func run() async throws {
        var released = false
        try await Self.reportFailures {
            var release = Sluice_V1_ReleaseRequest()
            release.tenant = tenant
            release.key = key
            release.leaseID = leaseID
            var rule: String?
            var inline: Sluice_V1_Limit?
            try limitOptions.apply(rule: &rule, inline: &inline)
            if let rule { release.rule = rule }
            if let inline { release.limit = inline }
            var request = WireRequest()
            request.release = release
            released = try await connection.send(request).release.released
            print(released ? "released" : "not held (already released, expired, or never granted)")
        }
        if !released { throw ExitCode(1) }
    }
}

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the daemon's counters.")
    @OptionGroup var connection: ConnectionOptions
    @Flag(name: .long, help: "Print as JSON.") var json = false

    func run() async throws {
        try await Self.reportFailures {
            var request = WireRequest()
            request.stats = Sluice_V1_StatsRequest()
            let stats = try await connection.send(request).stats
            if json {
                try printJSON(stats.jsonObject)
                return
            }
            let rows: [(String, String)] = [
                ("version", stats.version), ("uptime", "\(stats.uptimeMs / 1_000) s"), ("clock", stats.clock),
                ("checks", "\(stats.checks)"), ("allowed", "\(stats.allowed)"), ("denied", "\(stats.denied)"),
                ("entries", "\(stats.entries) of \(stats.maxEntries)"), ("evictions", "\(stats.evictions)"),
                ("reclaimed", "\(stats.reclaimed)"), ("shards", "\(stats.shards)"),
                ("connections", "\(stats.connectionsOpen) open, \(stats.connectionsTotal) since start"),
                ("requests", "\(stats.requests)"), ("errors", "\(stats.errors)"),
                ("config", "\(stats.configSource) (generation \(stats.configGeneration))"),
                ("snapshot", stats.snapshotPath.isEmpty ? "off" : stats.snapshotPath),
                ("backend", stats.backendLine),
            ]
            for (name, value) in rows { print(name.padding(toLength: 12, withPad: " ", startingAt: 0) + value) }
        }
    }
}

struct Reload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-read the daemon's configuration file and apply it if it is valid (as SIGHUP does).",
        discussion: """
        An invalid file is refused with the key and the problem (exit 2); the configuration in force
        stays. To roll back a change, put the previous file back and reload again. Served on the Unix
        socket (and on TCP only with admin.allow_tcp).
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @Flag(name: .long, help: "Print as JSON.") var json = false

    func run() async throws {
        try await Self.reportFailures {
            var request = WireRequest()
            request.reload = Sluice_V1_ReloadRequest()
            let report = try await connection.send(request).reload
            if json {
                try printJSON(["source": report.source, "generation": report.generation, "rules_added": report.rulesAdded,
                               "rules_changed": report.rulesChanged, "rules_removed": report.rulesRemoved,
                               "needs_restart": report.needsRestart])
                return
            }
            print("reloaded \(report.source): generation \(report.generation)")
            func list(_ names: [String]) -> String { names.isEmpty ? "none" : names.joined(separator: ", ") }
            print("  rules added:   \(list(report.rulesAdded))")
            print("  rules changed: \(list(report.rulesChanged))")
            print("  rules removed: \(list(report.rulesRemoved))")
            if !report.needsRestart.isEmpty {
                print("  not applied until a restart: \(list(report.needsRestart))")
            }
        }
    }
}

struct Snapshot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the limiter table to the snapshot file now (e.g. before an upgrade or a backup).")
    @OptionGroup var connection: ConnectionOptions
    @Flag(name: .long, help: "Print as JSON.") var json = false

    func run() async throws {
        try await Self.reportFailures {
            var request = WireRequest()
            request.snapshot = Sluice_V1_SnapshotRequest()
            let written = try await connection.send(request).snapshot
            if json {
                try printJSON(["path": written.path, "entries": written.entries, "bytes": written.bytes,
                               "duration_us": written.durationUs])
                return
            }
            print("wrote \(written.entries) entries (\(written.bytes) bytes) to \(written.path) in \(written.durationUs / 1_000) ms")
        }
    }
}
