import Foundation
import NIOConcurrencyHelpers
import SluiceCore
import SluiceIntelligence
import SluiceStore
import SluiceTestKit
import Testing
import SluiceLoad

/// A fresh directory for one test's database files.
func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "sluice-store-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func runSQLite(_ path: String, _ sql: String) throws -> String {
    let process = ChildProcess()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
    process.arguments = [path, sql]
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    process.waitUntilExit()
    return String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
}

@Suite struct SQLiteReputationStoreTests {
    func record(_ subject: String, _ score: Double, tenant: String = "acme") -> ReputationRecord {
        ReputationRecord(tenant: tenant, subject: subject, score: score, updatedAt: 1_000, pinned: subject.hasPrefix("pinned"), events: 3)
    }

    @Test func theDatabaseAndItsWalAndShmFilesAreReadableByTheirOwnerOnly() throws {
        let path = temporaryDirectory() + "/sluice.db"
        let store = try SQLiteReputationStore(path: path)
        try store.saveBaselines([(Fingerprint(high: 1, low: 1), Baseline(normal: [1, 2, 3, 4], windowStart: 0, lastSeen: 0, samples: 1))])
        for file in [path, path + "-wal", path + "-shm"] {
            let attributes = try FileManager.default.attributesOfItem(atPath: file)
            let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
            #expect(mode == 0o600, "\(file) is \(String(mode, radix: 8))")
        }
        // A file the operator made keeps the mode they gave it.
        let own = temporaryDirectory() + "/own.db"
        #expect(FileManager.default.createFile(atPath: own, contents: nil, attributes: [.posixPermissions: 0o640]))
        _ = try SQLiteReputationStore(path: own)
        #expect((try FileManager.default.attributesOfItem(atPath: own)[.posixPermissions] as? NSNumber)?.intValue == 0o640)
    }

    @Test func baselinesRoundTripAndRowsThatDoNotDecodeAreSkipped() throws {
        let path = temporaryDirectory() + "/sluice.db"
        let store = try SQLiteReputationStore(path: path)
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
        _ = try runSQLite(path, """
            INSERT INTO subject_baselines VALUES (1, 2, 0, 0, 0, 5, x'000000');
            INSERT INTO subject_baselines VALUES (1, 3, 0, -1, 0, 5, x'0000803f');
            INSERT INTO subject_baselines VALUES (1, 4, 0, 0, 0, 5, x'000080bf');
            """)
        let mixed = try store.loadBaselines()
        #expect(mixed.skipped == 3)
        #expect(mixed.baselines.count == 1)
        // Saving replaces every row.
        try store.saveBaselines([])
        #expect(try store.loadBaselines().baselines.isEmpty)
    }

