import Logging
import SluiceCore
import SluiceProto
import SluiceWire

/// The daemon's answer to every request: validates, resolves rules, asks the table.
///
/// This is the hot path. It runs on the connection's event loop, reads the clock once per
/// request, never waits and never logs per check at the default level.
public final class RequestDispatcher: RequestProcessor, Sendable {
    /// The configuration in force.
    public let configuration: Configuration
    /// The limiter table.
    public let table: LimiterTable
    /// Connection-level counters.
    public let counters: ServerCounters
    /// Where later features adjust checks (nil: no adjustment, no call).
    public let policy: (any CheckPolicy)?
    /// Where decided checks are offered to background features (nil: no events).
    public let events: EventTap<CheckEvent>?
    let time: TimeSource
    let version: String

    /// Creates a dispatcher.
    public init(configuration: Configuration, table: LimiterTable, counters: ServerCounters = ServerCounters(),
                policy: (any CheckPolicy)? = nil, events: EventTap<CheckEvent>? = nil,
                time: TimeSource = TimeSource(), version: String = SluiceVersion.current) {
        self.configuration = configuration
        self.table = table
        self.counters = counters
        self.policy = policy
        self.events = events
        self.time = time
        self.version = version
    }

    public func recordMalformed() {
        counters.requests.add(1, ordering: .relaxed)
        counters.errors.add(1, ordering: .relaxed)
    }

    public func process(_ request: WireRequest) -> WireResponse {
        counters.requests.add(1, ordering: .relaxed)
        var response: WireResponse
        switch request.body {
        case .check(let check): response = answer(check, id: request.id)
        case .ping(let ping):
            response = WireResponse()
            response.ping.payload = ping.payload
        case .release(let release): response = answer(release, id: request.id)
        case .stats: response = statsResponse()
        case nil:
            response = .error(id: request.id, .unsupported, "the request has no body, or one this daemon does not know")
        }
        response.id = request.id
        if case .error = response.body { counters.errors.add(1, ordering: .relaxed) }
        return response
    }

    typealias Limits = BatchCheck.Limits

    static let maximumNowMs: UInt64 = 7_258_118_399_999

    func requestNow(_ nowMs: UInt64, field: String, index: Int) -> Result<Int64, WireError> {
        guard nowMs > 0 else {
            return .failure(WireError(.invalidArgument, "\(field) is required when the daemon runs with --clock request",
                                      checkIndex: Int32(index)))
        }
        // Nanoseconds since the epoch fit Int64 until 2262; capping at 2200 keeps any time plus
        // any period (10 years) or GCRA tolerance (36 years) inside it.
        guard nowMs <= Self.maximumNowMs else {
            return .failure(WireError(.invalidArgument, "\(field) \(nowMs) is after the year 2199", checkIndex: Int32(index)))
        }
        return .success(Int64(nowMs) * 1_000_000)
    }

    func resolveLimits(tenant: String, source: Sluice_V1_Check.OneOf_LimitSource?, index: Int) -> Result<(Limits, String), WireError> {
        switch source {
        case .rule(let name):
            guard let rule = configuration.rule(name, tenant: tenant) else {
                let scope = tenant.isEmpty ? "" : " for tenant '\(tenant)'"
                return .failure(WireError(.unknownRule, "no rule named '\(name)' is configured\(scope)", checkIndex: Int32(index)))
            }
            return .success(rule.limits.count == 1 ? (.single(rule.limits[0]), name) : (.rule(rule.limits), name))
        case .limit(let wire):
            let algorithm = wire.algorithm.core ?? (wire.algorithm == .unspecified ? configuration.defaultAlgorithm : nil)
            guard let algorithm else {
                return .failure(WireError(.invalidArgument, "limit.algorithm \(wire.algorithm.rawValue) is not known", checkIndex: Int32(index)))
            }
            guard wire.periodMs <= UInt64(LimitSpec.maximumPeriod / 1_000_000) else {
                return .failure(WireError(.invalidArgument, "limit.period_ms \(wire.periodMs) is above 10 years", checkIndex: Int32(index)))
            }
            do {
                let spec = try LimitSpec(limit: wire.limit, period: Int64(wire.periodMs) * 1_000_000, burst: wire.burst, algorithm: algorithm)
                return .success((.single(.inline(spec)), ""))
            } catch {
                return .failure(WireError(.invalidArgument, "limit: \(error.message)", checkIndex: Int32(index)))
            }
        case nil:
            return .failure(WireError(.invalidArgument, "the check names neither a rule nor a limit", checkIndex: Int32(index)))
        }
    }

