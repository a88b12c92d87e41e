import NIOCore
import SluiceConfiguration
import SluiceCore
import SluiceProto
import SluiceWire
import SwiftProtobuf
import Synchronization

/// Envoy's `ShouldRateLimit`, answered as envoy ratelimit answers it (docs/MIGRATING.md), with
/// each counted descriptor decided as a check of the domain's tenant through the check path.
///
/// - an empty domain or no descriptors is an error (`INVALID_ARGUMENT`);
/// - an unknown domain, or a descriptor that matches no limit, is OK without a limit;
/// - `unlimited` is OK with `limit_remaining` 2³²−1; 0 per unit is always over the limit;
/// - a limit named in another applying limit's `replaces` is not applied;
/// - a descriptor over its limit is OVER_LIMIT with remaining 0, unless `shadow_mode` (then OK,
///   counted as shadowed); the overall code is OVER_LIMIT when any descriptor is;
/// - a descriptor's `limit` override is decided as an inline fixed-window limit on its key;
/// - hits: the descriptor's `hits_addend` when set (0 checks without counting), else the
///   request's, 0 meaning 1.
final class EnvoyFront: Sendable {
    typealias Request = Envoy_Service_Ratelimit_V3_RateLimitRequest
    typealias Response = Envoy_Service_Ratelimit_V3_RateLimitResponse
    typealias Status = Envoy_Service_Ratelimit_V3_RateLimitResponse.DescriptorStatus

    /// What went wrong with a request, as a gRPC status says it.
    struct Failure: Error {
        enum Kind { case invalidArgument, unauthenticated, permissionDenied, resourceExhausted, unavailable, `internal` }
        var kind: Kind
        var message: String
    }

    let dispatcher: RequestDispatcher
    let counters: EnvoyCounters
    /// Reads the wall clock for `duration_until_reset` (the request clock's time is the check's).
    let now: @Sendable () -> Int64

    init(dispatcher: RequestDispatcher, counters: EnvoyCounters, now: @escaping @Sendable () -> Int64) {
        self.dispatcher = dispatcher
        self.counters = counters
        self.now = now
    }

    /// What one descriptor comes to before anything is decided.
    enum Plan {
        /// OK, no limit (an unknown domain, no match, or replaced).
        case none
        /// `unlimited`.
        case unlimited
        /// Over the limit without counting (0 per unit).
        case refused(DescriptorRateLimit)
        /// Decided by the check at this index of the request's checks.
        case check(Int, DescriptorRateLimit)
    }

    /// What a request comes to before anything is decided: a plan per descriptor, and the
    /// native checks of those that are counted.
    struct Planned {
        var plans: [Plan]
        var checks: [Sluice_V1_Check]
        var headers: Configuration.EnvoySettings.Headers
        /// The request's domain, naming each limit's counters (`domain.path`).
        var domain = ""
        /// `envoy.near_limit_ratio`.
        var nearLimitRatio = 0.8
    }

    /// Answers `request` for a caller at `address` presenting `token` (nil: none), deciding
    /// its checks on `loop`, from that loop (its connection's, ``RateLimitStreams``).
    func answer(_ request: Request, token: String?, address: String, requiresToken: Bool,
                on loop: any EventLoop) -> EventLoopFuture<Result<Response, Failure>> {
        let planned: Planned
        do {
            planned = try plan(request)
        } catch {
            return loop.makeSucceededFuture(.failure(error))
        }
        let wanted = planned.plans.compactMap { plan -> Int? in if case .check(let index, _) = plan { index } else { nil } }
        guard !wanted.isEmpty else {
            return loop.makeSucceededFuture(.success(respond(planned, verdicts: [])))
        }
        var native = WireRequest()
        // Only the checks still applied: a replaced one is not counted.
        native.check.checks = wanted.map { planned.checks[$0] }
        let call = FrontCall(dispatcher: dispatcher, loop: loop, address: address, requiresToken: requiresToken)
        return call.answers([native], token: token).map { responses in
            let answer = responses.first ?? WireResponse()
            switch answer.body {
            case .check(let response) where response.verdicts.count == wanted.count:
                var byIndex = [Sluice_V1_Verdict](repeating: .init(), count: planned.checks.count)
                for (slot, index) in wanted.enumerated() { byIndex[index] = response.verdicts[slot] }
                return .success(self.respond(planned, verdicts: byIndex))
            case .error(let error): return .failure(self.fail(error))
            default: return .failure(self.fail(.internal, "the check path answered something other than verdicts"))
            }
        }
    }

