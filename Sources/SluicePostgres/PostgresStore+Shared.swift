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
                SELECT id, origin, at_ns, kind, tenant, subject, tier, key_high, key_low, response_kind, block, factor, until_ns,
                       score, pinned, updated_ns, events
                FROM shared_changes WHERE id > \(id) ORDER BY id LIMIT \(Int64(max(1, limit)))
                """)
            var changes: [StoredChange] = []
            var firstID: Int64?
            for row in rows {
                let cells = row.makeRandomAccess()
                let (changeID, origin, at) = (try cells[0].decode(Int64.self), try cells[1].decode(Int64.self), try cells[2].decode(Int64.self))
                let (kind, tenant, subject, tier) = (try cells[3].decode(String.self), try cells[4].decode(String.self),
                                                     try cells[5].decode(String.self), try cells[6].decode(String.self))
                let (high, low, responseKind) = (try cells[7].decode(Int64.self), try cells[8].decode(Int64.self), try cells[9].decode(Int32.self))
                let (block, factor, until) = (try cells[10].decode(Bool.self), try cells[11].decode(Double.self), try cells[12].decode(Int64.self))
                let (score, pinned) = (try cells[13].decode(Double.self), try cells[14].decode(Bool.self))
                let (updated, events) = (try cells[15].decode(Int64.self), try cells[16].decode(Int64.self))
                if firstID == nil { firstID = changeID }
                switch kind {
                case "tier" where tier.isEmpty:
                    changes.append(StoredChange(id: changeID, origin: origin, value: .untier(tenant: tenant, subject: subject)))
                case "tier":
                    changes.append(StoredChange(id: changeID, origin: origin,
                                                value: .tier(TierAssignment(tenant: tenant, subject: subject, tier: tier, assignedAt: at))))
                case "reputation":
                    // Clamped, as a score row read back is: a row edited by hand is not trusted.
                    let record = ReputationRecord(tenant: tenant, subject: subject, score: ReputationModel.clamp(score), updatedAt: updated,
                                                  pinned: pinned, events: UInt64(max(0, events)))
                    changes.append(StoredChange(id: changeID, origin: origin, value: .reputation(record)))
                case "reset":
                    changes.append(StoredChange(id: changeID, origin: origin, value: .reset(tenant: tenant, subject: subject)))
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

    /// Two transactions: the events under the events' lock (held only for them), then the rows,
    /// which need no lock (each row says through which id it reflects its subject, so any row a
    /// daemon writes, in any order, is exact with the events replayed after it). When the rows
    /// fail after the events committed, the error says so (`eventsCommitted`), after `applied`
    /// was given the others' events.
    public func commit(_ batch: StoreBatch, after cursor: Int64, fold: (ReputationRecord?, ReputationEvent) -> ReputationRecord,
                       applied: ([StoredEvent], Int64) -> Void) throws(StoreError) {
        guard !batch.events.isEmpty || !batch.records.isEmpty || batch.recordsComplete else { return }
        let (remote, through) = try run("commit events") { connection in
            try transaction(connection) { try commitEvents(batch.events, on: connection, after: cursor) }
        }
        applied(remote, through)
        guard !batch.records.isEmpty || batch.recordsComplete else { return }
        var records = batch.records
        for stored in remote {
            let key = Fingerprint.of(tenant: stored.value.tenant, key: stored.value.subject)
            switch records[key] {
            case .upsert(let record): records[key] = .upsert(fold(record, stored.value))
            case .delete: records[key] = .upsert(fold(nil, stored.value))
            case nil: break
            }
        }
        do {
            try run("commit scores") { connection in
                try transaction(connection) { try commitRows(records, complete: batch.recordsComplete, through: through, on: connection) }
            }
        } catch {
            var failed = error
            failed.eventsCommitted = !batch.events.isEmpty
            throw failed
        }
    }

    public func share(_ change: SharedChange, at now: Int64) throws(StoreError) {
        try run("share a change") { connection in
            try transaction(connection) {
                if case .response(let key, let entry) = change {
                    try query(connection, """
                        INSERT INTO anomaly_responses (key_high, key_low, kind, block, factor, until_ns)
                        VALUES (\(Int64(bitPattern: key.high)), \(Int64(bitPattern: key.low)), \(Int32(entry.kind)), \(entry.block), \(entry.factor), \(entry.until))
                        ON CONFLICT (key_high, key_low) DO UPDATE SET kind = excluded.kind, block = excluded.block, factor = excluded.factor,
                            until_ns = excluded.until_ns
                        """)
                }
                try record(change, at: now, on: connection)
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
        case .reputation(let record):
            try query(connection, """
                INSERT INTO shared_changes (id, origin, at_ns, kind, tenant, subject, score, pinned, updated_ns, events)
                VALUES (\(id), \(origin), \(now), 'reputation', \(Self.text(record.tenant)), \(Self.text(record.subject)), \(record.score),
                        \(record.pinned), \(record.updatedAt), \(Int64(clamping: record.events)))
                """)
        case .reset(let tenant, let subject):
            try query(connection, """
                INSERT INTO shared_changes (id, origin, at_ns, kind, tenant, subject)
                VALUES (\(id), \(origin), \(now), 'reset', \(Self.text(tenant)), \(Self.text(subject)))
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
