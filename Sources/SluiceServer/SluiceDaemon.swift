import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceCore
import SluiceProto
import SluiceWire

/// A running daemon: its listeners, event loops and dispatcher.
///
/// `start` binds every listener or none (a failure closes what was bound); `shutdown` stops
/// accepting, answers what connections have already sent, closes them and removes the sockets.
public final class SluiceDaemon: Sendable {
    /// The configuration it runs with.
    public let configuration: Configuration
    /// What answers requests.
    public let dispatcher: RequestDispatcher
    /// Unix socket paths being served.
    public let unixPaths: [String]
    /// TCP addresses being served, with the ports actually bound (useful with port 0).
    public let tcpAddresses: [SocketAddress]
    let group: MultiThreadedEventLoopGroup
    let tracker: ConnectionTracker
    let listeners: [any Channel]
    let logger: Logger
    let stopped = NIOLockedValueBox(false)
    let snapshotter: Snapshotter?

    init(configuration: Configuration, dispatcher: RequestDispatcher, unixPaths: [String], tcpAddresses: [SocketAddress],
         group: MultiThreadedEventLoopGroup, tracker: ConnectionTracker, listeners: [any Channel], logger: Logger,
         snapshotter: Snapshotter?) {
        self.snapshotter = snapshotter
        self.configuration = configuration
        self.dispatcher = dispatcher
        self.unixPaths = unixPaths
        self.tcpAddresses = tcpAddresses
        self.group = group
        self.tracker = tracker
        self.listeners = listeners
        self.logger = logger
    }

    /// The TCP ports bound, in listener order.
    public var tcpPorts: [Int] { tcpAddresses.compactMap(\.port) }

    /// Binds every listener and starts serving.
    ///
    /// - Parameters:
    ///   - policy: adjusts checks (later features); nil for none.
    ///   - events: receives decided checks (later features); nil for none.
    /// - Throws: ``SluiceError`` naming the listener that could not be bound.
    public static func start(configuration: Configuration, logger: Logger, policy: (any CheckPolicy)? = nil,
                             events: EventTap<CheckEvent>? = nil) async throws -> SluiceDaemon {
        guard !configuration.unixListeners.isEmpty || !configuration.tcpListeners.isEmpty else {
            throw SluiceError(.invalidConfiguration, "no listeners: configure at least one Unix socket or TCP address")
        }
        let threads = configuration.threads > 0 ? configuration.threads : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        // With request times, checks of different keys need not arrive in time order, so
        // recovered entries are left to eviction rather than reclaimed by a later request's time.
        let table = LimiterTable(shardCount: configuration.shards > 0 ? configuration.shards : nil,
                                 maxEntries: configuration.maxEntries, reclaimsRecovered: configuration.clock == .monotonic)
        let counters = ServerCounters()
        let dispatcher = RequestDispatcher(configuration: configuration, table: table, counters: counters,
                                           policy: policy, events: events)
        // The table is restored before any listener accepts, so no check sees it empty.
        let snapshotter = configuration.snapshotPath.map { Snapshotter(path: $0, table: table, time: dispatcher.time, logger: logger) }
        snapshotter?.restore()
        let tracker = ConnectionTracker()
        var bound: [any Channel] = []
        var unixPaths: [String] = []
        var tcpAddresses: [SocketAddress] = []
        do {
            for listener in configuration.unixListeners {
                try UnixSocketPath.prepare(listener.path)
                let channel = try await bootstrap(group, tracker, dispatcher, logger, tcp: false)
                    .bind(unixDomainSocketPath: listener.path).get()
                bound.append(channel)
                unixPaths.append(listener.path)
                try UnixSocketPath.setMode(listener.path, listener.mode)
                logger.info("listening", metadata: ["listen.unix": "\(listener.path)", "listen.mode": "\(String(listener.mode, radix: 8))"])
            }
            for listener in configuration.tcpListeners {
                let channel: any Channel
                do {
                    channel = try await bootstrap(group, tracker, dispatcher, logger, tcp: true)
                        .bind(host: listener.host, port: listener.port).get()
                } catch {
                    throw SluiceError(.addressInUse, "cannot listen on \(listener): \(error)")
                }
                bound.append(channel)
                if let address = channel.localAddress { tcpAddresses.append(address) }
                logger.info("listening", metadata: ["listen.tcp": "\(channel.localAddress?.description ?? listener.description)"])
            }
        } catch {
            for channel in bound { try? await channel.close() }
            for path in unixPaths { UnixSocketPath.remove(path) }
            try? await group.shutdownGracefully()
            throw error
        }
        logger.info("sluiced ready", metadata: [
            "config.source": "\(configuration.source)", "clock": "\(configuration.clock.rawValue)",
            "table.shards": "\(table.shardCount)", "table.max_entries": "\(table.maxEntries)", "threads": "\(threads)",
        ])
        snapshotter?.start(interval: .milliseconds(Int(configuration.snapshotIntervalMs)))
        return SluiceDaemon(configuration: configuration, dispatcher: dispatcher, unixPaths: unixPaths,
                            tcpAddresses: tcpAddresses, group: group, tracker: tracker, listeners: bound, logger: logger,
                            snapshotter: snapshotter)
    }