    @Test func aNewFileGetsEveryMigrationAndKeepsWhatWasCommitted() throws {
        let path = temporaryDirectory() + "/sluice.db"
        do {
            let store = try SQLiteReputationStore(path: path)
            #expect(try store.appliedMigrations() == ["0001_reputation", "0002_tiers", "0003_baselines"])
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
        // Opened again (a restart): the same rows, and the migration is not applied twice.
        let reopened = try SQLiteReputationStore(path: path)
        let records = try reopened.loadRecords().sorted { $0.subject < $1.subject }
        #expect(records == [record("alice", 12.5), record("pinned-bob", 90)])
        let recent = try reopened.recentEvents(tenant: "acme", subject: "alice", limit: 2)
        #expect(recent.map(\.note) == ["try 4", "try 3"])
        #expect(try reopened.eventCount() == 5)
        #expect(try runSQLite(path, "PRAGMA journal_mode;").trimmingCharacters(in: .whitespacesAndNewlines) == "wal")
    }

    @Test func recentEventsWalkBackAlongEachSubjectsChainAcrossCommitsAndRestarts() throws {
        let path = temporaryDirectory() + "/sluice.db"
        let hour: Int64 = 3_600_000_000_000
        do {
            let store = try SQLiteReputationStore(path: path)
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
        // Reopened: the chains start where they ended (from the scores, then the later events).
        let store = try SQLiteReputationStore(path: path)
        #expect(try store.recentEvents(tenant: "t", subject: "a", limit: 100).count == 48)
        #expect(try store.recentEvents(tenant: "t", subject: "b", limit: 2).map(\.note) == ["b47", "b46"])
        // Retention ends a walk at the first deleted event.
        var all = StoreBatch()
        all.recordsComplete = true
        try store.commit(all)
        #expect(try store.expireEvents(before: 40 * 5 * hour, keepAtMost: 1_000_000, atMost: 1_000_000) == 80)
        #expect(try store.recentEvents(tenant: "t", subject: "a", limit: 100).count == 8)
        // A forgotten subject starts a new chain.
        var forget = StoreBatch()
        forget.records[Fingerprint.of(tenant: "t", key: "a")] = .delete(tenant: "t", subject: "a")
        try store.commit(forget)
        #expect(try store.recentEvents(tenant: "t", subject: "a", limit: 5).isEmpty)
        var again = StoreBatch()
        again.events = [ReputationEvent(tenant: "t", subject: "a", kind: "success", weight: 1, at: 0, note: "new")]
        try store.commit(again)
        #expect(try store.recentEvents(tenant: "t", subject: "a", limit: 5).map(\.note) == ["new"])
    }

    @Test func retentionExpiresOldEventsAndCapsTheirNumber() throws {
        let store = try SQLiteReputationStore(path: temporaryDirectory() + "/sluice.db")
        var batch = StoreBatch()
        batch.events = (0..<25_000).map { ReputationEvent(tenant: "", subject: "s\($0 % 10)", kind: "success", weight: 0.2, at: Int64($0)) }
        batch.recordsComplete = true
        try store.commit(batch)
        // At most 5,000 at a time, then the rest.
        #expect(try store.expireEvents(before: 12_000, keepAtMost: 1_000_000, atMost: 5_000) == 5_000)
        #expect(try store.expireEvents(before: 12_000, keepAtMost: 1_000_000, atMost: 1_000_000) == 7_000)
        #expect(try store.eventCount() == 13_000)
        #expect(try store.expireEvents(before: 0, keepAtMost: 3_000, atMost: 1_000_000) == 10_000)
        #expect(try store.eventCount() == 3_000)
        #expect(try store.recentEvents(tenant: "", subject: "s9", limit: 1).first?.at == 24_999)
    }

    @Test func eventsNotYetInTheStoredScoresAreNeverExpired() throws {
        let store = try SQLiteReputationStore(path: temporaryDirectory() + "/sluice.db")
        var batch = StoreBatch()
        batch.events = (0..<25_000).map { ReputationEvent(tenant: "", subject: "s\($0 % 10)", kind: "success", weight: 0.2, at: Int64($0)) }
        batch.recordsComplete = true
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
        try store.commit(later)
        #expect(try store.eventsAfterRecords().isEmpty)
        #expect(try store.eventCount() == 25_002)
        #expect(try store.expireEvents(before: 0, keepAtMost: 25_000, atMost: 1_000_000) == 2)
    }

    @Test func aFileThatIsNotADatabaseIsAClearError() throws {
        let path = temporaryDirectory() + "/sluice.db"
        try Data(repeating: 0x5A, count: 64 << 10).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: StoreError.self) { try SQLiteReputationStore(path: path) }
        #expect(error?.message.contains(path) == true)
        #expect(error?.message.contains("not a database") == true, "\(error?.message ?? "")")
    }

    @Test func aDamagedFileIsRefusedWithoutAByteOfItChanging() throws {
        let path = temporaryDirectory() + "/sluice.db"
        _ = try SQLiteReputationStore(path: path)
        // 100,000 events (about 7 MB), checkpointed into the file, then a page in their middle damaged.
        _ = try runSQLite(path, """
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
            INSERT INTO reputation_events (id, subject_key, previous_id, tenant, subject, kind, weight, at_ns, note)
            SELECT i, i % 10000, 0, '', 'user' || (i % 10000), 'auth_failure', -5, 1767225600000000000 + i, 'a note' FROM n;
            PRAGMA wal_checkpoint(TRUNCATE);
            """)
        var bytes = try #require(FileManager.default.contents(atPath: path))
        let page = bytes.count / 4_096 / 2
        for index in 0..<4_096 { bytes[page * 4_096 + index] = UInt8(truncatingIfNeeded: index &* 31 &+ 7) }
        try bytes.write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: StoreError.self) { try SQLiteReputationStore(path: path) }
        #expect(error?.message.contains("malformed") == true, "\(error?.message ?? "")")
        #expect(FileManager.default.contents(atPath: path) == bytes, "the damaged file was written to")
        // A newer Sluice's database is refused before it is opened for writing too.
        let newer = temporaryDirectory() + "/newer.db"
        _ = try SQLiteReputationStore(path: newer)
        _ = try runSQLite(newer, "INSERT INTO grdb_migrations VALUES ('0999_future'); PRAGMA wal_checkpoint(TRUNCATE);")
        let before = try #require(FileManager.default.contents(atPath: newer))
        #expect(throws: StoreError.self) { try SQLiteReputationStore(path: newer) }
        #expect(FileManager.default.contents(atPath: newer) == before)
    }

