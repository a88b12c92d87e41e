import Foundation
import PostgresNIO
import SluiceCore
import SluiceIntelligence
import SluiceStore

/// What several daemons on one database share beyond the tables: each reads the others' events
/// and changes by id, in commit order.
extension PostgresStore {
    /// How long shared changes are kept (ns): a daemon behind by more reloads tiers and responses.
    public static let changesKept: Int64 = 3_600_000_000_000

    public func loadShared(now: Int64) throws(StoreError) -> SharedSnapshot {
        try run("read the shared state") { connection in
            // One snapshot: the rows, the events to replay onto them and the cursors agree.
            try query(connection, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            let events = try query(connection, "SELECT coalesce(max(id), 0) FROM reputation_events").first?.decode(Int64.self) ?? 0
            let changes = try query(connection, "SELECT coalesce(max(id), 0) FROM shared_changes").first?.decode(Int64.self) ?? 0
            let records = try loadRecords(on: connection)
            let replay = try query(connection, Self.replayQuery(through: events)).map { try Self.event($0).value }
            let tiers = try loadTiers(on: connection)
            let responses = try loadResponses(on: connection, now: now)
            try query(connection, "COMMIT")
            return SharedSnapshot(records: records, replay: replay, tiers: tiers, responses: responses,
                                  cursor: SharedCursor(events: events, changes: changes))
        }
    }

    public func events(after id: Int64, limit: Int) throws(StoreError) -> [StoredEvent] {
        try run("read new events") { connection in
            try query(connection, """
                SELECT id, origin, tenant, subject, kind, weight, at_ns, note FROM reputation_events
                WHERE id > \(id) ORDER BY id LIMIT \(Int64(max(1, limit)))
                """).map(Self.event)
        }
    }

    public func changes(after id: Int64, limit: Int) throws(StoreError) -> (changes: [StoredChange], complete: Bool) {
        try run("read new changes") { connection in
            let rows = try query(connection, """
                SELECT id, origin, at_ns, kind, tenant, subject, tier, key_high, key_low, response_kind, block, factor, until_ns
                FROM shared_changes WHERE id > \(id) ORDER BY id LIMIT \(Int64(max(1, limit)))
                """)
            var changes: [StoredChange] = []
            var firstID: Int64?
            for row in rows {
                let (changeID, origin, at, kind, tenant, subject, tier, high, low, responseKind, block, factor, until) =
                    try row.decode((Int64, Int64, Int64, String, String, String, String, Int64, Int64, Int32, Bool, Double, Int64).self)
                if firstID == nil { firstID = changeID }
                switch kind {
                case "tier" where tier.isEmpty:
                    changes.append(StoredChange(id: changeID, origin: origin, value: .untier(tenant: tenant, subject: subject)))
                case "tier":
                    changes.append(StoredChange(id: changeID, origin: origin,
                                                value: .tier(TierAssignment(tenant: tenant, subject: subject, tier: tier, assignedAt: at))))
                default:
                    guard let entry = Self.entry(kind: responseKind, block: block, factor: factor, until: until) else { continue }
                    changes.append(StoredChange(id: changeID, origin: origin,
                                                value: .response(key: Fingerprint(high: UInt64(bitPattern: high), low: UInt64(bitPattern: low)), entry)))
                }
            }
            // Ids are dense: the first one read follows `id` unless the rows between were expired.
            let complete: Bool
            if let firstID {
                complete = firstID == id + 1
            } else {
                complete = (try query(connection, "SELECT count(*) FROM shared_changes WHERE id > \(id)").first?.decode(Int64.self) ?? 0) == 0
            }
            return (changes, complete)
        }
    }

    /// A response read back, if it is one this version can apply (a row edited by hand is skipped).
    static func entry(kind: Int32, block: Bool, factor: Double, until: Int64) -> AnomalyResponseBook.Entry? {
        guard kind >= 0, Int(kind) < AnomalyResponseBook.kinds.count, factor.isFinite, (0...1).contains(factor) else { return nil }
        return AnomalyResponseBook.Entry(kind: Int(kind), block: block, factor: factor, until: until)
    }

    public func commit(_ batch: StoreBatch, after cursor: Int64,
                       fold: (ReputationRecord?, ReputationEvent) -> ReputationRecord) throws(StoreError) -> (remote: [StoredEvent], through: Int64) {
        try withoutActuallyEscaping(fold) { fold throws(StoreError) in
            try run("commit") { connection in try transaction(connection) { try commit(batch, on: connection, after: cursor, fold: fold) } }
        }
    }

    public func saveResponse(key: Fingerprint, _ entry: AnomalyResponseBook.Entry, at now: Int64) throws(StoreError) {
        try run("save an anomaly response") { connection in
            try transaction(connection) {
                try query(connection, """
                    INSERT INTO anomaly_responses (key_high, key_low, kind, block, factor, until_ns)
                    VALUES (\(Int64(bitPattern: key.high)), \(Int64(bitPattern: key.low)), \(Int32(entry.kind)), \(entry.block), \(entry.factor), \(entry.until))
                    ON CONFLICT (key_high, key_low) DO UPDATE SET kind = excluded.kind, block = excluded.block, factor = excluded.factor,
                        until_ns = excluded.until_ns
                    """)
                try record(.response(key: key, entry), at: now, on: connection)
            }
        }
    }

    /// Records `change` for the other daemons, in the caller's transaction: its id is taken under
    /// a lock held to the commit, so ids follow commit order.
    func record(_ change: SharedChange, at now: Int64, on connection: PostgresConnection) throws {
        try query(connection, "SELECT pg_advisory_xact_lock(\(Self.changeLock))")
        let id = try query(connection, "SELECT coalesce(max(id), 0) + 1 FROM shared_changes").first?.decode(Int64.self) ?? 1
        switch change {
        case .tier(let assignment):
            try query(connection, """
                INSERT INTO shared_changes (id, origin, at_ns, kind, tenant, subject, tier)
                VALUES (\(id), \(origin), \(now), 'tier', \(Self.text(assignment.tenant)), \(Self.text(assignment.subject)), \(Self.text(assignment.tier)))
                """)
        case .untier(let tenant, let subject):
            try query(connection, """
                INSERT INTO shared_changes (id, origin, at_ns, kind, tenant, subject, tier)
                VALUES (\(id), \(origin), \(now), 'tier', \(Self.text(tenant)), \(Self.text(subject)), '')
                """)
        case .response(let key, let entry):
            try query(connection, """
                INSERT INTO shared_changes (id, origin, at_ns, kind, key_high, key_low, response_kind, block, factor, until_ns)
                VALUES (\(id), \(origin), \(now), 'response', \(Int64(bitPattern: key.high)), \(Int64(bitPattern: key.low)),
                        \(Int32(entry.kind)), \(entry.block), \(entry.factor), \(entry.until))
                """)
        }
    }

    public func reloadChanges(now: Int64) throws(StoreError) -> (tiers: [TierAssignment], responses: [(key: Fingerprint, entry: AnomalyResponseBook.Entry)], through: Int64) {
        try run("reload tiers and responses") { connection in
            try query(connection, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            let through = try query(connection, "SELECT coalesce(max(id), 0) FROM shared_changes").first?.decode(Int64.self) ?? 0
            let tiers = try loadTiers(on: connection)
            let responses = try loadResponses(on: connection, now: now)
            try query(connection, "COMMIT")
            return (tiers, responses, through)
        }
    }

    public func expireChanges(before: Int64) throws(StoreError) {
        try run("expire shared changes") { connection in
            // The newest change is kept whatever its age: the next id follows it (ids stay dense).
            try query(connection, """
                DELETE FROM shared_changes WHERE at_ns < \(before) AND id < (SELECT max(id) FROM shared_changes)
                """)
            try query(connection, "DELETE FROM anomaly_responses WHERE until_ns < \(before)")
        }
    }

    func loadResponses(on connection: PostgresConnection, now: Int64) throws -> [(key: Fingerprint, entry: AnomalyResponseBook.Entry)] {
        try query(connection, "SELECT key_high, key_low, kind, block, factor, until_ns FROM anomaly_responses WHERE until_ns > \(now)").compactMap { row in
            let (high, low, kind, block, factor, until) = try row.decode((Int64, Int64, Int32, Bool, Double, Int64).self)
            return Self.entry(kind: kind, block: block, factor: factor, until: until).map {
                (Fingerprint(high: UInt64(bitPattern: high), low: UInt64(bitPattern: low)), $0)
            }
        }
    }
}

// MARK: operators' tools

extension PostgresStore: InspectableStore {
    public func counts() throws(StoreError) -> StoreCounts {
        try run("count rows") { connection in
            let row = try query(connection, """
                SELECT (SELECT count(*) FROM reputation_events), (SELECT count(*) FROM reputation_scores),
                       (SELECT count(*) FROM subject_tiers), (SELECT count(*) FROM subject_baselines),
                       (SELECT coalesce(max(id), 0) FROM reputation_events)
                """).first
            var counts = StoreCounts()
            if let (events, scores, tiers, baselines, newest) = try row?.decode((Int64, Int64, Int64, Int64, Int64).self) {
                (counts.events, counts.scores, counts.tiers, counts.baselines) = (Int(events), Int(scores), Int(tiers), Int(baselines))
                counts.newestEventID = newest
            }
            return counts
        }
    }

    public func storedEvents(after id: Int64, limit: Int) throws(StoreError) -> [StoredEvent] {
        try events(after: id, limit: limit)
    }

    public func replayMark() throws(StoreError) -> Int64 {
        try run("read the replay mark") { connection in
            try query(connection, "SELECT value FROM reputation_meta WHERE key = 'records_through_event_id'").first?.decode(Int64.self) ?? 0
        }
    }
}
