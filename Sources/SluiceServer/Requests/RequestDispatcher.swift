import Logging
import NIOCore
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceProto
import SluiceWire

/// The daemon's answer to every request: validates, resolves rules, asks the table.
///
/// This is the hot path. It runs on the connection's event loop, reads the clock once per
/// request, never waits and never logs per check at the default level.
public final class RequestDispatcher: RequestProcessor, Sendable {
    /// The configuration in force (it changes on reload) and the per-thread counters.
    public let state: LiveState
    /// What checks are decided against: the sharded in-memory table.
    let backend: any LimiterBackend
    /// Connection-level counters.
    public let counters: ServerCounters
    /// Where decided checks are offered to background features (nil: no events).
    public let events: EventTap<CheckEvent>?
    /// Reputation: the book checks read, and where events go; nil when the daemon keeps none.
    public let reputation: ReputationService?
    /// Protected services' shedding controllers (the adaptive feature).
    let shedding: SheddingService
    /// Anomaly detection, fed by checks and reported outcomes.
    let anomaly: AnomalyService
    /// The check path's stages, in order (CheckPipeline.swift).
    let stages: StageList
    /// Carries out operator requests (reload, snapshot); nil answers them `CODE_UNAVAILABLE`.
    let operations: (any OperatorActions)?
    let time: TimeSource
    let version: String
    /// The backend's ``LimiterBackend/answersAtOnce``, read once.
    let answersAtOnce: Bool
    /// Tokens presented, and failures per address.
    let gatekeeper = Gatekeeper()
    /// Connections open per tenant, for `max_connections`.
    let connectionQuotas = ConnectionQuotas()
    /// Whether checks of tenants with `max_keys` go to their own tables: only when checks are
    /// decided in this daemon's table (a shared backend keeps its own keys).
    let routesPartitions: Bool

    /// A dispatcher over the services the daemon built.
    ///
    /// - Parameter extraStages: run before the features' own stages (an embedder's policy).
    init(state: LiveState, backend: any LimiterBackend, counters: ServerCounters, events: EventTap<CheckEvent>?,
         reputation: ReputationService?, shedding: SheddingService, anomaly: AnomalyService, operations: (any OperatorActions)?,
         time: TimeSource, version: String, extraStages: [any CheckStage] = []) {
        self.reputation = reputation
        self.shedding = shedding
        self.anomaly = anomaly
        stages = StageList(extra: extraStages, reputation: reputation.map { ReputationStage(hot: $0.hot) },
                           adaptive: AdaptiveStage(tiers: reputation?.tiers, baselines: reputation?.baselines, shedding: shedding),
                           anomaly: AnomalyStage(anomaly: anomaly, tiers: reputation?.tiers), tap: events.map { EventTapStage(events: $0) })
        self.state = state
        self.backend = backend
        answersAtOnce = backend.answersAtOnce
        routesPartitions = backend is LimiterTable
        self.counters = counters
        self.events = events
        self.operations = operations
        self.time = time
        self.version = version
    }

    /// The configuration in force.
    public var configuration: Configuration { state.current.configuration }

    public func recordFailedFrame(_ code: WireError.Code) {
        counters.requests.add(1, ordering: .relaxed)
        counters.recordError(code)
    }

    public func connectionEnded(_ reason: ConnectionEnd) { counters.recordEnd(reason) }

    public func process(_ request: WireRequest) -> WireResponse {
        // Check requests count themselves (the fast path shares that code).
        if case .check = request.body { return answer(request) }
        counters.requests.add(1, ordering: .relaxed)
        var response: WireResponse
        switch request.body {
        case .check: response = WireResponse() // answered above
        case .ping(let ping):
            response = WireResponse()
            response.ping.payload = ping.payload
        case .release(let release): response = answer(release, id: request.id)
        case .stats: response = statsResponse()
        case .recordEvents(let events) where !events.durable:
            response = recordNow(events, id: request.id)
        case .reportLoad(let report):
            // Reached only without an event loop to defer to (see deferredAnswer).
            response = shedding.report(report, now: time.now())
        case .reportOutcome(let report):
            response = anomaly.record(report, configuration: state.current.configuration, now: time.now())
        case .top(let top):
            response = anomaly.top(top, configuration: state.current.configuration)
        case .report(let report):
            response = anomaly.report(report, configuration: state.current.configuration)
        case .reload, .snapshot, .recordEvents, .getReputation, .listReputations, .setReputation, .flags,
             .setTier, .getTier, .listTiers, .removeTier, .watchAlerts:
            // Reached only without an event loop to defer to (see deferredAnswer).
            response = .error(id: request.id, .unsupported, "this request needs a connection")
        case .authenticate:
            response = .error(id: request.id, .unsupported, "this daemon was embedded without authentication")
        case nil:
            response = .error(id: request.id, .unsupported, "the request has no body, or one this daemon does not know")
        }
        response.id = request.id
        if case .error(let error) = response.body { counters.recordError(error.code) }
        return response
    }