    @Test func aDatabaseFromANewerSluiceIsRefused() throws {
        let path = temporaryDirectory() + "/sluice.db"
        _ = try SQLiteReputationStore(path: path)
        _ = try runSQLite(path, "INSERT INTO grdb_migrations VALUES ('0999_future');")
        let error = #expect(throws: StoreError.self) { try SQLiteReputationStore(path: path) }
        #expect(error?.message.contains("0999_future") == true)
    }

    @Test func aRowEditedOutOfRangeIsRefusedByTheSchema() throws {
        let path = temporaryDirectory() + "/sluice.db"
        _ = try SQLiteReputationStore(path: path)
        let output = try runSQLite(path, "INSERT INTO reputation_scores VALUES (1, '', 'x', 500, 0, 0, 0, 0);")
        #expect(output.contains("CHECK constraint failed"))
    }

    @Test func aLockHeldByAnotherProcessFailsTheCommitClearlyAndLaterOnesSucceed() throws {
        let path = temporaryDirectory() + "/sluice.db"
        let store = try SQLiteReputationStore(path: path, busyTimeout: 0.2)
        // Another process takes the write lock and holds it for a second.
        let holder = try SQLiteLockHolder(path: path, statement: """
            INSERT INTO reputation_events (subject_key, previous_id, tenant, subject, kind, weight, at_ns) VALUES (0, 0, '', 'x', 'success', 1, 0);
            """, seconds: 1)
        Thread.sleep(forTimeInterval: 0.3)
        var batch = StoreBatch()
        batch.events = [ReputationEvent(tenant: "", subject: "y", kind: "success", weight: 1, at: 1)]
        let error = #expect(throws: StoreError.self) { try store.commit(batch) }
        #expect(error?.message.contains("locked") == true, "\(error?.message ?? "")")
        try holder.waitUntilReleased()
        try store.commit(batch)
        #expect(try store.eventCount() == 2)
    }
}

@Suite struct WriteBehindTests {
    @Test func changesAreCommittedTogetherAndDurableWaitersAreToldAfter() throws {
        let path = temporaryDirectory() + "/sluice.db"
        let store = try SQLiteReputationStore(path: path)
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

    @Test func aFailedCommitKeepsItsChangesForTheNextAndToldTheWaitersSo() throws {
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
        let store = try SQLiteReputationStore(path: temporaryDirectory() + "/sluice.db")
        writer.attach(store)
        #expect(writer.flush() == nil)
        #expect(try store.eventCount() == 4)
        #expect(try store.recentEvents(tenant: "", subject: "s", limit: 10).map(\.at) == [3, 2, 1, 0])
        #expect(writer.current.failures == 1)
    }

    /// The writer keeps no timer of its own (the daemon's reputation-writer service commits every
    /// interval, tested in the server's tests): what is enqueued waits for a commit on its queue.
    @Test func nothingIsCommittedUntilItsOwnerCommits() throws {
        let store = try SQLiteReputationStore(path: temporaryDirectory() + "/sluice.db")
        let writer = WriteBehind(store: store, interval: .milliseconds(1))
        writer.enqueue(events: [ReputationEvent(tenant: "", subject: "s", kind: "success", weight: 1, at: 0)])
        usleep(20_000)
        #expect(try store.eventCount() == 0)
        #expect(writer.onQueue { writer.commitOnQueue() } == nil)
        #expect(try store.eventCount() == 1)
    }
}

@Suite struct ReplayTests {
    /// Scores are written once a second, events every commit: after a crash between the two, the
    /// stored scores plus the replayed events are exactly the scores that were in memory.
    @Test func storedScoresPlusReplayedEventsAreTheScoresBeforeTheCrash() throws {
        let path = temporaryDirectory() + "/sluice.db"
        let model = ReputationModel(neutral: 50, halfLife: 600_000_000_000)
        let store = try SQLiteReputationStore(path: path)
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
