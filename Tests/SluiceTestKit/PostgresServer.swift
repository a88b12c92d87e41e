import Foundation
#if canImport(Glibc)
import Glibc
import SluiceLoad
#endif

/// A real PostgreSQL 15 server for one test (or one suite): a fresh cluster made by `initdb` in a
/// folder of its own, listening on a Unix socket in that folder and on a free loopback TCP port,
/// stopped (and its folder removed) by ``stop()``.
///
/// The superuser is `sluice`; the Unix socket trusts it, TCP asks for ``password`` (SCRAM), so a
/// test can try a wrong one. `initdb` refuses to run as root: as root (CI), the cluster is made
/// and run as the `postgres` user through `runuser`, in a folder that user owns.
public final class PostgresServer: @unchecked Sendable {
    public static let binaries = "/usr/lib/postgresql/15/bin"
    public static var installed: Bool { FileManager.default.isExecutableFile(atPath: binaries + "/initdb") }

    public static let user = "sluice"
    public static let password = "sluice-test-password"

    public let directory: String
    public let port: Int
    /// The folder holding the Unix socket (`.s.PGSQL.<port>`).
    public var socketDirectory: String { directory }
    public var socketPath: String { directory + "/.s.PGSQL.\(port)" }
    var data: String { directory + "/data" }
    var process: ChildProcess?

    /// A URL for the store over the Unix socket (no password), to database `database`.
    public func socketURL(database: String = "postgres") -> String {
        "postgres://\(Self.user)@/\(database)?host=\(directory)&port=\(port)"
    }

    /// A URL over TCP with the password (or `password`).
    public func tcpURL(database: String = "postgres", password: String = PostgresServer.password) -> String {
        "postgres://\(Self.user):\(password)@127.0.0.1:\(port)/\(database)"
    }

    /// Makes a new cluster and starts it; returns once it accepts connections (up to 60 s: a
    /// full test run starts servers on two busy cores). Waits with `Task.sleep`, never blocking
    /// a test thread.
    public static func start(settings: [String: String] = [:]) async throws -> PostgresServer {
        guard let port = RedisServer.freePort() else { throw failure("no free TCP port") }
        let server = try PostgresServer(port: port)
        try await blocking {
            try server.initialize()
            try server.launch(settings: settings)
        }
        try await server.waitUntilReady()
        return server
    }

    init(port: Int) throws {
        self.port = port
        directory = NSTemporaryDirectory() + "sluice-pg-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if Self.asRoot { try Self.giveToPostgres(directory) }
    }

    static var asRoot: Bool { geteuid() == 0 }

    /// The postmaster's process id (from its `postmaster.pid`): as root the child this fixture
    /// started is `runuser`, which waits for it.
    var postmaster: Int32? {
        guard let text = try? String(contentsOfFile: data + "/postmaster.pid", encoding: .utf8),
              let first = text.split(separator: "\n").first, let pid = Int32(first), pid > 0 else { return nil }
        return pid
    }

    /// Gives `certificates`' files to the server's user, its key readable by it alone (PostgreSQL
    /// refuses a key others can read), for `ssl_cert_file` and `ssl_key_file`.
    public static func give(_ certificates: TestCertificates) throws {
        chmod(certificates.key, 0o600)
        guard asRoot else { return }
        for path in [certificates.directory, certificates.certificate, certificates.key] { try giveToPostgres(path) }
    }

    static func giveToPostgres(_ path: String) throws {
        guard let account = getpwnam("postgres") else { throw failure("running as root, and there is no postgres user to run PostgreSQL as") }
        guard chown(path, account.pointee.pw_uid, account.pointee.pw_gid) == 0 else {
            throw failure("could not give \(path) to the postgres user: \(String(cString: strerror(errno)))")
        }
    }

    /// A process that runs `tool` (from ``binaries``) with `arguments` as the server's user.
    static func process(_ tool: String, _ arguments: [String]) -> ChildProcess {
        let process = ChildProcess()
        let command = [binaries + "/" + tool] + arguments
        process.executableURL = URL(fileURLWithPath: asRoot ? "/usr/sbin/runuser" : command[0])
        process.arguments = asRoot ? ["-u", "postgres", "--"] + command : Array(command.dropFirst())
        return process
    }

    /// Runs `tool` as the server's user; fails with its output unless it exits 0 (or `check` is false).
    @discardableResult
    func run(_ tool: String, _ arguments: [String], check: Bool = true) throws -> String {
        let (status, output) = try ChildProcess.output(of: Self.process(tool, arguments))
        guard status == 0 || !check else { throw Self.failure("\(tool) failed (\(status)): \(output)") }
        return output
    }

    func initialize() throws {
        let passwordFile = directory + "/password"
        try Self.password.write(toFile: passwordFile, atomically: true, encoding: .utf8)
        if Self.asRoot { try Self.giveToPostgres(passwordFile) }
        try run("initdb", ["-D", data, "-U", Self.user, "--pwfile", passwordFile, "--auth-local=trust", "--auth-host=scram-sha-256",
                           "-E", "UTF8", "--locale=C", "--no-sync"])
    }

    /// Starts the server process on the cluster (again, after ``stop(keepData:)``).
    func launch(settings: [String: String] = [:]) throws {
        var arguments = ["-D", data, "-k", directory, "-p", String(port), "-c", "listen_addresses=127.0.0.1",
                         // Tests make and drop many connections; the disk is a temp folder.
                         "-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"]
        for (name, value) in settings.sorted(by: { $0.key < $1.key }) { arguments += ["-c", "\(name)=\(value)"] }
        let process = Self.process("postgres", arguments)
        process.standardOutput = FileHandle.nullDevice
        let logPath = directory + "/server.log"
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        process.standardError = FileHandle(forWritingAtPath: logPath) ?? FileHandle.nullDevice
        try process.run()
        self.process = process
    }

