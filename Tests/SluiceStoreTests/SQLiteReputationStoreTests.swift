import Foundation
import NIOConcurrencyHelpers
import SluiceCore
import SluiceIntelligence
import SluiceStore
import Testing

/// A fresh directory for one test's database files.
func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "sluice-store-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func runSQLite(_ path: String, _ sql: String) throws -> String {
    let process = Process()
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

    @Test func aNewFileGetsEveryMigrationAndKeepsWhatWasCommitted() throws {
        let path = temporaryDirectory() + "/sluice.db"
        do {
            let store = try SQLiteReputationStore(path: path)
            #expect(try store.appliedMigrations() == ["0001_reputation"])
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

    @Test func retentionExpiresOldEventsAndCapsTheirNumber() throws {
        let store = try SQLiteReputationStore(path: temporaryDirectory() + "/sluice.db")
        var batch = StoreBatch()
        batch.events = (0..<25_000).map { ReputationEvent(tenant: "", subject: "s\($0 % 10)", kind: "success", weight: 0.2, at: Int64($0)) }
        try store.commit(batch)
        #expect(try store.expireEvents(before: 12_000, keepAtMost: 1_000_000) == 12_000)
        #expect(try store.eventCount() == 13_000)
        #expect(try store.expireEvents(before: 0, keepAtMost: 3_000) == 10_000)
        #expect(try store.eventCount() == 3_000)
        #expect(try store.recentEvents(tenant: "", subject: "s9", limit: 1).first?.at == 24_999)
    }

    @Test func aFileThatIsNotADatabaseIsAClearError() throws {
        let path = temporaryDirectory() + "/sluice.db"
        try Data(repeating: 0x5A, count: 64 << 10).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: StoreError.self) { try SQLiteReputationStore(path: path) }
        #expect(error?.message.contains(path) == true)
        #expect(error?.message.contains("not a database") == true, "\(error?.message ?? "")")
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
        let output = try runSQLite(path, "INSERT INTO reputation_scores VALUES ('', 'x', 500, 0, 0, 0);")
        #expect(output.contains("CHECK constraint failed"))
    }

    @Test func aLockHeldByAnotherProcessFailsTheCommitClearlyAndLaterOnesSucceed() throws {
        let path = temporaryDirectory() + "/sluice.db"
        let store = try SQLiteReputationStore(path: path, busyTimeout: 0.2)
        // Another process takes the write lock and holds it for a second.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        holder.arguments = [path]
        let input = Pipe()
        holder.standardInput = input
        try holder.run()
        input.fileHandleForWriting.write(Data("BEGIN IMMEDIATE;\nINSERT INTO reputation_events (subject_key, tenant, subject, kind, weight, at_ns) VALUES (0, '', 'x', 'success', 1, 0);\n.shell sleep 1\nCOMMIT;\n".utf8))
        Thread.sleep(forTimeInterval: 0.3)
        var batch = StoreBatch()
        batch.events = [ReputationEvent(tenant: "", subject: "y", kind: "success", weight: 1, at: 1)]
        let error = #expect(throws: StoreError.self) { try store.commit(batch) }
        #expect(error?.message.contains("locked") == true, "\(error?.message ?? "")")
        try input.fileHandleForWriting.close()
        holder.waitUntilExit()
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
        // More arrive while it is down: only the newest max_pending_events are kept.
        writer.enqueue(events: (1..<6).map { ReputationEvent(tenant: "", subject: "s", kind: "success", weight: 1, at: Int64($0)) })
        #expect(writer.current.pendingEvents == 4)
        #expect(writer.current.eventsDropped == 2)
        // The store comes back: what was kept is committed.
        let store = try SQLiteReputationStore(path: temporaryDirectory() + "/sluice.db")
        writer.attach(store)
        #expect(writer.flush() == nil)
        #expect(try store.eventCount() == 4)
        #expect(try store.recentEvents(tenant: "", subject: "s", limit: 10).map(\.at) == [5, 4, 3, 2])
        #expect(writer.current.failures == 1)
    }

    @Test func theTimerCommitsWithinTheInterval() async throws {
        let store = try SQLiteReputationStore(path: temporaryDirectory() + "/sluice.db")
        let writer = WriteBehind(store: store, interval: .milliseconds(20))
        writer.start()
        defer { writer.stop() }
        writer.enqueue(events: [ReputationEvent(tenant: "", subject: "s", kind: "success", weight: 1, at: 0)])
        for _ in 0..<200 where (try store.eventCount()) == 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(try store.eventCount() == 1)
    }
}
