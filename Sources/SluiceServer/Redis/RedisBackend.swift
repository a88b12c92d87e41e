import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceConfiguration
import SluiceCore
import SluiceRedis
import Synchronization

/// Limits shared by every daemon of a fleet through Redis (issue 17).
///
/// Exact mode: each check is decided in Redis by ``CheckScript`` with one key per limit of its
/// rule, all under the check key's hash tag (one Cluster slot), so a rule's limits are decided
/// together as the local table decides them; the checks of every connection go out in one
/// pipelined write a window (``RedisBatcher``), many to a script call. A denial is kept and
/// answered again until its retry time (``DenialCache``); concurrency leases live in Redis too.
///
/// Fast mode: each check is decided on this daemon's own table and what it admitted is synced
/// with Redis every interval (``FastSync``, ``sync(now:)``).
///
/// When Redis cannot answer (no connection, too much waiting, a timeout, an error reply) each
/// check takes the degraded path its policy names: `local` decides it on this daemon's own table
/// with its share of the limit (`limit / expectedDaemons`), `failOpen` allows it, `failClosed`
/// denies it. After `breakerThreshold` failures in a row the breaker sends checks that way at
/// once. A shadow evaluation goes to the local table: waiting on the network would block the
/// event loop.
public final class RedisBackend: LimiterBackend {
    public enum Degraded: String, Sendable {
        case local
        case failOpen = "fail_open"
        case failClosed = "fail_closed"
    }

    public struct Settings: Sendable {
        /// How long a batch waits for Redis before its checks take the degraded path.
        public var timeout: TimeAmount = .milliseconds(20)
        public var degraded = Degraded.local
        /// Daemons sharing the limits: the degraded local path allows each `1 / expectedDaemons`
        /// of a limit.
        public var expectedDaemons = 1
        /// Time from this daemon's clock (each check's `now`), or 0: Redis's own `TIME`.
        public var useDaemonClock = false
        /// How long keys outlive their state, for clocks that differ (ms).
        public var slackMs: Int64 = 1_000
        /// How long checks of every connection are gathered into one write; zero: none.
        public var batchWindow: TimeAmount = .zero
        /// Writes a lane keeps out at most while more checks gather (0: no bound).
        public var writesInFlight = 1
        /// Checks that fill a write before its window ends.
        public var maxBatch = 128
        /// Failures in a row that open the circuit breaker; the first wait before a probe (ns).
        public var breakerThreshold = 5
        public var breakerCooldown: Int64 = 1_000_000_000
        /// Denials kept to answer again without Redis until their retry time; 0: none.
        public var denialCacheSize = 100_000
        /// Checks decided by one script call (1: a call each).
        public var checksPerCall = 64
        /// Exact: every check decided in Redis. Fast: on this daemon's table, synced every
        /// `syncInterval` (zero: only when ``sync()`` is called).
        public var fast = false
        public var syncInterval: TimeAmount = .milliseconds(5)
        /// Limits with hits waiting for a sync, at most.
        public var maxPendingSync = 1_000_000
        /// Entries one sync sends at most (admitted hits first); the rest wait for the next.
        public var maxSyncEntries = 4_096

        public init() {}
    }

    /// A client and its batcher on one event loop: checks arriving on that loop are gathered,
    /// sent and answered there, with no hop to another thread (each hop was a wake-up: perf put
    /// a fifth of the daemon's time at 50 x 1 in task switches).
    struct Lane: Sendable {
        let client: any RedisScripting
        let batcher: RedisBatcher
    }

    /// By event loop; `lane` is the one for any other thread.
    let lanes: [ObjectIdentifier: Lane]
    let lane: Lane
    /// The first lane's client (fast mode's syncs, releases from no event loop, tests).
    var client: any RedisScripting { lane.client }
    /// The degraded path's table, and the synchronous calls'.
    public let local: LimiterTable
    public let settings: Settings
    /// A breaker per node (``Breakers``).
    let breakers: NIOLockedValueBox<Breakers>
    let logger: Logger
    let time: TimeSource
    let counts: RedisStatistics
    let denials: DenialCache?
    /// Fast mode's record of admitted hits (of every rule in fast mode, `redis.mode`'s or its own).
    let fast: FastSync
    /// Whether every check is answered at once (every rule in fast mode, from the start).
    public let answersAtOnce: Bool
    /// Whether fast mode's syncs run (some rule was fast from the start): a rule a reload made
    /// fast on a daemon without them stays exact until a restart.
    let syncs: Bool
    /// Whether checks take the on_failure path now (the breaker is open), for fast mode's
    /// synchronous checks: one load, no lock.
    let degradedNow = Atomic<Bool>(false)
    let syncTask: NIOLockedValueBox<RepeatedTask?> = NIOLockedValueBox(nil)
    let syncLoop: any EventLoop
    /// Where Redis listens, as a URL (`redis://host:port`, `unix:///path`).
    public let address: String

