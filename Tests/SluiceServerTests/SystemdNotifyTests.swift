import Foundation
#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import SluiceLoad
@testable import SluiceServer
import SluiceTestKit
import Testing

/// systemd's side of `Type=notify`, played by the test: a datagram socket named by
/// `NOTIFY_SOCKET`, reading what the real `sluiced` sends.
@Suite("systemd notifications", .ownThreads)
struct SystemdNotifyTests {
    /// A datagram socket bound to `path` (`@name`: abstract). Unless told not to read, a thread
    /// of its own receives every datagram as it comes, so the daemon's queue to it never fills
    /// while a test waits for a thread of the pool.
    final class FakeSystemd: @unchecked Sendable {
        let descriptor: Int32
        let reading: Bool
        let received = NIOLockedValueBox<(messages: [String], taken: Int, closed: Bool)>(([], 0, false))

        init(path: String, reading: Bool = true) throws {
            self.reading = reading
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
            var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
            setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            guard reading else { return }
            Thread.detachNewThread { [descriptor, received] in
                var buffer = [UInt8](repeating: 0, count: 4_096)
                while !received.withLockedValue({ $0.closed }) {
                    let count = recv(descriptor, &buffer, buffer.count, 0)
                    if count > 0 {
                        let message = String(decoding: buffer[0..<count], as: UTF8.self)
                        received.withLockedValue { $0.messages.append(message) }
                    }
                }
                Glibc.close(descriptor)
            }
        }

        deinit {
            // A reading thread closes the socket once it sees `closed`; unread, it is closed here.
            received.withLockedValue { $0.closed = true }
            if !reading { Glibc.close(descriptor) }
        }

        /// The messages received since the last call, once `until` says they are enough or
        /// `seconds` pass.
        func read(for seconds: Double, until: @escaping @Sendable ([String]) -> Bool) async -> [String] {
            let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1_000))
            while true {
                let (enough, messages) = received.withLockedValue { state -> (Bool, [String]) in
                    let fresh = Array(state.messages[state.taken...])
                    let enough = until(fresh) || ContinuousClock.now >= deadline
                    if enough { state.taken = state.messages.count }
                    return (enough, fresh)
                }
                if enough { return messages }
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
    }

    /// A real sluiced serving `directory`/s.sock, told by its environment that systemd listens
    /// on `directory`/notify.sock with a watchdog of the given period.
    static func launch(in directory: String, watchdogMicroseconds: Int) throws -> ChildProcess {
        let process = ChildProcess()
        process.executableURL = DaemonProcessTests.productsDirectory.appendingPathComponent("sluiced")
        process.arguments = ["--unix", "\(directory)/s.sock", "--snapshot", "off", "--store", "off", "--metrics", "off", "--log-level", "warning"]
        process.environment = ["NOTIFY_SOCKET": "\(directory)/notify.sock", "WATCHDOG_USEC": String(watchdogMicroseconds)]
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    @Test("sluiced says READY=1 once it serves, pets the watchdog every half period, and says STOPPING=1 on SIGTERM")
    func readyWatchdogStopping() async throws {
        let directory = "/tmp/sluiced-systemd-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let systemd = try FakeSystemd(path: "\(directory)/notify.sock")
        let socket = "\(directory)/s.sock"
        let process = try Self.launch(in: directory, watchdogMicroseconds: 200_000)
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
        #expect(await process.waitForExit(within: .seconds(30)))
        #expect(process.terminationStatus == 0)
    }

    @Test("a systemd that stops reading holds neither the event loops nor SIGTERM: sluiced serves on and exits")
    func unreadSocket() async throws {
        let directory = "/tmp/sluiced-systemd-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Bound, never read: its queue is full after a few pets (one every 5 ms).
        let systemd = try FakeSystemd(path: "\(directory)/notify.sock", reading: false)
        defer { withExtendedLifetime(systemd) {} }
        let socket = "\(directory)/s.sock"
        let process = try Self.launch(in: directory, watchdogMicroseconds: 10_000)
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await DaemonProcessTests.waitForSocket(socket))
        try await Task.sleep(for: .milliseconds(500))
        let ping = try await DaemonProcessTests.sluicectl(["-e", "unix:\(socket)", "--timeout", "10", "ping"])
        #expect(ping.status == 0, "the event loops answer: \(ping.err)")
        kill(process.processIdentifier, SIGTERM)
        #expect(await process.waitForExit(within: .seconds(30)), "SIGTERM is not held by a send to systemd")
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
