import Logging
import ServiceLifecycle
import SluiceConfiguration
import SluiceCore
import SluiceWire

/// A dispatcher with its own table and reputation, and no listeners: for in-process benchmarks
/// and for embedding the decision engine in another server.
public final class StandaloneDispatcher: Sendable {
    /// Answers requests exactly as a daemon's connections would.
    public let dispatcher: RequestDispatcher
    /// Reputation's and detection's background work, as in a daemon (without its listeners).
    let services: RunningServices

    /// Opens the reputation store (if configured), builds the table and starts the background
    /// engines; `withBackground: false` starts none, for callers that drain by hand
    /// (``drainBackground()``, ``flush()``) and want nothing else running (fuzzing).
    public init(configuration: Configuration, logger: Logger, withBackground: Bool = true) {
        let state = LiveState(configuration: configuration)
        let time = TimeSource()
        let table = LimiterTable(shardCount: configuration.shards > 0 ? configuration.shards : nil, maxEntries: configuration.maxEntries,
                                 reclaimsRecovered: configuration.clock == .monotonic)
        let reputation = ReputationService(state: state, time: time, logger: logger)
        reputation.open()
        let anomaly = AnomalyService(state: state, reputation: reputation, time: time, logger: logger)
        let shedding = SheddingService(state: state)
        dispatcher = RequestDispatcher(state: state, backend: table, counters: ServerCounters(), events: nil, reputation: reputation,
                                       shedding: shedding, anomaly: anomaly, operations: nil, time: time, version: SluiceVersion.current)
        let clock = DispatchClock()
        services = RunningServices(withBackground
            ? [shedding.service(clock: clock, now: { time.now() }, probe: { nil })] + reputation.services(clock: clock)
                + [anomaly.service(clock: clock)]
            : [], logger: logger)
    }

    /// The reputation book.
    public var book: ReputationBookAccess { ReputationBookAccess(service: dispatcher.reputation) }

    /// Stops the background engines, committing what is pending.
    public func stop() async {
        await services.shutdown()
        dispatcher.reputation?.flush()
    }

    /// Commits what is pending now; returns events committed so far.
    @discardableResult
    public func flush() -> UInt64 {
        guard let reputation = dispatcher.reputation else { return 0 }
        reputation.flush()
        return reputation.writer.current.eventsWritten
    }

    /// The write-behind's statistics.
    public var storeStatistics: (commits: UInt64, eventsWritten: UInt64, pendingEvents: Int, lastCommitNanoseconds: Int64) {
        let current = dispatcher.reputation?.writer.current
        return (current?.commits ?? 0, current?.eventsWritten ?? 0, current?.pendingEvents ?? 0, current?.lastCommitDuration ?? 0)
    }
}

/// Read access to a standalone dispatcher's reputation book.
public struct ReputationBookAccess: Sendable {
    let service: ReputationService?

    /// Subjects with a record.
    public var count: Int { service?.book.count ?? 0 }

    /// The subject's record: its score when last changed, and how many events it took.
    public func record(tenant: String = "", subject: String) -> (score: Double, events: UInt64)? {
        service?.book.record(of: Fingerprint.of(tenant: tenant, key: subject)).map { ($0.score, $0.events) }
    }
}

extension StandaloneDispatcher {
    /// Hands what checks and reports offered the background features (reputation events, anomaly
    /// observations) to them now, and returns once they took it: for fuzzing and tests, where
    /// what a request starts must run before the next input.
    public func drainBackground() {
        dispatcher.reputation?.pump.drainNow()
        dispatcher.anomaly.pump.drainNow()
    }
}

extension StandaloneDispatcher {
    /// Puts an anomaly response in force for `subject` until `until` (ns), as an alert of the
    /// first kind with an action `tighten` by `factor` (or `block`) would: for benchmarks of
    /// the check path with responses in force.
    public func putAnomalyResponse(tenant: String = "", subject: String, block: Bool = false, factor: Double = 0.5, until: Int64 = .max) {
        dispatcher.anomaly.responses.set(.init(kind: 0, block: block, factor: factor, until: until),
                                         for: Fingerprint.of(tenant: tenant, key: subject))
    }
}

extension StandaloneDispatcher {
    /// The processor of one connection acting as an identity of `tenant` (nil: every tenant)
    /// with `roles`, as a daemon's connection authenticated with such a token is served: each
    /// request held to the roles, each tenant field to the tenant. For fuzzing and embedders.
    public func connection(tenant: String?, roles: Set<Configuration.Auth.Role>) -> any RequestProcessor {
        ConnectionSession(dispatcher: dispatcher, gatekeeper: dispatcher.gatekeeper, address: "embedded", kind: .unix,
                          principal: Principal(.init(name: "embedded", tenant: tenant, roles: roles)))
    }
}
