import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SluiceClient
import SluiceProto
import Testing

/// A blocking socket speaking raw bytes to a real `sluiced`, for what a well-behaved client
/// never sends: exact hostile frames, reads split anywhere, stalls.
final class RawSocket: @unchecked Sendable {
    let fd: Int32

    init(unix path: String) throws {
        fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { Glibc.close(fd); throw TestFailure("cannot connect to \(path): errno \(errno)") }
    }

    init(tcpPort port: Int) throws {
        fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { Glibc.close(fd); throw TestFailure("cannot connect to port \(port): errno \(errno)") }
    }

    deinit { Glibc.close(fd) }

    /// Writes all of `bytes`; false if the connection failed.
    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// Reads one whole answer frame, or nil when the connection closed or `timeout` passed.
    func readResponse(timeout: Double = 5) -> WireResponse? {
        guard let prefix = read(count: 4, timeout: timeout) else { return nil }
        let length = prefix.reduce(0) { $0 << 8 | Int($1) }
        guard let body = read(count: length, timeout: timeout) else { return nil }
        return try? WireResponse(serializedBytes: body)
    }

    /// Reads exactly `count` bytes, or nil.
    func read(count: Int, timeout: Double) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var filled = 0
        let deadline = Date().addingTimeInterval(timeout)
        while filled < count {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = Int32(max(0, deadline.timeIntervalSinceNow * 1_000))
            guard poll(&poller, 1, left) > 0 else { return nil }
            let n = out.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress! + filled, count - filled, 0) }
            guard n > 0 else { return nil }
            filled += n
        }
        return out
    }

    /// Whether the daemon closed the connection within `timeout` (reading and dropping whatever
    /// it still sent).
    func closedByPeer(within timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        var scratch = [UInt8](repeating: 0, count: 4_096)
        while deadline.timeIntervalSinceNow > 0 {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(max(1, deadline.timeIntervalSinceNow * 1_000))) > 0 else { return false }
            let n = scratch.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress!, $0.count, 0) }
            if n <= 0 { return true }
        }
        return false
    }

    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    /// A TCP port nothing listens on now (bound, read, released).
    static func freePort() throws -> Int {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let port = withUnsafeMutablePointer(to: &address) { pointer -> Int in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                guard bind(fd, $0, length) == 0, getsockname(fd, $0, &length) == 0 else { return 0 }
                return Int(UInt16(bigEndian: pointer.pointee.sin_port))
            }
        }
        guard port > 0 else { throw TestFailure("no free port") }
        return port
    }
}

/// Hostile input against the real `sluiced` executable: each test is an attack that once took
/// the daemon down or grew it without bound.
@Suite("sluiced under hostile input", .serialized)
struct HardeningProcessTests {
    static func directory(_ name: String) throws -> String {
        let directory = "/tmp/sluiced-\(name)-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test("a ReportOutcome with a huge time_ms is refused and the daemon with anomaly detection on keeps serving",
          arguments: [false, true])
    func hugeOutcomeTime(shadow: Bool) async throws {
        let directory = try Self.directory("outcome-time")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = "\(directory)/sluice.yaml"
        try "features: { anomaly: { enabled: true, shadow: \(shadow) } }\n".write(toFile: file, atomically: true, encoding: .utf8)
        let port = try RawSocket.freePort()
        let (process, _) = try DaemonProcessTests.launch(["--config", file, "--unix", "\(directory)/s.sock", "--tcp", "127.0.0.1:\(port)",
                                                          "--metrics", "off", "--snapshot", "off", "--store", "off", "--log-level", "error"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await DaemonProcessTests.waitForSocket("\(directory)/s.sock"))
        let socket = try RawSocket(tcpPort: port)
        // The two frames of the report, byte for byte: a failure for subject "a" now, then one at 2^64 - 1 ms.
        #expect(socket.write(RawSocket.bytes(hex: "0000000d08019201080a06120161289103")))
        #expect(socket.write(RawSocket.bytes(hex: "0000001808029201130a1112016128910330ffffffffffffffffff01")))
        let first = try #require(socket.readResponse())
        #expect(first.id == 1 && first.reportOutcome.recorded == 1, "\(first)")
        let second = try #require(socket.readResponse())
        #expect(second.id == 2 && second.error.code == .invalidArgument, "\(second)")
        #expect(second.error.message.contains("time_ms"))
        // The detector has had its turns (every 100 ms) with what was accepted: still serving.
        try await Task.sleep(for: .milliseconds(1_500))
        #expect(process.isRunning)
        var ping = WireRequest()
        ping.id = 3
        ping.ping = .init()
        #expect(socket.write(try RawConnection.frame(ping)))
        #expect(socket.readResponse()?.id == 3)
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    @Test("a stream of frames whose reads never end on a frame boundary keeps the daemon's memory flat")
    func splitFramesStayBounded() async throws {
        let directory = try Self.directory("split")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/s.sock"
        let (process, _) = try DaemonProcessTests.launch(["--unix", path, "--metrics", "off", "--snapshot", "off",
                                                          "--store", "off", "--log-level", "error"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await DaemonProcessTests.waitForSocket(path))
        let pid = process.processIdentifier
        let baseline = try #require(DaemonProcessTests.residentBytes(pid))

        // Ordinary 100 kB pings, each write ending 3 bytes into the next frame.
        var ping = WireRequest()
        ping.ping.payload = Data(repeating: 5, count: 100_000)
        let frame = try RawConnection.frame(ping)
        let socket = try RawSocket(unix: path)
        let frames = 1_500
        let reader = Task.detached { () -> Int in
            var answered = 0
            while answered < frames, let response = socket.readResponse(timeout: 20) {
                guard case .ping = response.body else { break }
                answered += 1
            }
            return answered
        }
        var peak = 0
        let stream = frame + frame
        for index in 0..<frames {
            let start = index == 0 ? 0 : 3
            let end = index == frames - 1 ? frame.count : frame.count + 3
            #expect(socket.write(Array(stream[start..<end])))
            if index % 100 == 0, let resident = DaemonProcessTests.residentBytes(pid) { peak = max(peak, resident) }
        }
        let answered = await reader.value
        if let resident = DaemonProcessTests.residentBytes(pid) { peak = max(peak, resident) }
        #expect(answered == frames)
        // 150 MB went through; the daemon holds at most a frame or two per connection.
        #expect(peak - baseline < 40 << 20, "the daemon grew by \(peak - baseline) bytes")
        kill(pid, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }
}