    static func bootstrap(_ group: MultiThreadedEventLoopGroup, _ tracker: ConnectionTracker,
                          _ dispatcher: RequestDispatcher, _ logger: Logger, tcp: Bool) -> ServerBootstrap {
        let configuration = dispatcher.configuration
        let counters = dispatcher.counters
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let open = counters.connectionsOpen.add(1, ordering: .relaxed).newValue
                    counters.connectionsTotal.add(1, ordering: .relaxed)
                    channel.closeFuture.whenComplete { _ in counters.connectionsOpen.subtract(1, ordering: .relaxed) }
                    guard tracker.add(channel) else {
                        try channel.pipeline.syncOperations.addHandler(RefuseHandler(
                            code: .shuttingDown, message: "the daemon is shutting down"))
                        return
                    }
                    guard open <= UInt64(configuration.maxConnections) else {
                        counters.connectionsRefused.add(1, ordering: .relaxed)
                        try channel.pipeline.syncOperations.addHandler(RefuseHandler(
                            code: .overloaded, message: "too many connections: max_connections is \(configuration.maxConnections)"))
                        return
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionHandler(processor: dispatcher, logger: logger, maximumFrameBytes: configuration.maxFrameBytes))
                }
            }
        if tcp {
            bootstrap = bootstrap
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        }
        return bootstrap
    }

    /// Stops accepting, answers what every connection has already sent, closes the connections,
    /// removes the Unix sockets and stops the event loops. Safe to call more than once.
    public func shutdown() async {
        guard stopped.withLockedValue({ let was = $0; $0 = true; return !was }) else { return }
        logger.info("shutting down: no new connections, answering what is in flight")
        for listener in listeners { try? await listener.close() }
        await tracker.drain(deadline: .seconds(10))
        // Every answered check is in the table now: keep it for the next start.
        snapshotter?.stop()
        for path in unixPaths { UnixSocketPath.remove(path) }
        try? await group.shutdownGracefully()
        logger.info("stopped")
    }
}

/// Answers the first moment of a connection over the limit with `CODE_OVERLOADED`, then closes.
final class RefuseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let code: WireError.Code
    let message: String

    init(code: WireError.Code, message: String) {
        self.code = code
        self.message = message
    }

    func channelActive(context: ChannelHandlerContext) {
        let response = WireResponse.error(id: 0, code, message)
        var buffer = context.channel.allocator.buffer(capacity: 128)
        if let bytes: [UInt8] = try? response.serializedBytes() { buffer.writeFrame(bytes) }
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

extension UnixSocketPath {
    static func remove(_ path: String) {
        // Only a socket, and only one no daemon answers on (ours is closed by now).
        if (try? prepare(path)) == nil { return }
    }
}
