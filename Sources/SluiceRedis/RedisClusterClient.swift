import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// A Redis Cluster's client: a ``RedisClient`` pool per primary, and a map of the 16,384 slots
/// to them, read with `CLUSTER SLOTS` from any node. Each script call goes to the node of its
/// keys' slot (a call's keys share one slot: Sluice's keys of a rule share a hash tag); the calls
/// of one batch for one node go together, pipelined.
///
/// It follows the Cluster's redirections (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#redirection-and-resharding):
/// `MOVED slot host:port` (the slot lives elsewhere now: the map learns it, is read again, and the
/// call goes there), `ASK slot host:port` (the slot is moving and these keys have gone: the call
/// goes there once, after `ASKING`), `TRYAGAIN` (a call whose keys are split by a move under way:
/// retried after a moment, backing off, until its deadline). A call follows `maximumRedirects`
/// redirections at most, within its deadline; past either it gets an error reply, and its check
/// takes the degraded path.
///
/// Before the map is known (at start), calls go to a seed, which redirects them. A node that
/// fails has the map read again: a replica promoted in its place is found there.
public final class RedisClusterClient: RedisScripting {
    public struct Configuration: Sendable {
        /// Nodes to read the slot map from first; any of the Cluster's nodes will do.
        public var seeds: [RedisEndpoint]
        /// Each node's pool (its endpoint aside): credentials, connections, bounds, backoff.
        public var node: RedisClient.Configuration
        /// Redirections one call follows at most.
        public var maximumRedirects = 5
        /// The slot map is read again at most this often (a `CLUSTER SLOTS` costs a node little).
        public var refreshInterval: TimeAmount = .milliseconds(10)
        /// How long a call waits for `TRYAGAIN`'s moment, or for a node's first connection.
        public var retryDelay: TimeAmount = .milliseconds(1)

        public init(seeds: [RedisEndpoint], node: RedisClient.Configuration) {
            self.seeds = seeds
            self.node = node
        }
    }

    /// What the client counts: redirections followed by kind, and slot map reads.
    public final class Statistics: Sendable {
        public let moved = Atomic<UInt64>(0)
        public let asked = Atomic<UInt64>(0)
        public let retried = Atomic<UInt64>(0)
        public let refreshes = Atomic<UInt64>(0)

        init() {}

        /// The counts now: redirections (MOVED, ASK, TRYAGAIN) and slot map reads.
        public var counts: [UInt64] {
            [moved.load(ordering: .relaxed), asked.load(ordering: .relaxed), retried.load(ordering: .relaxed), refreshes.load(ordering: .relaxed)]
        }
    }

    struct State {
        /// The node of each slot: an index in `nodes`, -1 while unknown.
        var slots = [Int16](repeating: -1, count: KeySlot.count)
        var nodes: [(endpoint: RedisEndpoint, client: RedisClient)] = []
        var refreshing = false
        var lastRefresh: NIODeadline?
        var closed = false

        /// The index of the node at `endpoint`, its pool made now if it is new.
        mutating func node(_ endpoint: RedisEndpoint, make: (RedisEndpoint) -> RedisClient) -> Int {
            if let index = nodes.firstIndex(where: { $0.endpoint == endpoint }) { return index }
            nodes.append((endpoint, make(endpoint)))
            return nodes.count - 1
        }
    }

    public let configuration: Configuration
    public let statistics = Statistics()
    let group: any EventLoopGroup
    let state: NIOLockedValueBox<State>

    /// A client for the Cluster `configuration.seeds` belong to; it starts reading the slot map.
    public init(_ configuration: Configuration, group: any EventLoopGroup) {
        self.configuration = configuration
        self.group = group
        state = NIOLockedValueBox(State())
        let made = configuration.seeds.map { ($0, makeClient($0)) }
        state.withLockedValue { $0.nodes = made }
        refresh(force: true)
    }

