import GRDB
import GRDBSQLite
import SluiceCore
import SluiceIntelligence

/// Reputation in an embedded SQLite database (through GRDB), in WAL mode with
/// `synchronous = FULL`: a commit that returned is on disk, even across a power loss.
///
/// The schema is created and upgraded at open by the numbered migrations in
/// `Sources/SluiceStore/Migrations` (embedded by `scripts/generate.sh`).
public final class SQLiteReputationStore: ReputationStore {
    /// The database file.
    public let path: String
    let pool: DatabasePool

    /// Opens (creating if needed) the database at `path` and applies any pending migration.
    ///
    /// - Parameter busyTimeout: how long a write waits for a lock another process holds (seconds).
    /// - Throws: ``StoreError`` naming the file and SQLite's complaint: not a database, corrupt,
    ///   locked, written by a newer Sluice, unwritable.
    public init(path: String, busyTimeout: Double = 1) throws(StoreError) {
        self.path = path
        var configuration = GRDB.Configuration()
        configuration.busyMode = .timeout(busyTimeout)
        configuration.label = "sluice.store"
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // 32 MiB of page cache: the event index stays in memory while batches are appended.
            try db.execute(sql: "PRAGMA cache_size = -32768")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrate(pool)
        } catch let error as StoreError {
            throw error
        } catch {
            throw Self.storeError(error, path: path, doing: "open")
        }
    }

    static func migrate(_ pool: DatabasePool) throws {
        var migrator = DatabaseMigrator()
        for migration in StoreMigrations.all {
            let sql = migration.sql
            migrator.registerMigration(migration.identifier) { db in try db.execute(sql: sql) }
        }
        let known = Set(StoreMigrations.all.map(\.identifier))
        let applied = try pool.read { db in try migrator.appliedIdentifiers(db) }
        if let unknown = applied.subtracting(known).sorted().first {
            throw StoreError("the database was upgraded by a newer Sluice (it has migration \(unknown), which this version does not know)")
        }
        try migrator.migrate(pool)
    }

    static func storeError(_ error: any Error, path: String, doing what: String) -> StoreError {
        if let error = error as? StoreError { return StoreError("reputation store \(path): \(error.message)") }
        if let error = error as? DatabaseError {
            let detail = error.message ?? "\(error.resultCode)"
            return StoreError("reputation store \(path): could not \(what): \(detail) (SQLite \(error.extendedResultCode.rawValue))")
        }
        return StoreError("reputation store \(path): could not \(what): \(error)")
    }

    /// The migrations applied to the database, in order.
    public func appliedMigrations() throws(StoreError) -> [String] {
        do {
            return try pool.read { db in try DatabaseMigrator().appliedIdentifiers(db).sorted() }
        } catch {
            throw Self.storeError(error, path: path, doing: "read migrations")
        }
    }

    public func loadRecords() throws(StoreError) -> [ReputationRecord] {
        do {
            return try pool.read { db in
                var records: [ReputationRecord] = []
                let rows = try Row.fetchCursor(db, sql: "SELECT tenant, subject, score, updated_ns, pinned, events FROM reputation_scores")
                while let row = try rows.next() {
                    let score: Double = row[2]
                    let events: Int64 = row[5]
                    // The schema's CHECKs keep these sane; a row edited by hand is clamped, not trusted.
                    records.append(ReputationRecord(tenant: row[0], subject: row[1], score: ReputationModel.clamp(score),
                                                    updatedAt: row[3], pinned: (row[4] as Int64) != 0,
                                                    events: UInt64(max(0, events))))
                }
                return records
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "read scores")
        }
    }

    public func commit(_ batch: StoreBatch) throws(StoreError) {
        guard !batch.isEmpty else { return }
        do {
            try pool.write { db in
                if !batch.events.isEmpty {
                    let insert = try db.cachedStatement(sql: """
                        INSERT INTO reputation_events (subject_key, tenant, subject, kind, weight, at_ns, note)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        """)
                    // Bound through SQLite's own calls: GRDB's StatementArguments cost an array
                    // and a boxed value per column, which halved the rate at which events land.
                    let handle = insert.sqliteStatement
                    for event in batch.events {
                        sqlite3_reset(handle)
                        sqlite3_bind_int64(handle, 1, Self.subjectKey(tenant: event.tenant, subject: event.subject))
                        Self.bind(event.tenant, to: handle, at: 2)
                        Self.bind(event.subject, to: handle, at: 3)
                        Self.bind(event.kind, to: handle, at: 4)
                        sqlite3_bind_double(handle, 5, event.weight)
                        sqlite3_bind_int64(handle, 6, event.at)
                        Self.bind(event.note, to: handle, at: 7)
                        let code = sqlite3_step(handle)
                        guard code == SQLITE_DONE else {
                            throw DatabaseError(resultCode: ResultCode(rawValue: code),
                                                message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
                        }
                    }
                    sqlite3_reset(handle)
                    sqlite3_clear_bindings(handle)
                }
                if !batch.records.isEmpty {
                    let upsert = try db.cachedStatement(sql: """
                        INSERT OR REPLACE INTO reputation_scores (tenant, subject, score, updated_ns, pinned, events)
                        VALUES (?, ?, ?, ?, ?, ?)
                        """)
                    let delete = try db.cachedStatement(sql: "DELETE FROM reputation_scores WHERE tenant = ? AND subject = ?")
                    for change in batch.records.values {
                        switch change {
                        case .upsert(let record):
                            try upsert.execute(arguments: [record.tenant, record.subject, record.score, record.updatedAt,
                                                           record.pinned ? 1 : 0, Int64(clamping: record.events)])
                        case .delete(let tenant, let subject):
                            try delete.execute(arguments: [tenant, subject])
                        }
                    }
                }
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "commit")
        }
    }

    /// The column `subject_key`: 64 bits of the subject's stable fingerprint.
    static func subjectKey(tenant: String, subject: String) -> Int64 {
        Int64(bitPattern: Fingerprint.of(tenant: tenant, key: subject).low)
    }

    /// SQLite copies the bytes (SQLITE_TRANSIENT), so the string need not outlive the call.
    static func bind(_ text: String, to statement: OpaquePointer?, at index: Int32) {
        var text = text
        text.withUTF8 { bytes in
            _ = sqlite3_bind_text(statement, index, UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!)
                .assumingMemoryBound(to: CChar.self), Int32(bytes.count), Self.transient)
        }
    }

    static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    public func recentEvents(tenant: String, subject: String, limit: Int) throws(StoreError) -> [ReputationEvent] {
        do {
            return try pool.read { db in
                try Row.fetchAll(db, sql: """
                    SELECT kind, weight, at_ns, note FROM reputation_events
                    WHERE subject_key = ? AND tenant = ? AND subject = ? ORDER BY id DESC LIMIT ?
                    """, arguments: [Self.subjectKey(tenant: tenant, subject: subject), tenant, subject, limit]).map { row in
                    ReputationEvent(tenant: tenant, subject: subject, kind: row[0], weight: row[1], at: row[2], note: row[3])
                }
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "read events")
        }
    }

    public func expireEvents(before: Int64, keepAtMost: Int) throws(StoreError) -> Int {
        do {
            return try pool.write { db in
                var deleted = 0
                // By count: ids only grow and are deleted from the oldest, so they are dense.
                if let newest = try Int64.fetchOne(db, sql: "SELECT max(id) FROM reputation_events") {
                    try db.execute(sql: "DELETE FROM reputation_events WHERE id <= ?", arguments: [newest - Int64(keepAtMost)])
                    deleted += db.changesCount
                }
                // By age, oldest ids first, in chunks: events arrive roughly in time order, and
                // one that arrived late with an old time stays until the events before it go.
                while true {
                    try db.execute(sql: """
                        DELETE FROM reputation_events WHERE id IN
                          (SELECT id FROM reputation_events ORDER BY id LIMIT 10000) AND at_ns < ?
                        """, arguments: [before])
                    let chunk = db.changesCount
                    deleted += chunk
                    if chunk < 10_000 { break }
                }
                return deleted
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "expire events")
        }
    }

    public func eventCount() throws(StoreError) -> Int {
        do {
            return try pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM reputation_events") ?? 0 }
        } catch {
            throw Self.storeError(error, path: path, doing: "count events")
        }
    }
}
