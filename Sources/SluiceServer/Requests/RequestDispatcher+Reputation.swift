import NIOCore
import SluiceCore
import SluiceIntelligence
import SluiceProto
import SluiceWire

/// What reputation did to one check, for its verdict.
struct ReputationNote {
    /// The score reported; NaN when the subject is outside the rollout.
    var score = Double.nan
    /// The multiplier applied (enforced mode); 0 when none.
    var multiplier: Double = 0
    /// Enforced block: the retry-after in ns; -1 when not blocked.
    var blockedFor: Int64 = -1
    /// Why it was blocked: reputation, or shed by load-aware scaling.
    var blockReason = DecisionReason.reputation
    /// The adaptive feature, in shadow mode, asked for this check to be evaluated (or would have shed it).
    var adaptiveShadow = false
    /// The kind of the anomaly response the subject or its address is under (static bytes); empty when none.
    var anomalyKind = UnsafeRawBufferPointer(start: nil, count: 0)
    /// The subject's fingerprint, once a feature needed it (see ``RequestDispatcher/subject(_:items:views:notes:)``).
    var subject = Fingerprint(high: 0, low: 0)
    var hasSubject = false
    /// Shadow mode: the reason the check would have been denied; nil when it would not.
    var wouldDeny: DecisionReason?
    /// Shadow mode: the check must also be evaluated with its limits this many times smaller; 0
    /// when not.
    var peekFactor: Double = 0
    /// The subject's tier name (the tier table's bytes); empty when none.
    var tier = UnsafeRawBufferPointer(start: nil, count: 0)

    @inline(__always)
    func annotate(_ fields: inout CheckFrameCodec.VerdictFields) {
        fields.reputation = score
        // 1x is sent as "none" (0 on the wire means 1x), which saves 9 bytes on most verdicts.
        fields.multiplier = multiplier == 1 ? 0 : multiplier
        if let wouldDeny {
            fields.wouldDeny = true
            fields.wouldDenyReason = UInt64(wouldDeny.rawValue)
        }
    }
}

extension RequestDispatcher {
    /// Looks up each check's subject and applies (or, in shadow, prepares to evaluate) its
    /// reputation. Returns whether a shadow check must be evaluated before it is decided.
    ///
    /// The cost for a subject without a record is a hash (none when the subject is the key) and
    /// one relaxed load; the book is read under a stripe lock only for tracked subjects.
    @inline(__always)
    func annotate(items: UnsafeMutableBufferPointer<BatchCheck>, views: UnsafeBufferPointer<CheckView>,
                  notes: UnsafeMutableBufferPointer<ReputationNote>, gate: ReputationGate, book unmanaged: Unmanaged<ReputationBook>,
                  live: LiveConfiguration) -> Bool {
        // Borrowed, not retained: the dispatcher holds the service, which holds the book.
        var peeks = false
        unmanaged._withUnsafeGuaranteedRef { book in
            for index in 0..<items.count {
                var note = ReputationNote()
                let subject = Self.subject(of: views[index], key: items[index].key)
                note.subject = subject
                note.hasSubject = true
                if gate.includes(subject) {
                    let now = items[index].now
                    if book.mayTrack(subject), let score = book.score(of: subject, at: now, neutral: gate.neutral, halfLife: gate.halfLife) {
                        note.score = score
                        let multiplier = live.reputationModel.curve.multiplier(at: score)
                        let blockedFor = score < gate.blockBelow ? live.reputationModel.timeUntilUnblocked(score) : nil
                        if gate.shadow {
                            if blockedFor != nil {
                                note.wouldDeny = .reputation
                            } else if multiplier < 1, !items[index].skip {
                                // Evaluated just before this check is decided (see decideInOrder).
                                note.peekFactor = multiplier
                            }
                        } else {
                            items[index].multiplier *= multiplier
                            note.multiplier = items[index].multiplier
                            if let blockedFor, !items[index].skip {
                                items[index].skip = true
                                note.blockedFor = blockedFor
                            }
                        }
                    } else {
                        note.score = gate.neutral
                        if !gate.shadow {
                            items[index].multiplier *= gate.neutralMultiplier
                            note.multiplier = items[index].multiplier
                        }
                    }
                }
                if note.peekFactor != 0 { peeks = true }
                // A buffer with an element at `index` has a base address.
                (notes.baseAddress! + index).initialize(to: note)
            }
        }
        return peeks
    }

