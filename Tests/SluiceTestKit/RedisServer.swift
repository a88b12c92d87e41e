import Foundation
#if canImport(Glibc)
import Glibc
import SluiceLoad
#endif

/// A real redis-server for one test, on a Unix socket in a folder of its own (and on a TCP port
/// when asked), stopped by ``stop()``.
public final class RedisServer: @unchecked Sendable {
    public static let binary = "/usr/bin/redis-server"
    public static var installed: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    public let directory: String
    public let socket: String
    let process = ChildProcess()

    /// Starts it with `arguments` added to the defaults (no persistence, Unix socket only), in
    /// `directory` (a new one by default; an earlier server's, to restart it at the same socket),
    /// and returns once it accepts connections. It waits with `Task.sleep`: a test that blocked
    /// its thread while a loaded machine started the server would hold one of the few threads
    /// every test's tasks run on (two on two cores), and others' deadlines would pass meanwhile.
    public static func start(_ arguments: [String] = [], directory: String? = nil) async throws -> RedisServer {
        let server = try RedisServer(spawning: arguments, directory: directory)
        // The socket file exists from bind(2); wait until a connection is accepted too. Up to
        // 30 s: a full test run starts many servers at once on two cores.
        for _ in 0..<1_200 {
            if FileManager.default.fileExists(atPath: server.socket), Self.accepts(server.socket) { return server }
            guard server.process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        server.stop()
        throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "redis-server did not accept on \(server.socket) within 30 s"])
    }

    init(spawning arguments: [String], directory: String?) throws {
        self.directory = directory ?? NSTemporaryDirectory() + "sluice-redis-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        socket = self.directory + "/redis.sock"
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["--port", "0", "--unixsocket", socket, "--save", "", "--appendonly", "no", "--loglevel", "warning",
                             "--dir", self.directory] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick).
    public static func freePort() -> Int? {
        #if canImport(Glibc)
        let descriptor = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let descriptor = Darwin.socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard bound else { return nil }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) == 0 }
        }
        return named ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }

    /// Whether a connection to the Unix socket at `path` is accepted now.
    static func accepts(_ path: String) -> Bool {
        #if canImport(Glibc)
        let descriptor = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let descriptor = Darwin.socket(AF_UNIX, SOCK_STREAM, 0)
        #endif
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
    }

    /// Kills it (SIGKILL: a child of the test process may inherit a mask that blocks SIGTERM)
    /// and removes its folder, unless `keepFolder` (to restart it there).
    public func stop(keepFolder: Bool = false) {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        if keepFolder {
            try? FileManager.default.removeItem(atPath: socket)
        } else {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    deinit { if process.isRunning { stop() } }
}
