import NIOCore

/// What runs Sluice's scripts on Redis: one server's pool of connections (``RedisClient``) or a
/// Cluster's, a pool per node (``RedisClusterClient``). The backend sees only this.
public protocol RedisScripting: AnyObject, Sendable {
    /// Runs `script` once per call, together; one reply per call, in order. An error reply is a
    /// reply; the future fails only when no call got one.
    func evaluate(_ script: RedisScript, calls: [RedisClient.ScriptCall], deadline: NIODeadline) -> EventLoopFuture<[RESPValue]>

    /// Whether every key of one script call must lie in one slot (a Cluster's rule): calls that
    /// gather many checks then gather only checks of one slot.
    var slotted: Bool { get }

    /// Connections up now.
    var connected: Int { get }

    /// Where Redis is, for logs and `/readyz`: `redis://host:port`, `unix:///path`, or a
    /// Cluster's seeds.
    var address: String { get }

    /// Closes every connection; calls after this fail.
    func shutdown()

    /// The node a call on `slot` goes to now, naming its circuit breaker: "" for a single
    /// server (one breaker for everything); a Cluster's primary for the slot.
    func breakerNode(ofSlot slot: Int) -> String
}

extension RedisScripting {
    /// One server: one breaker.
    public func breakerNode(ofSlot slot: Int) -> String { "" }

    /// `count` items (checks, sync entries) split into script calls of at most `perCall` each,
    /// in order; when ``slotted``, each call holds items of one slot (`slot(index)`) only. Each
    /// group lists its items' indices in ascending order, groups by their first item.
    public func groups(count: Int, perCall: Int, slot: (Int) -> Int) -> [[Int]] {
        let perCall = max(1, perCall)
        guard slotted else {
            return stride(from: 0, to: count, by: perCall).map { Array($0..<min(count, $0 + perCall)) }
        }
        var groups: [[Int]] = []
        // The group of each slot still taking items.
        var open: [Int: Int] = [:]
        for index in 0..<count {
            let key = slot(index)
            if let at = open[key], groups[at].count < perCall {
                groups[at].append(index)
            } else {
                open[key] = groups.count
                groups.append([index])
            }
        }
        return groups
    }
}

extension RESPArgument {
    /// The Cluster slot of this argument as a key.
    public var slot: Int {
        switch self {
        case .bytes(let bytes): return KeySlot.of(bytes)
        case .string(let text): return KeySlot.of(Array(text.utf8))
        case .integer(let value): return KeySlot.of(Array(String(value).utf8))
        }
    }
}