    /// The plan of each descriptor, as envoy ratelimit reads the request.
    func plan(_ request: Request) throws(Failure) -> Planned {
        counters.requests.add(1, ordering: .relaxed)
        let configuration = dispatcher.configuration
        guard !request.domain.isEmpty else { throw fail(.invalidArgument, "rate limit domain must not be empty") }
        guard !request.descriptors.isEmpty else { throw fail(.invalidArgument, "rate limit descriptor list must not be empty") }
        guard request.descriptors.count <= configuration.maxBatch else {
            throw fail(.invalidArgument, "\(request.descriptors.count) descriptors; at most server.max_batch (\(configuration.maxBatch)) per request")
        }
        let settings = configuration.envoy
        let domain = settings.domains[request.domain]
        if domain == nil { counters.unknownDomain.add(1, ordering: .relaxed) }
        var plans: [Plan] = []
        var checks: [Sluice_V1_Check] = []
        var replaced: Set<String> = []
        let requestHits = UInt64(max(1, request.hitsAddend))
        for (index, descriptor) in request.descriptors.enumerated() {
            guard !descriptor.entries.isEmpty else {
                throw fail(.invalidArgument, "descriptor \(index) has no entries")
            }
            guard let domain else { plans.append(.none); continue }
            let entries = descriptor.entries.map { (key: $0.key, value: $0.value) }
            let limit: DescriptorRateLimit, key: String
            if descriptor.hasLimit {
                // An override from Envoy's route: this descriptor's key, the given numbers.
                guard let unit = DescriptorRateLimit.Unit(rawValue: descriptor.limit.unit.rawValue) else {
                    throw fail(.invalidArgument, "descriptor \(index): the limit override has no valid unit")
                }
                limit = DescriptorRateLimit(rule: nil, requestsPerUnit: descriptor.limit.requestsPerUnit, unit: unit, unlimited: false, name: "",
                                        replaces: [], shadow: false, algorithm: .fixedWindow, path: "")
                key = DescriptorDomain.key(of: entries)
            } else if let match = domain.match(entries) {
                limit = match.limit
                key = match.key
            } else {
                plans.append(.none)
                continue
            }
            replaced.formUnion(limit.replaces)
            if limit.unlimited { plans.append(.unlimited); continue }
            guard let unit = limit.unit, limit.requestsPerUnit > 0 else { plans.append(.refused(limit)); continue }
            guard key.utf8.count <= configuration.maxKeyBytes else {
                throw fail(.invalidArgument, "descriptor \(index): its entries come to \(key.utf8.count) bytes; at most \(configuration.maxKeyBytes)")
            }
            var check = Sluice_V1_Check()
            check.tenant = domain.name
            check.key = key
            if let caller = descriptor.entries.first(where: { $0.key == settings.subjectKey })?.value, !caller.isEmpty {
                check.subject = caller
                if caller.utf8.count <= 64 { check.ip = caller }
            }
            check.hits = descriptor.hasHitsAddend ? descriptor.hitsAddend.value : requestHits
            if let rule = limit.rule {
                check.rule = rule
            } else {
                var inline = Sluice_V1_Limit()
                inline.limit = UInt64(limit.requestsPerUnit)
                inline.periodMs = UInt64(unit.seconds) * 1_000
                inline.algorithm = .fixedWindow
                check.limit = inline
            }
            plans.append(.check(checks.count, limit))
            checks.append(check)
        }
        // `replaces`: a named limit another applying limit replaces is not applied.
        if !replaced.isEmpty {
            for index in plans.indices {
                switch plans[index] {
                case .check(_, let limit), .refused(let limit):
                    if !limit.name.isEmpty, replaced.contains(limit.name) { plans[index] = .none }
                default: break
                }
            }
        }
        return Planned(plans: plans, checks: checks, headers: settings.headers, domain: request.domain, nearLimitRatio: settings.nearLimitRatio)
    }

