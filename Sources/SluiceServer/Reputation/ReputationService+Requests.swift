import Foundation
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceProto
import SluiceStore

extension ReputationService {
    /// Events may be dated this far ahead of the daemon's clock (clock skew between machines).
    static let allowedSkew: Int64 = 60_000_000_000
    /// The longest note kept with an event.
    static let maximumNoteBytes = 256

    /// Validates `request` whole (nothing is applied if any event is invalid), applies its events
    /// to the book and queues them for the store.
    ///
    /// - Parameter completion: for a durable request, called once the events are committed.
    /// - Returns: the number of events applied, or the error to answer with.
    func record(_ request: Sluice_V1_RecordEventsRequest, configuration: Configuration, now: Int64,
                completion: WriteBehind.Completion?) -> Result<Int, WireError> {
        let events: [ReputationEvent]
        switch validate(request, configuration: configuration, now: now) {
        case .success(let valid): events = valid
        case .failure(let error): return .failure(error)
        }
        if request.durable {
            guard settings.isPersistent else {
                return .failure(WireError(.unavailable, "durable events need a store: set store.path (SQLite) or store.url (PostgreSQL) in the configuration"))
            }
            guard storeIsUp else {
                return .failure(WireError(.unavailable, "the reputation store is not open, so durable events cannot be committed: \(storeError ?? "unknown error")"))
            }
        }
        let model = configuration.reputation.model
        // Each event is queued for the store with the record it changed (the book's onChange).
        for event in events { book.apply(event, model: model) }
        count(events)
        if let completion {
            // Durable: the events are in the store after the next commit; the scores they moved
            // follow within a second, and are rebuilt from the events at start if need be.
            if settings.isPersistent { writer.afterNextCommit(completion) } else { completion(.success(())) }
        }
        return .success(events.count)
    }

    func validate(_ request: Sluice_V1_RecordEventsRequest, configuration: Configuration, now: Int64) -> Result<[ReputationEvent], WireError> {
        guard !request.events.isEmpty else { return .failure(WireError(.invalidArgument, "record_events needs at least one event")) }
        guard request.events.count <= configuration.maxBatch else {
            return .failure(WireError(.invalidArgument, "a batch of \(request.events.count) events is above max_batch \(configuration.maxBatch)"))
        }
        let weights = configuration.reputation.model.weights
        let maxBytes = configuration.maxKeyBytes
        var events: [ReputationEvent] = []
        events.reserveCapacity(request.events.count)
        for (index, wire) in request.events.enumerated() {
            func failure(_ message: String, code: WireError.Code = .invalidArgument) -> Result<[ReputationEvent], WireError> {
                .failure(WireError(code, "event \(index): \(message)", checkIndex: Int32(index)))
            }
            guard !wire.subject.isEmpty else { return failure("subject must not be empty") }
            guard wire.subject.utf8.count <= maxBytes, wire.tenant.utf8.count <= maxBytes else {
                return failure("tenant and subject must be at most \(maxBytes) bytes")
            }
            if configuration.strictTenants, !wire.tenant.isEmpty, configuration.tenants[wire.tenant] == nil {
                return failure("tenant '\(wire.tenant)' is not configured", code: .unknownTenant)
            }
            // A tenant with weights of its own takes them over the global ones.
            let weights = configuration.tenants[wire.tenant]?.reputationWeights != nil
                ? configuration.settings(for: wire.tenant).reputation.model.weights : weights
            guard let configured = weights[wire.kind] else {
                return failure("unknown event kind '\(wire.kind)'; configured kinds: \(weights.keys.sorted().joined(separator: ", "))")
            }
            var weight = configured
            if case .weight(let given)? = wire.weightPresence {
                guard given.isFinite, (-100...100).contains(given) else { return failure("weight \(given) is outside -100…100") }
                weight = given
            }
            guard wire.note.utf8.count <= Self.maximumNoteBytes else {
                return failure("note must be at most \(Self.maximumNoteBytes) bytes")
            }
            var at = now
            if wire.atMs > 0 {
                guard wire.atMs <= RequestDispatcher.maximumNowMs else { return failure("at_ms \(wire.atMs) is after the year 2199") }
                at = Int64(wire.atMs) * 1_000_000
                guard at <= now + Self.allowedSkew else {
                    return failure("at_ms \(wire.atMs) is more than a minute ahead of the daemon's clock")
                }
            }
            events.append(ReputationEvent(tenant: wire.tenant, subject: wire.subject, kind: wire.kind, weight: weight, at: at,
                                          note: wire.note))
        }
        return .success(events)
    }

