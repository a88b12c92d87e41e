import Foundation
import NIOConcurrencyHelpers
import SluiceCore
import SluiceIntelligence
import SluicePostgres
import SluiceStore
import SluiceTestKit
import Testing

/// The stores the daemon can persist to. Every behaviour test below runs against each: the
/// embedded SQLite file and a real PostgreSQL 15 server (a database of its own per test).
enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    /// PostgreSQL where its server is installed (CI installs it).
    static var available: [Backend] { PostgresServer.installed ? allCases : [.sqlite] }

    var testDescription: String { rawValue }
}

/// What the tests need of a store beyond the daemon's protocols.
protocol MigratedStore: DurableStore {
    func appliedMigrations() throws(StoreError) -> [String]
}

extension SQLiteReputationStore: MigratedStore {}
extension PostgresStore: MigratedStore {}

/// One test's store: where it is, how to open it (again, as a restart does), and raw SQL
/// behind the daemon's back (`sqlite3` or `psql`).
struct TestStore: Sendable {
    let backend: Backend
    let path: String
    let server: PostgresServer?
    let database: String

    static func make(_ backend: Backend) async throws -> TestStore {
        switch backend {
        case .sqlite:
            return TestStore(backend: backend, path: temporaryDirectory() + "/sluice.db", server: nil, database: "")
        case .postgres:
            let server = try await PostgresServer.shared()
            return TestStore(backend: backend, path: "", server: server, database: try await blocking { try server.createDatabase() })
        }
    }

    var url: String { server?.socketURL(database: database) ?? "" }

    func open() throws -> any MigratedStore {
        switch backend {
        case .sqlite: return try SQLiteReputationStore(path: path)
        // A full test run on two cores has kept a commit of 25,000 events past 5 s.
        case .postgres: return try PostgresStore(PostgresEndpoint(url: url), timeout: .seconds(60))
        }
    }

    /// The output of `sql` run by the database's own shell; errors are in the output.
    @discardableResult
    func sql(_ sql: String) throws -> String {
        switch backend {
        case .sqlite: return try runSQLite(path, sql)
        case .postgres: return try server!.psql(sql, database: database, check: false)
        }
    }

    /// A blob literal in this dialect, from hex.
    func blob(_ hex: String) -> String { backend == .sqlite ? "x'\(hex)'" : "'\\x\(hex)'::bytea" }
}

@Suite(.ownThreads) struct StoreBehaviourTests {
    func record(_ subject: String, _ score: Double, tenant: String = "acme") -> ReputationRecord {
        ReputationRecord(tenant: tenant, subject: subject, score: score, updatedAt: 1_000, pinned: subject.hasPrefix("pinned"), events: 3)
    }

    @Test(arguments: Backend.available)
    func aNewStoreGetsEveryMigrationAndKeepsWhatWasCommitted(_ backend: Backend) async throws {
        let place = try await TestStore.make(backend)
        do {
            let store = try place.open()
            #expect(try store.appliedMigrations() == ["0001_reputation", "0002_tiers", "0003_baselines", "0004_events_by_subject", "0005_shared_state"])
            var batch = StoreBatch()
            batch.records[Fingerprint.of(tenant: "acme", key: "alice")] = .upsert(record("alice", 12.5))
            batch.records[Fingerprint.of(tenant: "acme", key: "pinned-bob")] = .upsert(record("pinned-bob", 90))
            batch.records[Fingerprint.of(tenant: "", key: "carol")] = .upsert(record("carol", 40, tenant: ""))
            batch.events = (0..<5).map { ReputationEvent(tenant: "acme", subject: "alice", kind: "auth_failure", weight: -5,
                                                         at: Int64($0) * 1_000, note: "try \($0)") }
            try store.commit(batch)
            var deletion = StoreBatch()
            deletion.records[Fingerprint.of(tenant: "", key: "carol")] = .delete(tenant: "", subject: "carol")
            try store.commit(deletion)
        }
        // Opened again (a restart): the same rows, and the migrations are not applied twice.
        let reopened = try place.open()
        #expect(try reopened.appliedMigrations().count == StoreMigrations.all.count)
        let records = try reopened.loadRecords().sorted { $0.subject < $1.subject }
        #expect(records == [record("alice", 12.5), record("pinned-bob", 90)])
        let recent = try reopened.recentEvents(tenant: "acme", subject: "alice", limit: 2)
        #expect(recent.map(\.note) == ["try 4", "try 3"])
        #expect(try reopened.eventCount() == 5)
        if backend == .sqlite {
            #expect(try place.sql("PRAGMA journal_mode;").trimmingCharacters(in: .whitespacesAndNewlines) == "wal")
        }
    }

