import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// A small pool of pipelined connections to one Redis server: commands go to the connected
/// connections in turn, a connection that closes is replaced after a backoff (doubling from
/// `reconnect.initial` to `reconnect.maximum`), and what waits on Redis is bounded: past
/// `maximumPending` commands in flight, or with no connection up, a send fails at once
/// (``RedisClientError/Code/unavailable``), so the caller takes its degraded path instead of
/// queueing without limit. It never blocks a thread.
public final class RedisClient: RedisScripting {
    public struct Configuration: Sendable {
        public var endpoint: RedisEndpoint
        public var username: String?
        public var password: String?
        /// Connections kept open.
        public var connections = 2
        public var connectTimeout: TimeAmount = .seconds(1)
        /// Commands in flight at most, over all connections.
        public var maximumPending = 10_000
        /// The first and the longest wait before reconnecting.
        public var reconnect: (initial: TimeAmount, maximum: TimeAmount) = (.milliseconds(50), .seconds(2))
        public var limits = RESPReader.Limits()

        public init(endpoint: RedisEndpoint) { self.endpoint = endpoint }
    }

    enum Slot {
        case connecting
        case up(RedisConnection)
        /// Down since a failure; retried at `at`, after waiting `backoff`.
        case down(backoff: TimeAmount)
    }

    struct State {
        var slots: [Slot]
        var next = 0
        var closed = false
    }

    public let configuration: Configuration
    let group: any EventLoopGroup
    let state: NIOLockedValueBox<State>
    let pending = Atomic<Int>(0)
    /// Scripts' SHA1s as the server named them (`SCRIPT LOAD`), by source.
    let scripts = NIOLockedValueBox<[String: String]>([:])

    public init(_ configuration: Configuration, group: any EventLoopGroup) {
        self.configuration = configuration
        self.group = group
        state = NIOLockedValueBox(State(slots: Array(repeating: .connecting, count: max(1, configuration.connections))))
        for index in 0..<max(1, configuration.connections) { connect(index) }
    }

    /// How many connections are up now.
    public var connected: Int {
        state.withLockedValue { state in state.slots.filter { if case .up = $0 { true } else { false } }.count }
    }

    /// Whether no connection is up yet and the first attempts are still under way (none failed):
    /// a send fails now, but may not a moment later.
    public var connecting: Bool {
        state.withLockedValue { state in
            !state.closed && state.slots.contains { if case .connecting = $0 { true } else { false } }
                && !state.slots.contains { if case .up = $0 { true } else { false } }
        }
    }

    /// One server: a script call's keys may lie in any slot.
    public var slotted: Bool { false }

    public var address: String { configuration.endpoint.url }

    func connect(_ index: Int) {
        let eventLoop = group.next()
        RedisConnection.connect(to: configuration.endpoint, on: eventLoop, username: configuration.username, password: configuration.password,
                                connectTimeout: configuration.connectTimeout, limits: configuration.limits)
            .whenComplete { result in
                switch result {
                case .success(let connection):
                    let keep = self.state.withLockedValue { state -> Bool in
                        guard !state.closed else { return false }
                        state.slots[index] = .up(connection)
                        return true
                    }
                    guard keep else {
                        _ = connection.close()
                        return
                    }
                    connection.channel.closeFuture.whenComplete { _ in self.lost(index, connection: connection) }
                case .failure:
                    self.retry(index, eventLoop: eventLoop)
                }
            }
    }

    /// The connection of slot `index` closed: reconnect after the first backoff.
    func lost(_ index: Int, connection: RedisConnection) {
        let retry = state.withLockedValue { state -> Bool in
            guard !state.closed, case .up(let current) = state.slots[index], current === connection else { return false }
            state.slots[index] = .down(backoff: .zero)
            return true
        }
        if retry { self.retry(index, eventLoop: connection.channel.eventLoop) }
    }

    /// Slot `index` failed to connect: try again after a backoff twice the last one.
    func retry(_ index: Int, eventLoop: any EventLoop) {
        let wait = state.withLockedValue { state -> TimeAmount? in
            guard !state.closed else { return nil }
            var last = TimeAmount.zero
            if case .down(let backoff) = state.slots[index] { last = backoff }
            let wait = last == .zero ? configuration.reconnect.initial : min(configuration.reconnect.maximum, last * 2)
            state.slots[index] = .down(backoff: wait)
            return wait
        }
        guard let wait else { return }
        eventLoop.scheduleTask(in: wait) {
            let go = self.state.withLockedValue { state -> Bool in
                guard !state.closed, case .down = state.slots[index] else { return false }
                return true
            }
            if go { self.connect(index) }
        }
    }

