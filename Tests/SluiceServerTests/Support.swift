import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceClient
import SluiceCore
import SluiceProto
import SluiceWire
@testable import SluiceServer

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

    static func start(yaml: String = "", clock: Configuration.ClockMode = .request,
                      _ adjust: (inout Configuration) -> Void = { _ in }) async throws -> TestDaemon {
        let directory = temporaryDirectory()
        var configuration = try ConfigurationLoader.parse(yaml, source: "test.yaml")
        configuration.unixListeners = [.init(path: "\(directory)/sluice.sock")]
        configuration.tcpListeners = [.init(host: "127.0.0.1", port: 0)]
        configuration.clock = clock
        configuration.threads = 2
        configuration.shards = 8
        adjust(&configuration)
        var logger = Logger(label: "sluiced.test")
        logger.logLevel = .warning
        let daemon = try await SluiceDaemon.start(configuration: configuration, logger: logger)
        return TestDaemon(daemon: daemon, directory: directory)
    }

    func stop() async {
        await daemon.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `body` with a started daemon and always stops it.
    static func with<T>(yaml: String = "", clock: Configuration.ClockMode = .request,
                        _ adjust: (inout Configuration) -> Void = { _ in },
                        _ body: (TestDaemon) async throws -> T) async throws -> T {
        let daemon = try await start(yaml: yaml, clock: clock, adjust)
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
    func responses(atLeast count: Int) async throws -> [WireResponse] {
        for _ in 0..<500 {
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
