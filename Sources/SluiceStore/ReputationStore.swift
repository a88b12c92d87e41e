import SluiceCore
import SluiceIntelligence

/// Changes to write in one transaction.
public struct StoreBatch: Sendable {
    /// Events to append.
    public var events: [ReputationEvent] = []
    /// Records to insert or replace, and subjects to delete (nil), by subject.
    public var records: [Fingerprint: Change] = [:]
    /// The records are every change made so far: once committed, the stored scores reflect every
    /// stored event, and the replay mark moves to the last one.
    public var recordsComplete = false

    /// What becomes of one subject's row.
    public enum Change: Sendable, Equatable {
        /// Insert or replace the row.
        case upsert(ReputationRecord)
        /// Delete the row of (tenant, subject).
        case delete(tenant: String, subject: String)
    }

    /// An empty batch.
    public init() {}

    /// Whether there is nothing to write.
    public var isEmpty: Bool { events.isEmpty && records.isEmpty && !recordsComplete }

    /// Adds `other`'s changes after this batch's (its records win).
    public mutating func append(_ other: StoreBatch) {
        events.append(contentsOf: other.events)
        records.merge(other.records) { _, new in new }
    }
}

/// Where reputation is persisted.
///
/// Every method runs on the caller's (background) queue and may block on disk; the hot path never
/// calls it.
public protocol ReputationStore: Sendable {
    /// Every stored record.
    func loadRecords() throws(StoreError) -> [ReputationRecord]
    /// The stored events that the stored records do not reflect yet, oldest first (to replay).
    func eventsAfterRecords() throws(StoreError) -> [ReputationEvent]
    /// Writes `batch` in one transaction; when this returns, it is on disk.
    func commit(_ batch: StoreBatch) throws(StoreError)
    /// Up to `limit` of the subject's most recent events, newest first (in the order they were
    /// committed). A subject forgotten at neutral starts afresh.
    func recentEvents(tenant: String, subject: String, limit: Int) throws(StoreError) -> [ReputationEvent]
    /// Deletes events older than `before` (ns since the epoch) and all but the newest `keepAtMost`,
    /// at most `limit` of them, in one transaction; returns how many it deleted (`limit`: call
    /// again for more).
    func expireEvents(before: Int64, keepAtMost: Int, atMost limit: Int) throws(StoreError) -> Int
    /// How many events are stored.
    func eventCount() throws(StoreError) -> Int
    /// Whether the database answers now (a trivial query): how a store that failed is seen to
    /// be back when there is nothing to commit.
    func probe() throws(StoreError)
}

/// Where operators' tier assignments are persisted (adaptive limiting).
public protocol TierStore: Sendable {
    /// Every stored assignment.
    func loadTiers() throws(StoreError) -> [TierAssignment]
    /// Stores an assignment (replacing the subject's); on disk when this returns.
    func saveTier(_ assignment: TierAssignment) throws(StoreError)
    /// Removes the subject's assignment; on disk when this returns.
    func removeTier(tenant: String, subject: String) throws(StoreError)
}

/// Where learned baselines are persisted (adaptive limiting), with each snapshot and at stop.
public protocol BaselineStore: Sendable {
    /// Every stored baseline, and how many stored rows could not be read (skipped).
    func loadBaselines() throws(StoreError) -> (baselines: [(Fingerprint, Baseline)], skipped: Int)
    /// Replaces the stored baselines with these.
    func saveBaselines(_ baselines: [(Fingerprint, Baseline)]) throws(StoreError)
}

/// Everything the daemon persists, in one store: what the server holds (never a concrete
/// store). SQLite (``SQLiteReputationStore``) is the embedded one.
public typealias DurableStore = ReputationStore & TierStore & BaselineStore

/// Opens the daemon's store.
public enum Stores {
    /// The embedded store: the SQLite file at `path` (created, migrated), waiting up to
    /// `busyTimeout` seconds for another process's lock.
    public static func open(path: String, busyTimeout: Double) throws(StoreError) -> any DurableStore {
        try SQLiteReputationStore(path: path, busyTimeout: busyTimeout)
    }

    /// Heap the embedded store's library holds in this process (page caches, statements).
    public static var memoryInUse: Int64 { SQLiteReputationStore.memoryInUse }
}