    /// Sends `commands` together on one connection; one reply per command, in order.
    public func send(_ commands: [RESPCommand], deadline: NIODeadline) -> EventLoopFuture<[RESPValue]> {
        let eventLoop = group.any()
        let connection = state.withLockedValue { state -> RedisConnection? in
            guard !state.closed else { return nil }
            for step in 0..<state.slots.count {
                let index = (state.next + step) % state.slots.count
                if case .up(let connection) = state.slots[index], connection.isActive {
                    state.next = (index + 1) % state.slots.count
                    return connection
                }
            }
            return nil
        }
        guard let connection else {
            return eventLoop.makeFailedFuture(RedisClientError(.unavailable, "no connection to Redis at \(configuration.endpoint) is up"))
        }
        let count = commands.count
        guard pending.add(count, ordering: .relaxed).newValue <= configuration.maximumPending else {
            pending.subtract(count, ordering: .relaxed)
            return eventLoop.makeFailedFuture(RedisClientError(.unavailable,
                "more than \(configuration.maximumPending) commands wait on Redis at \(configuration.endpoint)"))
        }
        let sent = connection.send(commands, deadline: deadline)
        sent.whenComplete { _ in self.pending.subtract(count, ordering: .relaxed) }
        return sent
    }

    /// One script call: its keys (each in the same slot, for a Cluster) and its arguments.
    public struct ScriptCall: Sendable {
        public var keys: [RESPArgument]
        public var arguments: [RESPArgument]

        public init(keys: [RESPArgument], arguments: [RESPArgument]) {
            self.keys = keys
            self.arguments = arguments
        }
    }

    /// Runs `script` once per call, together: `EVALSHA` of the SHA1 the server gave the script,
    /// loading it first when it has none, and again when the server answers `NOSCRIPT` (its
    /// script cache was flushed, or it restarted), then retrying once.
    public func evaluate(_ script: String, calls: [ScriptCall], deadline: NIODeadline) -> EventLoopFuture<[RESPValue]> {
        evaluate(RedisScript(script), calls: calls, deadline: deadline)
    }

    /// ``evaluate(_:calls:deadline:)`` for a script made once: its SHA1 is kept in it, where a
    /// source string would be hashed whole (kilobytes, with Unicode normalization) on every call
    /// to find it (perf: 12 % of a daemon's time at 50 x 1).
    public func evaluate(_ script: RedisScript, calls: [ScriptCall], deadline: NIODeadline) -> EventLoopFuture<[RESPValue]> {
        let known = script.sha.withLockedValue { $0 } ?? scripts.withLockedValue { $0[script.source] }
        let sha = known.map { group.any().makeSucceededFuture($0) } ?? load(script, deadline: deadline)
        return sha.flatMap { sha in
            self.send(Self.commands(sha, calls), deadline: deadline).flatMap { replies in
                guard replies.contains(where: { $0.errorMessage?.hasPrefix("NOSCRIPT") == true }) else {
                    return self.group.any().makeSucceededFuture(replies)
                }
                return self.load(script, deadline: deadline).flatMap { sha in self.send(Self.commands(sha, calls), deadline: deadline) }
            }
        }
    }

    static func commands(_ sha: String, _ calls: [ScriptCall]) -> [RESPCommand] {
        calls.map { RESPCommand(["EVALSHA", .string(sha), .integer(Int64($0.keys.count))] + $0.keys + $0.arguments) }
    }

    /// Loads `script`; its SHA1, as the server names it.
    func load(_ script: RedisScript, deadline: NIODeadline) -> EventLoopFuture<String> {
        send([RESPCommand("SCRIPT", "LOAD", .string(script.source))], deadline: deadline).flatMapThrowing { replies in
            guard let sha = replies[0].string, sha.utf8.count == 40 else {
                throw RedisClientError(.scriptError, "Redis did not load the script: \(replies[0])")
            }
            script.sha.withLockedValue { $0 = sha }
            self.scripts.withLockedValue { $0[script.source] = sha }
            return sha
        }
    }

    /// Closes every connection; sends after this fail.
    public func shutdown() {
        let connections = state.withLockedValue { state -> [RedisConnection] in
            state.closed = true
            return state.slots.compactMap { if case .up(let connection) = $0 { connection } else { nil } }
        }
        for connection in connections { _ = connection.close() }
    }
}

/// A Lua script to run with ``RedisClient/evaluate(_:calls:deadline:)``, made once: it keeps its
/// SHA1 once a server has named it (the SHA1 of its text, the same on every server; a server that
/// has lost the script answers `NOSCRIPT` and it is loaded again).
public final class RedisScript: Sendable {
    public let source: String
    let sha = NIOLockedValueBox<String?>(nil)

    public init(_ source: String) { self.source = source }
}
