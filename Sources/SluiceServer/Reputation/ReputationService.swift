@preconcurrency import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluicePostgres
import SluiceStore
import Synchronization

/// Reputation as the hot path sees it in one configuration generation: nil in
/// ``LiveConfiguration`` when the feature is off.
///
/// Scalars only: copying it costs no reference counting (a copy of the model would retain its
/// weights and its curve on every check). The model itself, for tracked subjects and blocks, is
/// the configuration's.
struct ReputationGate: Sendable, Equatable {
    let neutral: Double
    let halfLife: Double
    /// Below this a check is blocked; -infinity when nothing is.
    let blockBelow: Double
    /// Which subjects it applies to.
    let rollout: CompiledFlag
    let shadow: Bool
    let recordDenials: Bool
    let denialWeight: Double
    /// The multiplier at the neutral start (most subjects have no record).
    let neutralMultiplier: Double

    init?(_ configuration: Configuration) {
        guard let flag = configuration.features[ReputationService.feature], flag.enabled else { return nil }
        let model = configuration.reputation.model
        neutral = model.neutral
        halfLife = Double(model.halfLife)
        blockBelow = model.blockBelow ?? -.infinity
        rollout = CompiledFlag(flag)
        shadow = flag.shadow
        recordDenials = configuration.reputation.recordDenials
        denialWeight = model.weight(of: EventKind.rateLimited) ?? 0
        neutralMultiplier = model.curve.multiplier(at: model.neutral)
    }

    /// Whether the feature applies to `subject` (its rollout).
    @inline(__always)
    func includes(_ subject: Fingerprint) -> Bool { rollout.includes(subject) }
}

/// Keeps every subject's reputation: the in-memory book the hot path reads, the background
/// queues that apply events and sweep, and the SQLite store behind them (write-behind with group
/// commit). A store that cannot be opened (corrupt, locked, unwritable) is logged and retried;
/// meanwhile the book works from memory and checks are answered as usual.
public final class ReputationService: Sendable {
    /// The feature's flag name.
    public static let feature = "reputation"
    /// Events deleted per transaction by the sweep.
    static let expiryChunk = 50_000
    /// What the hot path reads.
    public let book: ReputationBook
    /// Subjects' tiers (the adaptive feature), kept in the same store.
    public let tiers = TierBook()
    /// Subjects' learned baselines (the adaptive feature), saved in the same store.
    public let baselines = BaselineBook()
    /// Anomaly responses in force (blocks and tightenings), read by checks; shared with the
    /// other daemons on a shared store.
    let responses = AnomalyResponseBook()
    /// Keeps the books in step with the other daemons on a shared store (PostgreSQL).
    let fleet: FleetSync
    let writer: WriteBehind
    /// Denied checks on their way to the background (`rate_limited` events).
    let denials: EventTap<ReputationEvent>
    let pump: EventPump<ReputationEvent>
    let state: LiveState
    let settings: Configuration.StoreSettings
    let logger: Logger
    let time: TimeSource
    let status = NIOLockedValueBox(Status())
    let counts: NIOLockedValueBox<Counts>
    /// What the hot path touches, kept apart from the rest (the stage holds only this).
    let hot: ReputationHotPath

    struct Status {
        var store: (any DurableStore)?
        var error: String?
    }

    struct Counts {
        var eventsByKind: [String: UInt64] = [:]
        var expired: UInt64 = 0
        var forgotten: UInt64 = 0
        var sweeps: UInt64 = 0
    }

