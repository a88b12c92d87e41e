import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SluiceProto
import SluiceWire

/// A connection to a Sluice daemon. Requests may be sent from many tasks at once: they are
/// pipelined on the one connection and each caller gets its own answer.
public final class SluiceClient: Sendable {
    let channel: any Channel
    let nextID = NIOLockedValueBox<UInt64>(0)

    init(channel: any Channel) { self.channel = channel }

    /// Connects to `endpoint`.
    ///
    /// - Parameters:
    ///   - maximumFrameBytes: the largest response accepted.
    ///   - timeout: how long the connection may take.
    /// - Throws: the connection error (refused, no such socket, timed out).
    ///   - tls: TLS on a TCP endpoint (a listener configured with `tls:`); nil: plain TCP.
    ///   - token: an API token (`sluicectl token create`), presented first: a refused token
    ///     throws ``ClientError/refused(_:)`` with the daemon's error (CODE_UNAUTHENTICATED).
    public static func connect(
        to endpoint: Endpoint,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        maximumFrameBytes: Int = 16 << 20,
        timeout: TimeAmount = .seconds(5),
        tls: ClientTLS? = nil,
        token: String? = nil
    ) async throws -> SluiceClient {
        var secure: (context: NIOSSLContext, serverName: String?)?
        if let tls, case .tcp(let host, _) = endpoint {
            secure = (try tls.makeContext(), tls.serverName ?? (ClientTLS.isAddress(host) ? nil : host))
        }
        let handshake = HandshakeWatch()
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let secure {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: secure.context, serverHostname: secure.serverName))
                        try channel.pipeline.syncOperations.addHandler(handshake.handler(on: channel.eventLoop))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(maximumFrameBytes: maximumFrameBytes)))
                    try channel.pipeline.syncOperations.addHandler(ClientHandler())
                }
            }
        let channel: any Channel
        do {
            switch endpoint {
            case .unix(let path): channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            case .tcp(let host, let port): channel = try await bootstrap.connect(host: host, port: port).get()
            }
        } catch {
            handshake.abandon(error)
            throw error
        }
        if secure != nil {
            // Connected is not enough: a refused certificate would only show later as a closed
            // connection. Its handshake's end, or its error (the certificate's, in words).
            do {
                try await handshake.completed(within: timeout, on: channel)
            } catch {
                try? await channel.close()
                throw error
            }
        }
        let client = SluiceClient(channel: channel)
        if let token {
            var request = WireRequest()
            request.authenticate.token = token
            do {
                let answer = try await client.send(request)
                if case .error(let error) = answer.body { throw ClientError.refused(error) }
            } catch {
                await client.close()
                throw error
            }
        }
        return client
    }

    /// A write promise that fails `answer` when the write fails: a request written to a connection
    /// already closed (a TLS handshake refused, the daemon gone) never reaches the handler that
    /// would fail it, and its caller would wait forever. (Completing `answer` twice is harmless:
    /// the second is ignored.)
    static func failing(_ answer: EventLoopPromise<WireResponse>, on channel: any Channel) -> EventLoopPromise<Void> {
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { answer.fail($0) }
        return written
    }

    func assignID(_ request: inout WireRequest) {
        if request.id == 0 { request.id = nextID.withLockedValue { $0 += 1; return $0 } }
    }

    /// Sends one request and waits for its response. A zero `id` is replaced by a fresh one.
    ///
    /// - Throws: ``ClientError`` when the connection closes first or the answer does not match.
    public func send(_ request: WireRequest) async throws -> WireResponse {
        var request = request
        assignID(&request)
        let promise = channel.eventLoop.makePromise(of: WireResponse.self)
        channel.writeAndFlush(PendingRequest(request: request, promise: promise), promise: Self.failing(promise, on: channel))
        return try await promise.futureResult.get()
    }

    /// Sends `requests` back to back in one flush (pipelining) and returns their responses in order.
    public func send(pipelined requests: [WireRequest]) async throws -> [WireResponse] {
        var futures: [EventLoopFuture<WireResponse>] = []
        futures.reserveCapacity(requests.count)
        for var request in requests {
            assignID(&request)
            let promise = channel.eventLoop.makePromise(of: WireResponse.self)
            futures.append(promise.futureResult)
            channel.write(PendingRequest(request: request, promise: promise), promise: Self.failing(promise, on: channel))
        }
        channel.flush()
        var responses: [WireResponse] = []
        responses.reserveCapacity(futures.count)
        for future in futures { responses.append(try await future.get()) }
        return responses
    }

    /// Sends a streaming request (`WatchAlerts`) and returns every answer it gets: the first one,
    /// then each frame the daemon pushes with its id. An error answer ends the stream with
    /// ``ClientError/refused(_:)``; the connection closing ends it with
    /// ``ClientError/connectionClosed``. Other requests may share the connection meanwhile.
    public func stream(_ request: WireRequest) -> AsyncThrowingStream<WireResponse, any Error> {
        var request = request
        assignID(&request)
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: WireResponse.self, bufferingPolicy: .bufferingNewest(10_000))
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { continuation.finish(throwing: $0) }
        channel.writeAndFlush(PendingStream(request: request, continuation: continuation), promise: written)
        return stream
    }

    /// Writes raw bytes, exactly as given (for tests and tools that probe the daemon).
    public func writeRaw(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(RawBytes(bytes: bytes)).get()
    }

    /// Closes the connection.
    public func close() async {
        try? await channel.close()
    }

    /// A future that completes when the connection closes (from either side).
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }
}