    /// The wire form of `record` (nil: a subject at the neutral start) at `now`.
    func reputation(tenant: String, subject: String, record: ReputationRecord?, model: ReputationModel,
                    now: Int64) -> Sluice_V1_Reputation {
        let score = record?.score(at: now, model: model) ?? model.neutral
        var reputation = Sluice_V1_Reputation()
        reputation.tenant = tenant
        reputation.subject = subject
        reputation.score = score
        reputation.pinned = record?.pinned ?? false
        reputation.updatedMs = UInt64(max(0, (record?.updatedAt ?? 0) / 1_000_000))
        if let record, !record.pinned {
            let until = model.timeUntilNeutral(score)
            reputation.neutralAtMs = until > 0 ? UInt64(max(0, now / 1_000_000)) + UInt64(until.ceilingMilliseconds) : 0
        }
        reputation.multiplier = model.curve.multiplier(at: score)
        reputation.blocked = model.blocks(score)
        reputation.events = record?.events ?? 0
        return reputation
    }

    /// GetReputation: the score now and the most recent events (from the store, after
    /// committing what is pending). Runs on the writer's queue.
    func get(_ request: Sluice_V1_GetReputationRequest, configuration: Configuration, now: Int64) -> WireResponse {
        guard !request.subject.isEmpty else { return .error(id: 0, .invalidArgument, "subject must not be empty") }
        let limit = request.recentEvents == 0 ? 10 : Int(min(request.recentEvents, 1_000))
        let key = Fingerprint.of(tenant: request.tenant, key: request.subject)
        let record = book.record(of: key)
        var answer = Sluice_V1_GetReputationResponse()
        answer.tracked = record != nil
        answer.reputation = reputation(tenant: request.tenant, subject: request.subject, record: record,
                                       model: configuration.reputation.model, now: now)
        if let store = status.withLockedValue({ $0.store }) {
            writer.commitOnQueue()
            do {
                answer.recentEvents = try store.recentEvents(tenant: request.tenant, subject: request.subject, limit: limit).map { event in
                    Sluice_V1_RecordedEvent.with {
                        $0.kind = event.kind
                        $0.weight = event.weight
                        $0.atMs = UInt64(max(0, event.at / 1_000_000))
                        $0.note = event.note
                    }
                }
            } catch {
                return .error(id: 0, .unavailable, "the score is \(answer.reputation.score), but its events could not be read: \(error.message)")
            }
        }
        var response = WireResponse()
        response.getReputation = answer
        return response
    }

    /// A refused page request, as the answer to give.
    struct PageRefusal: Error {
        let response: WireResponse
    }

    /// The offset and size a list request asks for: `page_size` 0 means 50, at most 1,000; the
    /// token is an offset this daemon gave.
    static func page(size requested: UInt32, token: String) -> Result<(offset: Int, size: Int), PageRefusal> {
        let size = requested == 0 ? 50 : Int(requested)
        guard size <= 1_000 else {
            return .failure(PageRefusal(response: .error(id: 0, .invalidArgument, "page_size \(requested) is above 1000")))
        }
        guard !token.isEmpty else { return .success((0, size)) }
        guard let offset = Int(token), offset >= 0 else {
            return .failure(PageRefusal(response: .error(id: 0, .invalidArgument, "page_token '\(token)' is not one this daemon gave")))
        }
        return .success((offset, size))
    }