    public func deferredAnswer(to request: WireRequest, on connection: ConnectionKind, eventLoop: any EventLoop)
        -> EventLoopFuture<WireResponse>? {
        if let answer = reputationAnswer(to: request, on: connection, eventLoop: eventLoop) { return answer }
        if let answer = tierAnswer(to: request, on: connection, eventLoop: eventLoop) { return answer }
        if !answersAtOnce, case .release(let release) = request.body { return deferredRelease(release, id: request.id, eventLoop: eventLoop) }
        if case .reportLoad(let report) = request.body {
            // A step of the service's controller, on the adaptive queue (as its background tick).
            counters.requests.add(1, ordering: .relaxed)
            let promise = eventLoop.makePromise(of: WireResponse.self)
            let shedding = shedding, time = time, counters = counters, id = request.id
            shedding.queue.async {
                var response = shedding.report(report, now: time.now())
                response.id = id
                if case .error(let error) = response.body { counters.recordError(error.code) }
                promise.succeed(response)
            }
            return promise.futureResult
        }
        let action: @Sendable (any OperatorActions) async -> WireResponse
        switch request.body {
        case .reload: action = { await $0.reload() }
        case .snapshot: action = { await $0.snapshot() }
        case .flags(let flags): action = { await $0.flags(flags) }
        default: return nil
        }
        counters.requests.add(1, ordering: .relaxed)
        let refusal: WireResponse? = operatorRefusal(id: request.id, on: connection) ?? (operations == nil
            ? .error(id: request.id, .unavailable, "this daemon takes no operator requests")
            : nil)
        if let refusal, case .error(let error) = refusal.body {
            counters.recordError(error.code)
            return eventLoop.makeSucceededFuture(refusal)
        }
        guard let operations else { return nil }
        let promise = eventLoop.makePromise(of: WireResponse.self)
        let counters = counters
        Task.detached {
            let response = await action(operations)
            if case .error(let error) = response.body { counters.recordError(error.code) }
            promise.succeed(response)
        }
        return promise.futureResult
    }

    public func openStream(_ request: WireRequest, on connection: ConnectionKind, stream: ResponseStream) -> WireResponse {
        openStream(request, on: connection, stream: stream, tenantOnly: false)
    }

    /// The same; `tenantOnly`: a watcher bound to its tenant, sent none of the daemon-wide
    /// (global) alerts, which are about every tenant's traffic.
    func openStream(_ request: WireRequest, on connection: ConnectionKind, stream: ResponseStream, tenantOnly: Bool) -> WireResponse {
        counters.requests.add(1, ordering: .relaxed)
        var response: WireResponse
        if case .watchAlerts(let watch) = request.body {
            response = anomaly.watch(watch, stream: stream, configuration: state.current.configuration, tenantOnly: tenantOnly)
        } else {
            response = .error(id: request.id, .unsupported, "this request is not a stream")
        }
        response.id = request.id
        if case .error(let error) = response.body { counters.recordError(error.code) }
        return response
    }