    func makeClient(_ endpoint: RedisEndpoint) -> RedisClient {
        var node = configuration.node
        node.endpoint = endpoint
        return RedisClient(node, group: group)
    }

    public var slotted: Bool { true }

    public var connected: Int { state.withLockedValue { $0.nodes }.reduce(0) { $0 + $1.client.connected } }

    public var address: String { "cluster " + configuration.seeds.map(\.url).joined(separator: ",") }

    /// The primaries the map names now (for tests and `/readyz`), and how many slots each holds.
    public var slotOwners: [RedisEndpoint: Int] {
        state.withLockedValue { state in
            // Counted per node index, then named: 16,384 dictionary updates keyed by an endpoint
            // cost milliseconds in a debug build, and tests poll this.
            var counts = [Int](repeating: 0, count: state.nodes.count)
            for node in state.slots where node >= 0 { counts[Int(node)] += 1 }
            var owners: [RedisEndpoint: Int] = [:]
            for (index, count) in counts.enumerated() where count > 0 { owners[state.nodes[index].endpoint, default: 0] += count }
            return owners
        }
    }

    /// The node the map names for `slot` now; nil while unknown.
    public func owner(of slot: Int) -> RedisEndpoint? {
        state.withLockedValue { state in
            let node = Int(state.slots[slot])
            return node >= 0 ? state.nodes[node].endpoint : nil
        }
    }

    /// The slot's primary, by its URL ("" while the map does not name one).
    public func breakerNode(ofSlot slot: Int) -> String { owner(of: slot)?.url ?? "" }

    public func shutdown() {
        let nodes = state.withLockedValue { state in
            state.closed = true
            return state.nodes
        }
        for node in nodes { node.client.shutdown() }
    }

    // MARK: Calls

    /// A call's reply, or why it has none, and the node that was asked.
    typealias Outcome = (index: Int, result: Result<RESPValue, RedisClientError>, node: RedisEndpoint)

    public func evaluate(_ script: RedisScript, calls: [RedisClient.ScriptCall], deadline: NIODeadline) -> EventLoopFuture<[RESPValue]> {
        let eventLoop = group.any()
        guard !calls.isEmpty else { return eventLoop.makeSucceededFuture([]) }
        let slots = calls.map { $0.keys.first?.slot ?? 0 }
        return round(script, calls, slots: slots, indices: Array(calls.indices), asking: [:], redirects: 0, waits: 0, deadline: deadline,
                     eventLoop: eventLoop).flatMapThrowing { outcomes in
            var replies = [RESPValue](repeating: .error("ERR sluice: no reply"), count: calls.count)
            var firstError: RedisClientError?
            var answered = 0
            for outcome in outcomes {
                switch outcome.result {
                case .success(let reply):
                    replies[outcome.index] = reply
                    answered += 1
                case .failure(let error):
                    firstError = firstError ?? error
                    replies[outcome.index] = .error("ERR sluice: \(error.code.rawValue): \(error.description)")
                }
            }
            if answered == 0, let firstError { throw firstError }
            return replies
        }
    }

