import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceClient
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
import SluiceTestKit
@testable import SluiceServer
import SluiceWire

/// 2026-01-01T00:00:00Z in milliseconds: request-clock tests start here.
let epochMs: UInt64 = 1_767_225_600_000

/// A real daemon on a temporary Unix socket and 127.0.0.1:0.
struct TestDaemon {
    let daemon: SluiceDaemon
    let directory: String

    var unix: Endpoint { .unix(path: daemon.unixPaths[0]) }
    var tcp: Endpoint { .tcp(host: "127.0.0.1", port: daemon.tcpPorts[0]) }

    static func temporaryDirectory() -> String {
        let path = "/tmp/sluice-test-\(UInt32.random(in: .min ... .max))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Starts a daemon on `yaml`, or on the file at `file` (which reloads re-read, with the
    /// same test settings laid over it, as sluiced lays its command-line options over it).
    ///
    /// `timers` is the clock the daemon's background engines wait on (real time if nil).
    static func start(yaml: String = "", file: String? = nil, clock: Configuration.ClockMode = .request, timers: TestClock? = nil,
                      _ adjust: @escaping @Sendable (inout Configuration) -> Void = { _ in }) async throws -> TestDaemon {
        let directory = temporaryDirectory()
        let settle: @Sendable (inout Configuration) -> Void = { configuration in
            configuration.unixListeners = [.init(path: "\(directory)/sluice.sock")]
            configuration.tcpListeners = [.init(host: "127.0.0.1", port: 0, auth: .none)]
            configuration.clock = clock
            configuration.threads = 2
            configuration.shards = 8
            // Tests count exact answers on a machine loaded by other tests: refusing checks when
            // a loop lags (server.max_queue_delay) is tested on its own.
            configuration.maxQueueDelayMs = 0
            adjust(&configuration)
        }
        var configuration: Configuration
        if let file {
            configuration = try ConfigurationLoader.load(file: file)
        } else {
            configuration = try ConfigurationLoader.parse(yaml, source: "test.yaml")
        }
        settle(&configuration)
        var logger = Logger(label: "sluiced.test")
        logger.logLevel = .warning
        var reload: (@Sendable () throws -> Configuration)?
        if let file {
            reload = { () throws -> Configuration in
                var configuration = try ConfigurationLoader.load(file: file)
                settle(&configuration)
                return configuration
            }
        }
        let daemon: SluiceDaemon
        if let timers {
            daemon = try await SluiceDaemon.start(configuration: configuration, logger: logger, events: nil, metrics: nil, reloadFrom: reload,
                                                  stages: [], clock: timers)
        } else {
            daemon = try await SluiceDaemon.start(configuration: configuration, logger: logger, reloadFrom: reload)
        }
        return TestDaemon(daemon: daemon, directory: directory)
    }

    func stop() async {
        await daemon.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `body` with a started daemon and always stops it.
    static func with<T>(yaml: String = "", file: String? = nil, clock: Configuration.ClockMode = .request, timers: TestClock? = nil,
                        _ adjust: @escaping @Sendable (inout Configuration) -> Void = { _ in },
                        _ body: (TestDaemon) async throws -> T) async throws -> T {
        let daemon = try await start(yaml: yaml, file: file, clock: clock, timers: timers, adjust)
        do {
            let result = try await body(daemon)
            await daemon.stop()
            return result
        } catch {
            await daemon.stop()
            throw error
        }
    }
}

/// Builders for requests.
enum Make {
    static func check(_ key: String, rule: String? = nil, limit: WireLimit? = nil, hits: UInt64? = nil,
                      nowMs: UInt64 = epochMs, tenant: String = "") -> WireCheck {
        var check = WireCheck()
        check.key = key
        check.tenant = tenant
        check.nowMs = nowMs
        if let hits { check.hits = hits }
        if let rule { check.rule = rule }
        if let limit { check.limit = limit }
        return check
    }

    static func request(_ checks: WireCheck...) -> WireRequest {
        var request = WireRequest()
        request.check.checks = checks
        return request
    }
}

extension SluiceClient {
    /// Sends one check and returns its verdict, failing on an error response.
    func verdict(_ check: WireCheck) async throws -> WireVerdict {
        let response = try await send(Make.request(check))
        guard case .check(let answer) = response.body, answer.verdicts.count == 1 else {
            throw TestFailure("expected one verdict, got \(response)")
        }
        return answer.verdicts[0]
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A connection that writes arbitrary bytes and collects whatever frames come back.
final class RawConnection: @unchecked Sendable {
    let channel: any Channel
    let collector: Collector

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let responses = NIOLockedValueBox<[WireResponse]>([])
        let closed = NIOLockedValueBox(false)
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = unwrapInboundIn(data)
            if let response = try? WireResponse(serializedBytes: Array(frame.readableBytesView)) {
                responses.withLockedValue { $0.append(response) }
            }
        }
        func channelInactive(context: ChannelHandlerContext) { closed.withLockedValue { $0 = true } }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    static func connect(_ endpoint: Endpoint) async throws -> RawConnection {
        let collector = Collector()
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maximumFrameBytes: 1 << 24)))
                try channel.pipeline.syncOperations.addHandler(collector)
            }
        }
        let channel: any Channel = switch endpoint {
        case .unix(let path): try await bootstrap.connect(unixDomainSocketPath: path).get()
        case .tcp(let host, let port): try await bootstrap.connect(host: host, port: port).get()
        }
        return RawConnection(channel: channel, collector: collector)
    }

    func write(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    /// Waits until `count` responses arrived or the connection closed (at most ~5 s).
    /// The responses read so far, once there are `count` or the daemon closed the connection;
    /// at most 30 s (a loaded machine), then what came.
    func responses(atLeast count: Int) async throws -> [WireResponse] {
        for _ in 0..<3_000 {
            let current = collector.responses.withLockedValue { $0 }
            if current.count >= count || isClosed { return current }
            try await Task.sleep(for: .milliseconds(10))
        }
        return collector.responses.withLockedValue { $0 }
    }

    var isClosed: Bool { collector.closed.withLockedValue { $0 } }

    func waitUntilClosed() async throws -> Bool {
        for _ in 0..<500 where !isClosed { try await Task.sleep(for: .milliseconds(10)) }
        return isClosed
    }

    func close() async { try? await channel.close() }

    static func frame(_ request: WireRequest) throws -> [UInt8] {
        let body: [UInt8] = try request.serializedBytes()
        var buffer = ByteBuffer()
        buffer.writeFrame(body)
        return Array(buffer.readableBytesView)
    }
}

/// A blocking HTTP/1.1 GET over a real socket, for the metrics endpoint.
enum HTTPGet {
    static func get(port: Int, path: String, method: String = "GET") throws -> (status: Int, body: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        defer { Glibc.close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw TestFailure("connect to \(port) failed") }
        let request = Array("\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { break }
            response.append(contentsOf: chunk[0..<n])
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let statusLine = text.split(separator: "\r\n").first, let status = Int(statusLine.split(separator: " ")[1]) else {
            throw TestFailure("not an HTTP response: \(text.prefix(200))")
        }
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, body)
    }
}

/// The value of the sample `series` (name with its labels, as exposed) in a Prometheus text body.
func sample(_ series: String, in body: String) -> Double? {
    for line in body.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}
