import NIOConcurrencyHelpers

/// What the hot path tells background features about one decided check.
public struct CheckEvent: Sendable {
    /// The tenant ("" for the default one).
    public var tenant: String
    /// The counted key.
    public var key: String
    /// The caller the check is about (the key when the request left it empty).
    public var subject: String
    /// The rule, or "" for an inline limit.
    public var rule: String
    /// The hits asked for.
    public var hits: UInt64
    /// Whether it was allowed.
    public var allowed: Bool
    /// Why.
    public var reason: DecisionReason
    /// When it was decided, nanoseconds since the epoch.
    public var now: Int64

    /// Creates an event.
    public init(tenant: String, key: String, subject: String, rule: String, hits: UInt64, allowed: Bool,
                reason: DecisionReason, now: Int64) {
        self.tenant = tenant
        self.key = key
        self.subject = subject
        self.rule = rule
        self.hits = hits
        self.allowed = allowed
        self.reason = reason
        self.now = now
    }
}

/// A bounded, non-blocking buffer from the hot path to a background consumer.
///
/// `offer` never waits beyond a short critical section: when the buffer is full the element is
/// dropped and counted. The consumer calls `drain` from its own queue.
public final class EventTap<Element: Sendable>: Sendable {
    struct Ring {
        var storage: [Element?]
        var head = 0
        var count = 0
        var dropped: UInt64 = 0
        var offered: UInt64 = 0
    }

    let ring: NIOLockedValueBox<Ring>
    /// How many elements the buffer holds at most.
    public let capacity: Int

    /// Creates a buffer holding at most `capacity` elements.
    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        ring = NIOLockedValueBox(Ring(storage: Array(repeating: nil, count: max(1, capacity))))
    }

    /// Adds `element` unless the buffer is full.
    ///
    /// - Returns: false when the element was dropped.
    /// - Complexity: O(1), never blocks on the consumer.
    @discardableResult
    public func offer(_ element: Element) -> Bool {
        ring.withLockedValue { ring in
            ring.offered &+= 1
            guard ring.count < ring.storage.count else {
                ring.dropped &+= 1
                return false
            }
            ring.storage[(ring.head + ring.count) % ring.storage.count] = element
            ring.count += 1
            return true
        }
    }

    /// Removes and returns up to `limit` elements, oldest first.
    public func drain(limit: Int = .max) -> [Element] {
        ring.withLockedValue { ring in
            let n = min(limit, ring.count)
            var out: [Element] = []
            out.reserveCapacity(n)
            for _ in 0..<n {
                if let element = ring.storage[ring.head] { out.append(element) }
                ring.storage[ring.head] = nil
                ring.head = (ring.head + 1) % ring.storage.count
            }
            ring.count -= n
            return out
        }
    }

    /// Elements dropped because the buffer was full.
    public var dropped: UInt64 { ring.withLockedValue { $0.dropped } }
    /// Elements waiting to be drained now.
    public var count: Int { ring.withLockedValue { $0.count } }
    /// Elements offered in all.
    public var offered: UInt64 { ring.withLockedValue { $0.offered } }
}