    /// Sends the calls at `indices` to their nodes (or, for those in `asking`, to the node an
    /// `ASK` named); follows what redirects them; the outcome of each.
    func round(_ script: RedisScript, _ calls: [RedisClient.ScriptCall], slots: [Int], indices: [Int], asking: [Int: RedisEndpoint],
               redirects: Int, waits: Int, deadline: NIODeadline, eventLoop: any EventLoop) -> EventLoopFuture<[Outcome]> {
        // Which node each call goes to, under one lock.
        var byNode: [Int: [Int]] = [:], byAsk: [Int: [Int]] = [:]
        let nodes = state.withLockedValue { state -> [(endpoint: RedisEndpoint, client: RedisClient)] in
            let fallback = state.nodes.firstIndex { $0.client.connected > 0 } ?? 0
            for index in indices {
                if let target = asking[index] {
                    byAsk[state.node(target, make: makeClient), default: []].append(index)
                } else {
                    let node = Int(state.slots[slots[index]])
                    byNode[node >= 0 ? node : fallback, default: []].append(index)
                }
            }
            return state.nodes
        }
        guard !nodes.isEmpty else {
            return eventLoop.makeFailedFuture(RedisClientError(.unavailable, "no node of the Redis Cluster is known"))
        }
        var sent: [EventLoopFuture<[Outcome]>] = []
        for (node, members) in byNode {
            let (endpoint, client) = nodes[node]
            sent.append(client.evaluate(script, calls: members.map { calls[$0] }, deadline: deadline)
                .map { replies in
                    replies.count == members.count
                        ? zip(members, replies).map { ($0, .success($1), endpoint) }
                        : members.map { ($0, .failure(RedisClientError(.protocolError, "\(replies.count) replies to \(members.count) calls")), endpoint) }
                }
                .recover { error in members.map { ($0, .failure(Self.clientError(error)), endpoint) } })
        }
        for (node, members) in byAsk {
            // Once, on the node the slot is moving to: `ASKING` then the script by its source (that
            // node may not have loaded it, and a NOSCRIPT there would cost another round).
            let (endpoint, client) = nodes[node]
            var commands: [RESPCommand] = []
            for index in members {
                let call = calls[index]
                commands.append(RESPCommand("ASKING"))
                commands.append(RESPCommand(["EVAL", .string(script.source), .integer(Int64(call.keys.count))] + call.keys + call.arguments))
            }
            sent.append(client.send(commands, deadline: deadline)
                .map { replies in
                    replies.count == 2 * members.count
                        ? members.enumerated().map { ($1, .success(replies[2 * $0 + 1]), endpoint) }
                        : members.map { ($0, .failure(RedisClientError(.protocolError, "\(replies.count) replies to \(2 * members.count) commands")), endpoint) }
                }
                .recover { error in members.map { ($0, .failure(Self.clientError(error)), endpoint) } })
        }
        return EventLoopFuture.whenAllSucceed(sent, on: eventLoop).flatMap { results in
            self.follow(results.flatMap { $0 }, script, calls, slots: slots, redirects: redirects, waits: waits, deadline: deadline,
                        eventLoop: eventLoop)
        }
    }

    /// Keeps the outcomes that are final; sends again the calls a node redirected, or that found
    /// their node still connecting.
    func follow(_ outcomes: [Outcome], _ script: RedisScript, _ calls: [RedisClient.ScriptCall], slots: [Int], redirects: Int, waits: Int,
                deadline: NIODeadline, eventLoop: any EventLoop) -> EventLoopFuture<[Outcome]> {
        var done: [Outcome] = [], again: [Int] = [], asking: [Int: RedisEndpoint] = [:]
        var wait = false, redirected = false, nodeFailed = false
        let inTime = NIODeadline.now() < deadline
        for outcome in outcomes {
            switch outcome.result {
            case .success(let reply):
                guard inTime, let message = reply.errorMessage, let redirect = Redirect(message, from: outcome.node),
                      redirect == .tryAgain || redirects < configuration.maximumRedirects else {
                    done.append(outcome)
                    continue
                }
                again.append(outcome.index)
                switch redirect {
                case .moved(let slot, let endpoint):
                    redirected = true
                    statistics.moved.add(1, ordering: .relaxed)
                    learn(slot: slot, endpoint: endpoint)
                case .ask(let endpoint):
                    redirected = true
                    statistics.asked.add(1, ordering: .relaxed)
                    asking[outcome.index] = endpoint
                case .tryAgain:
                    // Not a redirection: the keys are being moved; retried until the deadline.
                    statistics.retried.add(1, ordering: .relaxed)
                    wait = true
                }
            case .failure(let error):
                // A node whose first connection is still under way takes the call a moment later.
                if inTime, error.code == .unavailable, node(outcome.node)?.connecting == true {
                    again.append(outcome.index)
                    wait = true
                } else if inTime, redirects < configuration.maximumRedirects,
                          [.unavailable, .connectFailed, .connectionClosed].contains(error.code) {
                    // A node gone (failed, or failed over): the map is read again and the call
                    // goes where it then says, a moment later; a redirection, so bounded.
                    nodeFailed = true
                    redirected = true
                    again.append(outcome.index)
                    wait = true
                } else {
                    if error.code != .timeout { nodeFailed = true }
                    done.append(outcome)
                }
            }
        }
        if redirected || nodeFailed { refresh() }
        guard !again.isEmpty else { return eventLoop.makeSucceededFuture(done) }
        let final = done, retried = again, asked = asking, count = redirects + (redirected ? 1 : 0), waited = waits + (wait ? 1 : 0)
        let next: @Sendable () -> EventLoopFuture<[Outcome]> = { [self] in
            round(script, calls, slots: slots, indices: retried, asking: asked, redirects: count, waits: waited,
                  deadline: deadline, eventLoop: eventLoop).map { final + $0 }
        }
        guard wait else { return next() }
        // 1, 2, 4, 8, then 16 times `retryDelay`, never past the deadline.
        let delay = min(configuration.retryDelay * Int64(1 << min(waits, 4)), deadline - NIODeadline.now())
        return eventLoop.scheduleTask(in: delay) {}.futureResult.flatMap { next() }
    }

