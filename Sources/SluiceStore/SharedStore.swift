import SluiceCore
import SluiceIntelligence

/// Something as the shared store holds it: its id (commit order across every daemon) and which
/// daemon wrote it.
public struct Stored<Value: Sendable & Equatable>: Sendable, Equatable {
    public var id: Int64
    /// The writing daemon's ``SharedStore/origin``.
    public var origin: Int64
    public var value: Value

    public init(id: Int64, origin: Int64, value: Value) {
        self.id = id
        self.origin = origin
        self.value = value
    }
}

/// An event as stored.
public typealias StoredEvent = Stored<ReputationEvent>
/// A change as stored.
public typealias StoredChange = Stored<SharedChange>

/// A change to shared state other than an event, for the other daemons to apply.
public enum SharedChange: Sendable, Equatable {
    /// A subject's tier set.
    case tier(TierAssignment)
    /// A subject's tier removed.
    case untier(tenant: String, subject: String)
    /// An anomaly response put in force, by the key checks look it up by.
    case response(key: Fingerprint, AnomalyResponseBook.Entry)
    /// An operator's score for a subject (set, pinned or unpinned).
    case reputation(ReputationRecord)
    /// An operator's reset of a subject to the neutral start.
    case reset(tenant: String, subject: String)
}

/// How far a daemon has applied what the store holds: every event with an id up to `events`, and
/// every change with an id up to `changes`.
public struct SharedCursor: Sendable, Equatable {
    public var events: Int64
    public var changes: Int64

    public init(events: Int64 = 0, changes: Int64 = 0) {
        self.events = events
        self.changes = changes
    }
}

/// Everything a daemon starts from, read in one snapshot of the database: the scores, the events
/// each score does not reflect yet, the tiers, the responses in force, and where to read
/// others' changes from next.
public struct SharedSnapshot: Sendable {
    public var records: [ReputationRecord]
    /// Events to apply onto `records`, in commit order.
    public var replay: [ReputationEvent]
    public var tiers: [TierAssignment]
    public var responses: [(key: Fingerprint, entry: AnomalyResponseBook.Entry)]
    public var cursor: SharedCursor

    public init(records: [ReputationRecord], replay: [ReputationEvent], tiers: [TierAssignment],
                responses: [(key: Fingerprint, entry: AnomalyResponseBook.Entry)], cursor: SharedCursor) {
        self.records = records
        self.replay = replay
        self.tiers = tiers
        self.responses = responses
        self.cursor = cursor
    }
}

/// A store several daemons use at once (PostgreSQL): besides the ``DurableStore`` protocols,
/// each daemon reads the others' events and changes after a cursor, in commit order, and its
/// commits say which others' events came before its own.
///
/// Ids are dense and in commit order: a daemon that has read every id up to N has seen every
/// commit before N's, and a later commit never takes a smaller id.
public protocol SharedStore: DurableStore {
    /// This daemon's mark on what it writes (random, drawn when the store is opened).
    var origin: Int64 { get }

    /// The state to start from, read in one snapshot (see ``SharedSnapshot``), with responses
    /// ending after `now`.
    func loadShared(now: Int64) throws(StoreError) -> SharedSnapshot

    /// Up to `limit` events with ids after `id`, oldest first, every daemon's (own ones included,
    /// so that the cursor passes them).
    func events(after id: Int64, limit: Int) throws(StoreError) -> [StoredEvent]

    /// Up to `limit` changes with ids after `id`, oldest first; `complete` is false when changes
    /// after `id` were deleted already (the reader is too far behind and must reload the tiers
    /// and responses whole).
    func changes(after id: Int64, limit: Int) throws(StoreError) -> (changes: [StoredChange], complete: Bool)

    /// Commits `batch` as ``ReputationStore/commit(_:)`` does, and gives `applied` the other
    /// daemons' events committed after `cursor` and before the batch's own, with the id through
    /// which the caller has now seen every event. Rows in the batch are written with those
    /// events folded in (`fold` applies one event to a row), so each row reflects every event of
    /// its subject up to that id.
    func commit(_ batch: StoreBatch, after cursor: Int64, fold: (ReputationRecord?, ReputationEvent) -> ReputationRecord,
                applied: ([StoredEvent], Int64) -> Void) throws(StoreError)

    /// Records `change` for the others (a response in force is also stored, replacing the key's;
    /// tiers are stored and recorded by ``TierStore``).
    func share(_ change: SharedChange, at now: Int64) throws(StoreError)

    /// The tiers and the responses ending after `now`, read whole (a reader that fell behind the
    /// kept changes), with the id of the newest change they reflect.
    func reloadChanges(now: Int64) throws(StoreError) -> (tiers: [TierAssignment], responses: [(key: Fingerprint, entry: AnomalyResponseBook.Entry)], through: Int64)

    /// Deletes changes recorded before `before` and responses that ended before it.
    func expireChanges(before: Int64) throws(StoreError)
}