    /// A check validated and ready for the table, with the name of the rule that decides it ("" inline).
    func resolve(_ check: WireCheck, index: Int, batchNow: Int64) -> Result<(BatchCheck, String), WireError> {
        let maxBytes = configuration.maxKeyBytes
        guard !check.key.isEmpty else {
            return .failure(WireError(.invalidArgument, "key must not be empty", checkIndex: Int32(index)))
        }
        guard check.key.utf8.count <= maxBytes, check.tenant.utf8.count <= maxBytes, check.subject.utf8.count <= maxBytes else {
            return .failure(WireError(.invalidArgument, "tenant, key and subject must be at most \(maxBytes) bytes", checkIndex: Int32(index)))
        }
        guard configuration.knows(tenant: check.tenant) else {
            return .failure(WireError(.unknownTenant, "tenant '\(check.tenant)' is not configured", checkIndex: Int32(index)))
        }
        var now = batchNow
        if configuration.clock == .request {
            switch requestNow(check.nowMs, field: "now_ms", index: index) {
            case .success(let value): now = value
            case .failure(let error): return .failure(error)
            }
        }
        let hits = check.hitsPresence == nil ? 1 : check.hits
        guard hits <= LimitSpec.maximumLimit else {
            return .failure(WireError(.invalidArgument, "hits \(hits) is above \(LimitSpec.maximumLimit)", checkIndex: Int32(index)))
        }
        switch resolveLimits(tenant: check.tenant, source: check.limitSource, index: index) {
        case .success(let (limits, rule)):
            return .success((BatchCheck(key: .of(tenant: check.tenant, key: check.key), limits: limits, hits: hits, now: now), rule))
        case .failure(let error):
            return .failure(error)
        }
    }

    func answer(_ request: Sluice_V1_CheckRequest, id: UInt64) -> WireResponse {
        let checks = request.checks
        guard !checks.isEmpty else { return .error(id: id, .invalidArgument, "a check request needs at least one check") }
        guard checks.count <= configuration.maxBatch else {
            return .error(id: id, .invalidArgument, "a batch of \(checks.count) checks is above max_batch \(configuration.maxBatch)")
        }
        let batchNow = configuration.clock == .monotonic ? time.now() : 0
        // Validate the whole batch before deciding any of it: an invalid check consumes nothing.
        // `items` is the batch the table decides; `rules` names each check's rule for its verdict.
        var items: [BatchCheck] = []
        var rules: [String] = []
        items.reserveCapacity(checks.count)
        rules.reserveCapacity(checks.count)
        for (index, check) in checks.enumerated() {
            switch resolve(check, index: index, batchNow: batchNow) {
            case .success(let (item, rule)):
                items.append(item)
                rules.append(rule)
            case .failure(let error):
                var response = WireResponse()
                response.error = error
                return response
            }
        }
        var blocks: [Int64?] = []
        if let policy {
            blocks = Array(repeating: nil, count: items.count)
            for index in items.indices {
                let check = checks[index]
                let adjustment = policy.adjustment(tenant: check.tenant, subject: check.subject.isEmpty ? check.key : check.subject,
                                                   now: items[index].now)
                items[index].multiplier = adjustment.multiplier
                if let blockedFor = adjustment.blockedFor {
                    items[index].skip = true
                    blocks[index] = blockedFor
                }
            }
        }
        var decisions: [Decision]
        if items.count == 1, !items[0].skip {
            let item = items[0]
            switch item.limits {
            case .single(let limit):
                decisions = [table.check(key: item.key, limit: limit, hits: item.hits, now: item.now, multiplier: item.multiplier)]
            case .rule(let limits):
                decisions = [table.check(key: item.key, limits: limits, hits: item.hits, now: item.now, multiplier: item.multiplier)]
            }
        } else {
            // Grouped by shard, one lock per shard, slots prefetched first (docs/BENCHMARKS.md).
            decisions = Array(repeating: .blocked(), count: items.count)
            items.withUnsafeBufferPointer { items in
                decisions.withUnsafeMutableBufferPointer { table.check(batch: items, into: $0) }
            }
        }
        var answer = Sluice_V1_CheckResponse()
        answer.verdicts.reserveCapacity(items.count)
        for index in items.indices {
            let decision = blocks.isEmpty ? decisions[index] : blocks[index].map { .blocked(retryAfter: $0) } ?? decisions[index]
            if let events {
                let check = checks[index]
                events.offer(CheckEvent(tenant: check.tenant, key: check.key, subject: check.subject.isEmpty ? check.key : check.subject,
                                        rule: rules[index], hits: items[index].hits, allowed: decision.allowed,
                                        reason: decision.reason, now: items[index].now))
            }
            answer.verdicts.append(WireVerdict(decision, rule: rules[index]))
        }
        var response = WireResponse()
        response.check = answer
        return response
    }

