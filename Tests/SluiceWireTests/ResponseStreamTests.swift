import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import SluiceProto
import Testing
@testable import SluiceWire

/// Opens a stream for WatchAlerts (refusing one with `recent` above 10); echoes pings.
final class StreamingProcessor: RequestProcessor, Sendable {
    let streams = NIOLockedValueBox<[ResponseStream]>([])

    func process(_ request: WireRequest) -> WireResponse {
        var response = WireResponse()
        response.id = request.id
        response.ping.payload = request.ping.payload
        return response
    }

    func openStream(_ request: WireRequest, on connection: ConnectionKind, stream: ResponseStream) -> WireResponse {
        guard request.watchAlerts.recent <= 10 else { return .error(id: 0, .invalidArgument, "recent must be 0 to 10") }
        streams.withLockedValue { $0.append(stream) }
        var response = WireResponse()
        response.watchAlerts.alerts = [.with { $0.kind = "first" }]
        return response
    }

    func recordFailedFrame(_ code: WireError.Code) {}
}

/// A streaming request: one answer now, pushes later with its id, between whole frames.
@Suite("Response streams")
struct ResponseStreamTests {
    func watch(id: UInt64, recent: UInt32 = 0) -> WireRequest {
        var request = WireRequest()
        request.id = id
        request.watchAlerts.recent = recent
        return request
    }

    static func alerts(_ kinds: String...) -> @Sendable (UInt64) -> WireResponse {
        { dropped in
            var response = WireResponse()
            response.watchAlerts.alerts = kinds.map { kind in .with { $0.kind = kind } }
            response.watchAlerts.dropped = dropped
            return response
        }
    }

    @Test("pushes carry the stream's id, come between other answers, count what a full connection dropped, and stop when it closes")
    func pushes() throws {
        let processor = StreamingProcessor()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ConnectionHandler(processor: processor, logger: Logger(label: "test")))
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()

        try channel.writeInbound(ByteBuffer(bytes: try frame(watch(id: 7)) + frame(ping(id: 8))))
        let opened = try responses(channel)
        #expect(opened.map(\.id) == [7, 8])
        #expect(opened.first?.watchAlerts.alerts.map(\.kind) == ["first"])
        let stream = try #require(processor.streams.withLockedValue { $0.first })
        #expect(stream.isOpen)

        // Written on the connection's loop (the daemon pushes from its anomaly queue: see AnomalyEndToEndTests).
        stream.push(items: 2, Self.alerts("a", "b"))
        channel.embeddedEventLoop.run()
        let received = try responses(channel)
        #expect(received.map(\.id) == [7])
        #expect(received.first?.watchAlerts.alerts.map(\.kind) == ["a", "b"])
        #expect(received.first?.watchAlerts.dropped == 0)

        // A reader that does not keep up: nothing is queued, the next frame says how many were missed.
        channel.isWritable = false
        stream.push(items: 3, Self.alerts("c", "d", "e"))
        stream.push(items: 1, Self.alerts("f"))
        channel.embeddedEventLoop.run()
        #expect(try responses(channel).isEmpty)
        channel.isWritable = true
        stream.push(items: 1, Self.alerts("g"))
        channel.embeddedEventLoop.run()
        let after = try responses(channel)
        #expect(after.first?.watchAlerts.alerts.map(\.kind) == ["g"])
        #expect(after.first?.watchAlerts.dropped == 4)

        // Another request on the connection is still answered in turn.
        try channel.writeInbound(ByteBuffer(bytes: try frame(ping(id: 9))))
        #expect(try responses(channel).map(\.id) == [9])

        _ = try channel.finish(acceptAlreadyClosed: true)
        #expect(!stream.isOpen, "the stream closes with its connection")
        stream.push(items: 1, Self.alerts("h"))
        channel.embeddedEventLoop.run()
    }

    @Test("a refused stream is answered with its error and never pushed to")
    func refused() throws {
        let processor = StreamingProcessor()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ConnectionHandler(processor: processor, logger: Logger(label: "test")))
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        try channel.writeInbound(ByteBuffer(bytes: try frame(watch(id: 3, recent: 11))))
        let answer = try responses(channel)
        #expect(answer.map(\.id) == [3])
        #expect(answer.first?.error.code == .invalidArgument)
        #expect(processor.streams.withLockedValue { $0.isEmpty })
    }

    @Test("a processor without streams refuses them as unsupported")
    func unsupported() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ConnectionHandler(processor: DeferringProcessor(), logger: Logger(label: "test")))
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        try channel.writeInbound(ByteBuffer(bytes: try frame(watch(id: 4))))
        #expect(try responses(channel).first?.error.code == .unsupported)
    }
}