    @Test(arguments: Backend.available)
    func recentEventsWalkBackAlongEachSubjectsEventsAcrossCommitsAndRestarts(_ backend: Backend) async throws {
        let place = try await TestStore.make(backend)
        let hour: Int64 = 3_600_000_000_000
        do {
            let store = try place.open()
            // Two subjects that interleave, over four commits, the last without the scores.
            for commit in 0..<4 {
                var batch = StoreBatch()
                for step in 0..<12 {
                    for subject in ["a", "b"] {
                        let n = commit * 12 + step
                        batch.events.append(ReputationEvent(tenant: "t", subject: subject, kind: "success", weight: 1,
                                                            at: Int64(n) * 5 * hour, note: "\(subject)\(n)"))
                    }
                }
                if commit < 3 {
                    batch.records[Fingerprint.of(tenant: "t", key: "a")] = .upsert(ReputationRecord(tenant: "t", subject: "a", score: 60, updatedAt: 0))
                    batch.recordsComplete = true
                }
                try store.commit(batch)
            }
            #expect(try store.recentEvents(tenant: "t", subject: "a", limit: 3).map(\.note) == ["a47", "a46", "a45"])
            let many = try store.recentEvents(tenant: "t", subject: "a", limit: 30)
            #expect(many.map(\.note) == (18...47).reversed().map { "a\($0)" })
            #expect(try store.recentEvents(tenant: "t", subject: "nobody", limit: 5).isEmpty)
        }
        // Reopened: a subject's events are found where they ended.
        let store = try place.open()
        #expect(try store.recentEvents(tenant: "t", subject: "a", limit: 100).count == 48)
        #expect(try store.recentEvents(tenant: "t", subject: "b", limit: 2).map(\.note) == ["b47", "b46"])
        // Retention removes the oldest.
        var all = StoreBatch()
        all.recordsComplete = true
        try store.commit(all)
        #expect(try store.expireEvents(before: 40 * 5 * hour, keepAtMost: 1_000_000, atMost: 1_000_000) == 80)
        #expect(try store.recentEvents(tenant: "t", subject: "a", limit: 100).count == 8)
        // A forgotten subject starts afresh.
        var forget = StoreBatch()
        forget.records[Fingerprint.of(tenant: "t", key: "a")] = .delete(tenant: "t", subject: "a")
        try store.commit(forget)
        #expect(try store.recentEvents(tenant: "t", subject: "a", limit: 5).isEmpty)
        var again = StoreBatch()
        again.events = [ReputationEvent(tenant: "t", subject: "a", kind: "success", weight: 1, at: 0, note: "new")]
        try store.commit(again)
        #expect(try store.recentEvents(tenant: "t", subject: "a", limit: 5).map(\.note) == ["new"])
    }

    /// `count` events of subjects s0…s9 in turn, at 0, 1, 2… ns, with the scores complete.
    static func eventsOfTenSubjects(_ count: Int) -> StoreBatch {
        var batch = StoreBatch()
        batch.events = (0..<count).map { ReputationEvent(tenant: "", subject: "s\($0 % 10)", kind: "success", weight: 0.2, at: Int64($0)) }
        // With the scores those events moved, as the daemon writes them.
        for subject in 0..<min(count, 10) { batch.records.merge(Self.score(of: "s\(subject)", at: Int64(count))) { $1 } }
        batch.recordsComplete = true
        return batch
    }

    /// A score row change of `subject`.
    static func score(of subject: String, at time: Int64) -> [Fingerprint: StoreBatch.Change] {
        [Fingerprint.of(tenant: "", key: subject): .upsert(ReputationRecord(tenant: "", subject: subject, score: 52, updatedAt: time))]
    }