    func answer(_ release: Sluice_V1_ReleaseRequest, id: UInt64) -> WireResponse {
        guard !release.key.isEmpty else { return .error(id: id, .invalidArgument, "key must not be empty") }
        guard configuration.knows(tenant: release.tenant) else {
            return .error(id: id, .unknownTenant, "tenant '\(release.tenant)' is not configured")
        }
        var now = time.now()
        if configuration.clock == .request {
            switch requestNow(release.nowMs, field: "now_ms", index: -1) {
            case .success(let value): now = value
            case .failure(let error): return .error(id: id, error.code, error.message)
            }
        }
        let source: Sluice_V1_Check.OneOf_LimitSource? = switch release.limitSource {
        case .rule(let name): .rule(name)
        case .limit(let limit): .limit(limit)
        case nil: nil
        }
        let limits: [BoundLimit]
        switch resolveLimits(tenant: release.tenant, source: source, index: -1) {
        case .success(let (.single(limit), _)): limits = [limit]
        case .success(let (.rule(rule), _)): limits = rule
        case .failure(let error): return .error(id: id, error.code, error.message)
        }
        let key = Fingerprint.of(tenant: release.tenant, key: release.key)
        var released = false
        for limit in limits where limit.spec.algorithm == .concurrency {
            released = table.release(key: key, limit: limit, leaseID: release.leaseID, now: now) || released
        }
        var response = WireResponse()
        response.release.released = released
        return response
    }

    func statsResponse() -> WireResponse {
        let table = table.statistics()
        var stats = Sluice_V1_StatsResponse()
        stats.version = version
        stats.uptimeMs = UInt64(max(0, time.uptime() / 1_000_000))
        stats.checks = table.checks
        stats.allowed = table.allowed
        stats.denied = table.denied
        stats.entries = UInt64(table.entries)
        stats.maxEntries = UInt64(table.maxEntries)
        stats.evictions = table.evictions
        stats.reclaimed = table.reclaimed
        stats.shards = UInt32(table.shards)
        stats.connectionsOpen = counters.connectionsOpen.load(ordering: .relaxed)
        stats.connectionsTotal = counters.connectionsTotal.load(ordering: .relaxed)
        stats.requests = counters.requests.load(ordering: .relaxed)
        stats.errors = counters.errors.load(ordering: .relaxed)
        stats.eventsDropped = events?.dropped ?? 0
        stats.clock = configuration.clock.rawValue
        var response = WireResponse()
        response.stats = stats
        return response
    }
}

/// The version `sluiced` reports.
public enum SluiceVersion {
    /// The current version.
    public static let current = "0.1.0"
}
