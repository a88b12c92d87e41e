import SluiceCore

/// A subject's tier, as an operator assigned it.
public struct TierAssignment: Sendable, Equatable {
    /// The tenant ("" for the default one).
    public var tenant: String
    /// The subject.
    public var subject: String
    /// The tier's name (one of the configuration's tiers).
    public var tier: String
    /// When it was assigned, nanoseconds since the epoch.
    public var assignedAt: Int64

    /// Creates an assignment.
    public init(tenant: String, subject: String, tier: String, assignedAt: Int64) {
        self.tenant = tenant
        self.subject = subject
        self.tier = tier
        self.assignedAt = assignedAt
    }

    /// The identity the book knows the subject by.
    public var fingerprint: Fingerprint { Fingerprint.of(tenant: tenant, key: subject) }
}

/// Every subject's tier, in memory: what checks read.
///
/// Assignments change rarely (operator requests) and are read on every check while the adaptive
/// feature is on, so a check first reads an atomic count: with no assignment at all, nothing else.
public final class TierBook: Sendable {
    @usableFromInline let map = StripedMap<TierAssignment>(stripeBits: 4)

    /// An empty book.
    public init() {}

    /// What `body` makes of the subject's tier name (nil: none), read in place under its
    /// stripe's lock: the hot path's form, which copies no string (copied out, the name was
    /// retained and released).
    @inlinable
    public func withTier<Result>(of subject: Fingerprint, _ body: (String?) -> Result) -> Result {
        guard !map.isEmpty else { return body(nil) }
        return map.read(subject) { body($0?.tier) }
    }

    /// The subject's assignment.
    public func assignment(of subject: Fingerprint) -> TierAssignment? { map.value(for: subject) }

    /// Assigns a tier (replacing any); returns the previous assignment.
    @discardableResult
    public func assign(_ assignment: TierAssignment) -> TierAssignment? { map.set(assignment, for: assignment.fingerprint) }

    /// Removes the subject's tier; returns what it was.
    @discardableResult
    public func remove(_ subject: Fingerprint) -> TierAssignment? { map.removeValue(for: subject) }

    /// Every assignment, optionally only `tenant`'s and only to `tier`.
    public func assignments(tenant: String? = nil, tier: String? = nil) -> [TierAssignment] {
        map.values { (tenant == nil || $0.tenant == tenant) && (tier == nil || $0.tier == tier) }
    }

    /// How many subjects have a tier.
    public var count: Int { map.count }
}