    @Test(arguments: Backend.available)
    func retentionExpiresOldEventsAndCapsTheirNumber(_ backend: Backend) async throws {
        let store = try await TestStore.make(backend).open()
        let batch = Self.eventsOfTenSubjects(25_000)
        try store.commit(batch)
        // At most 5,000 at a time, then the rest.
        #expect(try store.expireEvents(before: 12_000, keepAtMost: 1_000_000, atMost: 5_000) == 5_000)
        #expect(try store.expireEvents(before: 12_000, keepAtMost: 1_000_000, atMost: 1_000_000) == 7_000)
        #expect(try store.eventCount() == 13_000)
        #expect(try store.expireEvents(before: 0, keepAtMost: 3_000, atMost: 1_000_000) == 10_000)
        #expect(try store.eventCount() == 3_000)
        #expect(try store.recentEvents(tenant: "", subject: "s9", limit: 1).first?.at == 24_999)
    }

    @Test(arguments: Backend.available)
    func eventsNotYetInTheStoredScoresAreNeverExpired(_ backend: Backend) async throws {
        let store = try await TestStore.make(backend).open()
        let batch = Self.eventsOfTenSubjects(25_000)
        try store.commit(batch)
        // Events the stored scores do not reflect yet are never expired: they are replayed at start.
        var later = StoreBatch()
        later.events = [ReputationEvent(tenant: "", subject: "s0", kind: "success", weight: 0.2, at: 1)]
        try store.commit(later)
        #expect(try store.eventsAfterRecords().count == 1)
        #expect(try store.expireEvents(before: .max, keepAtMost: 0, atMost: 1_000_000) == 25_000)
        #expect(try store.eventCount() == 1)
        try store.commit(batch)
        later.recordsComplete = true
        later.records = Self.score(of: "s0", at: 1)
        try store.commit(later)
        #expect(try store.eventsAfterRecords().isEmpty)
        #expect(try store.eventCount() == 25_002)
        #expect(try store.expireEvents(before: 0, keepAtMost: 25_000, atMost: 1_000_000) == 2)
    }

    @Test(arguments: Backend.available)
    func baselinesRoundTripAndRowsThatDoNotDecodeAreSkipped(_ backend: Backend) async throws {
        let place = try await TestStore.make(backend)
        let store = try place.open()
        var learned = Baseline(normal: [1.5, .nan, 0, 12], windowStart: 60_000_000_000, lastSeen: 61_000_000_000, samples: 42)
        learned.current = 7
        try store.saveBaselines([(Fingerprint(high: .max, low: 1), learned)])
        let loaded = try store.loadBaselines()
        #expect(loaded.skipped == 0)
        #expect(loaded.baselines.count == 1)
        #expect(loaded.baselines.first?.0 == Fingerprint(high: .max, low: 1))
        let back = try #require(loaded.baselines.first?.1)
        #expect(back.normal[0] == 1.5 && back.normal[1].isNaN && back.normal[3] == 12)
        #expect(back.current == 7 && back.samples == 42 && back.windowStart == 60_000_000_000)
        // Garbage written behind the daemon's back: a blob of 3 bytes, a negative count, a
        // negative rate. Each is skipped; the good row stays.
        try place.sql("""
            INSERT INTO subject_baselines VALUES (1, 2, 0, 0, 0, 5, \(place.blob("000000")));
            INSERT INTO subject_baselines VALUES (1, 3, 0, -1, 0, 5, \(place.blob("0000803f")));
            INSERT INTO subject_baselines VALUES (1, 4, 0, 0, 0, 5, \(place.blob("000080bf")));
            """)
        let mixed = try store.loadBaselines()
        #expect(mixed.skipped == 3)
        #expect(mixed.baselines.count == 1)
        switch backend {
        case .sqlite:
            // One daemon: saving replaces every row.
            try store.saveBaselines([])
            #expect(try store.loadBaselines().baselines.isEmpty)
        case .postgres:
            // Several daemons save theirs: a subject's row is replaced by one seen later, not by
            // one seen earlier, and rows idle a week before the latest saved go.
            var older = learned, newer = learned
            older.lastSeen -= 1
            older.samples = 1
            newer.lastSeen += 8 * 86_400_000_000_000
            newer.samples = 99
            try store.saveBaselines([(Fingerprint(high: .max, low: 1), older)])
            #expect(try store.loadBaselines().baselines.first { $0.0 == Fingerprint(high: .max, low: 1) }?.1.samples == 42)
            try store.saveBaselines([(Fingerprint(high: .max, low: 5), newer)])
            let kept = try store.loadBaselines()
            #expect(kept.baselines.map(\.0) == [Fingerprint(high: .max, low: 5)], "\(kept.baselines.map(\.0))")
        }
    }