    static func clientError(_ error: any Error) -> RedisClientError {
        error as? RedisClientError ?? RedisClientError(.protocolError, "\(error)")
    }

    func node(_ endpoint: RedisEndpoint) -> RedisClient? {
        state.withLockedValue { state in state.nodes.first { $0.endpoint == endpoint }?.client }
    }

    /// A `MOVED` said where `slot` lives now.
    func learn(slot: Int, endpoint: RedisEndpoint) {
        state.withLockedValue { state in
            guard !state.closed else { return }
            state.slots[slot] = Int16(state.node(endpoint, make: makeClient))
        }
    }

    /// What a Cluster's error reply asks of the caller; nil for any other error.
    enum Redirect: Equatable {
        case moved(slot: Int, RedisEndpoint)
        case ask(RedisEndpoint)
        case tryAgain

        /// Reads `MOVED 3999 127.0.0.1:6381`, `ASK 3999 127.0.0.1:6381` (an empty host: the node
        /// that answered, `from`) or `TRYAGAIN …`.
        init?(_ message: String, from: RedisEndpoint) {
            if message.hasPrefix("TRYAGAIN") {
                self = .tryAgain
                return
            }
            let words = message.split(separator: " ")
            guard words.count == 3, words[0] == "MOVED" || words[0] == "ASK", let slot = Int(words[1]), (0..<KeySlot.count).contains(slot),
                  let endpoint = Self.endpoint(words[2], from: from) else { return nil }
            self = words[0] == "MOVED" ? .moved(slot: slot, endpoint) : .ask(endpoint)
        }

        /// `host:port` (an IPv6 host's colons included; the port after the last); an empty host
        /// is `from`'s.
        static func endpoint(_ text: Substring, from: RedisEndpoint) -> RedisEndpoint? {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65_535).contains(port) else {
                return nil
            }
            var host = String(text[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            if host.isEmpty {
                guard case .tcp(let fromHost, _) = from else { return nil }
                host = fromHost
            }
            return .tcp(host: host, port: port)
        }
    }

    // MARK: The slot map

