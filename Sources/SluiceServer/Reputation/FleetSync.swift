@preconcurrency import Dispatch
import Logging
import NIOConcurrencyHelpers
import SluiceCore
import SluiceIntelligence
import SluiceStore

/// Keeps this daemon's books in step with the other daemons that share its store (PostgreSQL):
/// every `store.sync_interval`, on the writer's queue, it reads the events and changes committed
/// after the last it saw, in commit order, and applies the others' events (its own are in its
/// book already) and every change (its own too: applying changes in id order leaves every daemon
/// with the last one committed). Each commit of its own also brings the others' events that came
/// before it (``FleetCommitStore``).
///
/// The hot path never waits for any of it: it reads the books, which this updates in place.
final class FleetSync: Sendable {
    /// Events or changes read per query; more are read at once while a page comes back full.
    static let page = 10_000

    struct State {
        var store: (any SharedStore)?
        var cursor = SharedCursor()
        /// Changes made here (responses, operators' scores), not yet stored (tried again every sync).
        var unsent: [(change: SharedChange, at: Int64)] = []
        var statistics = Statistics()
        var failing: String?
    }

    /// What syncing has done, for metrics.
    struct Statistics: Sendable, Equatable {
        /// Other daemons' events applied to the book.
        var eventsApplied: UInt64 = 0
        /// Tier changes and responses applied (own ones included).
        var changesApplied: UInt64 = 0
        /// Reads of the tiers and responses whole, after falling behind the kept changes.
        var reloads: UInt64 = 0
        /// Syncs that failed (the store did not answer).
        var failures: UInt64 = 0
        /// Changes made here that could not be stored (too many waiting).
        var changesDropped: UInt64 = 0
        /// The newest event id seen (the cursor, filled in when read).
        var cursor: Int64 = 0
    }

    /// Changes kept while the store is down, at most.
    static let maxUnsent = 10_000

    let state = NIOLockedValueBox(State())
    let book: ReputationBook
    let tiers: TierBook
    let responses: AnomalyResponseBook
    let model: @Sendable () -> ReputationModel
    let logger: Logger

    init(book: ReputationBook, tiers: TierBook, responses: AnomalyResponseBook, model: @escaping @Sendable () -> ReputationModel, logger: Logger) {
        self.book = book
        self.tiers = tiers
        self.responses = responses
        self.model = model
        self.logger = logger
    }

    /// Whether a shared store is attached.
    var isActive: Bool { state.withLockedValue { $0.store != nil } }

    var statistics: Statistics {
        state.withLockedValue { state in
            var statistics = state.statistics
            statistics.cursor = state.cursor.events
            return statistics
        }
    }

    /// Starts syncing with `store` from `cursor` (where the snapshot the books were loaded from ends).
    func attach(_ store: any SharedStore, cursor: SharedCursor) {
        state.withLockedValue {
            $0.store = store
            $0.cursor = cursor
        }
    }

    /// Reads and applies what the others committed since the last sync, and stores the responses
    /// raised here. On the writer's queue. Returns the error when the store did not answer.
    @discardableResult
    func sync(now: Int64) -> StoreError? {
        guard let store = state.withLockedValue({ $0.store }) else { return nil }
        do {
            try pullEvents(store)
            try pullChanges(store, now: now)
            try pushChanges(store)
            if let previous = state.withLockedValue({ state -> String? in defer { state.failing = nil }; return state.failing }) {
                logger.info("store sync: reading the other daemons' changes again", metadata: ["store.previous_error": "\(previous)"])
            }
            return nil
        } catch {
            let first = state.withLockedValue { state -> Bool in
                state.statistics.failures &+= 1
                defer { state.failing = error.message }
                return state.failing == nil
            }
            if first {
                logger.error("store sync: cannot read the other daemons' changes; this daemon decides with what it has and retries every interval",
                             metadata: ["error.message": "\(error.message)"])
            }
            return error
        }
    }

    func pullEvents(_ store: any SharedStore) throws(StoreError) {
        while true {
            let after = state.withLockedValue { $0.cursor.events }
            let events = try store.events(after: after, limit: Self.page)
            guard let last = events.last else { return }
            apply(events, through: last.id, origin: store.origin)
            if events.count < Self.page { return }
        }
    }

    /// Applies the others' `events` (in id order) and moves the cursor to `through`.
    func apply(_ events: [StoredEvent], through: Int64, origin: Int64) {
        let model = model()
        var applied: UInt64 = 0
        for stored in events where stored.origin != origin {
            // Stored already: the book reports the record's change (its row is written again
            // here too), not the event.
            book.apply(stored.value, model: model, replayed: true)
            applied += 1
        }
        state.withLockedValue {
            $0.cursor.events = max($0.cursor.events, through)
            $0.statistics.eventsApplied &+= applied
        }
    }