/// Why a request got no answer.
public enum ClientError: Error, Equatable, Sendable {
    /// The connection closed before the answer arrived.
    case connectionClosed
    /// An answer arrived whose id matched no request in flight.
    case unexpectedResponse(id: UInt64)
    /// An answer did not decode.
    case malformedResponse
    /// A streaming request was answered with an error.
    case refused(Sluice_V1_Error)
}

struct PendingRequest {
    var request: WireRequest
    var promise: EventLoopPromise<WireResponse>
}

struct PendingStream {
    var request: WireRequest
    var continuation: AsyncThrowingStream<WireResponse, any Error>.Continuation
}

struct RawBytes {
    var bytes: [UInt8]
}

/// Matches responses to requests in order; fails whatever is in flight when the connection ends.
final class ClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Any
    typealias OutboundOut = ByteBuffer

    var inFlight = CircularBuffer<(id: UInt64, promise: EventLoopPromise<WireResponse>)>()
    /// Streaming requests, by id: every answer with their id is theirs.
    var streams: [UInt64: AsyncThrowingStream<WireResponse, any Error>.Continuation] = [:]

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let item = unwrapOutboundIn(data)
        if let raw = item as? RawBytes {
            context.write(wrapOutboundOut(ByteBuffer(bytes: raw.bytes)), promise: promise)
            return
        }
        if let stream = item as? PendingStream {
            do {
                let bytes: [UInt8] = try stream.request.serializedBytes()
                var buffer = context.channel.allocator.buffer(capacity: bytes.count + 4)
                buffer.writeFrame(bytes)
                streams[stream.request.id] = stream.continuation
                context.write(wrapOutboundOut(buffer), promise: promise)
            } catch {
                stream.continuation.finish(throwing: error)
                promise?.fail(error)
            }
            return
        }
        guard let pending = item as? PendingRequest else {
            promise?.fail(ClientError.malformedResponse)
            return
        }
        do {
            let bytes: [UInt8] = try pending.request.serializedBytes()
            var buffer = context.channel.allocator.buffer(capacity: bytes.count + 4)
            buffer.writeFrame(bytes)
            inFlight.append((pending.request.id, pending.promise))
            context.write(wrapOutboundOut(buffer), promise: promise)
        } catch {
            pending.promise.fail(error)
            promise?.fail(error)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard let response = try? WireResponse(serializedBytes: frame.readableBytesSpan) else {
            failAll(ClientError.malformedResponse)
            context.close(promise: nil)
            return
        }
        if let stream = streams[response.id] {
            if case .error(let error) = response.body {
                streams[response.id] = nil
                stream.finish(throwing: ClientError.refused(error))
            } else {
                stream.yield(response)
            }
            return
        }
        // The daemon answers in order; an error about an unreadable frame may carry id 0.
        guard let first = inFlight.first, first.id == response.id || response.id == 0 else {
            failAll(ClientError.unexpectedResponse(id: response.id))
            context.close(promise: nil)
            return
        }
        inFlight.removeFirst().promise.succeed(response)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ClientError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func failAll(_ error: any Error) {
        while let pending = inFlight.popFirst() { pending.promise.fail(error) }
        for stream in streams.values { stream.finish(throwing: error) }
        streams = [:]
    }
}

/// Watches a TLS connection's handshake: done when NIOSSL says so, failed with its error.
final class HandshakeWatch: Sendable {
    let promise = NIOLockedValueBox<EventLoopPromise<Void>?>(nil)

    func handler(on loop: any EventLoop) -> Watcher {
        let made = loop.makePromise(of: Void.self)
        promise.withLockedValue { $0 = made }
        return Watcher(promise: made)
    }

    /// Fails the watch (the connection was never made: a channel may have been set up and
    /// dropped, leaving its promise unfulfilled).
    func abandon(_ error: any Error) {
        promise.withLockedValue { $0 }?.fail(error)
    }

    func completed(within timeout: TimeAmount, on channel: any Channel) async throws {
        guard let promise = promise.withLockedValue({ $0 }) else { return }
        let timer = channel.eventLoop.scheduleTask(in: timeout) { promise.fail(ClientTLSError("no TLS handshake within \(timeout)")) }
        defer { timer.cancel() }
        try await promise.futureResult.get()
    }

    final class Watcher: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        let promise: EventLoopPromise<Void>

        init(promise: EventLoopPromise<Void>) { self.promise = promise }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event { promise.succeed(()) }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.fireErrorCaught(error)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(ClientTLSError("the daemon closed the connection during the TLS handshake"))
            context.fireChannelInactive()
        }
    }
}