    /// A service for the configuration `state` holds; nothing runs until ``start()``.
    init(state: LiveState, time: TimeSource, logger: Logger) {
        let settings = state.current.configuration.store
        self.state = state
        self.settings = settings
        self.time = time
        self.logger = logger
        let failures = NIOLockedValueBox<(message: String, loggedAt: UInt64, suppressed: Int)>(("", 0, 0))
        let writer = WriteBehind(store: nil, queue: DispatchQueue(label: "sluice.store", qos: .utility),
                                 interval: .nanoseconds(settings.commitInterval), maxPendingEvents: settings.maxPendingEvents,
                                 // Scores about once a second; events every interval.
                                 recordsEvery: max(1, Int(1_000_000_000 / max(1, settings.commitInterval))),
                                 onFailure: { [logger] error in
                                     // Every interval while the store is down: a line when the
                                     // complaint changes, then one a minute with the count.
                                     let suppressed = failures.withLockedValue { state -> Int? in
                                         let now = DispatchTime.now().uptimeNanoseconds
                                         if state.message == error.message, now &- state.loggedAt < 60_000_000_000 {
                                             state.suppressed += 1
                                             return nil
                                         }
                                         defer { state = (error.message, now, 0) }
                                         return state.suppressed
                                     }
                                     guard let suppressed else { return }
                                     logger.error("reputation store: commit failed; changes kept in memory and retried every interval",
                                                  metadata: ["error.message": "\(error.message)",
                                                             "store.failures_since_last_line": "\(suppressed)"])
                                 })
        self.writer = writer
        // Only a store holds rows: without one, changes are not even queued.
        let persist = settings.isPersistent
        let onChange: @Sendable (Fingerprint, ReputationRecord?, String, String, ReputationEvent?) -> Void = { key, record, tenant, subject, event in
            let change: StoreBatch.Change
            if let record {
                change = .upsert(record)
            } else {
                change = .delete(tenant: tenant, subject: subject)
            }
            writer.enqueue(change, for: key, event: event)
        }
        book = ReputationBook(onChange: persist ? onChange : nil)
        denials = EventTap(capacity: 65_536)
        hot = ReputationHotPath(book: book, denials: denials)
        fleet = FleetSync(book: book, tiers: tiers, responses: responses, model: { [state] in state.current.configuration.reputation.model },
                          logger: logger)
        let book = book
        let counts = NIOLockedValueBox(Counts())
        self.counts = counts
        pump = EventPump(tap: denials, queue: DispatchQueue(label: "sluice.reputation", qos: .utility),
                         interval: .milliseconds(10)) { [state] events in
            let model = state.current.configuration.reputation.model
            // Each event is queued for the store with the record it changed (the book's onChange).
            for event in events { book.apply(event, model: model) }
            counts.withLockedValue { $0.eventsByKind[EventKind.rateLimited, default: 0] &+= UInt64(events.count) }
        }
    }

    /// Opens the store and loads every stored score (before any listener binds). A store that
    /// cannot be opened is logged; the `reputation-store` service retries it.
    func open() {
        if settings.isPersistent { _ = writer.onQueue({ openStore() }) }
    }

    /// The background work, in start order (a service group stops them in reverse):
    /// - `reputation-writer` commits every `store.commit_interval` and, at shutdown, saves the
    ///   baselines and commits the rest (only with a store: without one nothing is queued, and an
    ///   empty commit of scores every second would be logged as failed);
    /// - `reputation-store` opens a store that could not be opened, every 10 s;
    /// - `reputation-sweep` forgets subjects back at neutral and expires old events;
    /// - `reputation-denials` applies denied checks (`rate_limited` events) every 10 ms, and
    ///   what is left at shutdown, before the writer's last commit.
    func services<C: Clock>(clock: C) -> [any Service] where C.Duration == Duration {
        var services: [any Service] = []
        if settings.isPersistent {
            services.append(PeriodicService("reputation-writer", every: { [writer] in writer.interval }, on: writer.queue, clock: clock,
                                            tick: { [writer] in writer.commitOnQueue() },
                                            finish: { [self] in
                                                saveBaselinesOnQueue()
                                                writer.commitOnQueue(records: true)
                                            }))
            services.append(PeriodicService("reputation-store", every: { .seconds(10) }, on: writer.queue, clock: clock,
                                            tick: { [self] in if !storeIsUp { _ = openStore() } }))
            if settings.backend == .postgres {
                services.append(PeriodicService("store-sync", every: { [settings] in .nanoseconds(settings.syncInterval) }, on: writer.queue,
                                                clock: clock, tick: { [self] in fleet.sync(now: time.now()) }))
            }
        }
        services.append(PeriodicService("reputation-sweep", every: { [state] in .nanoseconds(state.current.configuration.reputation.sweepInterval) },
                                        on: writer.queue, clock: clock, tick: { [self] in sweep(now: time.now()) }))
        services.append(pump.service("reputation-denials", clock: clock))
        return services
    }