    /// The refusal of an operator request on `connection`, nil when it may be served there.
    func operatorRefusal(id: UInt64, on connection: ConnectionKind) -> WireResponse? {
        guard connection == .tcp, !state.current.configuration.adminOverTCP else { return nil }
        return .error(id: id, .forbidden,
                      "operator requests are served on the Unix socket; set admin.allow_tcp: true to serve them on TCP")
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

    /// Where a check's or a release's limits come from.
    enum LimitSource {
        case rule(String)
        case limit(LimitView)
    }

    /// The limits of `source` as `tenant` sees them, with the metric series their checks count
    /// under. `tenantEntry`: the tenant's declaration, if it has one.
    func resolveLimits(tenant: String, tenantEntry: Configuration.Tenant?, source: LimitSource?, index: Int,
                       in live: LiveConfiguration) -> Result<(limits: Limits, series: Int), WireError> {
        let base = tenantEntry?.seriesBase ?? (tenant.isEmpty ? live.series.defaultBase : live.series.otherBase)
        switch source {
        case .rule(let name):
            guard let rule = live.configuration.rule(name, declaredBy: tenantEntry) else {
                let scope = tenant.isEmpty ? "" : " for tenant '\(tenant)'"
                return .failure(WireError(.unknownRule, "no rule named '\(name)' is configured\(scope)", checkIndex: Int32(index)))
            }
            return .success((rule.limits.count == 1 ? .single(rule.limits[0]) : .rule(rule.limits), base + rule.seriesSlot))
        case .limit(let wire):
            let wireAlgorithm = Sluice_V1_Algorithm(rawValue: Int(wire.algorithm)) ?? .UNRECOGNIZED(Int(wire.algorithm))
            let algorithm = wireAlgorithm.core ?? (wireAlgorithm == .unspecified ? live.configuration.defaultAlgorithm : nil)
            guard let algorithm else {
                return .failure(WireError(.invalidArgument, "limit.algorithm \(wire.algorithm) is not known", checkIndex: Int32(index)))
            }
            guard wire.periodMs <= UInt64(LimitSpec.maximumPeriod / 1_000_000) else {
                return .failure(WireError(.invalidArgument, "limit.period_ms \(wire.periodMs) is above 10 years", checkIndex: Int32(index)))
            }
            do {
                let spec = try LimitSpec(limit: wire.limit, period: Int64(wire.periodMs) * 1_000_000, burst: wire.burst, algorithm: algorithm)
                return .success((.single(.inline(spec)), base))
            } catch {
                return .failure(WireError(.invalidArgument, "limit: \(error.message)", checkIndex: Int32(index)))
            }
        case nil:
            return .failure(WireError(.invalidArgument, "the check names neither a rule nor a limit", checkIndex: Int32(index)))
        }
    }

    /// The tenant's declaration, or an error when tenants are strict and it has none.
    func lookUp(tenant: String, in configuration: Configuration, index: Int) -> Result<Configuration.Tenant?, WireError> {
        guard !tenant.isEmpty else { return .success(nil) }
        let entry = configuration.tenants[tenant]
        guard entry != nil || !configuration.strictTenants else {
            return .failure(WireError(.unknownTenant, "tenant '\(tenant)' is not configured", checkIndex: Int32(index)))
        }
        return .success(entry)
    }

    /// The limits the previous check of a batch resolved to: checks of one batch usually share
    /// their rule or inline limit, and resolving one costs a rule lookup or a `LimitSpec` (a
    /// division and a hash) per check otherwise.
    struct ResolvedLimits {
        var tenant = UnsafeRawBufferPointer(start: nil, count: 0)
        var rule: UnsafeRawBufferPointer?
        var limit: LimitView?
        var limits: Limits?
        var series = 0

        func matches(_ check: CheckView) -> Bool {
            guard limits != nil, tenant.elementsEqual(check.tenant) else { return false }
            if let limit { return check.limit == limit }
            guard let rule, let other = check.rule else { return false }
            return rule.elementsEqual(other)
        }
    }

    /// A check validated and ready for the table, with the metric series it counts under, and
    /// the table its tenant's keys live in (``TablePartitions``).
    @inline(__always)
    func resolve(_ check: CheckView, index: Int, batchNow: Int64, previous: inout ResolvedLimits,
                 in live: LiveConfiguration) -> Result<(BatchCheck, Int), WireError> {
        let result = resolveLimits(of: check, index: index, batchNow: batchNow, previous: &previous, in: live)
        guard routesPartitions, let partitions = live.partitions, case .success(let (resolved, series)) = result else { return result }
        var item = resolved
        item.partition = partitions.partition(for: check.tenant)
        return .success((item, series))
    }

    func resolveLimits(of check: CheckView, index: Int, batchNow: Int64, previous: inout ResolvedLimits,
                       in live: LiveConfiguration) -> Result<(BatchCheck, Int), WireError> {
        let maxBytes = live.configuration.maxKeyBytes
        guard check.key.count > 0 else {
            return .failure(WireError(.invalidArgument, "key must not be empty", checkIndex: Int32(index)))
        }
        guard check.key.count <= maxBytes, check.tenant.count <= maxBytes, check.subject.count <= maxBytes else {
            return .failure(WireError(.invalidArgument, "tenant, key and subject must be at most \(maxBytes) bytes", checkIndex: Int32(index)))
        }
        var now = batchNow
        if live.configuration.clock == .request {
            switch requestNow(check.nowMs, field: "now_ms", index: index) {
            case .success(let value): now = value
            case .failure(let error): return .failure(error)
            }
        }
        let hits = check.hits ?? 1
        guard hits <= LimitSpec.maximumLimit else {
            return .failure(WireError(.invalidArgument, "hits \(hits) is above \(LimitSpec.maximumLimit)", checkIndex: Int32(index)))
        }
        if previous.matches(check), let limits = previous.limits {
            return .success((BatchCheck(key: .of(tenant: check.tenant, key: check.key), limits: limits, hits: hits, now: now),
                             previous.series))
        }
        // A configured rule, found from its bytes; anything else through the configuration below.
        if let rule = check.rule, let (limits, series) = live.rules.resolve(tenant: check.tenant, rule: rule) {
            previous = ResolvedLimits(tenant: check.tenant, rule: check.rule, limit: check.limit, limits: limits, series: series)
            return .success((BatchCheck(key: .of(tenant: check.tenant, key: check.key), limits: limits, hits: hits, now: now), series))
        }
        // Tenant and rule names are short: Swift keeps strings of up to 15 bytes inline, so
        // these conversions do not allocate in the common case.
        let tenant = check.tenant.count == 0 ? "" : String(decoding: check.tenant, as: UTF8.self)
        let tenantEntry: Configuration.Tenant?
        switch lookUp(tenant: tenant, in: live.configuration, index: index) {
        case .success(let entry): tenantEntry = entry
        case .failure(let error): return .failure(error)
        }
        let source: LimitSource? = if let rule = check.rule {
            .rule(String(decoding: rule, as: UTF8.self))
        } else if let limit = check.limit {
            .limit(limit)
        } else {
            nil
        }
        switch resolveLimits(tenant: tenant, tenantEntry: tenantEntry, source: source, index: index, in: live) {
        case .success(let (limits, series)):
            previous = ResolvedLimits(tenant: check.tenant, rule: check.rule, limit: check.limit, limits: limits, series: series)
            return .success((BatchCheck(key: .of(tenant: check.tenant, key: check.key), limits: limits, hits: hits, now: now), series))
        case .failure(let error):
            return .failure(error)
        }
    }

    public func answerCheckFrame(_ frame: UnsafeRawBufferPointer, into out: inout ByteBuffer) -> Bool {
        answerCheckFrame(frame, scope: nil, into: &out)
    }

    /// The same, for a connection acting as `scope`: its checks are held to its tenant
    /// (``Principal/admit(_:)``); nil: as they come.
    func answerCheckFrame(_ frame: UnsafeRawBufferPointer, scope: Principal?, into out: inout ByteBuffer) -> Bool {
        guard let (id, body) = CheckFrameCodec.checkBody(frame) else { return false }
        return answerChecks(id: id, body: body, trustUTF8: false, scope: scope, into: &out)
    }

    public func answerCheckFrameLater(_ frame: UnsafeRawBufferPointer, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer>? {
        answerCheckFrameLater(frame, scope: nil, eventLoop: eventLoop)
    }

    func answerCheckFrameLater(_ frame: UnsafeRawBufferPointer, scope: Principal?, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer>? {
        guard !answersAtOnce, let (id, body) = CheckFrameCodec.checkBody(frame), let count = CheckFrameCodec.countChecks(body) else { return nil }
        let context = state.context()
        let maxBatch = context.live.configuration.maxBatch
        if count == 0 || count > maxBatch {
            var out = ByteBufferAllocator().buffer(capacity: 128)
            out.writeResponseFrame(refusal(ofBatch: count, id: id, maxBatch: maxBatch))
            return eventLoop.makeSucceededFuture(out)
        }
        guard let arena = CheckArena(body: body, count: count) else { return nil }
        counters.requests.add(1, ordering: .relaxed)
        if let scope {
            // The views may point at the principal's tenant bytes: the arena keeps it alive.
            arena.keepAlive = scope
            if let error = scope.admit(arena.views) {
                gatekeeper.forbiddenRequests.add(1, ordering: .relaxed)
                var out = ByteBufferAllocator().buffer(capacity: 128)
                writeError(error, id: id, into: &out)
                return eventLoop.makeSucceededFuture(out)
            }
        }
        return decideLater(id: id, arena: arena, context: context, eventLoop: eventLoop)
    }

    /// Answers a check request from its `CheckRequest` bytes; false (nothing written) when the
    /// bytes are not canonical, or when the backend does not answer at once (the handler then
    /// decodes the request and calls ``answerChecks(_:into:eventLoop:)``, which defers it).
    func answerChecks(id: UInt64, body: UnsafeRawBufferPointer, trustUTF8: Bool, scope: Principal? = nil, into out: inout ByteBuffer) -> Bool {
        guard answersAtOnce, let count = CheckFrameCodec.countChecks(body) else { return false }
        let context = state.context()
        let maxBatch = context.live.configuration.maxBatch
        if count == 0 || count > maxBatch {
            out.writeResponseFrame(refusal(ofBatch: count, id: id, maxBatch: maxBatch))
            return true
        }
        return withUnsafeTemporaryAllocation(of: CheckView.self, capacity: count) { views in
            views.initialize(repeating: CheckView())
            guard CheckFrameCodec.readChecks(body, into: views, trustUTF8: trustUTF8) else { return false }
            counters.requests.add(1, ordering: .relaxed)
            if let scope, let error = scope.admit(views) {
                gatekeeper.forbiddenRequests.add(1, ordering: .relaxed)
                writeError(error, id: id, into: &out)
                return true
            }
            withExtendedLifetime(scope) { decide(id: id, views: UnsafeBufferPointer(views), context: context, into: &out) }
            return true
        }
    }

    /// Answers, in order, a prefix of `frames` (check requests, each without its length prefix)
    /// decided as one batch: the table looks up all their keys at once, each shard locked once
    /// and its slots prefetched, where frame by frame each lookup waited for its own memory.
    /// Returns how many frames it answered; 0 (nothing written) when the backend does not answer
    /// at once or the first frame is not one it reads (the caller answers that one alone).
    ///
    /// It takes the frames up to the first it does not read (not canonical, empty, or past
    /// `max_batch` checks in all); a frame with an invalid check ends the batch: the frames
    /// before it are answered, then its error.
    /// Frames are decided together only by a backend that answers at once.
    public var answersCheckFramesTogether: Bool { answersAtOnce }

    public func answerCheckFrames(_ frames: UnsafeBufferPointer<UnsafeRawBufferPointer>, into out: inout ByteBuffer) -> Int {
        answerCheckFrames(frames, scope: nil, into: &out)
    }

    /// The same, for a connection acting as `scope`: a frame with a check of another tenant
    /// ends the batch like an invalid check (the frames before it answered, then its error).
    func answerCheckFrames(_ frames: UnsafeBufferPointer<UnsafeRawBufferPointer>, scope: Principal?, into out: inout ByteBuffer) -> Int {
        guard answersAtOnce, frames.count > 0 else { return 0 }
        let context = state.context()
        let maxBatch = context.live.configuration.maxBatch
        return withUnsafeTemporaryAllocation(of: FramePart.self, capacity: frames.count) { parts in
            var taken = 0, total = 0
            for frame in frames {
                guard let (id, body) = CheckFrameCodec.checkBody(frame), let count = CheckFrameCodec.countChecks(body),
                      count > 0, total + count <= maxBatch else { break }
                (parts.baseAddress! + taken).initialize(to: FramePart(id: id, body: body, start: total, count: count))
                taken += 1
                total += count
            }
            guard taken > 0 else { return 0 }
            return withUnsafeTemporaryAllocation(of: CheckView.self, capacity: total) { views in
                views.initialize(repeating: CheckView())
                var read = 0
                var refused: WireError?
                while read < taken {
                    let frameViews = UnsafeMutableBufferPointer(rebasing: views[parts[read].start..<(parts[read].start + parts[read].count)])
                    guard CheckFrameCodec.readChecks(parts[read].body, into: frameViews, trustUTF8: false) else { break }
                    if let scope, let error = scope.admit(frameViews) {
                        gatekeeper.forbiddenRequests.add(1, ordering: .relaxed)
                        refused = error
                        break
                    }
                    read += 1
                }
                guard read > 0 || refused != nil else { return 0 }
                var answered = 0
                if read > 0 {
                    let frameViews = UnsafeBufferPointer(rebasing: views[0..<(parts[read - 1].start + parts[read - 1].count)])
                    answered = withExtendedLifetime(scope) {
                        decideFrames(UnsafeBufferPointer(rebasing: parts[0..<read]), views: frameViews, context: context, into: &out)
                    }
                }
                // The refused frame is answered after the ones before it, when they all were.
                if let refused, answered == read {
                    writeError(refused, id: parts[read].id, into: &out)
                    answered += 1
                }
                counters.requests.add(UInt64(answered), ordering: .relaxed)
                return answered
            }
        }
    }

    /// One frame of a multi-frame batch: its id, its `CheckRequest` bytes, and where its checks
    /// lie in the batch.
    struct FramePart {
        let id: UInt64
        let body: UnsafeRawBufferPointer
        let start: Int
        let count: Int
    }

    /// The answer to a batch of `count` checks that is empty or above `max_batch` (counted).
    func refusal(ofBatch count: Int, id: UInt64, maxBatch: Int) -> WireResponse {
        counters.requests.add(1, ordering: .relaxed)
        counters.recordError(.invalidArgument)
        return count == 0
            ? .error(id: id, .invalidArgument, "a check request needs at least one check")
            : .error(id: id, .invalidArgument, "a batch of \(count) checks is above max_batch \(maxBatch)")
    }

    func writeError(_ error: WireError, id: UInt64, into out: inout ByteBuffer) {
        counters.recordError(error.code)
        var response = WireResponse()
        response.id = id
        response.error = error
        out.writeResponseFrame(response)
    }

    /// A check request that swift-protobuf decoded (the fast codec declined its bytes): mapped
    /// once into ``CheckView``s (``CheckArena``) and decided by the same path. With a backend
    /// that answers at once, the answer is appended to `out`; otherwise the batch goes to the
    /// backend and the future of its answer frame is returned, the event loop free meanwhile.
    public func answerChecks(_ request: WireRequest, into out: inout ByteBuffer, eventLoop: (any EventLoop)?)
        -> EventLoopFuture<ByteBuffer>? {
        let checks = request.check.checks
        let context = state.context()
        let maxBatch = context.live.configuration.maxBatch
        if checks.count == 0 || checks.count > maxBatch {
            out.writeResponseFrame(refusal(ofBatch: checks.count, id: request.id, maxBatch: maxBatch))
            return nil
        }
        counters.requests.add(1, ordering: .relaxed)
        let arena = CheckArena(checks)
        if !answersAtOnce, let eventLoop {
            return decideLater(id: request.id, arena: arena, context: context, eventLoop: eventLoop)
        }
        decide(id: request.id, views: UnsafeBufferPointer(arena.views), context: context, into: &out)
        return nil
    }

    /// ``process(_:)``'s answer to a check request (tests, fuzzing, embedders without a
    /// connection): the answer frame decoded. Without an event loop the backend is asked at once.
    func answer(_ request: WireRequest) -> WireResponse {
        var out = ByteBufferAllocator().buffer(capacity: 256)
        _ = answerChecks(request, into: &out, eventLoop: nil)
        guard let length = out.readInteger(as: UInt32.self), let body = out.readBytes(length: Int(length)),
              let response = try? WireResponse(serializedBytes: body) else {
            return .error(id: request.id, .internal, "the check answer could not be read back")
        }
        return response
    }

    func answer(_ release: Sluice_V1_ReleaseRequest, id: UInt64) -> WireResponse {
        switch resolve(release, id: id) {
        case .failure(let error): return error.response
        case .success(let (key, limits, now)):
            let live = state.current
            let table = routesPartitions ? target(live.partitions?.partition(for: release.tenant) ?? 0, live) : backend
            var released = false
            for limit in limits {
                released = table.release(key: key, limit: limit, leaseID: release.leaseID, now: now) || released
            }
            var response = WireResponse()
            response.release.released = released
            return response
        }
    }

    /// A release on a backend that answers later (Redis): the event loop is free meanwhile.
    func deferredRelease(_ release: Sluice_V1_ReleaseRequest, id: UInt64, eventLoop: any EventLoop) -> EventLoopFuture<WireResponse> {
        counters.requests.add(1, ordering: .relaxed)
        switch resolve(release, id: id) {
        case .failure(let error):
            if case .error(let wire) = error.response.body { counters.recordError(wire.code) }
            return eventLoop.makeSucceededFuture(error.response)
        case .success(let (key, limits, now)):
            guard !limits.isEmpty else {
                var response = WireResponse()
                response.release.released = false
                return eventLoop.makeSucceededFuture(response)
            }
            let answers = limits.map { limit in
                let promise = eventLoop.makePromise(of: Bool.self)
                backend.release(key: key, limit: limit, leaseID: release.leaseID, now: now) { promise.succeed($0) }
                return promise.futureResult
            }
            return EventLoopFuture.whenAllSucceed(answers, on: eventLoop).map { released in
                var response = WireResponse()
                response.release.released = released.contains(true)
                return response
            }
        }
    }

    /// A release's key, its concurrency limits and its time, or the error to answer.
    func resolve(_ release: Sluice_V1_ReleaseRequest, id: UInt64) -> Result<(Fingerprint, [BoundLimit], Int64), WireResponseError> {
        guard !release.key.isEmpty else { return .failure(.init(.error(id: id, .invalidArgument, "key must not be empty"))) }
        let live = state.context().live
        let tenantEntry: Configuration.Tenant?
        switch lookUp(tenant: release.tenant, in: live.configuration, index: -1) {
        case .success(let entry): tenantEntry = entry
        case .failure(let error): return .failure(.init(.error(id: id, error.code, error.message)))
        }
        var now = time.now()
        if live.configuration.clock == .request {
            switch requestNow(release.nowMs, field: "now_ms", index: -1) {
            case .success(let value): now = value
            case .failure(let error): return .failure(.init(.error(id: id, error.code, error.message)))
            }
        }
        let source: LimitSource? = switch release.limitSource {
        case .rule(let name): .rule(name)
        case .limit(let l): .limit(LimitView(limit: l.limit, periodMs: l.periodMs, burst: l.burst, algorithm: Int32(truncatingIfNeeded: l.algorithm.rawValue)))
        case nil: nil
        }
        let limits: [BoundLimit]
        switch resolveLimits(tenant: release.tenant, tenantEntry: tenantEntry, source: source, index: -1, in: live) {
        case .success((.single(let limit), _)): limits = [limit]
        case .success((.rule(let rule), _)): limits = rule
        case .failure(let error): return .failure(.init(.error(id: id, error.code, error.message)))
        }
        return .success((Fingerprint.of(tenant: release.tenant, key: release.key), limits.filter { $0.spec.algorithm == .concurrency }, now))
    }

    /// Where limits are decided, and how that is going (`Stats`, `/readyz`).
    func backendStatistics() -> Sluice_V1_BackendStats {
        var stats = Sluice_V1_BackendStats()
        guard let redis = backend as? RedisBackend else {
            stats.kind = "local"
            return stats
        }
        stats.kind = "redis"
        stats.address = redis.address
        stats.state = redis.breakerState
        stats.onFailure = redis.settings.degraded.rawValue
        stats.connectionsUp = UInt32(clamping: redis.connectionsUp)
        stats.decidedRemote = redis.decidedInRedis
        stats.deniedFromCache = redis.deniedFromCache
        stats.decidedDegraded = redis.decidedDegraded
        stats.writes = redis.writes
        return stats
    }

    func statsResponse() -> WireResponse {
        let table = backend.statistics()
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
        stats.errors = counters.errorTotal
        stats.eventsDropped = events?.dropped ?? 0
        let live = state.current
        stats.clock = live.configuration.clock.rawValue
        stats.configGeneration = live.generation
        stats.configSource = live.configuration.source
        stats.snapshotPath = live.configuration.snapshotPath ?? ""
        stats.backend = backendStatistics()
        var response = WireResponse()
        response.stats = stats
        return response
    }
}

/// An answer that is an error, where a `Result` needs an `Error`.
struct WireResponseError: Error {
    let response: WireResponse

    init(_ response: WireResponse) { self.response = response }
}