    /// The fingerprint of a check's subject: the key's when the check names no subject.
    @inline(__always)
    static func subject(of view: CheckView, key: Fingerprint) -> Fingerprint {
        view.subject.count == 0 ? key : Fingerprint.of(tenant: view.tenant, key: view.subject)
    }

    /// Check `index`'s subject fingerprint, hashed at most once per check whichever features
    /// (reputation, adaptive, anomaly responses) ask for it.
    @inline(__always)
    func subject(_ index: Int, items: UnsafeMutableBufferPointer<BatchCheck>, views: UnsafeBufferPointer<CheckView>,
                 notes: UnsafeMutableBufferPointer<ReputationNote>) -> Fingerprint {
        if notes[index].hasSubject { return notes[index].subject }
        let subject = Self.subject(of: views[index], key: items[index].key)
        notes[index].subject = subject
        notes[index].hasSubject = true
        return subject
    }

    /// What the adaptive feature reads for one request, from the configuration in force.
    ///
    /// Unretained: the request holds its configuration and the dispatcher the books, for longer
    /// than this lives; retaining five references per request cost more than the lookups.
    struct Adaptive {
        let gate: AdaptiveGate
        /// Nil while no subject has a tier.
        unowned(unsafe) let tiers: TierTable?
        unowned(unsafe) let book: TierBook?
        unowned(unsafe) let load: SheddingTable?
        unowned(unsafe) let baseline: BaselineTable?
        unowned(unsafe) let baselines: BaselineBook?
        /// The tier class of subjects without a tier (the number of configured tiers).
        let untiered: Int

        /// Nil when nothing adaptive applies to checks.
        init?(_ live: LiveConfiguration, book: TierBook?, baselines: BaselineBook?) {
            guard let gate = live.adaptive else { return nil }
            let tiers = book.map { $0.count > 0 } == true ? live.tiers : nil
            let baseline = baselines == nil ? nil : live.baseline
            guard tiers != nil || live.load != nil || baseline != nil else { return nil }
            self.gate = gate
            self.tiers = tiers
            self.book = book
            load = live.load
            self.baseline = baseline
            self.baselines = baselines
            untiered = live.tiers?.names.count ?? 0
        }
    }