    /// Applies what is queued and commits what is pending now, records included (a standalone
    /// dispatcher's stop, which has no service group).
    func flush() {
        pump.drainNow()
        if settings.isPersistent {
            writer.onQueue { saveBaselinesOnQueue() }
            writer.flush()
        }
    }

    /// Saves every learned baseline, replacing the stored ones (with each snapshot, and at stop).
    func saveBaselines() {
        guard settings.isPersistent else { return }
        writer.onQueue { saveBaselinesOnQueue() }
    }

    func saveBaselinesOnQueue() {
        guard let store = status.withLockedValue({ $0.store }) else { return }
        do {
            try store.saveBaselines(baselines.all())
        } catch {
            logger.warning("baselines not saved; kept in memory and saved with the next snapshot", metadata: ["error.message": "\(error.message)"])
        }
    }

    /// Whether the store is open (always true without one configured).
    var storeIsUp: Bool { !settings.isPersistent || status.withLockedValue { $0.store != nil } }

    /// The store's state in a phrase, for `/readyz` (nil without a store): up, or what fails and
    /// what that means for callers.
    var readiness: String? {
        guard settings.isPersistent else { return nil }
        let backend = settings.backend.rawValue
        if let error = storeError, !storeIsUp { return "\(backend): not open, durable requests answered unavailable: \(error)" }
        if let error = writer.current.lastError { return "\(backend): failing, changes kept in memory, durable requests answered unavailable: \(error)" }
        if settings.backend == .postgres, let error = fleet.state.withLockedValue({ $0.failing }) {
            return "\(backend): not syncing with the other daemons: \(error)"
        }
        return "\(backend): up"
    }

    /// Why the store is not open, if it is not.
    var storeError: String? { status.withLockedValue { $0.error } }

    /// Opens the store; on the writer's queue. False (logged) when it cannot.
    func openStore() -> Bool {
        guard settings.isPersistent else { return true }
        let path = settings.location
        do {
            let store = try Self.openStore(settings, baselineIdleAfter: state.current.configuration.baseline.idleAfter, logger: logger)
            let records: [ReputationRecord], replay: [ReputationEvent]
            let shared = store as? any SharedStore
            if let shared {
                // One snapshot of what every daemon wrote; syncing goes on from where it ends.
                let snapshot = try shared.loadShared(now: time.now())
                (records, replay) = (snapshot.records, snapshot.replay)
                for assignment in snapshot.tiers where tiers.assignment(of: assignment.fingerprint) == nil { tiers.assign(assignment) }
                for (key, entry) in snapshot.responses { responses.set(entry, for: key) }
                fleet.attach(shared, cursor: snapshot.cursor)
            } else {
                records = try store.loadRecords()
                for assignment in try store.loadTiers() where tiers.assignment(of: assignment.fingerprint) == nil {
                    tiers.assign(assignment)
                }
                replay = try store.eventsAfterRecords()
            }
            let stored = try store.loadBaselines()
            if baselines.count == 0 { baselines.restore(stored.baselines, settings: state.current.configuration.baseline) }
            if stored.skipped > 0 {
                logger.warning("baselines: stored rows that do not decode were skipped", metadata: ["baseline.skipped": "\(stored.skipped)"])
            }
            // Scores are written about once a second, events every commit: the events after
            // the last scores written are applied again, exactly as they were the first time.
            let changedSince = Set(book.records().map(\.fingerprint))   // non-empty only if the store opened late
            book.load(records)
            let model = state.current.configuration.reputation.model
            var replayed = 0
            for event in replay where !changedSince.contains(Fingerprint.of(tenant: event.tenant, key: event.subject)) {
                book.apply(event, model: model, replayed: true)
                replayed += 1
            }
            writer.attach(shared.map { FleetCommitStore($0, fleet: fleet) } ?? store)
            status.withLockedValue {
                $0.store = store
                $0.error = nil
            }
            logger.info("reputation store open", metadata: ["store.path": "\(path)", "reputation.subjects": "\(records.count)",
                                                            "reputation.replayed_events": "\(replayed)"])
            return true
        } catch {
            let first = status.withLockedValue { status -> Bool in
                defer { status.error = error.message }
                return status.error != error.message
            }
            if first {
                logger.error("reputation store unavailable: scores are kept in memory only and durable events are refused until it opens; retrying every 10s",
                             metadata: ["store.path": "\(path)", "error.message": "\(error.message)"])
            }
            return false
        }
    }

