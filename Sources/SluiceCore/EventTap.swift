import NIOConcurrencyHelpers

/// One request as the background features see it: a decided check (offered by the check path),
/// an outcome a service reported, or a row of a labeled trace. The one per-check event type:
/// anomaly detection reads it, an embedder's event tap receives it, trace replay produces it.
public struct CheckEvent: Sendable, Equatable {
    /// When, in milliseconds (since the epoch, or on the checks' clock).
    public var timestampMs: Int64
    /// The tenant ("" for the default one).
    public var tenant: String
    /// The caller the check is about (the key when the request left it empty).
    public var subject: String
    /// The caller's address; "" when not given.
    public var ip: String
    /// What was asked for (method and path); "" when not given.
    public var route: String
    /// What the upstream answered (an outcome, a trace row); 0 for a check.
    public var status: Int
    /// The hits asked for (a trace row's cost).
    public var cost: UInt64
    /// A decided check's counted key; "" otherwise.
    public var key: String
    /// A decided check's rule; "" for an inline limit or no check.
    public var rule: String
    /// Whether a decided check was allowed (true otherwise).
    public var allowed: Bool
    /// Why (``DecisionReason/withinLimit`` when not a decided check).
    public var reason: DecisionReason

    /// Creates an event.
    public init(timestampMs: Int64, tenant: String, subject: String, ip: String = "", route: String = "", status: Int = 0,
                cost: UInt64 = 1, key: String = "", rule: String = "", allowed: Bool = true, reason: DecisionReason = .withinLimit) {
        self.timestampMs = timestampMs
        self.tenant = tenant
        self.subject = subject
        self.ip = ip
        self.route = route
        self.status = status
        self.cost = cost
        self.key = key
        self.rule = rule
        self.allowed = allowed
        self.reason = reason
    }
}

/// A bounded, non-blocking buffer from the hot path to a background consumer.
///
/// `offer` never waits beyond a short critical section: when the buffer is full the element is
/// dropped and counted. The consumer calls `drain` from its own queue.
///
/// `offer` is inlinable so that the hot path's calls are specialised for their element type: a
/// generic call across modules looked up the element's metadata on every offer (callgrind).
public final class EventTap<Element: Sendable>: Sendable {
    @usableFromInline
    struct Ring: Sendable {
        @usableFromInline var storage: [Element?]
        @usableFromInline var head = 0
        @usableFromInline var count = 0
        @usableFromInline var dropped: UInt64 = 0
        @usableFromInline var offered: UInt64 = 0

        @usableFromInline
        init(storage: [Element?]) { self.storage = storage }
    }

    @usableFromInline
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
    @inlinable
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
