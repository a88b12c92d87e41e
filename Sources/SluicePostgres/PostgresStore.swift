import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import SluiceCore
import SluiceIntelligence
import SluiceStore

/// The daemon's durable state in PostgreSQL, shared by every daemon that names the same database:
/// the same protocols as the embedded SQLite store, the same numbered migrations (translated by
/// ``SQLDialect``).
///
/// Every method blocks its caller until PostgreSQL answered or ``timeout`` passed: the store is
/// called from background queues only (the write-behind, operators' requests, snapshots), never
/// from an event loop or the check path. One connection, opened on first use and again after it
/// failed, carries one operation at a time.
///
/// Across daemons:
/// - event ids are taken under a transaction-scoped advisory lock, so they are in commit order
///   (a daemon reading new events by id misses none);
/// - migrations are applied under another advisory lock, so daemons starting together migrate
///   once;
/// - a subject's recent events are read by an index of (subject_key, id): no daemon knows every
///   event's chain, so `previous_id` is 0 here;
/// - text bound for PostgreSQL has any NUL replaced by U+FFFD (PostgreSQL's text cannot hold
///   NUL; one such note must not fail its whole group commit, again and again).
public final class PostgresStore: SharedStore, @unchecked Sendable {
    public let endpoint: PostgresEndpoint
    /// How long one operation (connecting included) may take before it fails.
    public let timeout: TimeAmount
    let group: MultiThreadedEventLoopGroup
    let logger: Logger
    /// The open connection, if any; only used under `serial`.
    var connection: PostgresConnection?
    let serial = NIOLock()
    let tlsContext: NIOSSLContext?
    /// Counts connections made, for postgres-nio's ids.
    var connections = 0
    /// This daemon's mark on the events and changes it writes.
    public let origin = Int64.random(in: 1 ... .max)
    /// Stored baselines idle this long (ns) before the newest one saved are deleted.
    public let baselineIdleAfter: Int64

    /// Advisory lock keys (64-bit, arbitrary, fixed): "SLUCMIGR" and "SLUCEVNT".
    static let migrationLock: Int64 = 0x534C_5543_4D49_4752
    static let eventLock: Int64 = 0x534C_5543_4556_4E54
    /// Rows read per query when reading events by id.
    static let page = 10_000
    /// And "SLUCCHNG", for the ids of shared changes.
    static let changeLock: Int64 = 0x534C_5543_4348_4E47