    func waitUntilReady() async throws {
        for _ in 0..<2_400 {
            if FileManager.default.fileExists(atPath: socketPath),
               (try? await blocking { try self.run("pg_isready", ["-h", self.directory, "-p", String(self.port)]) }) != nil { return }
            guard process?.isRunning == true else { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
        stop()
        throw Self.failure("postgres did not accept on port \(port) within 60 s: \(log.suffix(2_000))")
    }

    /// Runs SQL through psql over the Unix socket, as the superuser; its output (unaligned, tuples only).
    /// Fails on an error unless `check` is false (then the error is in the output).
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres", check: Bool = true) throws -> String {
        try run("psql", ["-h", directory, "-p", String(port), "-U", Self.user, "-d", database, "-v", "ON_ERROR_STOP=1", "-A", "-t", "-q", "-c", sql],
                check: check)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A new, empty database; its name.
    public func createDatabase(_ name: String = "sluice_" + UUID().uuidString.prefix(8).lowercased()) throws -> String {
        try psql("CREATE DATABASE \(name)")
        return name
    }

    /// Stops the server at once (SIGKILL of the postmaster and its backends: what a crash does;
    /// committed transactions are in its WAL). With `keepData` its cluster stays, to ``restart()``.
    public func stop(keepData: Bool = false) {
        if let process, process.isRunning {
            let main = postmaster
            let backends = main.map(Self.children(of:)) ?? []
            if let main { kill(main, SIGKILL) }
            for backend in backends { kill(backend, SIGKILL) }
            // As root `process` is `runuser`, the postmaster's parent: left alive it reaps the
            // postmaster and exits. Killed first, the postmaster would be orphaned to a PID 1 that
            // may never reap it, and its zombie would keep `postmaster.pid` looking alive to a restart.
            for _ in 0..<200 where process.isRunning { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            if let main { for _ in 0..<400 where Self.isRunning(main) { usleep(25_000) } }
            // A restart must find the old backends gone (they hold the shared memory).
            for _ in 0..<400 where backends.contains(where: Self.isRunning) { usleep(25_000) }
        }
        process = nil
        if !keepData { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// Starts it again on the same cluster and port (after ``stop(keepData: true)``).
    public func restart() async throws {
        try? FileManager.default.removeItem(atPath: socketPath)
        // A postmaster left a zombie still passes PostgreSQL's own `kill(pid, 0)` test of its lock file.
        if let old = postmaster, !Self.isRunning(old) { try? FileManager.default.removeItem(atPath: data + "/postmaster.pid") }
        try await blocking { try self.launch() }
        try await waitUntilReady()
    }

    /// Pauses (SIGSTOP) or resumes (SIGCONT) the postmaster and every backend: a server that
    /// accepts nothing and answers nothing, with its connections open.
    public func freeze(_ frozen: Bool) {
        guard let main = postmaster else { return }
        let signal = frozen ? SIGSTOP : SIGCONT
        // The backends are the postmaster's children.
        kill(main, signal)
        for child in Self.children(of: main) { kill(child, signal) }
    }

    /// Whether `pid` still runs: a process killed whose parent is gone stays a zombie until
    /// PID 1 reaps it, which in a container it may never do (`kill(pid, 0)` succeeds on a zombie,
    /// and a wait for that would hold a test's thread for the whole bound).
    static func isRunning(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].split(separator: " ").first
        return state != "Z" && state != "X"
    }

    static func children(of parent: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [Int32] = []
        for entry in entries {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 2, Int32(fields[1]) == parent { found.append(pid) }
        }
        return found
    }

    static func failure(_ message: String) -> NSError {
        NSError(domain: "PostgresServer", code: 1, userInfo: [NSLocalizedDescriptionKey: message])
    }

    deinit { if process?.isRunning == true { stop() } }
}

extension PostgresServer {
    /// One server for every test of this process that needs a database of its own (each makes
    /// one with ``createDatabase(_:)``): a cluster takes seconds to make, a database a moment.
    /// Killed when the process exits.
    public static func shared() async throws -> PostgresServer {
        try await SharedPostgres.instance.server()
    }
}

actor SharedPostgres {
    static let instance = SharedPostgres()
    var started: Task<PostgresServer, any Error>?

    func server() async throws -> PostgresServer {
        if let started { return try await started.value }
        let task = Task { () throws -> PostgresServer in
            let server = try await PostgresServer.start()
            try server.stopWhenThisProcessEnds()
            return server
        }
        started = task
        return try await task.value
    }
}

extension PostgresServer {
    /// A watchdog that kills the server (and removes its folder) once this process is gone, however
    /// it ends: the test runner does not run `atexit` handlers, and a server left behind would
    /// outlive every test run.
    func stopWhenThisProcessEnds() throws {
        guard let main = postmaster else { return }
        let watchdog = ChildProcess()
        watchdog.executableURL = URL(fileURLWithPath: "/bin/sh")
        watchdog.arguments = ["-c", """
            while kill -0 \(getpid()) 2>/dev/null; do sleep 0.5; done
            pkill -9 -P \(main); kill -9 \(main); sleep 1; rm -rf '\(directory)'
            """]
        watchdog.standardOutput = FileHandle.nullDevice
        watchdog.standardError = FileHandle.nullDevice
        try watchdog.run()
    }
}

extension ChildProcess {
    /// Runs `process` to its end; its exit status and what it wrote (standard output and error).
    public static func output(of process: ChildProcess) throws -> (status: Int32, output: String) {
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        // Read to the end first: a full pipe would stop the child before it exits.
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }
}