    /// Applies the adaptive feature to each check whose subject is in its rollout:
    /// - its tier: the tier's multiplier, or its own limits for the rule, and its name in the verdict;
    /// - a rule relative to the learned baseline: the subject's `factor × normal`, within the
    ///   rule's floor and ceiling (and the check's hits are counted toward the baseline);
    /// - a rule naming a protected service: the share of the tier's checks the load controller
    ///   admits now (the rest are shed), and its hits counted as the tier's demand.
    /// In shadow mode nothing is scaled: the tier is named and what would have been denied is
    /// evaluated (returns true when a check must be evaluated so before it is decided).
    func applyAdaptive(_ adaptive: Adaptive, items: UnsafeMutableBufferPointer<BatchCheck>, views: UnsafeBufferPointer<CheckView>,
                       series: UnsafeBufferPointer<Int>, notes: UnsafeMutableBufferPointer<ReputationNote>) -> Bool {
        var peeks = false
        let shadow = adaptive.gate.shadow
        for index in 0..<items.count {
            let slot = adaptive.load?.slot(ofSeries: series[index]) ?? -1
            let relative = adaptive.baseline?.entries[series[index]]
            guard adaptive.tiers != nil || slot >= 0 || relative != nil else { continue }
            let subject = subject(index, items: items, views: views, notes: notes)
            guard adaptive.gate.includes(subject) else { continue }
            var tierClass = adaptive.untiered
            var ownLimits = false
            var scale = 1.0
            if let tiers = adaptive.tiers, let name = adaptive.book?.tier(of: subject), let tier = tiers.index(of: name) {
                tierClass = tier
                notes[index].tier = UnsafeRawBufferPointer(tiers.nameBytes[tier])
                // The tier's own limits for this rule, if it has some, replace the rule's (and
                // the multiplier); otherwise its multiplier scales them.
                if !tiers.rules[tier].isEmpty, let rule = views[index].rule,
                   let limits = tiers.rules[tier][String(decoding: rule, as: UTF8.self)] {
                    ownLimits = true
                    if !shadow { items[index].limits = limits }
                } else {
                    if !shadow { items[index].multiplier *= tiers.multipliers[tier] }
                }
            }
            if let relative, let table = adaptive.baseline, let book = adaptive.baselines,
               let normal = book.observe(subject, hits: items[index].hits, now: items[index].now, settings: table.settings), !ownLimits {
                scale = relative.multiplier(normal: normal)
            }
            if slot >= 0, let load = adaptive.load {
                // Load sheds traffic, not headroom: the tier's checks on the service's rules are
                // admitted in the proportion of its multiplier (a subject well under its limit
                // would never notice a smaller limit).
                let multiplier = load.multiplier(slot: slot, tierClass: tierClass)
                if !load.admit(slot: slot, tierClass: tierClass, hits: items[index].hits, multiplier: multiplier), !items[index].skip {
                    if shadow {
                        if notes[index].wouldDeny == nil { notes[index].wouldDeny = .shed }
                        notes[index].adaptiveShadow = true
                    } else {
                        items[index].skip = true
                        notes[index].blockedFor = load.retryAfter
                        notes[index].blockReason = .shed
                    }
                }
            }
            if scale != 1, !items[index].skip {
                if shadow {
                    // Only tighter limits can deny what was allowed.
                    if scale < 1 {
                        notes[index].peekFactor = (notes[index].peekFactor == 0 ? 1 : notes[index].peekFactor) * scale
                        notes[index].adaptiveShadow = true
                        peeks = true
                    }
                } else {
                    items[index].multiplier *= scale
                }
            }
            if !shadow { notes[index].multiplier = items[index].multiplier }
        }
        return peeks
    }

    /// Applies the anomaly responses in force to each check whose subject or address is under one:
    /// a block denies it (`REASON_ANOMALY`, until the response ends), a tightening scales its
    /// limits; the verdict names the alert's kind. In shadow mode nothing is enforced: a block is
    /// reported as `would_deny`, a tightening evaluated (returns true when one must be).
    func applyAnomalyResponses(_ book: AnomalyResponseBook, shadow: Bool, rollout: CompiledFlag?, items: UnsafeMutableBufferPointer<BatchCheck>,
                               views: UnsafeBufferPointer<CheckView>, notes: UnsafeMutableBufferPointer<ReputationNote>) -> Bool {
        var peeks = false
        for index in 0..<items.count {
            let now = items[index].now
            let subject = subject(index, items: items, views: views, notes: notes)
            // Responses apply to the subjects in the flag's rollout; detection sees everyone.
            if let rollout, rollout.threshold < FeatureFlag.buckets, !rollout.includes(subject) { continue }
            var entry = book.entry(for: subject, at: now)
            if entry == nil, views[index].ip.count > 0 { entry = book.entry(for: AnomalyResponseBook.key(ip: views[index].ip), at: now) }
            guard let entry else { continue }
            notes[index].anomalyKind = AnomalyResponseBook.kindBytes[entry.kind]
            guard !items[index].skip else { continue }
            if entry.block {
                if shadow {
                    if notes[index].wouldDeny == nil { notes[index].wouldDeny = .anomaly }
                } else {
                    items[index].skip = true
                    notes[index].blockedFor = max(0, entry.until - now)
                    notes[index].blockReason = .anomaly
                }
            } else if shadow {
                notes[index].peekFactor = (notes[index].peekFactor == 0 ? 1 : notes[index].peekFactor) * entry.factor
                peeks = true
            } else {
                items[index].multiplier *= entry.factor
                notes[index].multiplier = items[index].multiplier
            }
        }
        return peeks
    }

