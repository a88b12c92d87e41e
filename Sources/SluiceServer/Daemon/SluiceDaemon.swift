import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import SluiceConfiguration
import SluiceCore
import SluiceProto
import SluiceWire

/// A running daemon: its listeners, event loops, dispatcher, metrics endpoint and snapshotter.
///
/// `start` restores the snapshot, then binds every listener or none (a failure closes what was
/// bound), then runs every background engine and shutdown step as a service of one
/// service-lifecycle `ServiceGroup`. ``shutdown()`` stops them in reverse order of start:
/// 1. the listeners stop accepting, every connection's in-flight requests are answered, and the
///    connections close (`/readyz` turns 503 first);
/// 2. the metrics endpoint closes (and the SIGHUP reloader stops);
/// 3. anomaly detection takes what is queued for it; the snapshotter writes its last snapshot,
///    which holds every answered check; reputation applies the last denials and commits every
///    pending change; the shedding tick and the memory returner stop;
/// 4. the event loops stop.
public final class SluiceDaemon: Sendable {
    /// What answers requests.
    public let dispatcher: RequestDispatcher
    /// Unix socket paths being served.
    public let unixPaths: [String]
    /// TCP addresses being served, with the ports actually bound (useful with port 0).
    public let tcpAddresses: [SocketAddress]
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    public let metricsAddress: SocketAddress?
    /// The Prometheus registry and the background metrics.
    public let metrics: SluiceMetrics
    let group: MultiThreadedEventLoopGroup
    let tracker: ConnectionTracker
    let listeners: [any Channel]
    let metricsChannel: (any Channel)?
    /// Envoy's rate limit service, when `envoy.listen` names listeners.
    let envoy: RateLimitServers?
    let logger: Logger
    let operations: Operator
    /// Every background engine and shutdown step, running from start to shutdown.
    let services = NIOLockedValueBox<RunningServices?>(nil)
    /// The queueing-delay gauges, stopped before the event loops stop (a task left on a loop
    /// that shuts down is an error NIO will make a crash).
    let sampling: [QueueDelayGauge]
    /// Which shutdown steps have run.
    let progress = NIOLockedValueBox(Progress())

    struct Progress {
        var servingStopped = false
        var metricsStopped = false
        var closed = false
    }

    init(dispatcher: RequestDispatcher, unixPaths: [String], tcpAddresses: [SocketAddress], metricsAddress: SocketAddress?,
         metrics: SluiceMetrics, group: MultiThreadedEventLoopGroup, tracker: ConnectionTracker, listeners: [any Channel],
         metricsChannel: (any Channel)?, envoy: RateLimitServers?, logger: Logger, operations: Operator, sampling: [QueueDelayGauge]) {
        self.sampling = sampling
        self.envoy = envoy
        self.dispatcher = dispatcher
        self.unixPaths = unixPaths
        self.tcpAddresses = tcpAddresses
        self.metricsAddress = metricsAddress
        self.metrics = metrics
        self.group = group
        self.tracker = tracker
        self.listeners = listeners
        self.metricsChannel = metricsChannel
        self.logger = logger
        self.operations = operations
    }

    /// The configuration in force (it changes on reload).
    public var configuration: Configuration { dispatcher.configuration }

    /// The TCP ports bound, in listener order.
    public var tcpPorts: [Int] { tcpAddresses.compactMap(\.port) }

    /// The TCP ports Envoy's rate limit service bound, in listener order.
    public var envoyPorts: [Int] { envoy?.tcpPorts ?? [] }

