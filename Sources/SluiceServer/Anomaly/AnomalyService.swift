import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceProto
import SluiceStore
import SluiceWire

/// Live anomaly detection (docs/ANOMALY.md): checks and reported outcomes are offered to a
/// bounded tap by the event loops (never blocking: a full tap drops and counts), and a pump on a
/// background Dispatch queue feeds them to the detector every 100 ms, so an alert is raised well
/// within a second of the event that tipped it. Alerts go to the alert log (JSON Lines, the
/// `shared/traces/FORMAT.md` alert format) and `sluice_anomaly_alerts_total{kind}`.
final class AnomalyService: Sendable {
    /// The feature's flag.
    static let feature = "anomaly"

    /// A request or an outcome, as the event loops saw it.
    /// A check or a reported outcome (`mark`), as the detector drains it.
    typealias Event = PackedEventTap.Entry

    // @unchecked: used only under its lock (the detector and the file handle are not Sendable).
    struct State: @unchecked Sendable {
        var detector: AnomalyDetector
        var alertsByKind: [String: UInt64] = [:]
        /// Alerts by tenant label (a declared tenant, `(default)`, `(none)` for global alerts,
        /// `(undeclared)` for any other: bounded by the configuration) and kind.
        var alertsByTenant: [String: [String: UInt64]] = [:]
        var recent: [AnomalyAlert] = []
        var log: FileHandle?
        var logPath: String?
        var logFailed = false
        var watchers: [Watcher] = []
        /// The heaviest keys of the checks drained over the last minute or two (`sluicectl top`).
        var top = TopSketches()
        /// The last hour's figures (`sluicectl report --live`), and the minute they were pruned at.
        var report = ReportTally(capacity: 1_000)
        var reportMinute: Int64 = 0
    }

    /// A `WatchAlerts` stream and what it asked for.
    struct Watcher: Sendable {
        var stream: ResponseStream
        var kinds: Set<String>
        var tenant: String
        /// Only its tenant's alerts: none of the global ones (a watcher bound to one tenant).
        var tenantOnly = false

        func wants(_ alert: AnomalyAlert) -> Bool {
            guard kinds.isEmpty || kinds.contains(alert.kind) else { return false }
            if tenantOnly { return alert.scope != .global && (alert.tenant ?? "") == tenant }
            return tenant.isEmpty || alert.tenant == nil || alert.tenant == tenant
        }
    }

    /// Checks and outcomes on their way to the detector, as bytes (about 64 Ki checks of short
    /// strings).
    let tap = PackedEventTap(capacityBytes: 6 << 20)
    /// Blocks and tightenings in force, read by checks (the reputation service's, which shares
    /// them with the other daemons on a shared store).
    let responses: AnomalyResponseBook
    /// Where alerts are POSTed, when `anomaly.webhook` is set.
    let webhook: AlertWebhook
    /// Records a reputation penalty (`anomaly` event) for a subject.
    let penalize: @Sendable (_ tenant: String, _ subject: String, _ atMs: Int64) -> Void
    let pump: EventPump<Event>
    let state: NIOLockedValueBox<State>
    let live: LiveState
    let logger: Logger
    static let recentLimit = 1_000
    /// Streams followed at once; more are refused with `CODE_OVERLOADED`.
    static let watcherLimit = 64

    /// - Parameters:
    ///   - share: told of each response put in force here (to store it for the other daemons).
    init(state live: LiveState, logger: Logger, responses: AnomalyResponseBook = AnomalyResponseBook(),
         share: (@Sendable (Fingerprint, AnomalyResponseBook.Entry) -> Void)? = nil,
         penalize: @escaping @Sendable (String, String, Int64) -> Void = { _, _, _ in }) {
        self.live = live
        self.responses = responses
        self.logger = logger
        self.penalize = penalize
        let webhook = AlertWebhook(logger: logger)
        self.webhook = webhook
        let responses = responses
        let configuration = live.current.configuration
        let state = NIOLockedValueBox(State(detector: AnomalyDetector(settings: configuration.anomalyWithTenants)))
        self.state = state
        pump = EventPump(tap: tap, queue: DispatchQueue(label: "sluice.anomaly", qos: .utility), interval: .milliseconds(100),
                         batchLimit: 8_192) { events in
            Self.consume(events, state: state, live: live, logger: logger, responses: responses, share: share, penalize: penalize, webhook: webhook)
        }
    }