    /// Decides the checks one at a time, in order, evaluating each shadow check just before it
    /// is decided: what it would have met is the state the checks before it left, even within
    /// one batch. Used only for batches with a shadow check to evaluate.
    func decideInOrder(items: UnsafeMutableBufferPointer<BatchCheck>, notes: UnsafeMutableBufferPointer<ReputationNote>,
                       into decisions: UnsafeMutableBufferPointer<Decision>) {
        for index in 0..<items.count {
            let item = items[index]
            if notes[index].peekFactor != 0 {
                let decision = evaluate(item, factor: notes[index].peekFactor)
                if !decision.allowed { notes[index].wouldDeny = decision.reason }
            }
            // A buffer with an element at `index` has a base address.
            guard !item.skip else {
                (decisions.baseAddress! + index).initialize(to: .blocked())
                continue
            }
            let decision: Decision = switch item.limits {
            case .single(let limit):
                table.check(key: item.key, limit: limit, hits: item.hits, now: item.now, multiplier: item.multiplier)
            case .rule(let limits):
                table.check(key: item.key, limits: limits, hits: item.hits, now: item.now, multiplier: item.multiplier)
            }
            (decisions.baseAddress! + index).initialize(to: decision)
        }
    }

    func evaluate(_ item: BatchCheck, factor: Double) -> Decision {
        switch item.limits {
        case .single(let limit):
            withUnsafePointer(to: limit) {
                table.evaluate(key: item.key, limits: UnsafeBufferPointer(start: $0, count: 1), hits: item.hits, now: item.now,
                               multiplier: item.multiplier, factor: factor)
            }
        case .rule(let limits):
            limits.withUnsafeBufferPointer {
                table.evaluate(key: item.key, limits: $0, hits: item.hits, now: item.now, multiplier: item.multiplier, factor: factor)
            }
        }
    }

    /// After the table decided: records `rate_limited` for checks a limit denied, and counts
    /// what shadow mode would have denied.
    @inline(__always)
    func settle(notes: UnsafeMutableBufferPointer<ReputationNote>, views: UnsafeBufferPointer<CheckView>,
                items: UnsafeBufferPointer<BatchCheck>, decisions: UnsafeBufferPointer<Decision>, gate: ReputationGate,
                hot: ReputationHotPath) {
        var wouldDeny: UInt64 = 0
        for index in 0..<notes.count {
            let reason = decisions[index].reason
            if gate.shadow, decisions[index].allowed, notes[index].wouldDeny != nil { wouldDeny &+= 1 }
            if gate.recordDenials, reason == .overLimit || reason == .exceedsCapacity, items[index].hits > 0 {
                let subject = views[index].subject
                hot.recordDenial(tenant: views[index].tenant, subject: subject.count > 0 ? subject : views[index].key,
                                 now: items[index].now, weight: gate.denialWeight)
            }
        }
        if wouldDeny > 0 { hot.wouldDeny.add(wouldDeny, ordering: .relaxed) }
    }

    /// The answer to a reputation request when the daemon keeps no reputation.
    static func noReputation(id: UInt64) -> WireResponse {
        .error(id: id, .unavailable, "this daemon keeps no reputation")
    }