    /// Restores the snapshot, binds every listener and the metrics endpoint, and starts serving.
    ///
    /// - Parameters:
    ///   - events: receives decided checks (later features); nil for none.
    ///   - metrics: the registry to serve; a new one if nil.
    ///   - reloadFrom: reads the configuration anew for a reload (SIGHUP, `sluicectl reload`); nil
    ///     re-reads the file the configuration came from.
    ///   - reloadOnHangup: reload on SIGHUP (the process's daemon; not one of many in a test).
    /// - Throws: ``SluiceError`` naming the listener that could not be bound.
    public static func start(configuration: Configuration, logger: Logger, events: EventTap<CheckEvent>? = nil,
                             metrics: SluiceMetrics? = nil, reloadFrom: (@Sendable () throws -> Configuration)? = nil,
                             reloadOnHangup: Bool = false) async throws -> SluiceDaemon {
        try await start(configuration: configuration, logger: logger, events: events, metrics: metrics, reloadFrom: reloadFrom,
                        reloadOnHangup: reloadOnHangup, stages: [], clock: DispatchClock())
    }

    /// The same, with `stages` run before the features' own on every check (an embedder's
    /// policy), the background engines' timers on `clock`, and checks decided against what
    /// `backend` makes of the table (the table itself if nil).
    static func start<C: Clock>(configuration: Configuration, logger: Logger, events: EventTap<CheckEvent>?, metrics: SluiceMetrics?,
                                reloadFrom: (@Sendable () throws -> Configuration)?, reloadOnHangup: Bool = false,
                                stages: [any CheckStage], clock: C, backend: ((LimiterTable) -> any LimiterBackend)? = nil)
        async throws -> SluiceDaemon where C.Duration == Duration {
        guard !configuration.unixListeners.isEmpty || !configuration.tcpListeners.isEmpty else {
            throw SluiceError(.invalidConfiguration, "no listeners: configure at least one Unix socket or TCP address")
        }
        // TLS listeners' files, read before anything starts: one that cannot be read is a start
        // refused in words, not a listener that fails every handshake.
        try configuration.checkAuthentication()
        TokensFileCheck.warnIfShared(configuration.auth.tokensFile, logger: logger)
        var tls: [Configuration.TCPListener: ListenerTLS] = [:]
        for listener in configuration.tcpListeners + configuration.http.tcpListeners {
            if let files = listener.tls { tls[listener] = try ListenerTLS(files) }
        }
        let metricsTLS = try configuration.metricsListener?.tls.map { files throws(SluiceError) in try ListenerTLS(files) }
        let metricsToken = try configuration.metricsBearerTokenFile.map { path throws(SluiceError) in try MetricsToken(path: path) }
        let threads = configuration.threads > 0 ? configuration.threads : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        // With request times, checks of different keys need not arrive in time order, so
        // recovered entries are left to eviction rather than reclaimed by a later request's time.
        let table = LimiterTable(shardCount: configuration.shards > 0 ? configuration.shards : nil,
                                 maxEntries: configuration.maxEntries, reclaimsRecovered: configuration.clock == .monotonic)
        let counters = ServerCounters()
        let metrics = metrics ?? SluiceMetrics()
        let time = TimeSource()
        let state = LiveState(configuration: configuration)
        // A write cut short (kill -9, power loss) leaves its temporary file: a snapshot's worth each.
        for path in [configuration.snapshotPath, AnomalyService.statePath(configuration)].compactMap({ $0 }) {
            Snapshotter.removeStaleTemporaries(of: path, logger: logger)
        }
        // Likewise every stored reputation (a store that cannot be opened is logged and retried).
        let reputation = ReputationService(state: state, time: time, logger: logger)
        reputation.open()
        let anomaly = AnomalyService(state: state, reputation: reputation, time: time, logger: logger)
        let anomalyPath = AnomalyService.statePath(configuration)
        // What anomaly detection learned before the restart, and the learned baselines, are
        // saved with each snapshot.
        if let anomalyPath { anomaly.restoreState(from: anomalyPath, now: time.now()) }
        var companions: [@Sendable () -> Void] = [{ reputation.saveBaselines() }]
        if let anomalyPath { companions.append { anomaly.saveState(to: anomalyPath) } }
        // Tenants' own tables (quotas.max_keys) beside the snapshot, those of the configuration in force.
        if let base = configuration.snapshotPath {
            PartitionSnapshots.restore(state.current.partitions, base: base, logger: logger)
            companions.append { PartitionSnapshots.write(state.current.partitions, base: base, now: time.now(), logger: logger) }
        }
        // The table is restored before any listener accepts, so no check sees it empty.
        let snapshotter = configuration.snapshotPath.map {
            Snapshotter(path: $0, table: table, time: time, logger: logger, metrics: metrics, companions: companions)
        }
        snapshotter?.restore()
        let loader = reloadFrom ?? Self.fileLoader(configuration.source)
        let contexts = Array(tls.values) + (metricsTLS.map { [$0] } ?? [])
        let operations = Operator(state: state, loader: loader, snapshotter: snapshotter, metrics: metrics, time: time, logger: logger,
                                  reloadFiles: { () throws(SluiceError) in
                                      for context in contexts { try context.reload() }
                                      try metricsToken?.reload()
                                  })
        let shedding = SheddingService(state: state)
        let chosen: any LimiterBackend
        if let backend {
            chosen = backend(table)
        } else if configuration.usesRedis {
            chosen = RedisBackend(configuration.redis, local: table, group: group, logger: logger,
                                  routing: .init(state: state, remoteByDefault: configuration.backend == .redis))
            logger.info("limits are shared through Redis", metadata: ["redis": "\((chosen as? RedisBackend)?.address ?? "")",
                                                                      "redis.on_failure": "\(configuration.redis.onFailure.rawValue)"])
        } else {
            chosen = table
        }
        let dispatcher = RequestDispatcher(state: state, backend: chosen, counters: counters, events: events, reputation: reputation,
                                           shedding: shedding, anomaly: anomaly, operations: operations, time: time,
                                           version: SluiceVersion.current, extraStages: stages)
        let tracker = ConnectionTracker()
        // One queueing-delay gauge per event loop, read (and kept sampling) by that loop's connections.
        var gauges: [ObjectIdentifier: QueueDelayGauge] = [:]
        var loopDelays: [QueueDelayGauge] = []
        for loop in group.makeIterator() {
            let gauge = QueueDelayGauge(bound: configuration.maxQueueDelayMs > 0 ? .milliseconds(configuration.maxQueueDelayMs) : nil)
            gauges[ObjectIdentifier(loop)] = gauge
            loopDelays.append(gauge)
        }
        DescriptorLimit.ensure(for: configuration, logger: logger)
        var bound: [any Channel] = []
        var unixPaths: [String] = []
        var tcpAddresses: [SocketAddress] = []
        var metricsChannel: (any Channel)?
        var httpUnixPaths: [String] = []
        var envoy: RateLimitServers?
        let envoyCounters = EnvoyCounters()
        do {
            // A live daemon on a socket path stops the start before any port is taken.
            for listener in configuration.unixListeners { try UnixSocketPath.prepare(listener.path) }
            for listener in configuration.tcpListeners {
                let channel: any Channel
                do {
                    channel = try await bootstrap(group, tracker, dispatcher, logger, tcp: true, gauges: gauges, tls: tls[listener],
                                                  auth: listener.auth)
                        .bind(host: listener.host, port: listener.port).get()
                } catch {
                    throw SluiceError(.addressInUse, "cannot listen on \(listener): \(error)")
                }
                bound.append(channel)
                if let address = channel.localAddress { tcpAddresses.append(address) }
                logger.info("listening", metadata: ["listen.tcp": "\(channel.localAddress?.description ?? listener.description)",
                                                    "listen.tls": "\(listener.tls == nil ? "off" : listener.tls?.clientCA == nil ? "on" : "on, client certificates required")",
                                                    "listen.auth": "\(listener.auth)"])
            }
            if configuration.http.isServed {
                bound += try await HTTPAPI.bind(configuration.http, dispatcher: dispatcher, group: group, tls: tls, logger: logger)
                httpUnixPaths = configuration.http.unixListeners.map(\.path)
            }
            if configuration.envoy.isServed {
                envoy = try await RateLimitServers.start(configuration.envoy, threads: threads,
                                                         front: EnvoyFront(dispatcher: dispatcher, counters: envoyCounters, now: { time.now() }),
                                                         maximumMessageBytes: configuration.maxFrameBytes, logger: logger)
            }
            if let listener = configuration.metricsListener {
                let exporter = MetricsExporter(metrics: metrics, state: state, table: table, counters: counters, events: events,
                                               reputation: reputation, load: dispatcher.shedding, anomaly: dispatcher.anomaly, time: time, version: SluiceVersion.current,
                                               loopDelays: loopDelays, redis: dispatcher.backend as? RedisBackend, gatekeeper: dispatcher.gatekeeper,
                                               connectionQuotas: dispatcher.connectionQuotas,
                                               envoy: configuration.envoy.isServed ? envoyCounters : nil)
                do {
                    metricsChannel = try await MetricsEndpoint.bind(listener, group: group, exporter: exporter, tls: metricsTLS, token: metricsToken,
                                                                    readiness: { [dispatcher] in
                        guard !tracker.isDraining else { return .init(ready: false, reason: "shutting down") }
                        // Checks are answered whatever Redis or the store does (on_failure says
                        // how), so the daemon stays ready; the body says how it is serving.
                        var reason = "ready"
                        if let redis = dispatcher.backend as? RedisBackend {
                            let state = redis.breakerState, nodes = redis.breakerNodes
                            let which = nodes.of > 1 ? ", \(nodes.open) of \(nodes.of) nodes: checks of their slots" : ", checks"
                            reason += state == "closed"
                                ? "; backend redis: \(state)"
                                : "; backend redis: \(state)\(which) take on_failure \(redis.settings.degraded.rawValue)"
                        }
                        if let store = reputation.readiness { reason += "; store \(store)" }
                        return .init(ready: true, reason: reason)
                    }, logger: logger)
                } catch {
                    throw SluiceError(.addressInUse, "cannot serve metrics on \(listener): \(error)")
                }
                logger.info("serving metrics", metadata: ["metrics.listen": "\(metricsChannel?.localAddress?.description ?? listener.description)"])
            }
            // The protocol's Unix sockets last: a local client (or a script waiting for the
            // socket) that can connect knows every other listener is up too.
            for listener in configuration.unixListeners {
                let channel = try await bootstrap(group, tracker, dispatcher, logger, tcp: false, gauges: gauges, auth: listener.auth)
                    .bind(unixDomainSocketPath: listener.path).get()
                bound.append(channel)
                unixPaths.append(listener.path)
                try UnixSocketPath.setMode(listener.path, listener.mode)
                logger.info("listening", metadata: ["listen.unix": "\(listener.path)", "listen.mode": "\(String(listener.mode, radix: 8))",
                                                    "listen.auth": "\(listener.auth)"])
            }
            unixPaths += httpUnixPaths
        } catch {
            for channel in bound { try? await channel.close() }
            await envoy?.stop()
            for listener in configuration.envoy.unixListeners { UnixSocketPath.remove(listener.path) }
            try? await metricsChannel?.close()
            for path in unixPaths + httpUnixPaths { UnixSocketPath.remove(path) }
            reputation.flush()
            try? await group.shutdownGracefully()
            throw error
        }
        logger.info("sluiced ready", metadata: [
            "config.source": "\(configuration.source)", "clock": "\(configuration.clock.rawValue)",
            "table.shards": "\(table.shardCount)", "table.max_entries": "\(table.maxEntries)", "threads": "\(threads)",
        ])
        let daemon = SluiceDaemon(dispatcher: dispatcher, unixPaths: unixPaths, tcpAddresses: tcpAddresses,
                                  metricsAddress: metricsChannel?.localAddress, metrics: metrics, group: group, tracker: tracker,
                                  listeners: bound, metricsChannel: metricsChannel, envoy: envoy, logger: logger, operations: operations,
                                  sampling: loopDelays)
        let probe = LoopDelayProbe(group: group)
        // Started in this order, stopped in reverse: first the listeners stop accepting and
        // drain, then the metrics endpoint closes, then detection takes what is queued for it
        // (so the last snapshot saves all it learned), the last snapshot is written, reputation
        // applies the last denials and commits everything, and the shedding tick stops.
        var services: [any Service] = [
            MemoryReturner(counters: counters).service(clock: clock),
            shedding.service(clock: clock, now: { time.now() }, probe: { probe.sample() }),
        ]
        services += reputation.services(clock: clock)
        if let snapshotter { services.append(snapshotter.service(clock: clock, interval: .nanoseconds(configuration.snapshotIntervalMs * 1_000_000))) }
        services.append(anomaly.service(clock: clock))
        services.append(ShutdownStep(description: "metrics-endpoint") { await daemon.stopMetrics() })
        if reloadOnHangup { services.append(HangupReloadService(daemon: daemon)) }
        services.append(ShutdownStep(description: "listeners") { await daemon.stopServing() })
        daemon.services.withLockedValue { $0 = RunningServices(services, logger: logger) }
        return daemon
    }

