import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SluiceLoad
@testable import SluiceServer
import Testing

/// systemd's side of `Type=notify`, played by the test: a datagram socket named by
/// `NOTIFY_SOCKET`, reading what the real `sluiced` sends.
@Suite("systemd notifications")
struct SystemdNotifyTests {
    /// A datagram socket bound to `path` (`@name`: abstract), reading with a timeout.
    final class FakeSystemd: @unchecked Sendable {
        let descriptor: Int32

        init(path: String) throws {
            descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            var bytes = Array(path.utf8)
            if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in bytes.enumerated() { raw[index] = byte }
            }
            let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
            let bound = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
            }
            guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
            var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit { close(descriptor) }

        /// The messages received until `until` says stop or `seconds` pass, on a thread of its
        /// own (recv blocks).
        func read(for seconds: Double, until: @escaping @Sendable ([String]) -> Bool) async -> [String] {
            await withCheckedContinuation { continuation in
                Thread.detachNewThread { [self] in
                    var messages: [String] = []
                    let deadline = Date().addingTimeInterval(seconds)
                    var buffer = [UInt8](repeating: 0, count: 4_096)
                    while Date() < deadline, !until(messages) {
                        let count = recv(descriptor, &buffer, buffer.count, 0)
                        if count > 0 { messages.append(String(decoding: buffer[0..<count], as: UTF8.self)) }
                    }
                    continuation.resume(returning: messages)
                }
            }
        }
    }

    @Test("sluiced says READY=1 once it serves, pets the watchdog every half period, and says STOPPING=1 on SIGTERM")
    func readyWatchdogStopping() async throws {
        let directory = "/tmp/sluiced-systemd-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let systemd = try FakeSystemd(path: "\(directory)/notify.sock")
        let socket = "\(directory)/s.sock"
        let process = ChildProcess()
        process.executableURL = DaemonProcessTests.productsDirectory.appendingPathComponent("sluiced")
        process.arguments = ["--unix", socket, "--snapshot", "off", "--store", "off", "--metrics", "off", "--log-level", "warning"]
        process.environment = ["NOTIFY_SOCKET": "\(directory)/notify.sock", "WATCHDOG_USEC": "200000"]
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        let first = await systemd.read(for: 30) { !$0.isEmpty }
        let ready = try #require(first.first)
        #expect(ready.contains("READY=1") && ready.contains("MAINPID=\(process.processIdentifier)"), "\(ready)")
        #expect(FileManager.default.fileExists(atPath: socket), "ready means listening")
        let pets = await systemd.read(for: 10) { $0.count >= 3 }
        #expect(pets.count >= 3 && pets.allSatisfy { $0 == "WATCHDOG=1" }, "every 100 ms: \(pets)")

        kill(process.processIdentifier, SIGTERM)
        let last = await systemd.read(for: 10) { $0.contains { $0.contains("STOPPING=1") } }
        #expect(last.contains { $0.hasPrefix("STOPPING=1") }, "\(last)")
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    @Test("no NOTIFY_SOCKET, no notifier; the watchdog is for WATCHDOG_PID only; abstract socket names work")
    func environment() async throws {
        #expect(SystemdNotifier(environment: [:]) == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "relative/path"]) == nil)
        let other = try #require(SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"], pid: 42))
        #expect(other.watchdogInterval == nil, "another process's watchdog")
        let own = try #require(SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "42"], pid: 42))
        #expect(own.watchdogInterval == .milliseconds(500))

        let name = "@sluice-test-\(UInt32.random(in: .min ... .max))"
        let systemd = try FakeSystemd(path: name)
        let notifier = try #require(SystemdNotifier(environment: ["NOTIFY_SOCKET": name]))
        #expect(notifier.notify("READY=1\nSTATUS=testing"))
        let messages = await systemd.read(for: 5) { !$0.isEmpty }
        #expect(messages == ["READY=1\nSTATUS=testing"])
    }
}