    /// Which checks go to Redis: `backend:`'s choice for every rule, and the rules that say
    /// otherwise (read from the configuration in force, so a reload applies).
    public struct Routing: Sendable {
        let state: LiveState
        let remoteByDefault: Bool

        public init(state: LiveState, remoteByDefault: Bool) {
            self.state = state
            self.remoteByDefault = remoteByDefault
        }

        /// The limits decided elsewhere than the default, on this thread.
        @inline(__always)
        func exceptions() -> Set<UInt64> { state.context().live.backendExceptions }

        /// Whether `item` is decided in Redis, given `exceptions`.
        @inline(__always)
        func remote(_ item: BatchCheck, exceptions: Set<UInt64>) -> Bool {
            Self.flips(item, exceptions) ? !remoteByDefault : remoteByDefault
        }

        /// The limits of rules decided in another mode than `redis.mode`, on this thread.
        @inline(__always)
        func modeExceptions() -> Set<UInt64> { state.context().live.modeExceptions }

        /// Whether `item`'s rule is one of `exceptions`.
        @inline(__always)
        static func flips(_ item: BatchCheck, _ exceptions: Set<UInt64>) -> Bool {
            guard !exceptions.isEmpty else { return false }
            let identity: UInt64? = switch item.limits {
            case .single(let limit): limit.identity
            case .rule(let limits): limits.first?.identity
            }
            return identity.map { exceptions.contains($0) } == true
        }
    }

    /// Nil: every check goes to Redis.
    let routing: Routing?

    /// A backend over `client`, its batches timed on one loop of `group`.
    public convenience init(client: any RedisScripting, local: LimiterTable, settings: Settings, group: any EventLoopGroup,
                            logger: Logger = Logger(label: "sluiced.redis", factory: { _ in SwiftLogNoOpLogHandler() }),
                            routing: Routing? = nil) {
        self.init(lanes: [(group.next(), client)], local: local, settings: settings, group: group, logger: logger, routing: routing)
    }

    /// A backend with one client per event loop (each client's connections on its loop); `lanes`
    /// must not be empty.
    init(lanes clients: [(any EventLoop, any RedisScripting)], local: LimiterTable, settings: Settings, group: any EventLoopGroup, logger: Logger,
         routing: Routing?) {
        self.routing = routing
        let counts = RedisStatistics()
        self.counts = counts
        let made = clients.map { loop, client in
            (ObjectIdentifier(loop), Lane(client: client, batcher: RedisBatcher(
                client: client, window: settings.batchWindow, maxBatch: settings.maxBatch, maxInFlight: settings.writesInFlight,
                timeout: settings.timeout, eventLoop: loop,
                statistics: counts, checksPerCall: settings.checksPerCall, slackMs: settings.slackMs)))
        }
        lanes = Dictionary(made, uniquingKeysWith: { first, _ in first })
        // Both initializers pass one client at least (the convenience one a loop each).
        lane = made[0].1
        address = lane.client.address
        self.local = local
        self.settings = settings
        self.logger = logger
        time = TimeSource()
        breakers = NIOLockedValueBox(Breakers(CircuitBreaker(threshold: settings.breakerThreshold, cooldown: settings.breakerCooldown)))
        // Some rule decided otherwise than the default, from the start (a reload that makes a
        // rule exact while every rule was fast needs a restart: see `rules.*.mode`).
        let mixed = !(routing?.modeExceptions().isEmpty ?? true)
        answersAtOnce = settings.fast && !mixed
        denials = settings.denialCacheSize > 0 && !answersAtOnce ? DenialCache(capacity: settings.denialCacheSize) : nil
        fast = FastSync(capacity: settings.maxPendingSync)
        syncLoop = group.next()
        // Syncs run when some rule is fast from the start (a reload that makes a rule fast on a
        // daemon with none needs a restart: see `rules.*.mode`).
        syncs = settings.fast || mixed
        if settings.syncInterval > .zero, syncs {
            let loop = syncLoop
            let task = loop.scheduleRepeatedAsyncTask(initialDelay: settings.syncInterval, delay: settings.syncInterval) { [weak self] task in
                guard let self else {
                    // A backend dropped without shutdown() stops its syncs here.
                    task.cancel()
                    return loop.makeSucceededVoidFuture()
                }
                return self.sync()
            }
            syncTask.withLockedValue { $0 = task }
        }
    }