    /// Feeds the detector every 100 ms; at shutdown, what is still queued, then closes the
    /// alert log.
    func service<C: Clock>(clock: C) -> PeriodicService<C> where C.Duration == Duration {
        pump.service("anomaly-detection", clock: clock, finish: { [state] in state.withLockedValue { try? $0.log?.close() } })
    }

    /// A detector whose `penalty` responses record an `anomaly` reputation event in `reputation`
    /// (none without reputation).
    convenience init(state: LiveState, reputation: ReputationService?, time: TimeSource, logger: Logger) {
        var share: (@Sendable (Fingerprint, AnomalyResponseBook.Entry) -> Void)?
        if let reputation {
            share = { @Sendable key, entry in reputation.share(key: key, entry, at: time.now()) }
        }
        self.init(state: state, logger: logger, responses: reputation?.responses ?? AnomalyResponseBook(), share: share) { tenant, subject, atMs in
            guard let reputation else { return }
            var request = Sluice_V1_RecordEventsRequest()
            request.events = [.with {
                $0.tenant = tenant
                $0.subject = subject
                $0.kind = "anomaly"
                $0.atMs = UInt64(max(0, atMs))
            }]
            _ = reputation.record(request, configuration: state.current.configuration, now: time.now(), completion: nil)
        }
    }

    /// Whether the event loops should offer checks now (the flag is on).
    /// Whether detection runs at all: on globally, or for some tenant (`tenants.NAME.features`).
    static func enabled(_ configuration: Configuration) -> Bool {
        configuration.enabledAnywhere(feature)
    }

    static func consume(_ events: [Event], state: NIOLockedValueBox<State>, live: LiveState, logger: Logger,
                        responses: AnomalyResponseBook, share: (@Sendable (Fingerprint, AnomalyResponseBook.Entry) -> Void)?,
                        penalize: @Sendable (String, String, Int64) -> Void, webhook: AlertWebhook) {
        let configuration = live.current.configuration
        state.withLockedValue { state in
            let settings = configuration.anomalyWithTenants
            if state.detector.settings != settings {
                // A reload changed the thresholds: learning starts over with them.
                state.detector = AnomalyDetector(settings: settings)
            }
            var alerts: [AnomalyAlert] = []
            for event in events {
                if event.mark {
                    alerts += state.detector.observeOutcome(event.event)
                    state.report.countOutcome(event.event)
                } else {
                    alerts += state.detector.observeRequest(event.event)
                    state.top.add(event.event)
                    state.report.countCheck(event.event)
                }
            }
            if let last = events.last?.event.timestampMs, last / 60_000 > state.reportMinute {
                state.reportMinute = last / 60_000
                state.report.prune(before: state.reportMinute - 59, maxAgeMinutes: 120)
            }
            guard !alerts.isEmpty else { return }
            for alert in alerts {
                state.report.count(alert)
                state.alertsByKind[alert.kind, default: 0] &+= 1
                let tenant = alert.tenant.map { $0.isEmpty ? "(default)" : configuration.tenants[$0] != nil ? $0 : "(undeclared)" } ?? "(none)"
                state.alertsByTenant[tenant, default: [:]][alert.kind, default: 0] &+= 1
                logger.warning("anomaly", metadata: ["anomaly.kind": "\(alert.kind)", "anomaly.scope": "\(alert.scope.rawValue)",
                                                     "anomaly.subject": "\(alert.subject ?? "")", "anomaly.ip": "\(alert.ip ?? "")",
                                                     "anomaly.detail": "\(alert.detail)"])
            }
            respond(to: alerts, configuration: configuration, responses: responses, detector: state.detector, logger: logger, share: share,
                    penalize: penalize)
            state.recent.append(contentsOf: alerts)
            if state.recent.count > recentLimit { state.recent.removeFirst(state.recent.count - recentLimit) }
            write(alerts, to: configuration.anomalyLog, state: &state, logger: logger)
            publish(alerts, to: &state.watchers)
            if let settings = configuration.anomalyWebhook { webhook.send(alerts, to: settings) }
        }
    }

