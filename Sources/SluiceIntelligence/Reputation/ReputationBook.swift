#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SluiceCore

/// Every tracked subject's reputation, in memory: what the hot path reads.
///
/// Records are spread over lock stripes by fingerprint. The map's filter answers "certainly
/// untracked" for most subjects with one relaxed atomic load and no lock: a subject without a
/// record is at the neutral start.
public final class ReputationBook: Sendable {
    /// The records, with a filter of 128 words per stripe: 64 × 128 × 64 = 512 Ki bits, 64 KiB,
    /// small enough to stay in a core's cache beside the table (at 512 KiB, its miss cost an
    /// untracked check 60 ns). False positives, which only cost a locked lookup, are the tracked
    /// share of the bits: 2 % with 10,000 tracked subjects, 17 % with 100,000.
    let records = StripedMap<ReputationRecord>(stripeBits: 6, filterWordsPerStripe: 128)
    /// Told of every change (a new record, or nil for a removed one) while the subject's stripe
    /// is locked, so that changes to one subject reach it in the order they were made.
    let onChange: (@Sendable (Fingerprint, ReputationRecord?, _ tenant: String, _ subject: String, _ event: ReputationEvent?) -> Void)?

    /// An empty book.
    ///
    /// - Parameter onChange: told of every change made through the book (not of ``load(_:)``),
    ///   under the subject's stripe lock, with the event that caused it if any: it must be quick
    ///   and must not call the book. A store that writes the event and the record it changed in
    ///   the same batch can always tell which events a stored record already reflects.
    public init(onChange: (@Sendable (Fingerprint, ReputationRecord?, _ tenant: String, _ subject: String, _ event: ReputationEvent?)
        -> Void)? = nil) {
        self.onChange = onChange
    }

    /// The subject's score at `now`, nil when it has no record (it is neutral).
    ///
    /// The hot path's only call: a relaxed load, and a stripe lock only for subjects whose
    /// filter bit is set.
    /// - Complexity: O(1).
    @inline(__always)
    public func score(of subject: Fingerprint, at now: Int64, model: ReputationModel) -> Double? {
        score(of: subject, at: now, neutral: model.neutral, halfLife: Double(model.halfLife))
    }

    /// The same, from the model's two numbers (the hot path's form: no struct with references
    /// to copy).
    @inline(__always)
    public func score(of subject: Fingerprint, at now: Int64, neutral: Double, halfLife: Double) -> Double? {
        guard records.mayContain(subject) else { return nil }
        guard let (score, at, pinned) = records.read(subject, { slot -> (Double, Int64, Bool)? in
            slot.map { ($0.score, $0.updatedAt, $0.pinned) }
        }) else { return nil }
        guard !pinned, now > at else { return score }
        return neutral + (score - neutral) * exp2(-Double(now &- at) / halfLife)
    }

    /// The subject's record.
    public func record(of subject: Fingerprint) -> ReputationRecord? {
        records.value(for: subject)
    }

    /// Applies `event` (created at neutral if the subject is new) and returns the new record.
    ///
    /// An event older than the record's last change is added with its weight decayed by the
    /// difference, which is exact: a score is neutral plus the sum of its decayed weights.
    ///
    /// - Parameters:
    ///   - replayed: the event is stored already (replayed at start): the change is reported
    ///     without it.
    ///   - reported: false when the change is not to be reported at all (another daemon's event:
    ///     that daemon writes the subject's row).
    @discardableResult
    public func apply(_ event: ReputationEvent, model: ReputationModel, replayed: Bool = false, reported: Bool = true) -> ReputationRecord {
        let subject = Fingerprint.of(tenant: event.tenant, key: event.subject)
        return upsert(subject, event: replayed ? nil : event, reported: reported) { existing in Self.applying(event, to: existing, model: model) }
    }

    /// `existing` (nil: a subject at the neutral start) with `event` applied, as ``apply(_:model:replayed:)`` does.
    public static func applying(_ event: ReputationEvent, to existing: ReputationRecord?, model: ReputationModel) -> ReputationRecord {
        var record = existing ?? ReputationRecord(tenant: event.tenant, subject: event.subject, score: model.neutral, updatedAt: event.at)
        record.events &+= 1
        guard !record.pinned else { return record }
        if event.at >= record.updatedAt {
            record.score = model.applying(event.weight, to: record.score, at: record.updatedAt, now: event.at)
            record.updatedAt = event.at
        } else {
            let late = model.decayed(model.neutral + event.weight, from: event.at, to: record.updatedAt) - model.neutral
            record.score = ReputationModel.clamp(record.score + late)
        }
        return record
    }

