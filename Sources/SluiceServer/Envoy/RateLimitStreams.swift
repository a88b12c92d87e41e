import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import SluiceConfiguration
import SluiceCore
import SluiceProto
import SwiftProtobuf

/// Envoy's one unary method served straight from swift-nio-http2's frames: one handler per
/// connection, no child channel and no task per stream. HTTP/2 itself (framing, HPACK, the
/// state machine, flow control on the sending side, settings, pings, GOAWAY) is swift-nio-http2's;
/// this handler reads a call's HEADERS and DATA, answers it through ``EnvoyFront`` on the
/// connection's own loop, and writes gRPC's answer: HEADERS, DATA with the length-prefixed
/// message, and trailers with `grpc-status` (or a trailers-only answer for an error). It gives
/// the connection's receive window back as it reads (swift-nio-http2 leaves that to whoever
/// reads the frames).
final class RateLimitStreams: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    static let path = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

    struct Call {
        var token: String?
        var body: ByteBuffer?
        /// Answered already (refused while it was still being sent): its further frames are ignored.
        var answered = false
    }

    let front: EnvoyFront
    let requiresToken: Bool
    let address: String
    let maximumMessageBytes: Int
    /// Calls being read, by stream.
    var calls: [HTTP2StreamID: Call] = [:]
    /// Calls being decided: their streams, so a reset one is not answered.
    var deciding: Set<HTTP2StreamID> = []
    /// Connection window bytes read and not yet given back.
    var unreturned = 0
    var context: ChannelHandlerContext?

    init(front: EnvoyFront, requiresToken: Bool, address: String, maximumMessageBytes: Int) {
        self.front = front
        self.requiresToken = requiresToken
        self.address = address
        self.maximumMessageBytes = maximumMessageBytes
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let stream = frame.streamID
        switch frame.payload {
        case .headers(let headers):
            guard calls[stream] == nil, !deciding.contains(stream) else { return } // a client's trailers: nothing to read
            var call = Call(token: Self.token(in: headers.headers))
            if let refusal = Self.refusal(of: headers.headers) {
                call.answered = true
                answer(stream, status: refusal.status, message: refusal.message, context: context)
                if !headers.endStream { reset(stream, context: context) }
            }
            calls[stream] = call
            if headers.endStream { finish(stream, context: context) }
        case .data(let payload):
            let length = payload.data.readableBytes + (payload.paddingBytes ?? 0)
            giveBack(length, context: context)
            guard var call = calls[stream] else { return }
            if !call.answered, case .byteBuffer(var bytes) = payload.data {
                if (call.body?.readableBytes ?? 0) + bytes.readableBytes > maximumMessageBytes + 5 {
                    call.answered = true
                    call.body = nil
                    answer(stream, status: 8, message: "the message is larger than server.max_frame_bytes (\(maximumMessageBytes) bytes)", context: context)
                    if !payload.endStream {
                        reset(stream, context: context)
                        calls[stream] = nil
                        return
                    }
                } else if call.body == nil {
                    call.body = bytes
                } else {
                    call.body!.writeBuffer(&bytes)
                }
            }
            calls[stream] = call
            if payload.endStream { finish(stream, context: context) }
        case .rstStream:
            calls[stream] = nil
            deciding.remove(stream)
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        context.fireChannelReadComplete()
    }

    /// Gives the connection's window back once a quarter of it was read.
    func giveBack(_ length: Int, context: ChannelHandlerContext) {
        unreturned += length
        guard unreturned >= 16_384 else { return }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: unreturned))), promise: nil)
        unreturned = 0
    }

    /// The client sent its whole call: decode it and decide it.
    func finish(_ stream: HTTP2StreamID, context: ChannelHandlerContext) {
        guard let call = calls.removeValue(forKey: stream), !call.answered else { return }
        var body = call.body ?? ByteBuffer()
        guard let compressed = body.readInteger(as: UInt8.self), let length = body.readInteger(as: UInt32.self),
              Int(length) == body.readableBytes else {
            answer(stream, status: 13, message: "the call's message is not one length-prefixed gRPC message", context: context)
            return
        }
        guard compressed == 0 else {
            answer(stream, status: 12, message: "compressed messages are not supported (send grpc-encoding: identity)", context: context)
            return
        }
        let request: EnvoyFront.Request
        do {
            request = try EnvoyFront.Request(serializedBytes: Array(body.readableBytesView))
        } catch {
            answer(stream, status: 13, message: "the message is not a RateLimitRequest: \(error)", context: context)
            return
        }
        deciding.insert(stream)
        let loop = context.eventLoop
        front.answer(request, token: call.token, address: address, requiresToken: requiresToken, on: loop).whenComplete { [self] result in
            guard deciding.remove(stream) != nil, let context = self.context else { return }
            switch result {
            case .success(.success(let response)): respond(stream, response, context: context)
            case .success(.failure(let failure)): answer(stream, status: Self.status(failure.kind), message: failure.message, context: context)
            case .failure(let error): answer(stream, status: 13, message: "the call could not be answered: \(error)", context: context)
            }
            context.flush()
        }
    }

    /// A decided call's answer: HEADERS, the message, trailers with status 0.
    func respond(_ stream: HTTP2StreamID, _ response: EnvoyFront.Response, context: ChannelHandlerContext) {
        let bytes: [UInt8] = (try? response.serializedBytes()) ?? []
        var buffer = context.channel.allocator.buffer(capacity: bytes.count + 5)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
        let head: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
        context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .headers(.init(headers: head)))), promise: nil)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .data(.init(data: .byteBuffer(buffer))))), promise: nil)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .headers(.init(headers: ["grpc-status": "0"], endStream: true)))),
                      promise: nil)
    }

    /// Ends a stream the client is still sending on, once it was answered (RST_STREAM NO_ERROR,
    /// as gRPC servers do): what it sends further is not read.
    func reset(_ stream: HTTP2StreamID, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .rstStream(.noError))), promise: nil)
    }

    /// An error's answer: trailers only, with `grpc-status` and `grpc-message`.
    func answer(_ stream: HTTP2StreamID, status: Int, message: String, context: ChannelHandlerContext) {
        let headers: HPACKHeaders = [":status": "200", "content-type": "application/grpc", "grpc-status": String(status),
                                     "grpc-message": Self.percentEncoded(message)]
        context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .headers(.init(headers: headers, endStream: true)))), promise: nil)
    }

    /// Why a call's headers are refused at once: not this method (UNIMPLEMENTED), not gRPC, a
    /// compression it does not speak.
    static func refusal(of headers: HPACKHeaders) -> (status: Int, message: String)? {
        guard headers.first(name: ":method") == "POST" else { return (12, "only POST is served") }
        let path = headers.first(name: ":path") ?? ""
        guard path == Self.path else { return (12, "unknown method \(path); this service serves \(Self.path)") }
        guard headers.first(name: "content-type")?.hasPrefix("application/grpc") == true else {
            return (3, "content-type must be application/grpc")
        }
        if let encoding = headers.first(name: "grpc-encoding"), encoding != "identity" {
            return (12, "grpc-encoding \(encoding) is not supported; send identity")
        }
        return nil
    }

    /// The token from `authorization: Bearer …` (or `x-sluice-token`), if any.
    static func token(in headers: HPACKHeaders) -> String? {
        if let value = headers.first(name: "authorization") {
            return String(value.trimmingPrefix("Bearer ").trimmingPrefix("bearer "))
        }
        return headers.first(name: "x-sluice-token")
    }

    /// gRPC's status codes for the front's failures.
    static func status(_ kind: EnvoyFront.Failure.Kind) -> Int {
        switch kind {
        case .invalidArgument: 3
        case .permissionDenied: 7
        case .resourceExhausted: 8
        case .internal: 13
        case .unavailable: 14
        case .unauthenticated: 16
        }
    }

    /// `grpc-message`'s encoding: bytes outside printable ASCII, and `%`, as %XX.
    static func percentEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if byte >= 0x20, byte < 0x7F, byte != 0x25 {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

/// The listeners of Envoy's service (`envoy.listen`), on event loops of their own: one lane (a
/// one-thread event loop group) per daemon thread. Each TCP listener is a listening socket per
/// lane on one port (`SO_REUSEPORT`: the kernel spreads connections over them); each connection
/// is read, decided and answered on its lane's loop. Unix socket listeners take the first lane.
/// TLS offers `h2` by ALPN, as gRPC clients require. Started with the daemon; at shutdown the
/// listeners close, calls in flight are answered, then the connections close.
final class RateLimitServers: Sendable {
    let listeners: [any Channel]
    let connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>
    /// The TCP ports bound (the ports actually bound, for port 0), in listener order.
    let tcpPorts: [Int]
    let lanes: [MultiThreadedEventLoopGroup]

    init(listeners: [any Channel], connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>, tcpPorts: [Int],
         lanes: [MultiThreadedEventLoopGroup]) {
        self.listeners = listeners
        self.connections = connections
        self.tcpPorts = tcpPorts
        self.lanes = lanes
    }

    /// Binds every listener of `settings` on `threads` lanes, answered by `front`; throws naming the listener that could not be bound (after closing
    /// those that were).
    static func start(_ settings: Configuration.EnvoySettings, threads: Int, front: EnvoyFront,
                      maximumMessageBytes: Int, logger: Logger) async throws -> RateLimitServers {
        let lanes = (0..<max(1, threads)).map { _ in MultiThreadedEventLoopGroup(numberOfThreads: 1) }
        let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
        var listeners: [any Channel] = []
        var ports: [Int] = []
        func bootstrap(_ lane: Int, tls: ListenerTLS?, requiresToken: Bool) -> ServerBootstrap {
            ServerBootstrap(group: lanes[lane])
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let key = ObjectIdentifier(channel)
                        connections.withLockedValue { $0[key] = channel }
                        channel.closeFuture.whenComplete { _ in _ = connections.withLockedValue { $0.removeValue(forKey: key) } }
                        if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current)) }
                        try channel.pipeline.syncOperations.addHandler(NIOHTTP2Handler(mode: .server, initialSettings: [
                            HTTP2Setting(parameter: .maxConcurrentStreams, value: 1_000),
                            HTTP2Setting(parameter: .initialWindowSize, value: min(Int(Int32.max), maximumMessageBytes + 1_024)),
                            HTTP2Setting(parameter: .maxHeaderListSize, value: 16_384),
                        ]))
                        try channel.pipeline.syncOperations.addHandler(RateLimitStreams(
                            front: front, requiresToken: requiresToken, address: channel.remoteAddress?.ipAddress ?? "unix",
                            maximumMessageBytes: maximumMessageBytes))
                    }
                }
        }
        do {
            for listener in settings.unixListeners {
                try UnixSocketPath.prepare(listener.path)
                let channel = try await bootstrap(0, tls: nil, requiresToken: listener.auth == .token).bind(unixDomainSocketPath: listener.path).get()
                listeners.append(channel)
                try UnixSocketPath.setMode(listener.path, listener.mode)
                logger.info("serving envoy's rate limit service", metadata: ["envoy.listen.unix": "\(listener.path)", "listen.auth": "\(listener.auth)"])
            }
            for listener in settings.tcpListeners {
                let tls = try listener.tls.map { files throws(SluiceError) in try ListenerTLS(files, applicationProtocols: ["h2"]) }
                var port = listener.port
                for lane in lanes.indices {
                    let channel: any Channel
                    do {
                        channel = try await bootstrap(lane, tls: tls, requiresToken: listener.auth == .token)
                            .serverChannelOption(ChannelOptions.Types.SocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_REUSEPORT)), value: 1)
                            .bind(host: listener.host, port: port).get()
                    } catch {
                        throw SluiceError(.addressInUse, "cannot serve envoy's rate limit service on \(listener.host):\(port): \(error)")
                    }
                    listeners.append(channel)
                    port = channel.localAddress?.port ?? port
                }
                ports.append(port)
                logger.info("serving envoy's rate limit service", metadata: [
                    "envoy.listen.tcp": "\(listener.host):\(port)", "listen.tls": "\(listener.tls == nil ? "off" : "on")",
                    "listen.auth": "\(listener.auth)", "envoy.lanes": "\(lanes.count)",
                ])
            }
        } catch {
            await RateLimitServers(listeners: listeners, connections: connections, tcpPorts: ports, lanes: lanes).stop(deadline: .zero)
            throw error
        }
        return RateLimitServers(listeners: listeners, connections: connections, tcpPorts: ports, lanes: lanes)
    }

    /// Stops accepting, gives the connections `deadline` to finish the calls in flight (a
    /// GOAWAY tells clients to open no more streams), closes them, and stops the lanes.
    func stop(deadline: Duration = .seconds(2)) async {
        for listener in listeners { try? await listener.close() }
        let open = connections.withLockedValue { Array($0.values) }
        for channel in open {
            channel.eventLoop.execute {
                let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: .maxID, errorCode: .noError, opaqueData: nil))
                channel.writeAndFlush(goAway, promise: nil)
            }
        }
        if deadline > .zero, !open.isEmpty { try? await Task.sleep(for: min(deadline, .milliseconds(200))) }
        for channel in open { try? await channel.close() }
        for lane in lanes { try? await lane.shutdownGracefully() }
    }
}