    /// Carries out each alert's configured response. Blocks and tightenings are put in force in
    /// shadow mode too (checks then report what they would have met); a penalty is not.
    static func respond(to alerts: [AnomalyAlert], configuration: Configuration, responses: AnomalyResponseBook, detector: AnomalyDetector,
                        logger: Logger? = nil, share: (@Sendable (Fingerprint, AnomalyResponseBook.Entry) -> Void)? = nil, penalize: @Sendable (String, String, Int64) -> Void) {
        if let newest = alerts.last?.timestampMs, !responses.isEmpty { responses.expire(now: newest &* 1_000_000) }
        for alert in alerts {
            // The alert's tenant's own response and flag (tenants.NAME), or the global ones.
            let tenant = alert.tenant ?? ""
            let flag = configuration.feature(feature, for: tenant)
            let shadow = flag?.shadow == true
            let rollout = flag.map(CompiledFlag.init)
            guard let response = configuration.tenants[tenant]?.anomalyResponses[alert.kind] ?? configuration.anomalyResponses[alert.kind],
                  response.action != .alert, let kind = AnomalyResponseBook.kinds.firstIndex(of: alert.kind) else { continue }
            let key: Fingerprint
            switch alert.scope {
            case .subject: key = Fingerprint.of(tenant: alert.tenant ?? "", key: alert.subject ?? "")
            case .ip: key = AnomalyResponseBook.key(ip: alert.ip ?? "")
            case .global:
                // A surge: its response is for the sources the detector did not know before it.
                guard response.action != .penalty else { continue }
                let prefixes = response.action == .block ? detector.surgePrefixes(share: response.prefixShare) : []
                let surge = SurgeGuard(kind: kind, action: response.action, until: alert.timestampMs &* 1_000_000 &+ response.ttl,
                                       factor: response.factor, known: detector.knownBefore(alert.timestampMs),
                                       prefixes: prefixes.compactMap { prefix in AnomalyDetector.prefixKey(prefix.name).map { (prefix.name, $0) } },
                                       spareTiers: response.spareTiers)
                responses.setSurge(surge)
                logger?.warning("anomaly surge response", metadata: [
                    "anomaly.kind": "\(alert.kind)", "anomaly.action": "\(response.action.rawValue)",
                    "anomaly.prefixes": "\(surge.prefixNames.joined(separator: " "))", "anomaly.known": "\(surge.known.bytes) bytes",
                ])
                continue
            }
            switch response.action {
            case .alert, .shed: continue
            case .penalty:
                if !shadow, alert.scope == .subject, let subject = alert.subject, rollout?.includes(key) ?? true {
                    penalize(alert.tenant ?? "", subject, alert.timestampMs)
                }
            case .block, .tighten:
                let entry = AnomalyResponseBook.Entry(kind: kind, block: response.action == .block, factor: response.factor,
                                                      until: alert.timestampMs &* 1_000_000 &+ response.ttl)
                responses.set(entry, for: key)
                share?(key, entry)
            }
        }
    }