    /// The answer, from the plans and the verdicts of their checks.
    func respond(_ planned: Planned, verdicts: [Sluice_V1_Verdict]) -> Response {
        let plans = planned.plans, headers = planned.headers
        var response = Response()
        // As envoy ratelimit: OVER_LIMIT when a descriptor not in quota mode is over its limit,
        // or when every quota-mode descriptor is.
        var over = false, quotaCount = 0, quotaOver = 0
        var policies: [RateLimitHeaderFields.Policy] = []
        let nowNs = now()
        for plan in plans {
            var status = Status()
            switch plan {
            case .none:
                status.code = .ok
                counters.noLimit.add(1, ordering: .relaxed)
            case .unlimited:
                status.code = .ok
                status.limitRemaining = UInt32.max
            case .refused(let limit):
                status.currentLimit = Self.current(limit)
                status.code = limit.shadow ? .ok : .overLimit
                if let unit = limit.unit { status.durationUntilReset = Self.untilWindowEnds(unit, now: nowNs) }
                countDecision(allowed: false, shadow: limit.shadow, limit: limit, domain: planned.domain, near: false)
                policies.append(.init(name: Self.policyName(limit), quota: 0, windowSeconds: limit.unit?.seconds ?? 0, remaining: 0,
                                      resetSeconds: limit.unit.map { Self.seconds(Self.untilWindowEnds($0, now: nowNs)) } ?? 0))
            case .check(let index, let limit):
                let verdict = verdicts[index]
                status.currentLimit = Self.current(limit)
                status.limitRemaining = verdict.allowed ? UInt32(clamping: verdict.remaining) : 0
                status.code = verdict.allowed || limit.shadow ? .ok : .overLimit
                // Fixed windows end at multiples of the unit, as envoy ratelimit reports them;
                // another algorithm says when it is fully recovered.
                if limit.algorithm == .fixedWindow, let unit = limit.unit {
                    status.durationUntilReset = Self.untilWindowEnds(unit, now: nowNs)
                } else {
                    status.durationUntilReset = .init(milliseconds: verdict.allowed ? verdict.resetAfterMs : max(verdict.retryAfterMs, verdict.resetAfterMs))
                }
                // Near its limit, as envoy ratelimit counts it: allowed with at least the ratio used.
                let near = verdict.allowed && verdict.limit > 0
                    && Double(verdict.limit - min(verdict.remaining, verdict.limit)) >= planned.nearLimitRatio * Double(verdict.limit)
                countDecision(allowed: verdict.allowed, shadow: limit.shadow, limit: limit, domain: planned.domain, near: near)
                policies.append(.init(name: Self.policyName(limit), quota: UInt64(limit.requestsPerUnit), windowSeconds: limit.unit?.seconds ?? 0,
                                      remaining: UInt64(status.limitRemaining), resetSeconds: Self.seconds(status.durationUntilReset)))
            }
            switch plan {
            case .check(_, let limit), .refused(let limit):
                if limit.quota {
                    quotaCount += 1
                    if status.code == .overLimit { quotaOver += 1 }
                } else if status.code == .overLimit {
                    over = true
                }
            default: break
            }
            response.statuses.append(status)
        }
        if quotaCount > 0, quotaOver == quotaCount { over = true }
        response.overallCode = over ? .overLimit : .ok
        counters.overall(over)
        if headers != .off, !policies.isEmpty {
            response.responseHeadersToAdd = RateLimitHeaderFields.fields(policies, style: .init(rawValue: headers.rawValue) ?? .off).map { field in
                var header = Envoy_Service_Ratelimit_V3_HeaderValue()
                header.key = field.name
                header.value = field.value
                return header
            }
        }
        return response
    }

    func countDecision(allowed: Bool, shadow: Bool, limit: DescriptorRateLimit, domain: String, near: Bool) {
        let rule = counters.rule("\(domain).\(limit.path)")
        if allowed {
            counters.withinLimit.add(1, ordering: .relaxed)
            rule.withinLimit.add(1, ordering: .relaxed)
            if near { rule.nearLimit.add(1, ordering: .relaxed) }
        } else if shadow {
            counters.shadowed.add(1, ordering: .relaxed)
            rule.shadowed.add(1, ordering: .relaxed)
        } else {
            counters.overLimit.add(1, ordering: .relaxed)
            rule.overLimit.add(1, ordering: .relaxed)
        }
    }

