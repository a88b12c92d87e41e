import SluiceCore
import SluiceIntelligence

/// How much a store holds, for operators (`sluicectl store status`) and for checking a copy.
public struct StoreCounts: Sendable, Equatable, CustomStringConvertible {
    public var events = 0
    public var scores = 0
    public var tiers = 0
    public var baselines = 0
    /// The newest event's id (0: none).
    public var newestEventID: Int64 = 0

    public init() {}

    /// Whether it holds nothing a copy could collide with.
    public var isEmpty: Bool { events == 0 && scores == 0 && tiers == 0 && baselines == 0 }

    public var description: String { "\(events) events, \(scores) scores, \(tiers) tiers, \(baselines) baselines" }
}

/// What operators' tools read of a store besides what the daemon needs.
public protocol InspectableStore: DurableStore {
    /// The migrations applied to the database, in order.
    func appliedMigrations() throws(StoreError) -> [String]
    /// How much it holds.
    func counts() throws(StoreError) -> StoreCounts
    /// Up to `limit` events with ids after `id`, oldest first.
    func storedEvents(after id: Int64, limit: Int) throws(StoreError) -> [StoredEvent]
    /// The id through which the stored scores reflect every event (later ones are replayed at start).
    func replayMark() throws(StoreError) -> Int64
}

/// Copies one store into another, empty one (`sluicectl store copy`): a deployment moving from
/// its SQLite file to a PostgreSQL server its fleet shares.
public enum StoreCopy {
    /// Events read and written per transaction.
    public static let page = 50_000

    /// Copies every event (in order), score, tier and baseline of `source` into `target`, which
    /// must be empty, and returns both stores' counts afterwards (equal when nothing was lost).
    ///
    /// The scores are written between the events they reflect and the later ones, so the
    /// target replays exactly the events the source would at start.
    ///
    /// - Parameter progress: told of the events copied so far.
    public static func copy(from source: any InspectableStore, to target: any InspectableStore,
                            progress: (_ copied: Int, _ total: Int) -> Void = { _, _ in }) throws(StoreError) -> (source: StoreCounts, target: StoreCounts) {
        let existing = try target.counts()
        guard existing.isEmpty else {
            throw StoreError("the target already holds \(existing); copy into an empty database (a new one, or after dropping its tables)")
        }
        let before = try source.counts()
        let mark = try source.replayMark()
        var scores = StoreBatch()
        for record in try source.loadRecords() { scores.records[record.fingerprint] = .upsert(record) }
        scores.recordsComplete = true
        var scoresWritten = false
        var cursor: Int64 = 0, copied = 0
        while true {
            let page = try source.storedEvents(after: cursor, limit: page)
            let reflected = page.prefix { $0.id <= mark }
            if !reflected.isEmpty { try target.commit(events: reflected.map(\.value)) }
            if !scoresWritten, reflected.count < page.count || page.count < Self.page {
                // Every event the scores reflect is in: the scores' mark falls here.
                try target.commit(scores)
                scoresWritten = true
            }
            let later = page.dropFirst(reflected.count)
            if !later.isEmpty { try target.commit(events: later.map(\.value)) }
            copied += page.count
            progress(copied, max(copied, before.events))
            guard let last = page.last, page.count == Self.page else { break }
            cursor = last.id
        }
        for assignment in try source.loadTiers() { try target.saveTier(assignment) }
        try target.saveBaselines(try source.loadBaselines().baselines)
        return (before, try target.counts())
    }
}

extension ReputationStore {
    /// Commits `events` alone.
    func commit(events: [ReputationEvent]) throws(StoreError) {
        var batch = StoreBatch()
        batch.events = events
        try commit(batch)
    }
}