    /// Connects to `endpoint` and applies any pending migration (under a lock, so daemons
    /// starting together migrate once). Throws a ``StoreError`` in words: the server, and what
    /// it said (no such database, wrong password, a schema from a newer Sluice…).
    public init(_ endpoint: PostgresEndpoint, timeout: TimeAmount = .seconds(5), baselineIdleAfter: Int64 = 7 * 86_400_000_000_000,
                logger: Logger = Logger(label: "sluiced.store.postgres")) throws(StoreError) {
        self.endpoint = endpoint
        self.baselineIdleAfter = baselineIdleAfter
        self.timeout = timeout
        self.logger = logger
        do {
            tlsContext = try Self.makeTLSContext(endpoint)
        } catch {
            throw StoreError("store \(endpoint): TLS: \(error)")
        }
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            try migrate()
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Closes the connection and stops the store's thread.
    public func close() {
        serial.withLock {
            // Not waited for: a server that answers nothing would hold the close forever. The
            // group's shutdown closes the socket in any case.
            if let connection { Self.abandon(connection) }
            connection = nil
        }
        try? group.syncShutdownGracefully()
    }

    static func makeTLSContext(_ endpoint: PostgresEndpoint) throws -> NIOSSLContext? {
        guard case .tcp = endpoint.address, endpoint.tls != .disable else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        if endpoint.tls == .verifyFull {
            if let root = endpoint.rootCertificate { configuration.trustRoots = .file(root) }
            configuration.certificateVerification = .fullVerification
        } else {
            // prefer and require encrypt without checking whom to (libpq's meaning).
            configuration.certificateVerification = .none
        }
        return try NIOSSLContext(configuration: configuration)
    }

    var configuration: PostgresConnection.Configuration {
        var configuration: PostgresConnection.Configuration
        switch endpoint.address {
        case .tcp(let host, let port):
            let tls: PostgresConnection.Configuration.TLS = switch (endpoint.tls, tlsContext) {
            case (.disable, _), (_, nil): .disable
            case (.prefer, let context?): .prefer(context)
            case (_, let context?): .require(context)
            }
            configuration = .init(host: host, port: port, username: endpoint.user, password: endpoint.password, database: endpoint.database, tls: tls)
        case .unix(let path):
            configuration = .init(unixSocketPath: path, username: endpoint.user, password: endpoint.password, database: endpoint.database)
        }
        configuration.options.connectTimeout = timeout
        return configuration
    }

    // MARK: running operations

    /// Runs `body` on the connection (opened if needed), one operation at a time. A failure
    /// drops the connection (the next operation opens a new one) and becomes a ``StoreError``
    /// naming what was being done.
    @discardableResult
    func run<T>(_ doing: String, _ body: (PostgresConnection) throws -> T) throws(StoreError) -> T {
        do {
            return try serial.withLock { () throws -> T in
                let connection = try self.connection ?? connect()
                self.connection = connection
                do {
                    return try body(connection)
                } catch {
                    // In a transaction, or on a broken connection: start clean next time (the
                    // close is not waited for: a frozen server would hold it forever).
                    Self.abandon(connection)
                    self.connection = nil
                    throw error
                }
            }
        } catch {
            throw StoreError("store \(endpoint): could not \(doing): \(Self.describe(error))")
        }
    }

    func connect() throws -> PostgresConnection {
        connections += 1
        return try wait(PostgresConnection.connect(on: group.next(), configuration: configuration, id: connections, logger: logger), closing: nil)
    }

    /// The future's value, or a timeout error after ``timeout`` (and the connection closed, which
    /// fails whatever it was doing). The wait ends at the timeout even if the future never
    /// completes (a write into a connection that died may never be answered).
    func wait<T: Sendable>(_ future: EventLoopFuture<T>, closing connection: PostgresConnection?) throws -> T {
        let outcome = future.eventLoop.makePromise(of: T.self)
        let timer = future.eventLoop.scheduleTask(in: timeout) {
            outcome.fail(TimedOut(after: self.timeout))
            if let connection { Self.abandon(connection) }
        }
        future.whenComplete { result in
            timer.cancel()
            outcome.completeWith(result)
        }
        return try outcome.futureResult.wait()
    }

    /// Closes `connection` without waiting (a frozen server could hold the wait forever), and
    /// keeps it alive until it is closed (postgres-nio requires a connection closed before it
    /// goes).
    static func abandon(_ connection: PostgresConnection) {
        connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    struct TimedOut: Error, CustomStringConvertible {
        let after: TimeAmount
        var description: String { "no answer within \(Double(after.nanoseconds) / 1e9) s" }
    }

    /// One statement; its rows.
    @discardableResult
    func query(_ connection: PostgresConnection, _ query: PostgresQuery) throws -> PostgresQueryResult {
        try wait(connection.query(query, logger: logger), closing: connection)
    }

    /// `body` in one transaction: committed if it returns, rolled back (by closing the
    /// connection, in ``run(_:_:)``) if it throws.
    func transaction<T>(_ connection: PostgresConnection, _ body: () throws -> T) throws -> T {
        try query(connection, "BEGIN")
        let value = try body()
        try query(connection, "COMMIT")
        return value
    }

    /// What went wrong, in words: PostgreSQL's own message and SQLSTATE when it answered, the
    /// connection's failure otherwise. (postgres-nio's description of its errors is generic on
    /// purpose, so that queries never leak into logs; this names no query either.)
    static func describe(_ error: any Error) -> String {
        if let error = error as? StoreError { return error.message }
        if let error = error as? PSQLError {
            if let info = error.serverInfo {
                let message = info[.message] ?? "an error"
                let state = info[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                let detail = info[.detail].map { ": \($0)" } ?? ""
                return "PostgreSQL said: \(message)\(detail)\(state)"
            }
            if let underlying = error.underlying { return "\(error.code): \(underlying)" }
            return "\(error.code)"
        }
        return "\(error)"
    }

    /// PostgreSQL's text holds no NUL.
    static func text(_ value: String) -> String {
        value.utf8.contains(0) ? value.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : value
    }

    // MARK: migrations

    /// The migrations applied to the database, in order.
    public func appliedMigrations() throws(StoreError) -> [String] {
        try run("read migrations") { connection in
            try query(connection, "SELECT identifier FROM sluice_migrations ORDER BY identifier").map { try $0.decode(String.self) }
        }
    }

    func migrate() throws(StoreError) {
        try run("apply migrations") { connection in
            try transaction(connection) {
                try query(connection, "SELECT pg_advisory_xact_lock(\(Self.migrationLock))")
                try query(connection, """
                    CREATE TABLE IF NOT EXISTS sluice_migrations (
                        identifier TEXT PRIMARY KEY,
                        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                    )
                    """)
                let applied = Set(try query(connection, "SELECT identifier FROM sluice_migrations").map { try $0.decode(String.self) })
                if let unknown = applied.subtracting(StoreMigrations.all.map(\.identifier)).sorted().first {
                    throw StoreError("the database was upgraded by a newer Sluice (it has migration \(unknown), which this version does not know)")
                }
                for migration in StoreMigrations.all where !applied.contains(migration.identifier) {
                    for statement in Self.statements(migration.sql(for: .postgres)) {
                        try query(connection, PostgresQuery(unsafeSQL: statement))
                    }
                    try query(connection, "INSERT INTO sluice_migrations (identifier) VALUES (\(migration.identifier))")
                    logger.info("store migration applied", metadata: ["store.migration": "\(migration.identifier)"])
                }
            }
        }
    }

    /// The statements of a migration: its comment lines dropped, split at each `;` (the
    /// migrations hold no string with one).
    static func statements(_ sql: String) -> [String] {
        sql.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("--") }.joined(separator: "\n")
            .split(separator: ";").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
    }

    // MARK: reputation

    public func loadRecords() throws(StoreError) -> [ReputationRecord] {
        try run("read scores") { connection in try loadRecords(on: connection) }
    }

    func loadRecords(on connection: PostgresConnection) throws -> [ReputationRecord] {
        try query(connection, "SELECT tenant, subject, score, updated_ns, pinned, events FROM reputation_scores ORDER BY subject_key").map { row in
            let (tenant, subject, score, updated, pinned, events) = try row.decode((String, String, Double, Int64, Int64, Int64).self)
            // The schema's CHECKs keep these sane; a row edited by hand is clamped, not trusted.
            return ReputationRecord(tenant: tenant, subject: subject, score: ReputationModel.clamp(score), updatedAt: updated,
                                    pinned: pinned != 0, events: UInt64(max(0, events)))
        }
    }

    public func eventsAfterRecords() throws(StoreError) -> [ReputationEvent] {
        try run("read events to replay") { connection in try query(connection, Self.replayQuery(through: nil)).map { try Self.event($0).value } }
    }

    /// Each subject's events after those its score row reflects (after its forgetting when it
    /// has no row), up to `through` (all when nil), in commit order.
    static func replayQuery(through: Int64?) -> PostgresQuery {
        let bound = through.map { " AND e.id <= \($0)" } ?? ""
        return PostgresQuery(unsafeSQL: """
            SELECT e.id, e.origin, e.tenant, e.subject, e.kind, e.weight, e.at_ns, e.note FROM reputation_events e
            LEFT JOIN reputation_scores s ON s.subject_key = e.subject_key
            LEFT JOIN reputation_forgotten f ON f.subject_key = e.subject_key
            WHERE e.id > coalesce(s.through_event_id, f.through_event_id, 0)\(bound)
            ORDER BY e.id
            """)
    }

    /// The columns id, origin, tenant, subject, kind, weight, at_ns, note.
    static func event(_ row: PostgresRow) throws -> StoredEvent {
        let (id, origin, tenant, subject, kind, weight, at, note) = try row.decode((Int64, Int64, String, String, String, Double, Int64, String).self)
        return StoredEvent(id: id, origin: origin, value: ReputationEvent(tenant: tenant, subject: subject, kind: kind, weight: weight, at: at, note: note))
    }

    public func commit(_ batch: StoreBatch) throws(StoreError) {
        guard !batch.isEmpty else { return }
        try run("commit") { connection in
            try transaction(connection) {
                let through = try commitEvents(batch.events, on: connection, after: nil).through
                try commitRows(batch.records, complete: batch.recordsComplete, through: through, on: connection)
            }
        }
    }

    /// Writes `events` in the open transaction, under the events' lock (so ids follow commit order
    /// across daemons). With `cursor`, first reads the other daemons' events after it, which all
    /// come before these. Returns them, and the id through which the caller has now seen every event.
    func commitEvents(_ events: [ReputationEvent], on connection: PostgresConnection, after cursor: Int64?) throws -> (remote: [StoredEvent], through: Int64) {
        if !events.isEmpty || cursor != nil {
            // Ids in commit order across daemons: taken under a lock held to the commit.
            try query(connection, "SELECT pg_advisory_xact_lock(\(Self.eventLock))")
        }
        var remote: [StoredEvent] = []
        var through = cursor ?? 0
        if cursor != nil {
            // A page at a time, each `ORDER BY id LIMIT`: so the plan is the primary key's index
            // whatever the statistics say (without a LIMIT, a table analyzed before its last
            // million rows was read whole, 100 ms under this lock, on every commit).
            while true {
                let page = try query(connection, """
                    SELECT id, origin, tenant, subject, kind, weight, at_ns, note FROM reputation_events
                    WHERE id > \(through) ORDER BY id LIMIT \(Int64(Self.page))
                    """).map(Self.event)
                through = max(through, page.last?.id ?? through)
                remote += page.lazy.filter { $0.origin != self.origin }
                if page.count < Self.page { break }
            }
        }
        if !events.isEmpty {
            let first = try query(connection, "SELECT coalesce(max(id), 0) + 1 FROM reputation_events").first?.decode(Int64.self) ?? 1
            let ids = (0..<Int64(events.count)).map { first + $0 }
            let keys = events.map { Self.subjectKey(tenant: $0.tenant, subject: $0.subject) }
            try query(connection, """
                INSERT INTO reputation_events (id, subject_key, previous_id, tenant, subject, kind, weight, at_ns, note, origin)
                SELECT id, subject_key, 0, tenant, subject, kind, weight, at_ns, note, \(origin)
                FROM unnest(\(ids)::bigint[], \(keys)::bigint[], \(events.map { Self.text($0.tenant) })::text[],
                            \(events.map { Self.text($0.subject) })::text[], \(events.map { Self.text($0.kind) })::text[],
                            \(events.map(\.weight))::float8[], \(events.map(\.at))::bigint[], \(events.map { Self.text($0.note) })::text[])
                     AS e(id, subject_key, tenant, subject, kind, weight, at_ns, note)
                """)
            through = ids.last ?? through
        } else if cursor == nil {
            through = try query(connection, "SELECT coalesce(max(id), 0) FROM reputation_events").first?.decode(Int64.self) ?? 0
        }
        return (remote, through)
    }

    /// Writes score rows (and deletions) that reflect every event of their subjects up to `through`,
    /// in the open transaction; with `complete`, moves the expiry mark there.
    func commitRows(_ records: [Fingerprint: StoreBatch.Change], complete: Bool, through: Int64, on connection: PostgresConnection) throws {
        var upserts: [(key: Int64, record: ReputationRecord)] = []
        var deletions: [Int64] = []
        for (subject, change) in records {
            let key = Int64(bitPattern: subject.low)
            switch change {
            case .upsert(let record): upserts.append((key, record))
            case .delete: deletions.append(key)
            }
        }
        // In key order: daemons writing overlapping rows at once then lock them in the same
        // order, and never deadlock.
        upserts.sort { $0.key < $1.key }
        deletions.sort()
        if !upserts.isEmpty {
            try query(connection, """
                INSERT INTO reputation_scores (subject_key, tenant, subject, score, updated_ns, pinned, events, last_event_id, through_event_id)
                SELECT subject_key, tenant, subject, score, updated_ns, pinned, events, 0, \(through)
                FROM unnest(\(upserts.map(\.key))::bigint[], \(upserts.map { Self.text($0.record.tenant) })::text[],
                            \(upserts.map { Self.text($0.record.subject) })::text[], \(upserts.map(\.record.score))::float8[],
                            \(upserts.map(\.record.updatedAt))::bigint[], \(upserts.map { Int64($0.record.pinned ? 1 : 0) })::bigint[],
                            \(upserts.map { Int64(clamping: $0.record.events) })::bigint[])
                     WITH ORDINALITY AS r(subject_key, tenant, subject, score, updated_ns, pinned, events, position)
                ORDER BY position
                ON CONFLICT (subject_key) DO UPDATE SET tenant = excluded.tenant, subject = excluded.subject, score = excluded.score,
                    updated_ns = excluded.updated_ns, pinned = excluded.pinned, events = excluded.events,
                    through_event_id = excluded.through_event_id
                """)
        }
        if !deletions.isEmpty {
            try query(connection, """
                DELETE FROM reputation_scores WHERE subject_key IN
                  (SELECT subject_key FROM reputation_scores WHERE subject_key = ANY(\(deletions)::bigint[]) ORDER BY subject_key FOR UPDATE)
                """)
            // A forgotten subject's recent events start afresh with its next one.
            try query(connection, """
                INSERT INTO reputation_forgotten (subject_key, through_event_id)
                SELECT k, \(through) FROM unnest(\(deletions)::bigint[]) WITH ORDINALITY AS f(k, position) ORDER BY position
                ON CONFLICT (subject_key) DO UPDATE SET through_event_id = excluded.through_event_id
                """)
        }
        if complete {
            // How far events may be expired (see expireEvents): the rows just written reflect them.
            try query(connection, """
                INSERT INTO reputation_meta (key, value) VALUES ('records_through_event_id', \(through))
                ON CONFLICT (key) DO UPDATE SET value = greatest(reputation_meta.value, excluded.value)
                """)
        }
    }

    /// The column `subject_key`: 64 bits of the subject's stable fingerprint (as in SQLite).
    static func subjectKey(tenant: String, subject: String) -> Int64 {
        Int64(bitPattern: Fingerprint.of(tenant: tenant, key: subject).low)
    }

    public func recentEvents(tenant: String, subject: String, limit: Int) throws(StoreError) -> [ReputationEvent] {
        let key = Self.subjectKey(tenant: tenant, subject: subject)
        return try run("read events") { connection in
            try query(connection, """
                SELECT id, origin, tenant, subject, kind, weight, at_ns, note FROM reputation_events
                WHERE subject_key = \(key) AND tenant = \(Self.text(tenant)) AND subject = \(Self.text(subject))
                  AND id > coalesce((SELECT through_event_id FROM reputation_forgotten WHERE subject_key = \(key)), 0)
                ORDER BY id DESC LIMIT \(Int64(max(0, limit)))
                """).map { try Self.event($0).value }
        }
    }

    public func expireEvents(before: Int64, keepAtMost: Int, atMost limit: Int) throws(StoreError) -> Int {
        try run("expire events") { connection in
            try transaction(connection) {
                // Never past the replay mark: those events are not in the scores yet.
                let mark = try query(connection, "SELECT value FROM reputation_meta WHERE key = 'records_through_event_id'").first?.decode(Int64.self) ?? 0
                guard let bounds = try query(connection, "SELECT min(id), max(id) FROM reputation_events").first,
                      let (oldest, newest) = try? bounds.decode((Int64, Int64).self) else { return 0 }
                // By count: ids only grow and are deleted from the oldest.
                let byCount = min(mark, newest &- Int64(clamping: keepAtMost), oldest &+ Int64(clamping: limit) &- 1)
                var deleted = try query(connection, "DELETE FROM reputation_events WHERE id <= \(byCount)").metadata.rows ?? 0
                // By age, oldest ids first (see the SQLite store).
                if deleted < limit {
                    deleted += try query(connection, """
                        DELETE FROM reputation_events WHERE id IN
                          (SELECT id FROM reputation_events WHERE id <= \(mark) ORDER BY id LIMIT \(Int64(limit - deleted))) AND at_ns < \(before)
                        """).metadata.rows ?? 0
                }
                return deleted
            }
        }
    }

    public func eventCount() throws(StoreError) -> Int {
        try run("count events") { connection in
            Int(try query(connection, "SELECT count(*) FROM reputation_events").first?.decode(Int64.self) ?? 0)
        }
    }

    public func probe() throws(StoreError) {
        try run("reach the database") { connection in try query(connection, "SELECT 1") }
    }

    /// Deletes every event, score and mark (benchmarks start from an empty database).
    public func emptyForBenchmark() throws(StoreError) {
        try run("empty the tables") { connection in
            try query(connection, "TRUNCATE reputation_events, reputation_scores, reputation_meta, reputation_forgotten, shared_changes, anomaly_responses")
        }
    }

    // MARK: tiers

    public func loadTiers() throws(StoreError) -> [TierAssignment] {
        try run("read tiers") { connection in try loadTiers(on: connection) }
    }

    func loadTiers(on connection: PostgresConnection) throws -> [TierAssignment] {
        try query(connection, "SELECT tenant, subject, tier, assigned_ns FROM subject_tiers ORDER BY subject_key").map { row in
            let (tenant, subject, tier, assigned) = try row.decode((String, String, String, Int64).self)
            return TierAssignment(tenant: tenant, subject: subject, tier: tier, assignedAt: assigned)
        }
    }

    /// Stores the assignment, and records the change for the other daemons, in one transaction.
    public func saveTier(_ assignment: TierAssignment) throws(StoreError) {
        try run("save a tier") { connection in
            try transaction(connection) {
                try query(connection, """
                    INSERT INTO subject_tiers (subject_key, tenant, subject, tier, assigned_ns)
                    VALUES (\(Self.subjectKey(tenant: assignment.tenant, subject: assignment.subject)), \(Self.text(assignment.tenant)),
                            \(Self.text(assignment.subject)), \(Self.text(assignment.tier)), \(assignment.assignedAt))
                    ON CONFLICT (subject_key) DO UPDATE SET tenant = excluded.tenant, subject = excluded.subject, tier = excluded.tier,
                        assigned_ns = excluded.assigned_ns
                    """)
                try record(.tier(assignment), at: assignment.assignedAt, on: connection)
            }
        }
    }

    /// Removes the assignment, and records the change for the other daemons, in one transaction.
    public func removeTier(tenant: String, subject: String) throws(StoreError) {
        try run("remove a tier") { connection in
            try transaction(connection) {
                try query(connection, "DELETE FROM subject_tiers WHERE subject_key = \(Self.subjectKey(tenant: tenant, subject: subject))")
                try record(.untier(tenant: tenant, subject: subject), at: Int64(Date().timeIntervalSince1970 * 1e9), on: connection)
            }
        }
    }

    // MARK: baselines

    public func loadBaselines() throws(StoreError) -> (baselines: [(Fingerprint, Baseline)], skipped: Int) {
        try run("read baselines") { connection in
            var baselines: [(Fingerprint, Baseline)] = []
            var skipped = 0
            let rows = try query(connection, """
                SELECT subject_high, subject_low, window_start_ns, last_seen_ns, samples, window_hits, normal FROM subject_baselines
                """)
            for row in rows {
                let (high, low, windowStart, lastSeen, samples, hits, blob) = try row.decode((Int64, Int64, Int64, Int64, Int64, Int64, ByteBuffer).self)
                guard let decoded = BaselineRow.decode(high: high, low: low, windowStart: windowStart, lastSeen: lastSeen, samples: samples,
                                                       hits: hits, blob: blob.readableBytesView) else {
                    skipped += 1
                    continue
                }
                baselines.append(decoded)
            }
            return (baselines, skipped)
        }
    }

    /// Writes these baselines over the stored ones of the same subjects, where they were seen
    /// more recently (several daemons learn the same subject from their own share of its
    /// traffic; the latest seen wins), and deletes rows of subjects idle for ``baselineIdleAfter``
    /// before the latest of these.
    public func saveBaselines(_ baselines: [(Fingerprint, Baseline)]) throws(StoreError) {
        try run("save baselines") { connection in
            try transaction(connection) {
                guard !baselines.isEmpty else { return }
                // In key order, as score rows are: daemons saving at once never deadlock.
                let baselines = baselines.sorted { (Int64(bitPattern: $0.0.high), Int64(bitPattern: $0.0.low)) < (Int64(bitPattern: $1.0.high), Int64(bitPattern: $1.0.low)) }
                let blobs = baselines.map { ByteBuffer(bytes: BaselineRow.blob($0.1.normal)) }
                try query(connection, """
                    INSERT INTO subject_baselines (subject_high, subject_low, window_start_ns, last_seen_ns, samples, normal, window_hits)
                    SELECT high, low, window_start, last_seen, samples, normal, hits
                    FROM unnest(\(baselines.map { Int64(bitPattern: $0.0.high) })::bigint[], \(baselines.map { Int64(bitPattern: $0.0.low) })::bigint[],
                                \(baselines.map(\.1.windowStart))::bigint[], \(baselines.map(\.1.lastSeen))::bigint[],
                                \(baselines.map { Int64($0.1.samples) })::bigint[], \(blobs)::bytea[],
                                \(baselines.map { Int64(clamping: $0.1.current) })::bigint[])
                         WITH ORDINALITY AS b(high, low, window_start, last_seen, samples, normal, hits, position)
                    ORDER BY position
                    ON CONFLICT (subject_high, subject_low) DO UPDATE SET window_start_ns = excluded.window_start_ns,
                        last_seen_ns = excluded.last_seen_ns, samples = excluded.samples, normal = excluded.normal, window_hits = excluded.window_hits
                    WHERE excluded.last_seen_ns >= subject_baselines.last_seen_ns
                    """)
                let latest = baselines.map(\.1.lastSeen).max() ?? 0
                try query(connection, "DELETE FROM subject_baselines WHERE last_seen_ns < \(latest &- baselineIdleAfter)")
            }
        }
    }
}
