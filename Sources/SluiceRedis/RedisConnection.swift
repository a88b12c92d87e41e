import NIOCore
import NIOPosix

/// Why a command got no reply from Redis. Every code is stable (logs, metrics, tests).
public struct RedisClientError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// Could not connect (refused, unreachable, no such socket, timed out connecting).
        case connectFailed = "connect_failed"
        /// The connection closed before the reply came.
        case connectionClosed = "connection_closed"
        /// The server sent bytes that are not RESP2, or a reply nobody asked for.
        case protocolError = "protocol_error"
        /// The reply did not come within the deadline.
        case timeout
        /// The server refused the password (or asked for one that was not given).
        case authenticationFailed = "authentication_failed"
        /// No connection is up, or too many commands wait already: nothing was sent.
        case unavailable
        /// The server would not load or run a script.
        case scriptError = "script_error"
        /// A Cluster redirected a command more often than a call follows, or answered with a
        /// slot map that cannot be read.
        case clusterError = "cluster_error"
    }

    public let code: Code
    public let description: String

    public init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }
}

/// Where a Redis server listens.
public enum RedisEndpoint: Sendable, Hashable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    public var description: String {
        switch self {
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return "unix:\(path)"
        }
    }

    /// As the configuration writes it: `redis://host:port` or `unix:///path`.
    public var url: String {
        switch self {
        case .tcp: return "redis://\(description)"
        case .unix(let path): return "unix://\(path)"
        }
    }
}

/// One connection to a Redis server, pipelined: commands are written as they are sent and
/// replies are matched to them in order, so many commands share one round trip. A batch given
/// to ``send(_:deadline:)`` is written and flushed at once.
///
/// It never blocks: every call returns a future completed on the connection's event loop. A
/// reply that does not come by its deadline fails with ``RedisClientError/Code/timeout``; the
/// reply, when it comes, is read and dropped, so the replies after it still match. Bytes that
/// are not RESP2 fail every pending command and close the connection.
public final class RedisConnection: Sendable {
    public let channel: any Channel
    public let endpoint: RedisEndpoint

    init(channel: any Channel, endpoint: RedisEndpoint) {
        self.channel = channel
        self.endpoint = endpoint
    }

    /// Connects, then authenticates with `password` (and `username`, Redis 6 ACLs) if given.
    public static func connect(to endpoint: RedisEndpoint, on eventLoop: any EventLoop, username: String? = nil, password: String? = nil,
                               connectTimeout: TimeAmount = .seconds(1), limits: RESPReader.Limits = RESPReader.Limits())
        -> EventLoopFuture<RedisConnection> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RedisHandler(reader: RESPReader(limits: limits)))
                }
            }
        let connected: EventLoopFuture<any Channel>
        switch endpoint {
        case .tcp(let host, let port):
            connected = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1).connect(host: host, port: port)
        case .unix(let path):
            connected = bootstrap.connect(unixDomainSocketPath: path)
        }
        let connection = connected
            .flatMapErrorThrowing { error in throw RedisClientError(.connectFailed, "cannot connect to Redis at \(endpoint): \(error)") }
            .map { RedisConnection(channel: $0, endpoint: endpoint) }
        guard let password else { return connection }
        return connection.flatMap { connection in
            var auth: [RESPArgument] = ["AUTH"]
            if let username { auth.append(.string(username)) }
            auth.append(.string(password))
            return connection.send(RESPCommand(auth), deadline: .now() + connectTimeout).flatMapThrowing { reply in
                if let message = reply.errorMessage {
                    connection.channel.close(promise: nil)
                    throw RedisClientError(.authenticationFailed, "Redis at \(endpoint) refused the password: \(message)")
                }
                return connection
            }.flatMapErrorThrowing { error in
                connection.channel.close(promise: nil)
                throw error
            }
        }
    }

    /// Sends `commands` in one write; the future has one reply per command, in order. Error
    /// replies (`-ERR …`) are replies: they are in the array, not a failure.
    public func send(_ commands: [RESPCommand], deadline: NIODeadline) -> EventLoopFuture<[RESPValue]> {
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        guard !commands.isEmpty else {
            promise.succeed([])
            return promise.futureResult
        }
        let written = channel.eventLoop.makePromise(of: Void.self)
        // A write to a closed channel never reaches the handler: its promise is failed here
        // (completing a promise the handler completed already changes nothing).
        written.futureResult.whenFailure { _ in
            promise.fail(RedisClientError(.connectionClosed, "the connection to Redis is closed"))
        }
        channel.writeAndFlush(RedisHandler.Request(commands: commands, deadline: deadline, promise: promise), promise: written)
        return promise.futureResult
    }

    /// Sends one command.
    public func send(_ command: RESPCommand, deadline: NIODeadline) -> EventLoopFuture<RESPValue> {
        send([command], deadline: deadline).map { $0[0] }
    }

    /// Whether the connection is still open.
    public var isActive: Bool { channel.isActive }

    public func close() -> EventLoopFuture<Void> {
        channel.close().recover { _ in }
    }
}