    /// ListReputations: the worst (or best) subjects of a tenant, a page at a time.
    ///
    /// The page token is the position in the order at the time of the request: scores move, so
    /// a subject can appear on two pages or none between requests.
    func list(_ request: Sluice_V1_ListReputationsRequest, configuration: Configuration, now: Int64) -> WireResponse {
        let offset: Int, size: Int
        switch Self.page(size: request.pageSize, token: request.pageToken) {
        case .success(let page): (offset, size) = page
        case .failure(let refusal): return refusal.response
        }
        let model = configuration.reputation.model
        var scored = book.records(tenant: request.allTenants ? nil : request.tenant).map { ($0.score(at: now, model: model), $0) }
        let best = request.order == .best
        scored.sort { left, right in
            if left.0 != right.0 { return best ? left.0 > right.0 : left.0 < right.0 }
            return (left.1.tenant, left.1.subject) < (right.1.tenant, right.1.subject)
        }
        var answer = Sluice_V1_ListReputationsResponse()
        answer.total = UInt64(scored.count)
        let page = scored.dropFirst(offset).prefix(size)
        answer.reputations = page.map { reputation(tenant: $0.1.tenant, subject: $0.1.subject, record: $0.1, model: model, now: now) }
        if offset + page.count < scored.count { answer.nextPageToken = String(offset + page.count) }
        var response = WireResponse()
        response.listReputations = answer
        return response
    }

    /// SetReputation: an operator's override, applied now and answered once committed.
    ///
    /// - Parameter completion: called with the answer (after the commit when there is a store).
    func set(_ request: Sluice_V1_SetReputationRequest, configuration: Configuration, now: Int64,
             completion: @escaping @Sendable (WireResponse) -> Void) {
        guard !request.subject.isEmpty else { return completion(.error(id: 0, .invalidArgument, "subject must not be empty")) }
        let needsScore = request.action == .set || request.action == .pin
        if needsScore, !(request.score.isFinite && ReputationModel.range.contains(request.score)) {
            return completion(.error(id: 0, .invalidArgument, "score \(request.score) is outside 0…100"))
        }
        if settings.isPersistent, !storeIsUp {
            return completion(.error(id: 0, .unavailable, "the reputation store is not open, so the change cannot be committed: \(storeError ?? "unknown error")"))
        }
        let model = configuration.reputation.model
        let key = Fingerprint.of(tenant: request.tenant, key: request.subject)
        let tenant = request.tenant, subject = request.subject
        let record: ReputationRecord?
        switch request.action {
        case .set, .pin:
            let pin = request.action == .pin
            record = book.update(key) { existing in
                var next = existing ?? ReputationRecord(tenant: tenant, subject: subject, score: model.neutral, updatedAt: now)
                next.score = request.score
                next.updatedAt = now
                next.pinned = pin
                return next
            }
        case .unpin:
            record = book.update(key) { existing in
                guard var next = existing else { return nil }
                // It moves again from where it was pinned, starting now.
                next.pinned = false
                next.updatedAt = now
                return next
            }
        case .reset:
            record = book.update(key) { _ in nil }
        case .unspecified, .UNRECOGNIZED:
            return completion(.error(id: 0, .invalidArgument, "action must be set, pin, unpin or reset"))
        }
        if settings.backend == .postgres {
            // The other daemons apply it at their next sync after this one's.
            if let record {
                fleet.share(.reputation(record), at: now)
            } else if request.action == .reset {
                fleet.share(.reset(tenant: tenant, subject: subject), at: now)
            }
        }
        var answer = WireResponse()
        answer.setReputation.reputation = reputation(tenant: tenant, subject: subject, record: record, model: model, now: now)
        let response = answer
        guard settings.isPersistent else { return completion(response) }
        writer.afterNextCommit(records: true) { result in
            switch result {
            case .success: completion(response)
            case .failure(let error):
                completion(.error(id: 0, .unavailable, "applied in memory but not committed (it will be when the store recovers): \(error.message)"))
            }
        }
    }
}
