/// Whether to ask Redis at all: after `threshold` failures in a row (timeouts, lost
/// connections, error replies) the breaker opens and checks take the degraded path at once,
/// instead of each waiting out the timeout; after `cooldown` one batch is let through as a probe,
/// and its success closes the breaker (its failure opens it again, for twice as long, up to
/// `maximumCooldown`).
///
/// Pure state: every call takes the time (ns), so tests drive it with their own clock.
struct CircuitBreaker: Sendable, Equatable {
    enum State: String, Sendable, Equatable {
        case closed
        case open
        /// A probe is out; other batches take the degraded path until it answers.
        case halfOpen = "half_open"
    }

    let threshold: Int
    let cooldown: Int64
    let maximumCooldown: Int64

    private(set) var state = State.closed
    private(set) var failures = 0
    /// While open: when the next probe may go.
    private(set) var retryAt: Int64 = 0
    private var currentCooldown: Int64 = 0

    init(threshold: Int = 5, cooldown: Int64 = 1_000_000_000, maximumCooldown: Int64 = 30_000_000_000) {
        self.threshold = max(1, threshold)
        self.cooldown = max(1, cooldown)
        self.maximumCooldown = max(self.cooldown, maximumCooldown)
    }

    /// Whether a batch may be sent to Redis now (a probe, when the cooldown is over).
    mutating func allows(now: Int64) -> Bool {
        switch state {
        case .closed: return true
        case .halfOpen: return false
        case .open:
            guard now >= retryAt else { return false }
            state = .halfOpen
            return true
        }
    }

    /// Takes what became of a batch sent to Redis; returns the new state when it changed.
    mutating func record(success: Bool, now: Int64) -> State? {
        let before = state
        if success {
            failures = 0
            currentCooldown = 0
            state = .closed
        } else {
            failures += 1
            if state == .halfOpen || (state == .closed && failures >= threshold) {
                currentCooldown = currentCooldown == 0 ? cooldown : min(maximumCooldown, currentCooldown * 2)
                retryAt = now &+ currentCooldown
                state = .open
            }
        }
        return state == before ? nil : state
    }
}

/// A circuit breaker per node that checks go to: one for a single server (node ""); on a
/// Cluster, one per primary, so that a node that fails sends its slots' checks to the on_failure
/// path while the other nodes' checks are still decided in Redis (in fast mode: synced).
struct Breakers: Sendable {
    /// What a node's breaker starts as.
    let template: CircuitBreaker
    private(set) var nodes: [String: CircuitBreaker] = [:]

    init(_ template: CircuitBreaker) { self.template = template }

    /// Whether a batch may be sent to `node` now (a probe, when its cooldown is over).
    mutating func allows(_ node: String, now: Int64) -> Bool {
        nodes[node, default: template].allows(now: now)
    }

    /// Takes what became of a batch sent to `node`; returns its new state when it changed.
    mutating func record(_ node: String, success: Bool, now: Int64) -> CircuitBreaker.State? {
        nodes[node, default: template].record(success: success, now: now)
    }

    /// Whether `node`'s breaker is open or probing (its checks take the on_failure path).
    func isShut(_ node: String) -> Bool { nodes[node].map { $0.state != .closed } ?? false }

    /// The state that matters most: open when some node's checks take the on_failure path,
    /// half open while a probe is out, else closed.
    var state: CircuitBreaker.State {
        let states = nodes.values.map(\.state)
        if states.contains(.open) { return .open }
        return states.contains(.halfOpen) ? .halfOpen : .closed
    }

    /// Nodes whose breaker is not closed, of the nodes asked so far.
    var notClosed: (open: Int, of: Int) { (nodes.values.filter { $0.state != .closed }.count, nodes.count) }
}