    /// The backend a configuration's `redis:` section describes, its connections on `group`.
    public convenience init(_ redis: Configuration.RedisSettings, local: LimiterTable, group: any EventLoopGroup, logger: Logger,
                            routing: Routing? = nil) {
        func endpoint(_ address: Configuration.RedisSettings.Address) -> RedisEndpoint {
            switch address {
            case .tcp(let host, let port): return .tcp(host: host, port: port)
            case .unix(let path): return .unix(path: path)
            }
        }
        var client = RedisClient.Configuration(endpoint: endpoint(redis.address))
        client.username = redis.username
        client.password = redis.password
        client.connections = redis.connections
        client.maximumPending = redis.maxPending
        var settings = Settings()
        settings.timeout = .nanoseconds(redis.timeout)
        settings.expectedDaemons = redis.expectedDaemons
        settings.useDaemonClock = redis.daemonClock
        settings.batchWindow = .nanoseconds(redis.batchWindow)
        settings.writesInFlight = redis.writesInFlight
        settings.maxBatch = redis.maxBatch
        settings.denialCacheSize = redis.denialCacheSize
        settings.checksPerCall = redis.checksPerCall
        settings.fast = redis.mode == .fast
        settings.syncInterval = .nanoseconds(redis.syncInterval)
        settings.maxSyncEntries = redis.syncMaxEntries
        settings.degraded = switch redis.onFailure {
        case .local: .local
        case .failOpen: .failOpen
        case .failClosed: .failClosed
        }
        // The connections spread over the event loops, at least one on each.
        let loops = Array(group.makeIterator())
        var perLoop = client
        perLoop.connections = max(1, redis.connections / max(1, loops.count))
        perLoop.maximumPending = max(1, redis.maxPending / max(1, loops.count))
        let seeds = redis.cluster.map(endpoint)
        // A Cluster: a pool per node on each loop, each loop's client with its own slot map.
        let lanes = loops.map { loop -> (any EventLoop, any RedisScripting) in
            guard !seeds.isEmpty else { return (loop, RedisClient(perLoop, group: loop)) }
            return (loop, RedisClusterClient(RedisClusterClient.Configuration(seeds: seeds, node: perLoop), group: loop))
        }
        self.init(lanes: lanes, local: local, settings: settings, group: group, logger: logger, routing: routing)
    }

    /// Closes the connections; in fast mode, first sends what was admitted since the last sync
    /// (within the timeout), so a restart loses none of it.
    public func shutdown() {
        syncTask.withLockedValue { task in
            task?.cancel()
            task = nil
        }
        try? sync().wait()
        for lane in lanes.values { lane.client.shutdown() }
    }

    /// Checks decided in Redis, and on the degraded path, since start.
    public var decidedInRedis: UInt64 { counts.decided.load(ordering: .relaxed) }
    public var decidedDegraded: UInt64 { counts.degraded.load(ordering: .relaxed) }
    /// Checks of rules decided on this daemon's own table (their `backend: local`).
    public var decidedLocally: UInt64 { counts.local.load(ordering: .relaxed) }
    /// Checks denied from the over-limit cache, without asking Redis.
    public var deniedFromCache: UInt64 { counts.cached.load(ordering: .relaxed) }
    /// The circuit breaker's state: `closed` (asking Redis), `open`, `half_open` (probing).
    public var breakerState: String { breakers.withLockedValue { $0.state.rawValue } }

    /// Nodes whose breaker is open or probing, of the nodes asked so far (a Cluster's primaries;
    /// one for a single server).
    public var breakerNodes: (open: Int, of: Int) { breakers.withLockedValue { $0.notClosed } }
    /// Pipelined writes of script calls sent since start (each gathers many requests).
    public var writes: UInt64 { counts.writes.load(ordering: .relaxed) }
    /// Connections to Redis up now.
    public var connectionsUp: Int { lanes.values.reduce(0) { $0 + $1.client.connected } }