    /// The `Top` request: the heaviest keys by requests and by denials over the last minute or
    /// two, and the subjects and addresses of the alerts raised in that window by score.
    func top(_ request: Sluice_V1_TopRequest, configuration: Configuration) -> WireResponse {
        guard Self.enabled(configuration) else {
            return .error(id: 0, .unavailable, "top counts the checks anomaly detection sees: turn features.anomaly on (shadow: true is enough)")
        }
        guard request.count <= 100 else { return .error(id: 0, .invalidArgument, "count must be 1 to 100, got \(request.count)") }
        let count = request.count == 0 ? 10 : Int(request.count)
        return state.withLockedValue { state in
            var response = WireResponse()
            let top = state.top
            response.top.windowMs = UInt64(top.windowMs)
            (response.top.requests, response.top.denied) = top.totals
            for dimension in TopSketches.Dimension.allCases {
                for measure in TopSketches.Measure.allCases {
                    response.top.lists.append(.with { list in
                        list.dimension = dimension.rawValue
                        list.measure = measure.rawValue
                        list.entries = top.top(dimension, by: measure, count: count).map { entry in
                            .with {
                                $0.key = entry.key
                                $0.value = Double(entry.count)
                                $0.rate = entry.rate
                                $0.error = Double(entry.error)
                            }
                        }
                    })
                }
            }
            // Alerts raised within the window (and the one before it), highest score per key.
            let since = (state.recent.last?.timestampMs ?? 0) - max(top.windowMs, 60_000)
            for (dimension, key) in [("subjects", \AnomalyAlert.subject), ("addresses", \AnomalyAlert.ip)] {
                var best: [String: Double] = [:]
                for alert in state.recent where alert.timestampMs >= since {
                    if let name = alert[keyPath: key] { best[name] = max(best[name] ?? 0, alert.score) }
                }
                response.top.lists.append(.with { list in
                    list.dimension = dimension
                    list.measure = "anomaly_score"
                    list.entries = best.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.prefix(count).map { entry in
                        .with {
                            $0.key = entry.key
                            $0.value = entry.value
                            $0.rate = 0
                        }
                    }
                })
            }
            return response
        }
    }

    /// The `Report` request: the last hour's figures, alerts and score distribution, as JSON.
    func report(_ request: Sluice_V1_ReportRequest, configuration: Configuration) -> WireResponse {
        guard Self.enabled(configuration) else {
            return .error(id: 0, .unavailable, "the report counts the checks anomaly detection sees: turn features.anomaly on (shadow: true is enough)")
        }
        guard request.top <= 100 else { return .error(id: 0, .invalidArgument, "top must be 1 to 100, got \(request.top)") }
        let top = request.top == 0 ? 10 : Int(request.top)
        let snapshot = state.withLockedValue { state in
            let since = state.reportMinute * 60_000 - 59 * 60_000
            let scores = state.detector.scoreDistribution
            return ReportSnapshot(title: "sluiced, the last hour", data: state.report.data(top: top),
                                  alerts: Array(state.recent.filter { $0.timestampMs >= since }.suffix(500)),
                                  bins: scores.bins.map { ReportData.Bin(score: $0.score, minutes: $0.minutes) }, threshold: scores.threshold)
        }
        guard let json = try? JSONEncoder().encode(snapshot) else {
            return .error(id: 0, .internal, "the report could not be encoded")
        }
        var response = WireResponse()
        response.report.json = String(decoding: json, as: UTF8.self)
        return response
    }

    /// Pushes `alerts` to every open watcher that wants some of them; forgets closed ones.
    static func publish(_ alerts: [AnomalyAlert], to watchers: inout [Watcher]) {
        watchers.removeAll { !$0.stream.isOpen }
        guard !watchers.isEmpty else { return }
        let messages = alerts.map(Sluice_V1_Alert.init)
        for watcher in watchers {
            let wanted = zip(alerts, messages).filter { watcher.wants($0.0) }.map(\.1)
            guard !wanted.isEmpty else { continue }
            watcher.stream.push(items: wanted.count) { dropped in
                var response = WireResponse()
                response.watchAlerts.alerts = wanted
                response.watchAlerts.dropped = dropped
                return response
            }
        }
    }

