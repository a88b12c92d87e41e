import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import SluiceProto
import Testing
@testable import SluiceWire

import struct Foundation.Data

/// Defers stats requests until the test completes them; echoes pings at once.
final class DeferringProcessor: RequestProcessor, @unchecked Sendable {
    var promises: [EventLoopPromise<WireResponse>] = []
    var kinds: [ConnectionKind] = []

    func process(_ request: WireRequest) -> WireResponse {
        var response = WireResponse()
        response.id = request.id
        response.ping.payload = request.ping.payload
        return response
    }

    func deferredAnswer(to request: WireRequest, on connection: ConnectionKind, eventLoop: any EventLoop)
        -> EventLoopFuture<WireResponse>? {
        guard case .stats = request.body else { return nil }
        kinds.append(connection)
        let promise = eventLoop.makePromise(of: WireResponse.self)
        promises.append(promise)
        return promise.futureResult
    }

    func recordFailedFrame(_ code: WireError.Code) {}
}

/// Answers worked out off the event loop keep the connection's order.
@Suite("Deferred answers")
struct DeferredAnswerTests {
    func stats(id: UInt64) -> WireRequest {
        var request = WireRequest()
        request.id = id
        request.stats = Sluice_V1_StatsRequest()
        return request
    }

    @Test("frames that arrive while an answer is deferred, even split into single bytes, are answered after it, in order")
    func orderKept() throws {
        let processor = DeferringProcessor()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ConnectionHandler(processor: processor, logger: Logger(label: "test")))
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }

        try channel.writeInbound(ByteBuffer(bytes: try frame(ping(id: 1)) + frame(stats(id: 2)) + frame(ping(id: 3))))
        for byte in try frame(ping(id: 4)) + frame(stats(id: 5)) + frame(ping(id: 6)) {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        #expect(try responses(channel).map(\.id) == [1], "nothing after the deferred request is answered before it")
        #expect(processor.kinds == [.tcp])

        var first = WireResponse()
        first.stats.version = "deferred"
        processor.promises[0].succeed(first)
        channel.embeddedEventLoop.run()
        let next = try responses(channel)
        #expect(next.map(\.id) == [2, 3, 4], "the deferred answer takes its request's id; then up to the next deferred one")
        #expect(next.first?.stats.version == "deferred")

        struct Failed: Error {}
        processor.promises[1].fail(Failed())
        channel.embeddedEventLoop.run()
        let last = try responses(channel)
        #expect(last.map(\.id) == [5, 6])
        #expect(last.first?.error.code == .internal, "a failed deferred answer is an error answer, and the connection goes on")
        #expect(channel.isActive)
    }
}