    /// The store `settings` name: the SQLite file, or PostgreSQL (connected, migrated).
    static func openStore(_ settings: Configuration.StoreSettings, baselineIdleAfter: Int64 = BaselineSettings().idleAfter,
                          logger: Logger) throws(StoreError) -> any DurableStore {
        switch settings.backend {
        case .sqlite:
            return try Stores.open(path: settings.path ?? "", busyTimeout: Double(settings.busyTimeout) / 1e9)
        case .postgres:
            return try PostgresStore(PostgresEndpoint(url: settings.url ?? ""), timeout: .nanoseconds(settings.timeout),
                                     baselineIdleAfter: baselineIdleAfter, logger: logger)
        }
    }

    /// Forgets subjects back at neutral (and the mildest beyond max_subjects), and expires events
    /// past retention. Runs on the writer's queue every sweep interval.
    @discardableResult
    func sweep(now: Int64) -> (forgotten: Int, expired: Int) {
        let configuration = state.current.configuration
        var perTenant: [String: Int] = [:]
        for name in configuration.tenants.keys { if let most = configuration.quotas(for: name)?.maxSubjects { perTenant[name] = most } }
        let forgotten = book.compact(now: now, model: configuration.reputation.model,
                                     maxSubjects: configuration.reputation.maxSubjects, perTenant: perTenant).count
        baselines.sweep(now: now, settings: configuration.baseline)
        var expired = 0
        if let store = status.withLockedValue({ $0.store }) {
            // In transactions of 50,000 rows, with the pending events committed between them: a
            // large expiry never holds commits up for long.
            do {
                while true {
                    let deleted = try store.expireEvents(before: now - settings.retention, keepAtMost: settings.maxEvents,
                                                         atMost: Self.expiryChunk)
                    expired += deleted
                    if deleted < Self.expiryChunk { break }
                    writer.commitOnQueue()
                }
            } catch {
                logger.warning("reputation store: events not expired", metadata: ["error.message": "\(error.message)"])
            }
            if let shared = store as? any SharedStore {
                do {
                    try shared.expireChanges(before: now &- PostgresStore.changesKept)
                } catch {
                    logger.warning("store: shared changes not expired", metadata: ["error.message": "\(error.message)"])
                }
            }
        }
        counts.withLockedValue {
            $0.forgotten &+= UInt64(forgotten)
            $0.expired &+= UInt64(expired)
            $0.sweeps &+= 1
        }
        return (forgotten, expired)
    }


    /// Stores a response put in force here for the other daemons (at the next sync), when the
    /// store is shared.
    func share(key: Fingerprint, _ entry: AnomalyResponseBook.Entry, at now: Int64) {
        guard settings.backend == .postgres else { return }
        fleet.share(.response(key: key, entry), at: now)
    }

    /// Counts events by kind, for `sluice_reputation_events_total`.
    func count(_ events: [ReputationEvent]) {
        counts.withLockedValue { counts in
            for event in events { counts.eventsByKind[event.kind, default: 0] &+= 1 }
        }
    }
}

/// The parts of reputation a check touches: the book, the queue of denials, the shadow counter.
final class ReputationHotPath: Sendable {
    let book: ReputationBook
    let denials: EventTap<ReputationEvent>
    /// Checks allowed that the feature, in shadow mode, would have denied.
    let wouldDeny = Synchronization.Atomic<UInt64>(0)

    init(book: ReputationBook, denials: EventTap<ReputationEvent>) {
        self.book = book
        self.denials = denials
    }

    /// Offers a `rate_limited` event for a denied check (never blocks; dropped when the queue is full).
    func recordDenial(tenant: UnsafeRawBufferPointer, subject: UnsafeRawBufferPointer, now: Int64, weight: Double) {
        denials.offer(ReputationEvent(tenant: String(decoding: tenant, as: UTF8.self), subject: String(decoding: subject, as: UTF8.self),
                                      kind: EventKind.rateLimited, weight: weight, at: now))
    }
}