    /// Re-reads the file `source` names.
    static func fileLoader(_ source: String) -> @Sendable () throws -> Configuration {
        { () throws -> Configuration in
            guard source != Configuration().source else {
                throw SluiceError(.unavailable, "the daemon runs the embedded default configuration: there is no file to re-read (start it with --config FILE)")
            }
            return try ConfigurationLoader.load(file: source)
        }
    }

    /// Bytes read from one connection per turn of its event loop: every ready connection gets
    /// its turn before any gets a second, so one client pipelining deep cannot make another
    /// wait for its whole backlog (and a read's answers stay small next to `max_queued_bytes`).
    static let readBytesPerTurn = 16 << 10

    static func bootstrap(_ group: MultiThreadedEventLoopGroup, _ tracker: ConnectionTracker,
                          _ dispatcher: RequestDispatcher, _ logger: Logger, tcp: Bool,
                          gauges: [ObjectIdentifier: QueueDelayGauge], tls: ListenerTLS? = nil,
                          auth: Configuration.ListenerAuth) -> ServerBootstrap {
        let initial = dispatcher.configuration
        let counters = dispatcher.counters
        let kind: ConnectionKind = tcp ? .tcp : .unix
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptBackoff(counters: counters, logger: logger, kind: kind))
                }
            }
            // A connection whose unread answers pass the high mark stops being read until they
            // drain (ConnectionHandler.channelWritabilityChanged): memory per connection is bounded.
            .childChannelOption(.writeBufferWaterMark, value: .init(low: initial.maxQueuedBytes / 4, high: initial.maxQueuedBytes))
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2_048, maximum: readBytesPerTurn))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // TLS first: every byte after it is the decrypted stream (a client that does
                    // not speak TLS fails the handshake and is closed by ConnectionHandler).
                    let tlsHandler = tls.map { NIOSSLServerHandler(context: $0.current) }
                    if let tlsHandler { try channel.pipeline.syncOperations.addHandler(tlsHandler) }
                    // Read per connection, so a reload's limits apply to the next connection.
                    let configuration = dispatcher.configuration
                    let open = counters.connectionsOpen.add(1, ordering: .relaxed).newValue
                    counters.connectionsTotal.add(1, ordering: .relaxed)
                    channel.closeFuture.whenComplete { _ in counters.connectionsOpen.subtract(1, ordering: .relaxed) }
                    let activity = ConnectionActivity(channel: channel, kind: kind)
                    guard tracker.add(channel, activity: activity) else {
                        counters.connectionsRefusedShuttingDown.add(1, ordering: .relaxed)
                        try channel.pipeline.syncOperations.addHandler(RefuseHandler(
                            code: .shuttingDown, message: "the daemon is shutting down"))
                        return
                    }
                    if let refusal = admission(open: open, kind: kind, configuration: configuration, tracker: tracker, counters: counters) {
                        try channel.pipeline.syncOperations.addHandler(RefuseHandler(code: .overloaded, message: refusal))
                        return
                    }
                    let timeouts = ConnectionTimeouts(
                        idle: configuration.idleTimeoutMs > 0 ? .milliseconds(configuration.idleTimeoutMs) : nil,
                        read: configuration.readTimeoutMs > 0 ? .milliseconds(configuration.readTimeoutMs) : nil,
                        write: configuration.writeTimeoutMs > 0 ? .milliseconds(configuration.writeTimeoutMs) : nil)
                    let session = ConnectionSession(dispatcher: dispatcher, gatekeeper: dispatcher.gatekeeper,
                                                    address: channel.remoteAddress?.ipAddress ?? "unix", kind: kind,
                                                    principal: auth == .none ? .open : nil)
                    if let tlsHandler, tls?.files.clientCA != nil, auth == .token, !configuration.auth.certificates.isEmpty {
                        // The client's certificate, verified by the handshake (client_ca), names
                        // its identity: looked at on its first request, after the handshake.
                        session.identifyPeer = { [dispatcher] in
                            guard let der = try? tlsHandler.peerCertificate?.toDERBytes(),
                                  let name = CertificateName.commonName(der: der) else { return nil }
                            return dispatcher.configuration.auth.certificates[name]
                        }
                    }
                    if kind == .unix, !configuration.auth.unixPeers.isEmpty {
                        let peers = configuration.auth.unixPeers
                        // Read at once: the initializer runs on the channel's loop. Taken at the
                        // first request, like a certificate's identity.
                        UnixPeer.uid(of: channel) { uid in
                            guard let identity = peers[uid] else { return }
                            session.principal = nil
                            session.identifyPeer = { identity }
                        }
                    }
                    // Its place in its tenant's connection quota is given back when it closes.
                    channel.closeFuture.whenComplete { _ in session.releaseSlot() }
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionHandler(processor: session, logger: logger, maximumFrameBytes: configuration.maxFrameBytes,
                                          timeouts: timeouts, activity: activity, queueDelay: gauges[ObjectIdentifier(channel.eventLoop)],
                                          framesPerTurn: configuration.framesPerTurn > 0 ? configuration.framesPerTurn : nil))
                }
            }
        if tcp {
            bootstrap = bootstrap
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        }
        return bootstrap
    }

    /// Why a new connection must be refused (nil: serve it), the `open`-th now open. Past
    /// `max_connections`, a Unix socket connection still gets in within `server.unix_reserve`,
    /// and any gets in by evicting the TCP connection idle the longest (at least
    /// `server.evict_idle_after`), so that idle clients cannot lock everyone out.
    static func admission(open: UInt64, kind: ConnectionKind, configuration: Configuration, tracker: ConnectionTracker,
                          counters: ServerCounters) -> String? {
        let limit = UInt64(configuration.maxConnections)
        guard open > limit else { return nil }
        if kind == .unix, open <= limit + UInt64(configuration.unixReserve) { return nil }
        if configuration.evictIdleAfterMs > 0, tracker.evictIdlest(idleAtLeast: .milliseconds(configuration.evictIdleAfterMs)) {
            return nil
        }
        if kind == .unix {
            counters.connectionsRefusedUnix.add(1, ordering: .relaxed)
            return "too many connections: max_connections (\(configuration.maxConnections)) and unix_reserve (\(configuration.unixReserve)) are open"
        }
        counters.connectionsRefused.add(1, ordering: .relaxed)
        return "too many connections: max_connections is \(configuration.maxConnections), and none has been idle for evict_idle_after"
    }

    /// Re-reads the configuration and applies it if valid (what SIGHUP and `sluicectl reload` do).
    ///
    /// - Returns: what changed, or why nothing did.
    public func reload() -> Result<ReloadReport, SluiceError> { operations.reloadNow() }

    /// Shutdown step 1 (the `listeners` service): stops accepting, answers what every
    /// connection has already sent, closes the connections and removes the Unix sockets.
    func stopServing() async {
        guard progress.withLockedValue({ let was = $0.servingStopped; $0.servingStopped = true; return !was }) else { return }
        logger.info("shutting down: no new connections, answering what is in flight")
        tracker.beginDraining()
        for listener in listeners { try? await listener.close() }
        await envoy?.stop()
        await tracker.drain(deadline: .seconds(10))
        for path in unixPaths { UnixSocketPath.remove(path) }
        for listener in configuration.envoy.unixListeners { UnixSocketPath.remove(listener.path) }
    }

    /// Step 2 (the `metrics-endpoint` service): closes the metrics endpoint.
    func stopMetrics() async {
        guard progress.withLockedValue({ let was = $0.metricsStopped; $0.metricsStopped = true; return !was }) else { return }
        try? await metricsChannel?.close()
    }

    /// Calls `answer` once every event loop has run a task (systemd's watchdog: a loop that is
    /// stuck never answers, and no answer is the alarm).
    public func whenEventLoopsAnswer(_ answer: @escaping @Sendable () -> Void) {
        let loops = Array(group.makeIterator())
        let futures = loops.map { $0.submit {} }
        EventLoopFuture.andAllSucceed(futures, on: loops[0]).whenSuccess { answer() }
    }

    /// Begins the shutdown and returns at once (a signal handler's call); ``run()`` returns
    /// when it is done.
    public func beginShutdown() {
        services.withLockedValue { $0 }?.beginShutdown()
    }

    /// Returns once every service has stopped (after ``beginShutdown()``); call ``close()`` then.
    public func run() async {
        await services.withLockedValue { $0 }?.finished()
    }

    /// Step 4: stops the event loops.
    public func close() async {
        guard progress.withLockedValue({ let was = $0.closed; $0.closed = true; return !was }) else { return }
        for gauge in sampling { gauge.stop() }
        (dispatcher.backend as? RedisBackend)?.shutdown()
        try? await group.shutdownGracefully()
        logger.info("stopped")
    }

    /// Every step of shutdown, in order. Safe to call more than once.
    public func shutdown() async {
        await services.withLockedValue { $0 }?.shutdown()
        await close()
    }
}