    /// Opens a `WatchAlerts` stream: answered with the recent alerts it asks for, then pushed
    /// every new alert it wants. Registered under the same lock the pump raises alerts under, so
    /// nothing falls between the recent ones and the first push.
    func watch(_ request: Sluice_V1_WatchAlertsRequest, stream: ResponseStream, configuration: Configuration, tenantOnly: Bool = false) -> WireResponse {
        guard request.recent <= UInt32(Self.recentLimit) else {
            return .error(id: 0, .invalidArgument, "recent must be 0 to \(Self.recentLimit)")
        }
        guard request.kinds.count <= 64, request.kinds.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 64 }) else {
            return .error(id: 0, .invalidArgument, "kinds must be at most 64 names of 1 to 64 bytes")
        }
        guard request.tenant.utf8.count <= configuration.maxKeyBytes else {
            return .error(id: 0, .invalidArgument, "tenant must be at most \(configuration.maxKeyBytes) bytes")
        }
        // A follower of a detector that is off would wait for alerts that never come.
        guard Self.enabled(configuration) else {
            return .error(id: 0, .unavailable,
                          "anomaly detection is off, so no alert will come: turn it on (features.anomaly.enabled: true, or sluicectl flags anomaly --enable)")
        }
        let watcher = Watcher(stream: stream, kinds: Set(request.kinds), tenant: request.tenant, tenantOnly: tenantOnly)
        return state.withLockedValue { state in
            state.watchers.removeAll { !$0.stream.isOpen }
            guard state.watchers.count < Self.watcherLimit else {
                return .error(id: 0, .overloaded, "\(Self.watcherLimit) alert streams are open already; close one first")
            }
            state.watchers.append(watcher)
            var response = WireResponse()
            response.watchAlerts.alerts = state.recent.filter(watcher.wants).suffix(Int(request.recent)).map(Sluice_V1_Alert.init)
            return response
        }
    }

    /// The detector's records, and requests that found it full.
    var tracking: (subjects: Int, sources: Int, untrackedSubjects: UInt64, untrackedSources: UInt64) {
        state.withLockedValue { state in
            let tracked = state.detector.tracked, untracked = state.detector.untracked
            return (tracked.subjects, tracked.sources, untracked.subjects, untracked.sources)
        }
    }

    /// Open `WatchAlerts` streams.
    var watchers: Int { state.withLockedValue { state in state.watchers.count { $0.stream.isOpen } } }

    /// Appends `alerts` to the alert log, opening it (or a new path after a reload) as needed.
    static func write(_ alerts: [AnomalyAlert], to path: String?, state: inout State, logger: Logger) {
        guard let path else { return }
        if state.logPath != path {
            try? state.log?.close()
            state.log = nil
            state.logPath = path
            state.logFailed = false
        }
        if state.log == nil, !state.logFailed {
            if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
            if let handle = FileHandle(forWritingAtPath: path) {
                handle.seekToEndOfFile()
                state.log = handle
            } else {
                state.logFailed = true
                logger.error("anomaly alert log cannot be opened; alerts are logged and counted only", metadata: ["anomaly.alert_log": "\(path)"])
            }
        }
        guard let log = state.log else { return }
        var text = ""
        for alert in alerts { text += alert.jsonLine + "\n" }
        log.write(Data(text.utf8))
    }

    /// Offers the outcomes of a `ReportOutcome`, validated whole first.
    func record(_ request: Sluice_V1_ReportOutcomeRequest, configuration: Configuration, now: Int64) -> WireResponse {
        guard !request.outcomes.isEmpty, request.outcomes.count <= configuration.maxBatch else {
            return .error(id: 0, .invalidArgument, "a report needs 1 to max_batch (\(configuration.maxBatch)) outcomes")
        }
        for (index, outcome) in request.outcomes.enumerated() {
            guard !outcome.subject.isEmpty else {
                return .error(id: 0, .invalidArgument, "subject must not be empty", checkIndex: Int32(index))
            }
            guard (100...599).contains(outcome.status) else {
                return .error(id: 0, .invalidArgument, "status \(outcome.status) is not an HTTP status (100 to 599)", checkIndex: Int32(index))
            }
            if outcome.timeMs > 0, let refusal = Self.refusal(ofTime: outcome.timeMs, clock: configuration.clock, now: now) {
                return .error(id: 0, .invalidArgument, refusal, checkIndex: Int32(index))
            }
            let longest = max(outcome.tenant.utf8.count, outcome.subject.utf8.count, outcome.ip.utf8.count, outcome.route.utf8.count)
            guard longest <= configuration.maxKeyBytes else {
                return .error(id: 0, .invalidArgument, "tenant, subject, ip and route must be at most \(configuration.maxKeyBytes) bytes",
                              checkIndex: Int32(index))
            }
        }
        var response = WireResponse()
        guard Self.enabled(configuration) else {
            // Accepted and ignored while the feature is off, so services can report ahead of it.
            response.reportOutcome.recorded = 0
            return response
        }
        var recorded: UInt32 = 0
        for outcome in request.outcomes {
            // Only outcomes of tenants with detection on (their own flag, or the global one).
            guard configuration.feature(Self.feature, for: outcome.tenant)?.enabled == true else { continue }
            let time = outcome.timeMs > 0 ? Int64(clamping: outcome.timeMs) : now / 1_000_000
            tap.offer(CheckEvent(timestampMs: time, tenant: outcome.tenant, subject: outcome.subject, ip: outcome.ip, route: outcome.route,
                                 status: Int(outcome.status)), mark: true)
            recorded += 1
        }
        response.reportOutcome.recorded = recorded
        return response
    }

    /// How far behind the daemon's clock an outcome's `time_ms` may be (with the monotonic clock):
    /// older outcomes say nothing about what is happening now, and would make the detector count
    /// them as new entities' first moments.
    static let oldestOutcomeMs: Int64 = 3_600_000

    /// Why an outcome's `time_ms` is refused, or nil. With the monotonic clock it must be within a
    /// minute ahead of and an hour behind the daemon's clock; with the request clock, like a
    /// check's `now_ms`, before the year 2200.
    static func refusal(ofTime timeMs: UInt64, clock: Configuration.ClockMode, now: Int64) -> String? {
        guard timeMs <= RequestDispatcher.maximumNowMs else { return "time_ms \(timeMs) is after the year 2199" }
        guard clock == .monotonic else { return nil }
        let time = Int64(timeMs), nowMs = now / 1_000_000
        if time > nowMs + ReputationService.allowedSkew / 1_000_000 {
            return "time_ms \(timeMs) is more than a minute ahead of the daemon's clock"
        }
        if time < nowMs - oldestOutcomeMs { return "time_ms \(timeMs) is more than an hour behind the daemon's clock" }
        return nil
    }

    /// Where the detector's learned state is kept: beside the table's snapshot (none without one).
    static func statePath(_ configuration: Configuration) -> String? { configuration.snapshotPath.map { $0 + ".anomaly" } }

    /// Restores what the detector learned before a restart. A file that cannot be read whole is
    /// logged, moved aside and ignored: detection then starts over with its warm-up.
    func restoreState(from path: String, now: Int64) {
        guard let bytes = Snapshotter.read(path) else { return }
        state.withLockedValue { state in
            do {
                try state.detector.restoreState(bytes)
                let tracked = state.detector.tracked
                logger.info("anomaly state restored", metadata: ["anomaly.state": "\(path)", "anomaly.subjects": "\(tracked.subjects)",
                                                                 "anomaly.sources": "\(tracked.sources)"])
            } catch {
                let aside = "\(path).unreadable-\(now / 1_000_000_000)"
                let moved = rename(path, aside) == 0
                logger.error("anomaly state unreadable; detection starts over", metadata: [
                    "anomaly.state": "\(path)", "error": "\(error)", "moved_to": "\(moved ? aside : "(could not move it)")",
                ])
            }
        }
    }

    /// Saves what the detector has learned (atomically: the previous file stays whole until the
    /// new one is). Nothing is written while it has learned nothing (the feature is off), so
    /// turning it off for a while does not erase what it knew.
    func saveState(to path: String) {
        guard let bytes = state.withLockedValue({ $0.detector.hasLearned ? $0.detector.encodedState() : nil }) else { return }
        do {
            try DurableFile.write(bytes, to: path)
        } catch {
            logger.error("anomaly state not saved", metadata: ["anomaly.state": "\(path)", "error": "\(error)"])
        }
    }

    /// Alerts raised since start, by kind.
    var alertsByKind: [String: UInt64] { state.withLockedValue { $0.alertsByKind } }
    var alertsByTenant: [String: [String: UInt64]] { state.withLockedValue { $0.alertsByTenant } }

    /// The most recent alerts, oldest first.
    var recent: [AnomalyAlert] { state.withLockedValue { $0.recent } }
}

extension Sluice_V1_Alert {
    init(_ alert: AnomalyAlert) {
        self.init()
        timeMs = UInt64(clamping: alert.timestampMs)
        scope = alert.scope.rawValue
        subject = alert.subject ?? ""
        ip = alert.ip ?? ""
        tenant = alert.tenant ?? ""
        kind = alert.kind
        score = alert.score
        detail = alert.detail
    }
}