    static func current(_ limit: DescriptorRateLimit) -> Response.RateLimit {
        var current = Response.RateLimit()
        current.requestsPerUnit = limit.requestsPerUnit
        current.unit = limit.unit.flatMap { Response.RateLimit.Unit(rawValue: $0.rawValue) } ?? .unknown
        current.name = limit.name
        return current
    }

    /// The policy's name in RateLimit headers: the limit's `name`, else its descriptor's path.
    static func policyName(_ limit: DescriptorRateLimit) -> String {
        !limit.name.isEmpty ? limit.name : limit.path.isEmpty ? "override" : limit.path
    }

    /// Time until the window of `unit` containing `now` (ns since the epoch) ends, in whole
    /// seconds as envoy ratelimit reports it.
    static func untilWindowEnds(_ unit: DescriptorRateLimit.Unit, now: Int64) -> SwiftProtobuf.Google_Protobuf_Duration {
        let seconds = now / 1_000_000_000
        var duration = SwiftProtobuf.Google_Protobuf_Duration()
        duration.seconds = unit.seconds - seconds % unit.seconds
        return duration
    }

    static func seconds(_ duration: SwiftProtobuf.Google_Protobuf_Duration) -> Int64 {
        duration.seconds + (duration.nanos > 0 ? 1 : 0)
    }

    func fail(_ kind: Failure.Kind, _ message: String) -> Failure {
        counters.errors.add(1, ordering: .relaxed)
        return Failure(kind: kind, message: message)
    }

    /// A native error as a gRPC status.
    func fail(_ error: Sluice_V1_Error) -> Failure {
        switch error.code {
        case .unauthenticated: fail(.unauthenticated, error.message)
        case .forbidden: fail(.permissionDenied, error.message)
        case .quotaExceeded, .overloaded: fail(.resourceExhausted, error.message)
        case .unavailable, .shuttingDown: fail(.unavailable, error.message)
        case .invalidArgument, .unknownRule, .unknownTenant: fail(.invalidArgument, error.message)
        default: fail(.internal, error.message)
        }
    }
}

extension SwiftProtobuf.Google_Protobuf_Duration {
    init(milliseconds: UInt64) {
        self.init()
        let clamped = min(milliseconds, UInt64(Int64.max / 1_000_000))
        seconds = Int64(clamped / 1_000)
        nanos = Int32(clamped % 1_000) * 1_000_000
    }
}

/// The Envoy service's counters (`sluice_envoy_*` on /metrics).
final class EnvoyCounters: Sendable {
    let requests = Atomic<UInt64>(0)
    let errors = Atomic<UInt64>(0)
    let overallOK = Atomic<UInt64>(0)
    let overallOverLimit = Atomic<UInt64>(0)
    /// Descriptors decided within their limit.
    let withinLimit = Atomic<UInt64>(0)
    /// Descriptors over their limit and answered OVER_LIMIT.
    let overLimit = Atomic<UInt64>(0)
    /// Descriptors over their limit in shadow mode (answered OK).
    let shadowed = Atomic<UInt64>(0)
    /// Descriptors without a limit (no match, unknown domain, replaced).
    let noLimit = Atomic<UInt64>(0)
    /// Requests for a domain no file declares.
    let unknownDomain = Atomic<UInt64>(0)

    /// Per limit (`domain.path`, from the configuration: bounded), kept across reloads.
    let rules = Mutex<[String: RuleCounters]>([:])

    /// One limit's descriptors by result, as envoy ratelimit's per-key stats.
    final class RuleCounters: Sendable {
        let withinLimit = Atomic<UInt64>(0)
        /// Allowed with at least `envoy.near_limit_ratio` of the limit used (also within_limit).
        let nearLimit = Atomic<UInt64>(0)
        let overLimit = Atomic<UInt64>(0)
        let shadowed = Atomic<UInt64>(0)
    }

    func overall(_ over: Bool) {
        if over { overallOverLimit.add(1, ordering: .relaxed) } else { overallOK.add(1, ordering: .relaxed) }
    }

    func rule(_ name: String) -> RuleCounters {
        rules.withLock { rules in
            if let counters = rules[name] { return counters }
            let counters = RuleCounters()
            rules[name] = counters
            return counters
        }
    }
}
