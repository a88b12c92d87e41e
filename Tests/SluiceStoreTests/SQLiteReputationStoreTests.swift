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

@Suite(.ownThreads) struct SQLiteReputationStoreTests {
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