    func upsert(_ subject: Fingerprint, event: ReputationEvent?, reported: Bool = true,
                _ change: (ReputationRecord?) -> ReputationRecord) -> ReputationRecord {
        records.update(subject) { slot in
            let next = change(slot)
            slot = next
            if reported { onChange?(subject, next, next.tenant, next.subject, event) }
            return next
        }
    }

    /// Replaces the subject's record with whatever `change` returns (nil removes it).
    @discardableResult
    public func update(_ subject: Fingerprint, _ change: (ReputationRecord?) -> ReputationRecord?) -> ReputationRecord? {
        records.update(subject) { slot in
            let previous = slot
            let next = change(previous)
            slot = next
            if let next {
                onChange?(subject, next, next.tenant, next.subject, nil)
            } else if let previous {
                onChange?(subject, nil, previous.tenant, previous.subject, nil)
            }
            return next
        }
    }

    /// Puts `records` in the book (at start, from the store), except subjects it already has
    /// (changed since, so newer). Tells no one: they are stored already.
    public func load(_ records: some Sequence<ReputationRecord>) {
        for record in records {
            let subject = record.fingerprint
            self.records.update(subject) { slot in
                guard slot == nil else { return }
                slot = record
            }
        }
    }

    /// Removes every unpinned record whose score at `now` is back within ``ReputationModel/neutralBand``
    /// of neutral, then, for each tenant in `perTenant` holding more records than its number, its
    /// own records nearest neutral (a tenant's `max_subjects`: its excess goes before anyone
    /// else's), then the records nearest neutral while more than `maxSubjects` remain; rebuilds
    /// the filter. Returns what it removed.
    ///
    /// - Complexity: O(records), one stripe locked at a time.
    public func compact(now: Int64, model: ReputationModel, maxSubjects: Int = .max, perTenant: [String: Int] = [:]) -> [ReputationRecord] {
        var removed: [ReputationRecord] = []
        // Told under the stripe's lock, as every change is.
        for (subject, record) in records.removeAll(where: { subject, record in
            guard !record.pinned, abs(record.score(at: now, model: model) - model.neutral) < ReputationModel.neutralBand else { return false }
            onChange?(subject, nil, record.tenant, record.subject, nil)
            return true
        }) {
            _ = subject
            removed.append(record)
        }
        if !perTenant.isEmpty {
            var counts: [String: Int] = [:]
            for record in records.values(where: { perTenant[$0.tenant] != nil }) { counts[record.tenant, default: 0] += 1 }
            for (tenant, held) in counts {
                guard let most = perTenant[tenant], held > most else { continue }
                forgetMildest(held - most, now: now, model: model, into: &removed) { $0.tenant == tenant }
            }
            records.rebuildFilter()
        }
        let remaining = count
        if remaining > maxSubjects {
            // Forget the mildest records first: they matter least to any decision.
            forgetMildest(remaining - maxSubjects, now: now, model: model, into: &removed) { _ in true }
            records.rebuildFilter()
        }
        return removed
    }

    /// Forgets the `count` unpinned records nearest neutral among those `included` takes,
    /// appending them to `removed`.
    func forgetMildest(_ count: Int, now: Int64, model: ReputationModel, into removed: inout [ReputationRecord],
                       where included: (ReputationRecord) -> Bool) {
        var candidates = records.entries { _, record in !record.pinned && included(record) }
            .map { (distance: abs($0.value.score(at: now, model: model) - model.neutral), subject: $0.key) }
        candidates.sort { $0.distance < $1.distance }
        for candidate in candidates.prefix(count) {
            if let record = record(of: candidate.subject) {
                update(candidate.subject) { _ in nil }
                removed.append(record)
            }
        }
    }

    /// Every record, optionally only `tenant`'s.
    ///
    /// - Complexity: O(records).
    public func records(tenant: String? = nil) -> [ReputationRecord] {
        records.values { tenant == nil || $0.tenant == tenant }
    }

    /// How many subjects have a record.
    public var count: Int { records.count }
}