/// Backs a listener off when accepting fails for want of descriptors (EMFILE, ENFILE) or memory:
/// NIO keeps such a listener registered and retries at once, and since no accept succeeds its
/// own `AcceptBackoffHandler` never gets to delay a read, so the loop spun a whole core. Here the
/// listener stops reading for `backoff`, then tries again. Logs the first failure and the first
/// success after it, once per episode, and counts every failure.
final class AcceptBackoff: ChannelInboundHandler {
    typealias InboundIn = any Channel
    static let backoff = TimeAmount.milliseconds(200)
    let counters: ServerCounters
    let logger: Logger
    let kind: ConnectionKind
    var failing = false
    var paused = false

    init(counters: ServerCounters, logger: Logger, kind: ConnectionKind) {
        self.counters = counters
        self.logger = logger
        self.kind = kind
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        counters.acceptErrors.add(1, ordering: .relaxed)
        if !failing {
            failing = true
            logger.error("cannot accept connections; retrying every 200 ms and serving the connections already open", metadata: [
                "listen.kind": "\(kind)", "error": "\(error)",
                "hint": "raise the descriptor limit (LimitNOFILE, ulimit -n) or lower server.max_connections",
            ])
        }
        guard !paused, let options = context.channel.syncOptions else { return }
        paused = true
        try? options.setOption(.autoRead, value: false)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: Self.backoff) {
            let (handler, context) = loopBound.value
            handler.paused = false
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if failing {
            failing = false
            logger.notice("accepting connections again", metadata: ["listen.kind": "\(kind)"])
        }
        context.fireChannelRead(data)
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
