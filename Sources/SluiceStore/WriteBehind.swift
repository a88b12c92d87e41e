@preconcurrency import Dispatch
import NIOConcurrencyHelpers
import SluiceCore
import SluiceIntelligence

/// Write-behind with group commit: changes are queued in memory and written together, one
/// transaction per interval, on a background Dispatch queue. Nothing on the hot path waits for it.
/// The writer keeps no timer: whoever owns it calls ``commitOnQueue(records:)`` on ``queue`` every
/// ``interval`` (the daemon's `reputation-writer` service) and ``flush()`` at the end.
///
/// A durable change comes with a completion, called after the transaction that holds it has
/// committed (or with the error when it could not). When a commit fails, its changes are kept and
/// retried at the next interval, up to `maxPendingEvents`; beyond that new events are dropped and
/// counted (records, one row per subject, are always kept).
public final class WriteBehind: Sendable {
    /// The outcome a durable change waits for.
    public typealias Completion = @Sendable (Result<Void, StoreError>) -> Void

    struct Pending {
        var batch = StoreBatch()
        var waiters: [Completion] = []
        var dropped: UInt64 = 0
        /// A waiter needs the records in the next commit (an operator's override).
        var recordsNow = false
        /// Commits since records were last written.
        var sinceRecords = 0
    }

    /// What the writer has done, for metrics.
    public struct Statistics: Sendable, Equatable {
        /// Transactions committed.
        public var commits: UInt64 = 0
        /// Commits that failed (their changes were kept and retried).
        public var failures: UInt64 = 0
        /// Events written in all.
        public var eventsWritten: UInt64 = 0
        /// Events dropped because too many were pending.
        public var eventsDropped: UInt64 = 0
        /// Events waiting for the next commit.
        public var pendingEvents: Int = 0
        /// Record changes waiting for the next commit that writes records.
        public var pendingRecords: Int = 0
        /// Nanoseconds the last commit took.
        public var lastCommitDuration: Int64 = 0
        /// The last failure's message, nil after a success.
        public var lastError: String?
    }

    let pending = NIOLockedValueBox(Pending())
    let statistics = NIOLockedValueBox(Statistics())
    let store: NIOLockedValueBox<(any ReputationStore)?>
    /// The writer's serial queue: commits, and whatever else must not run concurrently with them.
    public let queue: DispatchQueue
    /// How often its owner commits (the group-commit interval).
    public let interval: Duration
    /// The most events kept waiting (for a store that is down).
    public let maxPendingEvents: Int
    /// Records (one row per changed subject) are written every this many commits; events every
    /// commit. A subject changes many times a second under load and only its last state needs
    /// writing; the events in between are replayed at start.
    public let recordsEvery: Int
    let onFailure: @Sendable (StoreError) -> Void

    /// A writer to `store` (nil: none yet, see ``attach(_:)``).
    ///
    /// - Parameters:
    ///   - interval: the group-commit interval.
    ///   - onFailure: told of each failed commit (on the writer's queue).
    public init(store: (any ReputationStore)?, queue: DispatchQueue = DispatchQueue(label: "sluice.store", qos: .utility),
                interval: Duration = .milliseconds(100), maxPendingEvents: Int = 1_000_000, recordsEvery: Int = 10,
                onFailure: @escaping @Sendable (StoreError) -> Void = { _ in }) {
        self.recordsEvery = max(1, recordsEvery)
        self.store = NIOLockedValueBox(store)
        self.queue = queue
        self.interval = interval
        self.maxPendingEvents = max(1, maxPendingEvents)
        self.onFailure = onFailure
    }

    /// Gives the writer its store (one that could not be opened at start and now can).
    public func attach(_ store: any ReputationStore) {
        self.store.withLockedValue { $0 = store }
    }

    /// Whether a store is attached.
    public var hasStore: Bool { store.withLockedValue { $0 != nil } }

    /// Queues `batch`; `completion`, when given, is called once it is committed.
    ///
    /// - Complexity: O(batch), a short lock; never touches disk.
    public func enqueue(_ batch: StoreBatch, completion: Completion? = nil) {
        pending.withLockedValue { pending in
            pending.batch.append(batch)
            if let completion { pending.waiters.append(completion) }
            Self.bound(&pending, maxEvents: maxPendingEvents)
        }
    }

    /// Queues one subject's row change (the latest change of a subject wins), with the event that
    /// caused it: both land in the same batch, which is what makes replay exact.
    ///
    /// - Complexity: O(1), a short lock.
    public func enqueue(_ change: StoreBatch.Change, for subject: Fingerprint, event: ReputationEvent? = nil) {
        pending.withLockedValue { pending in
            pending.batch.records[subject] = change
            if let event {
                // Full: the new event is dropped and counted (O(1); its effect is in the record).
                if pending.batch.events.count < maxPendingEvents {
                    pending.batch.events.append(event)
                } else {
                    pending.dropped &+= 1
                }
            }
        }
    }

    /// Queues events; `completion`, when given, is called once they are committed.
    public func enqueue(events: [ReputationEvent], completion: Completion? = nil) {
        pending.withLockedValue { pending in
            pending.batch.events.append(contentsOf: events)
            if let completion { pending.waiters.append(completion) }
            Self.bound(&pending, maxEvents: maxPendingEvents)
        }
    }

