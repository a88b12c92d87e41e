import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SluiceCore
import SluiceTestKit
import Testing

/// The executables as a new user meets them: `--version`, the exit status of a mistyped command,
/// the options in either place, and what a daemon that is not there looks like.
@Suite("Command-line habits", .ownThreads)
struct CommandLineHabitsTests {
    /// The repository's VERSION file: the one place the version is written.
    static var version: String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = (try? String(contentsOf: root.appendingPathComponent("VERSION"), encoding: .utf8)) ?? ""
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs an executable to completion on a thread of its own: waiting for a child process
    /// must not hold one of the two threads every test shares (CI has two cores).
    static func run(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, out: String, err: String) {
        try await DaemonProcessTests.run(executable, arguments)
    }

    @Test("every executable prints the version of the VERSION file with --version", arguments: ["sluiced", "sluicectl", "sluice-bench"])
    func versions(executable: String) async throws {
        #expect(!Self.version.isEmpty)
        #expect(SluiceVersion.current == Self.version, "scripts/generate.sh copies VERSION into the code")
        let run = try await Self.run(executable, ["--version"])
        #expect(run.status == 0)
        #expect(run.out.trimmingCharacters(in: .whitespacesAndNewlines) == Self.version)
    }

    @Test("a mistyped sluicectl command exits 2 with its usage, as every other error does",
          arguments: [["--bogus"], ["check"], ["check", "k", "--hits", "many"], ["nonsense"]])
    func usageErrorsExitTwo(arguments: [String]) async throws {
        let run = try await Self.run("sluicectl", arguments)
        #expect(run.status == 2, "\(run.err)")
        #expect(run.err.contains("Error:") && run.err.contains("Usage:"), "\(run.err)")
    }

    @Test("a daemon that is not there is named with the likely cause, not NIO's syscall text")
    func noDaemon() async throws {
        let absent = "/tmp/sluice-absent-\(UInt32.random(in: .min ... .max)).sock"
        let unix = try await Self.run("sluicectl", ["stats", "-e", "unix:\(absent)"])
        #expect(unix.status == 2)
        #expect(unix.err == "sluicectl: cannot connect to unix:\(absent): no such socket (is sluiced running?)\n", "\(unix.err)")
        // A TCP port nothing listens on: a port of a socket bound here and closed at once.
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let port = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw -> UInt16 in
                _ = bind(probe, raw, length)
                _ = getsockname(probe, raw, &length)
                return UInt16(bigEndian: pointer.pointee.sin_port)
            }
        }
        close(probe)
        let tcp = try await Self.run("sluicectl", ["ping", "-e", "127.0.0.1:\(port)"])
        #expect(tcp.status == 2)
        #expect(tcp.err.contains("cannot connect to 127.0.0.1:\(port): connection refused (is sluiced running"), "\(tcp.err)")
    }

    @Test("the connection options work before the subcommand as after it, for nested subcommands too")
    func optionsBeforeTheSubcommand() async throws {
        let directory = "/tmp/sluiced-habits-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/s.sock"
        try "rules:\n  a: { limit: 1, period: 1h }\n".write(toFile: "\(directory)/sluice.yaml", atomically: true, encoding: .utf8)
        let (process, _) = try DaemonProcessTests.launch(["--config", "\(directory)/sluice.yaml", "--unix", socket, "--snapshot", "off",
                                                          "--store", "off", "--metrics", "off", "--log-level", "warning"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await DaemonProcessTests.waitForSocket(socket))

        #expect(try await Self.run("sluicectl", ["-e", "unix:\(socket)", "check", "--rule", "a", "caller"]).status == 0)
        #expect(try await Self.run("sluicectl", ["--endpoint=unix:\(socket)", "--timeout", "3", "check", "caller", "--rule", "a"]).status == 1,
                "denied: the same key, the options before the subcommand")
        let stats = try await Self.run("sluicectl", ["-e", "unix:\(socket)", "stats", "--json"])
        #expect(stats.status == 0 && stats.out.contains("\"checks\":2"), "\(stats.out) \(stats.err)")
        let flags = try await Self.run("sluicectl", ["-e", "unix:\(socket)", "flags"])
        #expect(flags.status == 0, "\(flags.err)")
        kill(process.processIdentifier, SIGTERM)
        await process.waitForExit(within: .seconds(60))
    }

    /// The repository's root.
    static var root: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    @Test("the systemd unit's configuration passes --check-config, and systemd-analyze accepts the unit where systemd is installed")
    func systemdUnit() async throws {
        let configuration = Self.root.appendingPathComponent("contrib/systemd/sluice.yaml").path
        let check = try await Self.run("sluiced", ["--config", configuration, "--check-config"])
        #expect(check.status == 0, "\(check.err)")
        let unit = try String(contentsOf: Self.root.appendingPathComponent("contrib/systemd/sluiced.service"), encoding: .utf8)
        #expect(unit.contains("Type=notify") && unit.contains("WatchdogSec=") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"))
        #expect(unit.contains("--config /etc/sluice/sluice.yaml"))
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") else { return }
        // The unit with the built binary in place of /usr/bin/sluiced (verify checks that it runs).
        let copy = "/tmp/sluice-unit-\(UInt32.random(in: .min ... .max)).service"
        defer { try? FileManager.default.removeItem(atPath: copy) }
        try unit.replacingOccurrences(of: "/usr/bin/sluiced", with: DaemonProcessTests.productsDirectory.appendingPathComponent("sluiced").path)
            .write(toFile: copy, atomically: true, encoding: .utf8)
        let verify = try await Self.run("/usr/bin/systemd-analyze", ["verify", "--man=no", copy])
        #expect(verify.status == 0, "\(verify.out) \(verify.err)")
        #expect(!verify.err.contains("Unknown key") && !verify.err.contains("Failed to parse"), "\(verify.err)")
    }
}