    @Test(arguments: Backend.available)
    func aDatabaseFromANewerSluiceIsRefused(_ backend: Backend) async throws {
        let place = try await TestStore.make(backend)
        _ = try place.open()
        try place.sql(backend == .sqlite ? "INSERT INTO grdb_migrations VALUES ('0999_future');"
                                         : "INSERT INTO sluice_migrations (identifier) VALUES ('0999_future');")
        let error = #expect(throws: StoreError.self) { try place.open() }
        #expect(error?.message.contains("0999_future") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("newer Sluice") == true)
    }

    @Test(arguments: Backend.available)
    func aRowEditedOutOfRangeIsRefusedByTheSchema(_ backend: Backend) async throws {
        let place = try await TestStore.make(backend)
        _ = try place.open()
        let output = try place.sql("INSERT INTO reputation_scores VALUES (1, '', 'x', 500, 0, 0, 0, 0);")
        #expect(output.lowercased().contains("check constraint"), "\(output)")
    }

    @Test(arguments: Backend.available)
    func tiersAreSavedReplacedAndRemoved(_ backend: Backend) async throws {
        let place = try await TestStore.make(backend)
        let store = try place.open()
        try store.saveTier(TierAssignment(tenant: "acme", subject: "alice", tier: "vip", assignedAt: 1))
        try store.saveTier(TierAssignment(tenant: "acme", subject: "bob", tier: "free", assignedAt: 2))
        try store.saveTier(TierAssignment(tenant: "acme", subject: "alice", tier: "standard", assignedAt: 3))
        try store.removeTier(tenant: "acme", subject: "bob")
        #expect(try place.open().loadTiers() == [TierAssignment(tenant: "acme", subject: "alice", tier: "standard", assignedAt: 3)])
    }

    @Test(arguments: Backend.available)
    func textIsKeptAsItWasWritten(_ backend: Backend) async throws {
        let store = try await TestStore.make(backend).open()
        var batch = StoreBatch()
        batch.events = [ReputationEvent(tenant: "t", subject: "ünïcode 😀", kind: "x", weight: 1, at: 1, note: "'; DROP TABLE reputation_events; --")]
        try store.commit(batch)
        #expect(try store.recentEvents(tenant: "t", subject: "ünïcode 😀", limit: 1).map(\.note) == ["'; DROP TABLE reputation_events; --"])
    }
}

@Suite(.ownThreads) struct WriteBehindTests {
    @Test(arguments: Backend.available)
    func changesAreCommittedTogetherAndDurableWaitersAreToldAfter(_ backend: Backend) async throws {
        let store = try await TestStore.make(backend).open()
        let writer = WriteBehind(store: store, interval: .seconds(3_600))
        let told = NIOLockedValueBox<[Bool]>([])
        for index in 0..<3 {
            writer.enqueue(events: [ReputationEvent(tenant: "", subject: "s", kind: "success", weight: 1, at: Int64(index))]) { result in
                told.withLockedValue { $0.append((try? result.get()) != nil) }
            }
        }
        writer.enqueue(.upsert(ReputationRecord(tenant: "", subject: "s", score: 53, updatedAt: 2)), for: Fingerprint.of(tenant: "", key: "s"))
        // Nothing is written until the commit, and then everything is, in one transaction.
        #expect(try store.eventCount() == 0)
        #expect(told.withLockedValue { $0 }.isEmpty)
        #expect(writer.flush() == nil)
        #expect(told.withLockedValue { $0 } == [true, true, true])
        #expect(try store.eventCount() == 3)
        #expect(try store.loadRecords().map(\.score) == [53])
        let statistics = writer.current
        #expect(statistics.commits == 1)
        #expect(statistics.eventsWritten == 3)
        #expect(statistics.pendingEvents == 0)
    }