    /// Reads the slot map again from a node that answers, unless it was read within
    /// `refreshInterval` or a read is under way (`force`: at start). While no map is known, a
    /// failed read is tried again after the interval.
    public func refresh(force: Bool = false) {
        let now = NIODeadline.now()
        let nodes = state.withLockedValue { state -> [(endpoint: RedisEndpoint, client: RedisClient)]? in
            guard !state.closed, !state.refreshing else { return nil }
            if !force, let last = state.lastRefresh, now - last < configuration.refreshInterval { return nil }
            state.refreshing = true
            state.lastRefresh = now
            return state.nodes
        }
        guard let nodes else { return }
        statistics.refreshes.add(1, ordering: .relaxed)
        // Nodes with a connection up first, seeds among them before others.
        let ordered = nodes.filter { $0.client.connected > 0 } + nodes.filter { $0.client.connected == 0 }
        read(from: ordered[...]).whenComplete { result in
            let retry = self.state.withLockedValue { state -> Bool in
                state.refreshing = false
                guard !state.closed else { return false }
                switch result {
                case .success(let ranges):
                    var slots = [Int16](repeating: -1, count: KeySlot.count)
                    for (range, endpoint) in ranges {
                        let node = Int16(state.node(endpoint, make: self.makeClient))
                        for slot in range { slots[slot] = node }
                    }
                    state.slots = slots
                    return false
                case .failure:
                    return !state.slots.contains { $0 >= 0 }
                }
            }
            if retry {
                self.group.any().scheduleTask(in: self.configuration.refreshInterval) { self.refresh(force: true) }
            }
        }
    }

    /// `CLUSTER SLOTS` from the first of `nodes` that answers it.
    func read(from nodes: ArraySlice<(endpoint: RedisEndpoint, client: RedisClient)>) -> EventLoopFuture<[(ClosedRange<Int>, RedisEndpoint)]> {
        guard let (endpoint, client) = nodes.first else {
            return group.any().makeFailedFuture(RedisClientError(.unavailable, "no node of the Cluster answered CLUSTER SLOTS"))
        }
        let deadline = NIODeadline.now() + configuration.node.connectTimeout
        return client.send([RESPCommand("CLUSTER", "SLOTS")], deadline: deadline).flatMapThrowing { replies in
            guard let ranges = Self.slotMap(replies[0], from: endpoint) else {
                throw RedisClientError(.clusterError, "\(endpoint) answered CLUSTER SLOTS with \(replies[0])")
            }
            return ranges
        }.flatSubmitFailure(nodes.dropFirst()) { self.read(from: $0) }
    }

    /// The ranges of a `CLUSTER SLOTS` reply and their primaries' endpoints (an empty host: the
    /// node that answered, `from`); nil when it is not such a reply or holds no range.
    static func slotMap(_ reply: RESPValue, from: RedisEndpoint) -> [(ClosedRange<Int>, RedisEndpoint)]? {
        guard let entries = reply.elements else { return nil }
        var ranges: [(ClosedRange<Int>, RedisEndpoint)] = []
        for entry in entries {
            guard let fields = entry.elements, fields.count >= 3, let start = fields[0].integer, let end = fields[1].integer,
                  0 <= start, start <= end, end < KeySlot.count, let primary = fields[2].elements, primary.count >= 2,
                  let host = primary[0].string, let port = primary[1].integer, (1...65_535).contains(port) else { return nil }
            // `?` is a node whose address is not known yet: its slots stay unknown.
            guard host != "?" else { continue }
            let text = (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
            guard let endpoint = Redirect.endpoint(Substring(text), from: from) else { return nil }
            ranges.append((Int(start)...Int(end), endpoint))
        }
        return ranges.isEmpty ? nil : ranges
    }
}

extension EventLoopFuture where Value: Sendable {
    /// This future, or on its failure the one `next` makes from `rest` (when `rest` is not empty).
    fileprivate func flatSubmitFailure<Rest>(_ rest: Rest, _ next: @escaping @Sendable (Rest) -> EventLoopFuture<Value>)
        -> EventLoopFuture<Value> where Rest: Collection & Sendable {
        flatMapError { error in rest.isEmpty ? self.eventLoop.makeFailedFuture(error) : next(rest) }
    }
}
