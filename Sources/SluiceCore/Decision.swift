/// Why a check was allowed or denied.
public enum DecisionReason: UInt8, Sendable, Hashable {
    /// Every limit had room.
    case withinLimit = 1
    /// A limit had no room for the hits now.
    case overLimit = 2
    /// The hits exceed the limit's whole capacity: waiting will not help.
    case exceedsCapacity = 3
    /// A deny hook blocked the check before any limit was consulted.
    case blocked = 4
    /// The subject's reputation is below the block threshold.
    case reputation = 5
    /// The protected service is overloaded and the subject's tier is shed (adaptive limiting).
    case shed = 6
    /// Anomaly detection responded to the subject or its address with a block.
    case anomaly = 7

    /// The reason as the protocol names it (`REASON_…`, lower case): `over_limit`, `shed` …
    public var name: String {
        switch self {
        case .withinLimit: "within_limit"
        case .overLimit: "over_limit"
        case .exceedsCapacity: "exceeds_capacity"
        case .blocked: "blocked"
        case .reputation: "reputation"
        case .shed: "shed"
        case .anomaly: "anomaly"
        }
    }
}

/// The outcome of one limit (or of a multi-limit check: its tightest limit).
///
/// Times are nanoseconds.
public struct Decision: Sendable, Hashable {
    // Declared widest first so the struct packs into 48 bytes: it is copied through every layer
    // of a check.
    /// The effective limit that decided.
    public var limit: UInt64
    /// Units left after this check.
    public var remaining: UInt64
    /// Nanoseconds until the limit is fully recovered (windows: until the current window ends).
    public var resetAfter: Int64
    /// Nanoseconds until the same check could be allowed; 0 when allowed.
    public var retryAfter: Int64
    /// The lease granted by an allowed concurrency check, else 0.
    public var leaseID: UInt64
    /// Which of a rule's limits decided (0 for a single limit).
    public var limitIndex: UInt32
    /// Whether the hits were (or, for a peek, would be) allowed.
    public var allowed: Bool
    /// Why.
    public var reason: DecisionReason
    /// The algorithm of the deciding limit.
    public var algorithm: Algorithm

    /// Creates a decision.
    @inlinable
    public init(
        allowed: Bool, limit: UInt64, remaining: UInt64, resetAfter: Int64, retryAfter: Int64,
        reason: DecisionReason, algorithm: Algorithm, leaseID: UInt64 = 0, limitIndex: UInt32 = 0
    ) {
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.resetAfter = resetAfter
        self.retryAfter = retryAfter
        self.reason = reason
        self.leaseID = leaseID
        self.algorithm = algorithm
        self.limitIndex = limitIndex
    }

    /// A check that a deny hook blocked.
    public static func blocked(limit: UInt64 = 0, algorithm: Algorithm = .gcra, retryAfter: Int64 = 0) -> Decision {
        Decision(allowed: false, limit: limit, remaining: 0, resetAfter: retryAfter, retryAfter: retryAfter,
                 reason: .blocked, algorithm: algorithm)
    }
}

extension Int64 {
    /// Nanoseconds to whole milliseconds, rounded up (a client told to wait 0.2 ms waits 1 ms).
    @inlinable
    public var ceilingMilliseconds: UInt64 {
        if self <= 0 { return 0 }
        let (whole, part) = quotientAndRemainder(dividingBy: 1_000_000)
        return UInt64(whole) + (part == 0 ? 0 : 1)
    }
}