    func pullChanges(_ store: any SharedStore, now: Int64) throws(StoreError) {
        while true {
            let after = state.withLockedValue { $0.cursor.changes }
            let (changes, complete) = try store.changes(after: after, limit: Self.page)
            guard complete else {
                // Further behind than the changes kept: everything, read whole.
                let whole = try store.reloadChanges(now: now)
                for assignment in whole.tiers { tiers.assign(assignment) }
                let kept = Set(whole.tiers.map(\.fingerprint))
                for assignment in tiers.assignments() where !kept.contains(assignment.fingerprint) { tiers.remove(assignment.fingerprint) }
                for (key, entry) in whole.responses { responses.set(entry, for: key) }
                state.withLockedValue {
                    $0.cursor.changes = max($0.cursor.changes, whole.through)
                    $0.statistics.reloads &+= 1
                }
                logger.warning("store sync: further behind than the shared changes kept; tiers and responses read whole",
                               metadata: ["store.tiers": "\(whole.tiers.count)", "store.responses": "\(whole.responses.count)"])
                return
            }
            guard let last = changes.last else { return }
            for stored in changes {
                switch stored.value {
                case .tier(let assignment): tiers.assign(assignment)
                case .untier(let tenant, let subject): tiers.remove(Fingerprint.of(tenant: tenant, key: subject))
                case .response(let key, let entry):
                    // A later response of the same key wins, whichever daemon raised it.
                    if let existing = responses.entry(for: key, at: now), existing.until > entry.until, stored.origin != store.origin { continue }
                    responses.set(entry, for: key)
                case .reputation(let record) where stored.origin != store.origin:
                    // An operator's score replaces the subject's record (its row is written
                    // here too). Not its own: events applied here since would be undone.
                    book.update(record.fingerprint) { _ in record }
                case .reset(let tenant, let subject) where stored.origin != store.origin:
                    book.update(Fingerprint.of(tenant: tenant, key: subject)) { _ in nil }
                case .reputation, .reset:
                    break
                }
            }
            state.withLockedValue {
                $0.cursor.changes = last.id
                $0.statistics.changesApplied &+= UInt64(changes.count)
            }
            if changes.count < Self.page { return }
        }
    }

    /// Queues a change made here, to store for the others at the next sync.
    func share(_ change: SharedChange, at now: Int64) {
        state.withLockedValue { state in
            if state.unsent.count >= Self.maxUnsent {
                state.unsent.removeFirst()
                state.statistics.changesDropped &+= 1
            }
            state.unsent.append((change, now))
        }
    }

    func pushChanges(_ store: any SharedStore) throws(StoreError) {
        let unsent = state.withLockedValue { $0.unsent }
        for (index, change) in unsent.enumerated() {
            do {
                try store.share(change.change, at: change.at)
            } catch {
                state.withLockedValue { $0.unsent.removeFirst(min(index, $0.unsent.count)) }
                throw error
            }
        }
        state.withLockedValue { $0.unsent.removeFirst(min(unsent.count, $0.unsent.count)) }
    }
}

/// The shared store as the write-behind sees it: each commit also brings the other daemons'
/// events committed since the last sync and before it, applies them, and writes score rows that
/// reflect them (``SharedStore/commit(_:after:fold:)``). Everything else goes straight through.
final class FleetCommitStore: ReputationStore {
    let store: any SharedStore
    let fleet: FleetSync

    init(_ store: any SharedStore, fleet: FleetSync) {
        self.store = store
        self.fleet = fleet
    }

    func commit(_ batch: StoreBatch) throws(StoreError) {
        guard !batch.isEmpty else { return }
        let model = fleet.model()
        let cursor = fleet.state.withLockedValue { $0.cursor.events }
        try store.commit(batch, after: cursor, fold: { record, event in ReputationBook.applying(event, to: record, model: model) },
                         applied: { remote, through in fleet.apply(remote, through: through, origin: store.origin) })
    }

    func loadRecords() throws(StoreError) -> [ReputationRecord] { try store.loadRecords() }
    func eventsAfterRecords() throws(StoreError) -> [ReputationEvent] { try store.eventsAfterRecords() }
    func recentEvents(tenant: String, subject: String, limit: Int) throws(StoreError) -> [ReputationEvent] {
        try store.recentEvents(tenant: tenant, subject: subject, limit: limit)
    }
    func expireEvents(before: Int64, keepAtMost: Int, atMost limit: Int) throws(StoreError) -> Int {
        try store.expireEvents(before: before, keepAtMost: keepAtMost, atMost: limit)
    }
    func eventCount() throws(StoreError) -> Int { try store.eventCount() }
    func probe() throws(StoreError) { try store.probe() }
}
