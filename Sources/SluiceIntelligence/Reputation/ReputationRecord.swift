import SluiceCore

/// One subject's reputation as stored: the score measured at a time, and whether it is pinned.
public struct ReputationRecord: Sendable, Equatable {
    /// The tenant ("" for the default one).
    public var tenant: String
    /// The subject.
    public var subject: String
    /// The score measured at `updatedAt` (decay is applied when it is read).
    public var score: Double
    /// When `score` was measured, nanoseconds since the epoch.
    public var updatedAt: Int64
    /// A pinned score moves with neither events nor time.
    public var pinned: Bool
    /// Events applied since the record was created.
    public var events: UInt64

    /// Creates a record.
    public init(tenant: String, subject: String, score: Double, updatedAt: Int64, pinned: Bool = false, events: UInt64 = 0) {
        self.tenant = tenant
        self.subject = subject
        self.score = score
        self.updatedAt = updatedAt
        self.pinned = pinned
        self.events = events
    }

    /// The identity the book and the hot path know the subject by.
    public var fingerprint: Fingerprint { Fingerprint.of(tenant: tenant, key: subject) }

    /// The score at `now` under `model`.
    public func score(at now: Int64, model: ReputationModel) -> Double {
        pinned ? score : model.decayed(score, from: updatedAt, to: now)
    }
}

/// One thing a subject did.
public struct ReputationEvent: Sendable, Equatable {
    /// The tenant ("" for the default one).
    public var tenant: String
    /// The subject.
    public var subject: String
    /// The kind (a key of the model's weights).
    public var kind: String
    /// Score points it moves the score by.
    public var weight: Double
    /// When it happened, nanoseconds since the epoch.
    public var at: Int64
    /// Free text kept with it.
    public var note: String

    /// Creates an event.
    public init(tenant: String, subject: String, kind: String, weight: Double, at: Int64, note: String = "") {
        self.tenant = tenant
        self.subject = subject
        self.kind = kind
        self.weight = weight
        self.at = at
        self.note = note
    }
}