/// The pipeline's end: writes commands, reads replies, hands each batch its replies in order.
final class RedisHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Request
    typealias OutboundOut = ByteBuffer

    struct Request {
        let commands: [RESPCommand]
        let deadline: NIODeadline
        let promise: EventLoopPromise<[RESPValue]>
    }

    /// A batch written and waiting for its replies.
    final class Pending {
        let expected: Int
        /// Replies read for it so far (kept in `replies` unless it is done).
        var received = 0
        var replies: [RESPValue] = []
        let promise: EventLoopPromise<[RESPValue]>
        /// Set once the promise is completed (its deadline passed): the replies are dropped.
        var done = false
        var timer: Scheduled<Void>?

        init(expected: Int, promise: EventLoopPromise<[RESPValue]>) {
            self.expected = expected
            self.promise = promise
            replies.reserveCapacity(expected)
        }
    }

    let reader: RESPReader
    /// What has arrived and not been read as replies yet.
    var received: ByteBuffer?
    var pending = CircularBuffer<Pending>()
    var closed = false

    init(reader: RESPReader) { self.reader = reader }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard !closed else {
            request.promise.fail(RedisClientError(.connectionClosed, "the connection to Redis is closed"))
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64 * request.commands.count)
        for command in request.commands { command.write(into: &buffer) }
        let entry = Pending(expected: request.commands.count, promise: request.promise)
        let now = NIODeadline.now()
        if request.deadline <= now {
            entry.done = true
            request.promise.fail(RedisClientError(.timeout, "no reply from Redis within the deadline"))
        } else if request.deadline != .distantFuture {
            let loopBound = NIOLoopBound(entry, eventLoop: context.eventLoop)
            entry.timer = context.eventLoop.scheduleTask(deadline: request.deadline) {
                let entry = loopBound.value
                guard !entry.done else { return }
                entry.done = true
                entry.promise.fail(RedisClientError(.timeout, "no reply from Redis within the deadline"))
            }
        }
        pending.append(entry)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var earlier = received {
            received = nil
            earlier.discardReadBytes()
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        var unexpected = false
        do {
            var consumed = 0
            try bytes.withUnsafeReadableBytes { raw throws(RESPError) in
                var position = 0
                while let reply = try reader.read(raw, at: &position) {
                    guard deliver(reply) else {
                        unexpected = true
                        break
                    }
                }
                consumed = position
            }
            bytes.moveReaderIndex(forwardBy: consumed)
        } catch {
            fail(RedisClientError(.protocolError, "Redis sent bytes that are not RESP2: \(error)"), context: context)
            return
        }
        if unexpected {
            fail(RedisClientError(.protocolError, "Redis sent a reply no command was waiting for"), context: context)
            return
        }
        if bytes.readableBytes > 0 { received = bytes }
    }

    /// Hands `reply` to the oldest batch; false when no batch is waiting for one.
    func deliver(_ reply: RESPValue) -> Bool {
        guard let head = pending.first else { return false }
        head.received += 1
        if !head.done { head.replies.append(reply) }
        if head.received == head.expected {
            pending.removeFirst()
            head.timer?.cancel()
            if !head.done {
                head.done = true
                head.promise.succeed(head.replies)
            }
        }
        return true
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        failAll(RedisClientError(.connectionClosed, "the connection to Redis closed before its reply"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(RedisClientError(.connectionClosed, "the connection to Redis failed: \(error)"), context: context)
    }

    func fail(_ error: RedisClientError, context: ChannelHandlerContext) {
        closed = true
        failAll(error)
        context.close(promise: nil)
    }

    func failAll(_ error: RedisClientError) {
        while let entry = pending.popFirst() {
            entry.timer?.cancel()
            if !entry.done {
                entry.done = true
                entry.promise.fail(error)
            }
        }
    }
}
