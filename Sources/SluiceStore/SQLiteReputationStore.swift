import Foundation
import GRDB
import GRDBSQLite
import NIOConcurrencyHelpers
import SluiceCore
import SluiceIntelligence

/// Reputation in an embedded SQLite database (through GRDB), in WAL mode with
/// `synchronous = FULL`: a commit that returned is on disk, even across a power loss.
///
/// The schema is created and upgraded at open by the numbered migrations in
/// `Sources/SluiceStore/Migrations` (embedded by `scripts/generate.sh`).
public final class SQLiteReputationStore: InspectableStore {
    /// The database file.
    public let path: String
    let pool: DatabasePool
    /// Where each subject's chain of events starts (its newest event id).
    /// Only the writer's queue commits, but reads (GetReputation) come from elsewhere.
    let chain: NIOLockedValueBox<Chain>

    struct Chain {
        var heads: [Int64: Int64] = [:]
    }

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
        // Reads (GetReputation, ListReputations, tiers) are operators' and occasional: two
        // readers at once, with a small cache each, bound SQLite's memory to about 80 MiB
        // however large the file grows (GRDB's default of five readers with the writer's cache
        // could hold 384 MiB; `sluice_store_memory_bytes` shows what is held).
        configuration.maximumReaderCount = 2
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // The writer keeps 64 MiB of page cache (the current hour's part of the event index
            // stays in memory); each reader 8 MiB.
            try db.execute(sql: db.configuration.readonly ? "PRAGMA cache_size = -8192" : "PRAGMA cache_size = -65536")
            // Checkpoint every 10,000 pages (40 MiB) rather than 1,000: a page written again
            // before the checkpoint is copied into the database once.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 10000")
        }
        do {
            // An existing file is read read-only first, as the start reads it: a file that is
            // damaged where the start reads it, not a database, or from a newer Sluice is refused
            // before it is opened for writing, which writes to it (GRDB's pool creates and drops a
            // table on open so that the WAL persists), and stays as it was for whoever repairs it.
            let existing = FileManager.default.fileExists(atPath: path)
            let readOnlyChain = existing ? try Self.diagnose(path, busyTimeout: busyTimeout) : nil
            try Self.createPrivately(path)
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrate(pool)
            chain = NIOLockedValueBox(try readOnlyChain ?? Self.loadChain(pool))
        } catch let error as StoreError {
            throw error
        } catch {
            throw Self.storeError(error, path: path, doing: "open")
        }
    }

    /// Bytes of heap SQLite holds in this process: every connection's page cache, its prepared
    /// statements and schema.
    public static var memoryInUse: Int64 { sqlite3_memory_used() }

    /// Creates the database file, if there is none, readable and writable by its owner only:
    /// it holds every subject's score and notes. SQLite creates the `-wal` and `-shm` files
    /// with the database file's mode, so they are 0600 too. An existing file keeps its mode.
    static func createPrivately(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd >= 0 {
            close(fd)
        } else if errno != EEXIST {
            throw StoreError("reputation store \(path): could not create the file: \(String(cString: strerror(errno)))")
        }
    }

    /// Reads an existing database without writing to it: its migrations (refusing a newer
    /// Sluice's), its chain heads (every score row and the events after them: what a start reads
    /// of the large tables) and its tiers and baselines. Returns the chain heads, or nil when the
    /// file holds no schema yet.
    ///
    /// - Throws: SQLite's complaint (not a database, malformed) or ``StoreError``.
    static func diagnose(_ path: String, busyTimeout: Double) throws -> Chain? {
        var configuration = GRDB.Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(busyTimeout)
        configuration.label = "sluice.store.check"
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        defer { try? queue.close() }
        let tables = try queue.read { db in
            try Set(String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'"))
        }
        guard tables.contains("grdb_migrations") else { return nil }
        let applied = try queue.read { db in try Set(String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations")) }
        if let unknown = applied.subtracting(StoreMigrations.all.map(\.identifier)).sorted().first {
            throw StoreError("the database was upgraded by a newer Sluice (it has migration \(unknown), which this version does not know)")
        }
        try queue.read { db in
            for table in ["subject_tiers", "subject_baselines"] where tables.contains(table) {
                _ = try Row.fetchCursor(db, sql: "SELECT * FROM \(table)").reduce(0) { count, _ in count + 1 }
            }
        }
        guard tables.contains("reputation_scores"), tables.contains("reputation_events"), tables.contains("reputation_meta") else { return nil }
        return try loadChain(queue)
    }

    /// The chain heads: each stored score's newest event, then the events after the scores.
    static func loadChain(_ reader: some DatabaseReader) throws -> Chain {
        try reader.read { db in
            var chain = Chain()
            let scores = try Row.fetchCursor(db, sql: "SELECT subject_key, last_event_id FROM reputation_scores WHERE last_event_id > 0")
            while let row = try scores.next() { chain.heads[row[0]] = row[1] }
            let events = try Row.fetchCursor(db, sql: """
                SELECT subject_key, id FROM reputation_events
                WHERE id > coalesce((SELECT value FROM reputation_meta WHERE key = 'records_through_event_id'), 0) ORDER BY id
                """)
            while let row = try events.next() { chain.heads[row[0]] = row[1] }
            return chain
        }
    }

    static func migrate(_ pool: DatabasePool) throws {
        var migrator = DatabaseMigrator()
        for migration in StoreMigrations.all {
            let sql = migration.sql(for: .sqlite)
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
                let rows = try Row.fetchCursor(db, sql: "SELECT tenant, subject, score, updated_ns, pinned, events FROM reputation_scores ORDER BY subject_key")
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

    public func eventsAfterRecords() throws(StoreError) -> [ReputationEvent] {
        do {
            return try pool.read { db in
                try Row.fetchAll(db, sql: """
                    SELECT tenant, subject, kind, weight, at_ns, note FROM reputation_events
                    WHERE id > coalesce((SELECT value FROM reputation_meta WHERE key = 'records_through_event_id'), 0)
                    ORDER BY id
                    """).map { row in
                    ReputationEvent(tenant: row[0], subject: row[1], kind: row[2], weight: row[3], at: row[4], note: row[5])
                }
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "read events to replay")
        }
    }

    public func commit(_ batch: StoreBatch) throws(StoreError) {
        guard !batch.isEmpty else { return }
        // New chain heads are kept aside until the transaction commits.
        var heads: [Int64: Int64] = [:]
        var nextID: Int64 = 1
        let known = chain.withLockedValue { $0.heads }
        do {
            try pool.write { db in
                // Read inside the transaction (an O(log n) lookup): right even if something else
                // wrote to the file.
                nextID = (try Int64.fetchOne(db, sql: "SELECT max(id) FROM reputation_events") ?? 0) + 1
                if !batch.events.isEmpty {
                    let insert = try db.cachedStatement(sql: """
                        INSERT INTO reputation_events (id, subject_key, previous_id, tenant, subject, kind, weight, at_ns, note)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """)
                    // Bound through SQLite's own calls: GRDB's StatementArguments cost an array
                    // and a boxed value per column, which halved the rate at which events land.
                    let handle = insert.sqliteStatement
                    for event in batch.events {
                        let key = Self.subjectKey(tenant: event.tenant, subject: event.subject)
                        let previous = heads[key] ?? known[key] ?? 0
                        sqlite3_reset(handle)
                        sqlite3_bind_int64(handle, 1, nextID)
                        sqlite3_bind_int64(handle, 2, key)
                        sqlite3_bind_int64(handle, 3, previous)
                        Self.bind(event.tenant, to: handle, at: 4)
                        Self.bind(event.subject, to: handle, at: 5)
                        Self.bind(event.kind, to: handle, at: 6)
                        sqlite3_bind_double(handle, 7, event.weight)
                        sqlite3_bind_int64(handle, 8, event.at)
                        Self.bind(event.note, to: handle, at: 9)
                        let code = sqlite3_step(handle)
                        guard code == SQLITE_DONE else {
                            throw DatabaseError(resultCode: ResultCode(rawValue: code),
                                                message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
                        }
                        heads[key] = nextID
                        nextID += 1
                    }
                    sqlite3_reset(handle)
                    sqlite3_clear_bindings(handle)
                }
                if !batch.records.isEmpty {
                    let upsert = try db.cachedStatement(sql: """
                        INSERT OR REPLACE INTO reputation_scores (subject_key, tenant, subject, score, updated_ns, pinned, events, last_event_id)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """)
                    let delete = try db.cachedStatement(sql: "DELETE FROM reputation_scores WHERE subject_key = ?")
                    let upsertHandle = upsert.sqliteStatement, deleteHandle = delete.sqliteStatement
                    for (subject, change) in batch.records {
                        let key = Int64(bitPattern: subject.low)
                        let handle: OpaquePointer?
                        switch change {
                        case .upsert(let record):
                            handle = upsertHandle
                            sqlite3_reset(handle)
                            sqlite3_bind_int64(handle, 1, key)
                            Self.bind(record.tenant, to: handle, at: 2)
                            Self.bind(record.subject, to: handle, at: 3)
                            sqlite3_bind_double(handle, 4, record.score)
                            sqlite3_bind_int64(handle, 5, record.updatedAt)
                            sqlite3_bind_int64(handle, 6, record.pinned ? 1 : 0)
                            sqlite3_bind_int64(handle, 7, Int64(clamping: record.events))
                            sqlite3_bind_int64(handle, 8, heads[key] ?? known[key] ?? 0)
                        case .delete:
                            handle = deleteHandle
                            sqlite3_reset(handle)
                            sqlite3_bind_int64(handle, 1, key)
                        }
                        let code = sqlite3_step(handle)
                        guard code == SQLITE_DONE else {
                            throw DatabaseError(resultCode: ResultCode(rawValue: code),
                                                message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
                        }
                    }
                    sqlite3_reset(upsertHandle)
                    sqlite3_clear_bindings(upsertHandle)
                    sqlite3_reset(deleteHandle)
                }
                if batch.recordsComplete {
                    try db.execute(sql: """
                        INSERT OR REPLACE INTO reputation_meta (key, value)
                        VALUES ('records_through_event_id', (SELECT coalesce(max(id), 0) FROM reputation_events))
                        """)
                }
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "commit")
        }
        chain.withLockedValue { chain in
            chain.heads.merge(heads) { _, new in new }
            // A forgotten subject starts a new chain with its next event.
            for (subject, change) in batch.records {
                if case .delete = change { chain.heads[Int64(bitPattern: subject.low)] = nil }
            }
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
            if let base = bytes.baseAddress, bytes.count > 0 {
                _ = sqlite3_bind_text(statement, index, UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self),
                                      Int32(bytes.count), Self.transient)
            } else {
                // A null pointer would bind NULL, which the NOT NULL columns refuse.
                _ = sqlite3_bind_text(statement, index, "", 0, Self.transient)
            }
        }
    }

    static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    public func recentEvents(tenant: String, subject: String, limit: Int) throws(StoreError) -> [ReputationEvent] {
        // A walk back along the subject's chain, one primary-key lookup per event; it ends at
        // the first event of the chain or at one that retention has deleted.
        let key = Self.subjectKey(tenant: tenant, subject: subject)
        guard var id = chain.withLockedValue({ $0.heads[key] }) else { return [] }
        var found: [ReputationEvent] = []
        do {
            try pool.read { db in
                let select = try db.cachedStatement(sql: """
                    SELECT subject_key, previous_id, tenant, subject, kind, weight, at_ns, note FROM reputation_events WHERE id = ?
                    """)
                while id > 0, found.count < limit {
                    guard let row = try Row.fetchOne(select, arguments: [id]), (row[0] as Int64) == key else { break }
                    if (row[2] as String) == tenant, (row[3] as String) == subject {
                        found.append(ReputationEvent(tenant: tenant, subject: subject, kind: row[4], weight: row[5], at: row[6], note: row[7]))
                    }
                    id = row[1]
                }
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "read events")
        }
        return found
    }

    public func expireEvents(before: Int64, keepAtMost: Int, atMost limit: Int) throws(StoreError) -> Int {
        do {
            return try pool.write { db in
                // Never past the replay mark: those events are not in the scores yet.
                let mark = try Int64.fetchOne(db, sql: "SELECT value FROM reputation_meta WHERE key = 'records_through_event_id'") ?? 0
                guard let oldest = try Int64.fetchOne(db, sql: "SELECT min(id) FROM reputation_events"),
                      let newest = try Int64.fetchOne(db, sql: "SELECT max(id) FROM reputation_events") else { return 0 }
                // By count: ids only grow and are deleted from the oldest, so they are dense.
                let byCount = min(mark, newest - Int64(keepAtMost), oldest + Int64(limit) - 1)
                try db.execute(sql: "DELETE FROM reputation_events WHERE id <= ?", arguments: [byCount])
                var deleted = db.changesCount
                // By age, oldest ids first: events arrive roughly in time order, and one that
                // arrived late with an old time stays until the events before it go.
                if deleted < limit {
                    try db.execute(sql: """
                        DELETE FROM reputation_events WHERE id IN
                          (SELECT id FROM reputation_events WHERE id <= ? ORDER BY id LIMIT ?) AND at_ns < ?
                        """, arguments: [mark, limit - deleted, before])
                    deleted += db.changesCount
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

    public func probe() throws(StoreError) {
        do {
            _ = try pool.write { db in try Int.fetchOne(db, sql: "SELECT 1") }
        } catch {
            throw Self.storeError(error, path: path, doing: "reach the database")
        }
    }

    // MARK: tiers

    /// Every stored tier assignment.
    public func loadTiers() throws(StoreError) -> [TierAssignment] {
        do {
            return try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT tenant, subject, tier, assigned_ns FROM subject_tiers ORDER BY subject_key").map { row in
                    TierAssignment(tenant: row[0], subject: row[1], tier: row[2], assignedAt: row[3])
                }
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "read tiers")
        }
    }

    /// Stores `assignment` (replacing the subject's previous one), committed when this returns.
    public func saveTier(_ assignment: TierAssignment) throws(StoreError) {
        do {
            try pool.write { db in
                try db.execute(sql: """
                    INSERT OR REPLACE INTO subject_tiers (subject_key, tenant, subject, tier, assigned_ns) VALUES (?, ?, ?, ?, ?)
                    """, arguments: [Self.subjectKey(tenant: assignment.tenant, subject: assignment.subject), assignment.tenant,
                                     assignment.subject, assignment.tier, assignment.assignedAt])
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "save a tier")
        }
    }

    /// Deletes the subject's tier, committed when this returns.
    public func removeTier(tenant: String, subject: String) throws(StoreError) {
        do {
            try pool.write { db in
                try db.execute(sql: "DELETE FROM subject_tiers WHERE subject_key = ?", arguments: [Self.subjectKey(tenant: tenant, subject: subject)])
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "remove a tier")
        }
    }

    // MARK: baselines

    /// Every stored baseline; rows that do not decode (a blob of the wrong size, negative
    /// counts) are skipped and counted, never trusted.
    public func loadBaselines() throws(StoreError) -> (baselines: [(Fingerprint, Baseline)], skipped: Int) {
        do {
            return try pool.read { db in
                var baselines: [(Fingerprint, Baseline)] = []
                var skipped = 0
                let rows = try Row.fetchCursor(db, sql: """
                    SELECT subject_high, subject_low, window_start_ns, last_seen_ns, samples, normal, window_hits FROM subject_baselines
                    """)
                while let row = try rows.next() {
                    let high: Int64 = row[0], low: Int64 = row[1], windowStart: Int64 = row[2], lastSeen: Int64 = row[3]
                    guard let blob = row[5] as Data?,
                          let decoded = BaselineRow.decode(high: high, low: low, windowStart: windowStart, lastSeen: lastSeen,
                                                           samples: row[4], hits: row[6], blob: blob) else {
                        skipped += 1
                        continue
                    }
                    baselines.append(decoded)
                }
                return (baselines, skipped)
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "read baselines")
        }
    }

    /// Replaces every stored baseline with `baselines`, in one transaction.
    public func saveBaselines(_ baselines: [(Fingerprint, Baseline)]) throws(StoreError) {
        do {
            try pool.write { db in
                try db.execute(sql: "DELETE FROM subject_baselines")
                let statement = try db.makeStatement(sql: """
                    INSERT INTO subject_baselines (subject_high, subject_low, window_start_ns, last_seen_ns, samples, normal, window_hits)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """)
                for (subject, baseline) in baselines {
                    let blob = Data(BaselineRow.blob(baseline.normal))
                    try statement.execute(arguments: [Int64(bitPattern: subject.high), Int64(bitPattern: subject.low), baseline.windowStart,
                                                      baseline.lastSeen, Int64(baseline.samples), blob,
                                                      Int64(clamping: baseline.current)])
                }
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "save baselines")
        }
    }
}

// MARK: operators' tools

extension SQLiteReputationStore {
    public func counts() throws(StoreError) -> StoreCounts {
        do {
            return try pool.read { db in
                var counts = StoreCounts()
                counts.events = try Int.fetchOne(db, sql: "SELECT count(*) FROM reputation_events") ?? 0
                counts.scores = try Int.fetchOne(db, sql: "SELECT count(*) FROM reputation_scores") ?? 0
                counts.tiers = try Int.fetchOne(db, sql: "SELECT count(*) FROM subject_tiers") ?? 0
                counts.baselines = try Int.fetchOne(db, sql: "SELECT count(*) FROM subject_baselines") ?? 0
                counts.newestEventID = try Int64.fetchOne(db, sql: "SELECT coalesce(max(id), 0) FROM reputation_events") ?? 0
                return counts
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "count rows")
        }
    }

    public func storedEvents(after id: Int64, limit: Int) throws(StoreError) -> [StoredEvent] {
        do {
            return try pool.read { db in
                try Row.fetchAll(db, sql: """
                    SELECT id, tenant, subject, kind, weight, at_ns, note FROM reputation_events WHERE id > ? ORDER BY id LIMIT ?
                    """, arguments: [id, max(1, limit)]).map { row in
                    StoredEvent(id: row[0], origin: 0,
                                value: ReputationEvent(tenant: row[1], subject: row[2], kind: row[3], weight: row[4], at: row[5], note: row[6]))
                }
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "read events")
        }
    }

    public func replayMark() throws(StoreError) -> Int64 {
        do {
            return try pool.read { db in
                try Int64.fetchOne(db, sql: "SELECT value FROM reputation_meta WHERE key = 'records_through_event_id'") ?? 0
            }
        } catch {
            throw Self.storeError(error, path: path, doing: "read the replay mark")
        }
    }
}