    /// Adds `completion` to be called after the next commit (of whatever is pending); with
    /// `records`, that commit writes the records too.
    public func afterNextCommit(records: Bool = false, _ completion: @escaping Completion) {
        pending.withLockedValue {
            $0.waiters.append(completion)
            if records { $0.recordsNow = true }
        }
    }

    /// Drops the newest events beyond `maxEvents` (the store is behind or down), counting them.
    static func bound(_ pending: inout Pending, maxEvents: Int) {
        let excess = pending.batch.events.count - maxEvents
        if excess > 0 {
            pending.batch.events.removeLast(excess)
            pending.dropped &+= UInt64(excess)
        }
    }

    /// Commits what is pending now, records included, and returns when done; the error when it failed.
    @discardableResult
    public func flush() -> StoreError? {
        queue.sync { commitOnQueue(records: true) }
    }

    /// Runs `work` on the writer's queue, after any commit in progress.
    public func onQueue<T>(_ work: () throws -> T) rethrows -> T {
        try queue.sync(execute: work)
    }

    /// Runs `work` on the writer's queue, later.
    public func async(_ work: @escaping @Sendable () -> Void) {
        queue.async(execute: work)
    }

    /// The writer's statistics now.
    public var current: Statistics {
        let (events, records, dropped) = pending.withLockedValue { ($0.batch.events.count, $0.batch.records.count, $0.dropped) }
        var statistics = statistics.withLockedValue { $0 }
        statistics.pendingEvents = events
        statistics.pendingRecords = records
        statistics.eventsDropped = dropped
        return statistics
    }

    /// Events written per transaction at most: a backlog (after a burst, or a store that was
    /// down) is written in several, because one transaction of a million rows outgrows the page
    /// cache and the WAL and runs at half the rate.
    public static let eventsPerTransaction = 50_000

    /// Commits what is pending now; call it only on ``queue`` (``flush()`` does that for you).
    ///
    /// - Parameter records: write the records too, whenever they were last written.
    @discardableResult
    public func commitOnQueue(records: Bool = false) -> StoreError? {
        commit(records: records)
    }

    /// Whether the last commit failed (and nothing has been written since).
    public var isFailing: Bool { statistics.withLockedValue { $0.lastError != nil } }

    func commit(records: Bool) -> StoreError? {
        let (batch, waiters) = pending.withLockedValue { pending -> (StoreBatch, [Completion]) in
            pending.sinceRecords += 1
            let withRecords = records || pending.recordsNow || pending.sinceRecords >= recordsEvery
            var taken = StoreBatch()
            taken.events = pending.batch.events
            pending.batch.events = []
            if withRecords {
                taken.records = pending.batch.records
                taken.recordsComplete = true
                pending.batch.records = [:]
                pending.recordsNow = false
                pending.sinceRecords = 0
            }
            defer { pending.waiters = [] }
            return (taken, pending.waiters)
        }
        if batch.isEmpty {
            // Nothing to write, but the last commit failed: the store is seen to be back (and
            // durable events accepted again) once it answers.
            if let store = store.withLockedValue({ $0 }), isFailing {
                do {
                    try store.probe()
                } catch {
                    return fail(batch, waiters, error)
                }
                statistics.withLockedValue { $0.lastError = nil }
            }
            for waiter in waiters { waiter(.success(())) }
            return nil
        }
        guard let store = store.withLockedValue({ $0 }) else {
            return fail(batch, waiters, StoreError("the reputation store is not open"))
        }
        var start = 0
        repeat {
            let end = min(batch.events.count, start + Self.eventsPerTransaction)
            let last = end == batch.events.count
            var transaction = StoreBatch()
            transaction.events = start == 0 && last ? batch.events : Array(batch.events[start..<end])
            // Score rows go with the last transaction: by then every event before them is in.
            if last {
                transaction.records = batch.records
                transaction.recordsComplete = batch.recordsComplete
            }
            let started = DispatchTime.now().uptimeNanoseconds
            do {
                try store.commit(transaction)
            } catch {
                var remaining = StoreBatch()
                remaining.events = Array(batch.events[(error.eventsCommitted ? end : start)...])
                if error.eventsCommitted { statistics.withLockedValue { $0.eventsWritten &+= UInt64(end - start) } }
                remaining.records = batch.records
                remaining.recordsComplete = batch.recordsComplete
                return fail(remaining, waiters, error)
            }
            let took = Int64(DispatchTime.now().uptimeNanoseconds &- started)
            statistics.withLockedValue {
                $0.commits &+= 1
                $0.eventsWritten &+= UInt64(end - start)
                $0.lastCommitDuration = took
                $0.lastError = nil
            }
            start = end
        } while start < batch.events.count
        for waiter in waiters { waiter(.success(())) }
        return nil
    }

    func fail(_ batch: StoreBatch, _ waiters: [Completion], _ error: StoreError) -> StoreError {
        pending.withLockedValue { pending in
            var retried = batch
            retried.append(pending.batch)
            retried.recordsComplete = false
            pending.batch = retried
            if batch.recordsComplete { pending.recordsNow = true }
            Self.bound(&pending, maxEvents: maxPendingEvents)
        }
        statistics.withLockedValue {
            $0.failures &+= 1
            $0.lastError = error.message
        }
        onFailure(error)
        for waiter in waiters { waiter(.failure(error)) }
        return error
    }
}
