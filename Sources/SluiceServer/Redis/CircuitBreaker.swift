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