    /// Answers a reputation request, or nil for any other: fire-and-forget events at once,
    /// the rest (durable events, reads of the store, operator overrides) once done, off the event loop.
    func reputationAnswer(to request: WireRequest, on connection: ConnectionKind, eventLoop: any EventLoop)
        -> EventLoopFuture<WireResponse>? {
        let configuration = state.current.configuration
        let id = request.id
        func answer(_ response: WireResponse) -> EventLoopFuture<WireResponse> {
            var response = response
            response.id = id
            if case .error(let error) = response.body { counters.recordError(error.code) }
            return eventLoop.makeSucceededFuture(response)
        }
        switch request.body {
        case .recordEvents(let events) where events.durable:
            counters.requests.add(1, ordering: .relaxed)
            guard let service = reputation else { return answer(Self.noReputation(id: id)) }
            let promise = eventLoop.makePromise(of: WireResponse.self)
            let counters = counters
            let result = service.record(events, configuration: configuration, now: time.now()) { outcome in
                var response = WireResponse()
                response.id = id
                switch outcome {
                case .success:
                    response.recordEvents = Sluice_V1_RecordEventsResponse.with {
                        $0.recorded = UInt32(events.events.count)
                        $0.committed = true
                    }
                case .failure(let error):
                    counters.recordError(.unavailable)
                    response = .error(id: id, .unavailable,
                                      "the events were applied but not committed (they will be when the store recovers; a retry may count them twice): \(error.message)")
                }
                promise.succeed(response)
            }
            if case .failure(let error) = result {
                counters.recordError(error.code)
                promise.succeed(.error(id: id, error.code, error.message, checkIndex: error.checkIndex))
            }
            return promise.futureResult
        case .getReputation(let get):
            return background(request, eventLoop: eventLoop) { service, now in service.get(get, configuration: configuration, now: now) }
        case .getTier(let get):
            return background(request, eventLoop: eventLoop) { service, _ in
                service.tierResponse(service.tiers.assignment(of: Fingerprint.of(tenant: get.tenant, key: get.subject)))
            }
        case .listTiers(let list):
            return background(request, eventLoop: eventLoop) { service, _ in service.listTiers(list, configuration: configuration) }
        case .setTier(let set):
            if let refusal = operatorRefusal(id: id, on: connection) {
                counters.requests.add(1, ordering: .relaxed)
                return answer(refusal)
            }
            return background(request, eventLoop: eventLoop) { service, now in
                service.changeTier(tenant: set.tenant, subject: set.subject, to: set.tier, configuration: configuration, now: now)
            }
        case .removeTier(let remove):
            if let refusal = operatorRefusal(id: id, on: connection) {
                counters.requests.add(1, ordering: .relaxed)
                return answer(refusal)
            }
            return background(request, eventLoop: eventLoop) { service, now in
                service.changeTier(tenant: remove.tenant, subject: remove.subject, to: nil, configuration: configuration, now: now)
            }
        case .listReputations(let list):
            return background(request, eventLoop: eventLoop) { service, now in service.list(list, configuration: configuration, now: now) }
        case .setReputation(let set):
            counters.requests.add(1, ordering: .relaxed)
            if let refusal = operatorRefusal(id: id, on: connection) { return answer(refusal) }
            guard let service = reputation else { return answer(Self.noReputation(id: id)) }
            let promise = eventLoop.makePromise(of: WireResponse.self)
            let counters = counters
            service.set(set, configuration: configuration, now: time.now()) { response in
                var response = response
                response.id = id
                if case .error(let error) = response.body { counters.recordError(error.code) }
                promise.succeed(response)
            }
            return promise.futureResult
        default:
            return nil
        }
    }

    /// Fire-and-forget events: applied and queued for the next commit, answered at once.
    func recordNow(_ events: Sluice_V1_RecordEventsRequest, id: UInt64) -> WireResponse {
        guard let service = reputation else { return Self.noReputation(id: id) }
        switch service.record(events, configuration: state.current.configuration, now: time.now(), completion: nil) {
        case .success(let recorded):
            var response = WireResponse()
            response.recordEvents.recorded = UInt32(recorded)
            return response
        case .failure(let error):
            return .error(id: id, error.code, error.message, checkIndex: error.checkIndex)
        }
    }

    /// Runs `work` on the store's queue and answers with what it returns.
    func background(_ request: WireRequest, eventLoop: any EventLoop,
                    _ work: @escaping @Sendable (ReputationService, Int64) -> WireResponse) -> EventLoopFuture<WireResponse> {
        counters.requests.add(1, ordering: .relaxed)
        let id = request.id
        guard let service = reputation else {
            counters.recordError(.unavailable)
            return eventLoop.makeSucceededFuture(Self.noReputation(id: id))
        }
        let promise = eventLoop.makePromise(of: WireResponse.self)
        let counters = counters, time = time
        service.writer.queue.async {
            var response = work(service, time.now())
            response.id = id
            if case .error(let error) = response.body { counters.recordError(error.code) }
            promise.succeed(response)
        }
        return promise.futureResult
    }
}