    @Test(arguments: Backend.available)
    func aFailedCommitKeepsItsChangesForTheNextAndToldTheWaitersSo(_ backend: Backend) async throws {
        let writer = WriteBehind(store: nil, interval: .seconds(3_600), maxPendingEvents: 4)
        let outcome = NIOLockedValueBox<String?>(nil)
        writer.enqueue(events: [ReputationEvent(tenant: "", subject: "s", kind: "success", weight: 1, at: 0)]) { result in
            if case .failure(let error) = result { outcome.withLockedValue { $0 = error.message } }
        }
        #expect(writer.flush() != nil)
        #expect(outcome.withLockedValue { $0 }?.contains("not open") == true)
        // More arrive while it is down: beyond max_pending_events, the newest are dropped.
        writer.enqueue(events: (1..<6).map { ReputationEvent(tenant: "", subject: "s", kind: "success", weight: 1, at: Int64($0)) })
        #expect(writer.current.pendingEvents == 4)
        #expect(writer.current.eventsDropped == 2)
        // The store comes back: what was kept is committed.
        let store = try await TestStore.make(backend).open()
        writer.attach(store)
        #expect(writer.flush() == nil)
        #expect(try store.eventCount() == 4)
        #expect(try store.recentEvents(tenant: "", subject: "s", limit: 10).map(\.at) == [3, 2, 1, 0])
        #expect(writer.current.failures == 1)
    }

    /// The writer keeps no timer of its own (the daemon's reputation-writer service commits every
    /// interval, tested in the server's tests): what is enqueued waits for a commit on its queue.
    @Test(arguments: Backend.available)
    func nothingIsCommittedUntilItsOwnerCommits(_ backend: Backend) async throws {
        let store = try await TestStore.make(backend).open()
        let writer = WriteBehind(store: store, interval: .milliseconds(1))
        writer.enqueue(events: [ReputationEvent(tenant: "", subject: "s", kind: "success", weight: 1, at: 0)])
        usleep(20_000)
        #expect(try store.eventCount() == 0)
        #expect(writer.onQueue { writer.commitOnQueue() } == nil)
        #expect(try store.eventCount() == 1)
    }
}

@Suite(.ownThreads) struct ReplayTests {
    /// Scores are written once a second, events every commit: after a crash between the two, the
    /// stored scores plus the replayed events are exactly the scores that were in memory.
    @Test(arguments: Backend.available)
    func storedScoresPlusReplayedEventsAreTheScoresBeforeTheCrash(_ backend: Backend) async throws {
        let model = ReputationModel(neutral: 50, halfLife: 600_000_000_000)
        let store = try await TestStore.make(backend).open()
        let writer = WriteBehind(store: store, interval: .seconds(3_600), recordsEvery: 1_000)
        let book = ReputationBook { key, record, tenant, subject, event in
            writer.enqueue(record.map { .upsert($0) } ?? .delete(tenant: tenant, subject: subject), for: key, event: event)
        }
        var generator = SystemRandomNumberGenerator()
        func randomEvents(_ count: Int, from: Int64) -> [ReputationEvent] {
            (0..<count).map { index in
                ReputationEvent(tenant: "t", subject: "s\(Int.random(in: 0..<50, using: &generator))",
                                kind: "x", weight: Double.random(in: -10...10, using: &generator),
                                // Mostly in order, some late.
                                at: from + Int64(index) * 1_000_000 - Int64.random(in: 0...20_000_000, using: &generator))
            }
        }
        for event in randomEvents(2_000, from: 1_000_000_000) { book.apply(event, model: model) }
        #expect(writer.flush() == nil)              // scores and events
        for event in randomEvents(3_000, from: 5_000_000_000) { book.apply(event, model: model) }
        writer.onQueue { _ = writer.commitOnQueue() }   // events only: the scores on disk are older
        #expect(try store.eventsAfterRecords().count == 3_000)

        // "Restart": the stored scores, then the events after them.
        let restored = ReputationBook()
        restored.load(try store.loadRecords())
        for event in try store.eventsAfterRecords() { restored.apply(event, model: model, replayed: true) }
        let now: Int64 = 20_000_000_000
        #expect(restored.count == book.count)
        for record in book.records() {
            let again = try #require(restored.record(of: record.fingerprint))
            #expect(abs(again.score(at: now, model: model) - record.score(at: now, model: model)) < 1e-9, "\(record.subject)")
            #expect(again.events == record.events)
        }
    }
}