    /// A Cluster's redirections followed and slot map reads, over every lane; nil for one server.
    public var clusterCounts: (moved: UInt64, asked: UInt64, retried: UInt64, refreshes: UInt64)? {
        let clusters = lanes.values.compactMap { $0.client as? RedisClusterClient }
        guard !clusters.isEmpty else { return nil }
        let sums = clusters.map(\.statistics.counts).reduce([0, 0, 0, 0]) { zip($0, $1).map { $0 &+ $1 } }
        return (sums[0], sums[1], sums[2], sums[3])
    }


    // MARK: Fast mode

    /// Sends the hits admitted since the last sync and adopts the state Redis answers; the
    /// future completes when it is done (never fails: entries Redis did not take are kept for the
    /// next sync). One sync at a time: a call while one is out completes at once.
    @discardableResult
    public func sync(now: Int64? = nil) -> EventLoopFuture<Void> {
        let fast = self.fast
        guard fast.running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return syncLoop.makeSucceededVoidFuture()
        }
        let drained = fast.drain(maximum: settings.maxSyncEntries)
        guard !drained.isEmpty else {
            fast.running.store(false, ordering: .releasing)
            return syncLoop.makeSucceededVoidFuture()
        }
        let now = now ?? time.now()
        let prepared = drained.map { FastSync.entry($0, now: now) }
        // In a Cluster a call's entries share a slot; each call goes to its slot's node, whose
        // breaker may hold it back (its entries wait for the next sync), the probe once its
        // cooldown has passed. One server: one breaker for every call.
        let groups = client.groups(count: prepared.count, perCall: settings.checksPerCall) { prepared[$0].key.slot }
        let nodes = groups.map { client.breakerNode(ofSlot: prepared[$0[0]].key.slot) }
        let stamp = time.now()
        let shut = breakers.withLockedValue { breakers in Set(nodes).filter { !breakers.allows($0, now: stamp) } }
        var going: [[Int]] = [], goingNodes: [String] = []
        for (group, node) in zip(groups, nodes) {
            if shut.contains(node) {
                fast.restore(group.map { drained[$0] })
            } else {
                going.append(group)
                goingNodes.append(node)
            }
        }
        let sent = going, sentNodes = goingNodes
        guard !sent.isEmpty else {
            fast.running.store(false, ordering: .releasing)
            return syncLoop.makeSucceededVoidFuture()
        }
        let calls = sent.map { group in SyncScript.call(group.map { prepared[$0] }, slackMs: settings.slackMs) }
        counts.writes.add(1, ordering: .relaxed)
        counts.sizes.observe(Double(sent.reduce(0) { $0 + $1.count }))
        let started = NIODeadline.now()
        return client.evaluate(SyncScript.script, calls: calls, deadline: started + settings.timeout).map { replies -> Void in
            guard replies.count == sent.count else {
                fast.restore(sent.joined().map { drained[$0] })
                self.counts.recordError("reply")
                for node in Set(sentNodes) { self.recordOutcome(node: node, success: false) }
                return
            }
            self.counts.latency.observe(Double((NIODeadline.now() - started).nanoseconds) / 1e9)
            // Each call on its own: a node that failed keeps its entries for the next sync, the
            // others' states are adopted.
            var adopted: UInt64 = 0
            var failedNodes = Set<String>()
            for (call, (group, reply)) in zip(sent, replies).enumerated() {
                guard let states = reply.elements, states.count == group.count else {
                    fast.restore(group.map { drained[$0] })
                    self.counts.recordError("reply")
                    failedNodes.insert(sentNodes[call])
                    continue
                }
                for (index, stateReply) in zip(group, states) {
                    let entry = drained[index]
                    guard let state = FastSync.state(stateReply, spec: entry.spec) else { continue }
                    self.local.adopt(key: entry.key, limit: entry.limit, spec: entry.spec, state: state,
                                     consuming: fast.recordedSince(entry), now: now)
                    adopted += 1
                }
            }
            if failedNodes.count < Set(sentNodes).count { fast.syncs.add(1, ordering: .relaxed) }
            self.counts.decided.add(adopted, ordering: .relaxed)
            for node in Set(sentNodes) { self.recordOutcome(node: node, success: !failedNodes.contains(node)) }
        }.recover { error in
            fast.restore(sent.joined().map { drained[$0] })
            self.counts.recordError((error as? RedisClientError)?.code.rawValue ?? "protocol_error")
            for node in Set(sentNodes) { self.recordOutcome(node: node, success: false) }
        }.always { _ in
            fast.running.store(false, ordering: .releasing)
        }
    }

    /// A fast-mode check on this daemon's table, as the breaker says: the table (admitted hits
    /// recorded for the next sync), or the on_failure path.
    func fastCheck(_ item: UnsafePointer<BatchCheck>, fast: FastSync, exceptions: Set<UInt64>) -> Decision {
        if let routing, !routing.remote(item.pointee, exceptions: exceptions) {
            counts.local.add(1, ordering: .relaxed)
            return local.check(item)
        }
        let decision: Decision
        if degradedNow.load(ordering: .relaxed), isShut(item.pointee) {
            counts.degraded.add(1, ordering: .relaxed)
            switch settings.degraded {
            case .failOpen: return Self.openDecision(item.pointee)
            case .failClosed: return Self.closedDecision(item.pointee, settings: settings)
            case .local:
                var share = item.pointee
                if settings.expectedDaemons > 1 { share.multiplier /= Double(settings.expectedDaemons) }
                decision = withUnsafePointer(to: share) { local.check($0) }
            }
        } else {
            decision = local.check(item)
        }
        fast.record(item, admitted: decision.allowed)
        return decision
    }

    /// Whether `item`'s node has its breaker open or probing (a single server: whether its
    /// breaker is). Asked only while some breaker is, so a check pays for it only then.
    func isShut(_ item: BatchCheck) -> Bool {
        guard client.slotted, let limit = Self.limits(of: item).first else { return breakers.withLockedValue { $0.isShut("") } }
        let node = client.breakerNode(ofSlot: KeySlot.of(Self.keyName(item.key, limit)))
        return breakers.withLockedValue { $0.isShut(node) }
    }

    public func decide(_ batch: [BatchCheck], completion: @escaping @Sendable ([Decision]) -> Void) {
        var calls: [CheckScript.Check] = []
        var placed: [Int] = []
        // By call: the key its denial is kept under (nil: not kept), the lease it takes (0: none).
        var cacheKeys: [Fingerprint?] = []
        var leases: [UInt64] = []
        calls.reserveCapacity(batch.count)
        var decisions = [Decision](repeating: .blocked(), count: batch.count)
        // Decided here without Redis: from the over-limit cache, or a rule on the local table.
        var decidedNow: [Int] = []
        var routedLocal = 0
        let exceptions = routing?.exceptions() ?? []
        let modes = routing?.modeExceptions() ?? []
        var fastNow = 0
        for (index, item) in batch.enumerated() where !item.skip {
            // A rule decided on this daemon's own table (its `backend: local`): in full, now.
            if let routing, !routing.remote(item, exceptions: exceptions) {
                decisions[index] = withUnsafePointer(to: item) { local.check($0) }
                decidedNow.append(index)
                routedLocal += 1
                continue
            }
            // A rule in fast mode (`redis.mode`'s or its own): on this daemon's table, now,
            // its hits sent with the next sync.
            if syncs, settings.fast != Routing.flips(item, modes) {
                decisions[index] = withUnsafePointer(to: item) { fastCheck($0, fast: fast, exceptions: exceptions) }
                decidedNow.append(index)
                fastNow += 1
                continue
            }
            let limits = Self.limits(of: item)
            let leased = limits.contains { $0.spec.algorithm == .concurrency }
            let lease: UInt64 = leased && item.hits > 0 ? UInt64.random(in: 1...UInt64.max) : 0
            let call = Self.call(for: item, limits: limits, lease: lease, settings: settings)
            // A lease released gives room back: a denial of a concurrency limit is not kept.
            if let denials, !leased {
                let key = DenialCache.key(of: item, limits: limits)
                // A key checked twice in one batch is sent to Redis both times: the first
                // check's answer is not known yet.
                if let denied = denials.denial(of: item, key: key) {
                    decisions[index] = denied
                    decidedNow.append(index)
                    continue
                }
                cacheKeys.append(key)
            } else {
                cacheKeys.append(nil)
            }
            leases.append(lease)
            calls.append(call)
            placed.append(index)
        }
        if routedLocal > 0 { counts.local.add(UInt64(routedLocal), ordering: .relaxed) }
        if decidedNow.count > routedLocal + fastNow { counts.cached.add(UInt64(decidedNow.count - routedLocal - fastNow), ordering: .relaxed) }
        let answered = Set(placed + decidedNow)
        guard !calls.isEmpty else {
            decideDegraded(batch, indices: batch.indices.filter { !batch[$0].skip && !answered.contains($0) }, into: &decisions)
            completion(decisions)
            return
        }
        let lane = MultiThreadedEventLoopGroup.currentEventLoop.flatMap { lanes[ObjectIdentifier($0)] } ?? lane
        // Each call's node, and whether its breaker lets it through: a node whose breaker is open
        // sends nothing, its checks are decided now on the degraded path (the other nodes'
        // checks still go to Redis).
        var nodes = calls.map { lane.client.breakerNode(ofSlot: $0.keys.first?.slot ?? 0) }
        let now = time.now()
        let shut = breakers.withLockedValue { breakers in Set(nodes).filter { !breakers.allows($0, now: now) } }
        if !shut.isEmpty {
            let kept = calls.indices.filter { !shut.contains(nodes[$0]) }
            decideDegraded(batch, indices: calls.indices.filter { shut.contains(nodes[$0]) }.map { placed[$0] }, into: &decisions)
            calls = kept.map { calls[$0] }
            placed = kept.map { placed[$0] }
            cacheKeys = kept.map { cacheKeys[$0] }
            leases = kept.map { leases[$0] }
            nodes = kept.map { nodes[$0] }
            guard !calls.isEmpty else {
                completion(decisions)
                return
            }
        }
        let inRedis = answered
        let blank = decisions, sent = placed, keys = cacheKeys, leaseIDs = leases, callNodes = nodes
        lane.batcher.submit(calls) { result in
            var decisions = blank
            var failed = batch.indices.filter { !batch[$0].skip && !inRedis.contains($0) }
            var failedNodes = Set<String>()
            switch result {
            case .success(let replies):
                var decided: UInt64 = 0, errors = 0
                for (offset, (reply, index)) in zip(replies, sent).enumerated() {
                    if var decision = Self.decision(reply, item: batch[index]) {
                        if decision.allowed, offset < leaseIDs.count { decision.leaseID = leaseIDs[offset] }
                        decisions[index] = decision
                        decided += 1
                        if !decision.allowed, let denials = self.denials, offset < keys.count, let key = keys[offset] {
                            denials.keep(decision, of: batch[index], key: key)
                        }
                    } else {
                        errors += 1
                        failed.append(index)
                        failedNodes.insert(callNodes[offset])
                    }
                }
                if errors > 0 {
                    for _ in 0..<errors { self.counts.recordError("reply") }
                }
                self.counts.decided.add(decided, ordering: .relaxed)
            case .failure:
                failedNodes = Set(callNodes)
                failed += sent
            }
            for node in Set(callNodes) { self.recordOutcome(node: node, success: !failedNodes.contains(node)) }
            self.decideDegraded(batch, indices: failed, into: &decisions)
            completion(decisions)
        }
    }

    /// Whether some breaker is open or probing.
    var breakersNotClosed: Bool { breakers.withLockedValue { $0.state != .closed } }

    /// Feeds `node`'s breaker ("" for a single server); logs each change of state once.
    func recordOutcome(node: String, success: Bool) {
        guard let changed = breakers.withLockedValue({ $0.record(node, success: success, now: time.now()) }) else { return }
        var metadata: Logger.Metadata = ["redis.breaker": "\(changed.rawValue)"]
        if !node.isEmpty { metadata["redis.node"] = "\(node)" }
        // Fast mode's checks look at their node's breaker while any is not closed.
        degradedNow.store(breakersNotClosed, ordering: .relaxed)
        switch changed {
        case .open:
            counts.breakerOpened.add(1, ordering: .relaxed)
            metadata["redis.on_failure"] = "\(settings.degraded.rawValue)"
            logger.warning(node.isEmpty ? "Redis is not answering: checks take the degraded path"
                : "a Redis Cluster node is not answering: checks of its slots take the degraded path", metadata: metadata)
        case .closed:
            logger.notice(node.isEmpty ? "Redis answers again: checks are decided in Redis"
                : "a Redis Cluster node answers again: checks of its slots are decided in Redis", metadata: metadata)
        case .halfOpen: break
        }
    }

    /// The script's part for one check; a concurrency limit takes lease `lease` (0: none).
    static func call(for item: BatchCheck, limits: [BoundLimit], lease: UInt64, settings: Settings) -> CheckScript.Check {
        let keys = limits.map { RESPArgument.bytes(keyBytes(item.key, $0)) }
        var arguments: [RESPArgument] = []
        arguments.reserveCapacity(4 * limits.count)
        for limit in limits {
            let spec = limit.spec.scaled(by: item.multiplier)
            arguments += [.integer(Int64(spec.algorithm.rawValue)), .integer(Int64(clamping: spec.limit)), .integer(spec.period / 1_000),
                          spec.algorithm == .concurrency ? .string(String(lease)) : .integer(Int64(clamping: spec.burst))]
        }
        return CheckScript.Check(keys: keys, nowMicros: settings.useDaemonClock ? item.now / 1_000 : 0, hits: Int64(clamping: item.hits),
                                 limits: arguments)
    }

    /// The decision a script reply holds; nil for an error reply or one of the wrong shape.
    package static func decision(_ reply: RESPValue, item: BatchCheck) -> Decision? {
        // A reply of another shape, or with a negative count or time, is not the script's: the
        // check takes the degraded path.
        guard case .array(let elements?) = reply, elements.count == 8 else { return nil }
        // The eight integers, read in place (no array of them made per reply).
        func field(_ index: Int) -> Int64? {
            guard case .integer(let value) = elements[index], index < 2 || value >= 0 else { return nil }
            return value
        }
        guard let allowed = field(0), let reasonCode = field(1), let index = field(2), let limit = field(3), let remaining = field(4),
              let reset = field(5), let retry = field(6), field(7) != nil,
              let reason = DecisionReason(rawValue: UInt8(clamping: reasonCode)) else { return nil }
        let algorithm: Algorithm, several: Bool
        switch item.limits {
        case .single(let only):
            guard index == 0 else { return nil }
            (algorithm, several) = (only.spec.algorithm, false)
        case .rule(let limits):
            guard index < limits.count else { return nil }
            (algorithm, several) = (limits[Int(index)].spec.algorithm, limits.count > 1)
        }
        func nanoseconds(_ micros: Int64) -> Int64 {
            let (value, overflow) = micros.multipliedReportingOverflow(by: 1_000)
            return overflow ? .max : value
        }
        var decision = Decision(allowed: allowed == 1, limit: UInt64(clamping: limit), remaining: UInt64(clamping: remaining),
                                resetAfter: nanoseconds(reset), retryAfter: nanoseconds(retry), reason: reason, algorithm: algorithm)
        if several { decision.limitIndex = UInt32(index) }
        return decision
    }

    /// Decides the checks at `indices` as the degraded policy says.
    func decideDegraded(_ batch: [BatchCheck], indices: [Int], into decisions: inout [Decision]) {
        guard !indices.isEmpty else { return }
        counts.degraded.add(UInt64(indices.count), ordering: .relaxed)
        for index in indices {
            var item = batch[index]
            switch settings.degraded {
            case .failOpen:
                decisions[index] = Self.openDecision(item)
            case .failClosed:
                decisions[index] = Self.closedDecision(item, settings: settings)
            case .local:
                // Items with a concurrency limit are always decided here, in full.
                if !Self.holdsLease(item), settings.expectedDaemons > 1 {
                    item.multiplier /= Double(settings.expectedDaemons)
                }
                decisions[index] = withUnsafePointer(to: item) { local.check($0) }
            }
        }
    }

    static func algorithm(of item: BatchCheck) -> Algorithm { limits(of: item).first?.spec.algorithm ?? .gcra }

    /// `fail_open`'s answer.
    static func openDecision(_ item: BatchCheck) -> Decision {
        Decision(allowed: true, limit: 0, remaining: 0, resetAfter: 0, retryAfter: 0, reason: .withinLimit, algorithm: algorithm(of: item))
    }

    /// `fail_closed`'s answer: retry after the timeout.
    static func closedDecision(_ item: BatchCheck, settings: Settings) -> Decision {
        Decision(allowed: false, limit: 0, remaining: 0, resetAfter: 0, retryAfter: Int64(settings.timeout.nanoseconds), reason: .overLimit,
                 algorithm: algorithm(of: item))
    }

    /// The table state fast mode's sync reply describes for `spec` (``FastSync/state(_:spec:)``).
    package static func fastState(_ reply: RESPValue, spec: LimitSpec) -> LimiterState? { FastSync.state(reply, spec: spec) }

    /// Every limit a check is decided against.
    static func limits(of item: BatchCheck) -> [BoundLimit] {
        switch item.limits {
        case .single(let limit): return [limit]
        case .rule(let rule): return rule
        }
    }

    /// Whether a check has a concurrency limit (decided on the local table, in full).
    static func holdsLease(_ item: BatchCheck) -> Bool { limits(of: item).contains { $0.spec.algorithm == .concurrency } }

    /// The Redis key of `limit` for `key`: `sluice:{<key>}:<limit>`, the hash tag putting every
    /// limit of a key in one Cluster slot.
    static func keyName(_ key: Fingerprint, _ limit: BoundLimit) -> String {
        String(decoding: keyBytes(key, limit), as: UTF8.self)
    }

    /// ``keyName(_:_:)``'s bytes, written in place: one allocation a key, where the strings'
    /// formatting and concatenation took eight.
    static func keyBytes(_ key: Fingerprint, _ limit: BoundLimit) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: 58) { buffer, count in
            func put(_ text: StaticString, at offset: Int) {
                text.withUTF8Buffer { bytes in for (index, byte) in bytes.enumerated() { buffer[offset + index] = byte } }
            }
            func put(_ value: UInt64, at offset: Int) {
                for index in 0..<16 {
                    let nibble = Int(truncatingIfNeeded: value >> UInt64(60 - 4 * index)) & 0xF
                    buffer[offset + index] = nibble < 10 ? UInt8(ascii: "0") + UInt8(nibble) : UInt8(ascii: "a") + UInt8(nibble - 10)
                }
            }
            put("sluice:{", at: 0)
            put(key.high, at: 8)
            put(key.low, at: 24)
            put("}:", at: 40)
            put(limit.identity, at: 42)
            count = 58
        }
    }

    // The synchronous calls: the local table (see the type's comment).

    public func check(_ item: UnsafePointer<BatchCheck>) -> Decision {
        guard answersAtOnce else { return local.check(item) }
        return fastCheck(item, fast: fast, exceptions: routing?.exceptions() ?? [])
    }

    public func check(batch: UnsafeBufferPointer<BatchCheck>, into decisions: UnsafeMutableBufferPointer<Decision>) {
        guard answersAtOnce else {
            local.check(batch: batch, into: decisions)
            return
        }
        guard let base = batch.baseAddress else { return }
        let exceptions = routing?.exceptions() ?? []
        if degradedNow.load(ordering: .relaxed) {
            for index in batch.indices where !batch[index].skip { decisions[index] = fastCheck(base + index, fast: fast, exceptions: exceptions) }
            return
        }
        local.check(batch: batch, into: decisions)
        for index in batch.indices where !batch[index].skip {
            // A rule decided on this daemon's own table (its `backend: local`) is not shared.
            if let routing, !routing.remote(batch[index], exceptions: exceptions) { continue }
            fast.record(base + index, admitted: decisions[index].allowed)
        }
    }

    public func evaluate(_ item: BatchCheck, factor: Double) -> Decision { local.evaluate(item, factor: factor) }

    public func release(key: Fingerprint, limit: BoundLimit, leaseID: UInt64, now: Int64) -> Bool {
        local.release(key: key, limit: limit, leaseID: leaseID, now: now)
    }

    public func statistics() -> TableStatistics { local.statistics() }

    /// Returns a lease to Redis; one Redis does not hold (taken on the degraded path while it
    /// was away), or a release Redis cannot answer, goes to the local table.
    public func release(key: Fingerprint, limit: BoundLimit, leaseID: UInt64, now: Int64, completion: @escaping @Sendable (Bool) -> Void) {
        let name = Self.keyName(key, limit)
        let call = RedisClient.ScriptCall(keys: [.string(name)],
                                          arguments: [.string(String(leaseID)), .integer(settings.useDaemonClock ? now / 1_000 : 0)])
        client.evaluate(CheckScript.releaseScript, calls: [call], deadline: .now() + settings.timeout).whenComplete { result in
            if case .success(let replies) = result, replies.first?.integer == 1 {
                completion(true)
            } else {
                completion(self.local.release(key: key, limit: limit, leaseID: leaseID, now: now))
            }
        }
    }
}
