import Logging
import SluiceConfiguration
import SluiceCore

/// A dispatcher with its own table and reputation, and no listeners: for in-process benchmarks
/// and for embedding the decision engine in another server.
public final class StandaloneDispatcher: Sendable {
    /// Answers requests exactly as a daemon's connections would.
    public let dispatcher: RequestDispatcher

    /// Opens the reputation store (if configured) and builds the table.
    public init(configuration: Configuration, logger: Logger) {
        let state = LiveState(configuration: configuration)
        let time = TimeSource()
        let table = LimiterTable(shardCount: configuration.shards > 0 ? configuration.shards : nil, maxEntries: configuration.maxEntries,
                                 reclaimsRecovered: configuration.clock == .monotonic)
        let reputation = ReputationService(state: state, time: time, logger: logger)
        reputation.start()
        dispatcher = RequestDispatcher(state: state, backend: table, counters: ServerCounters(), events: nil, reputation: reputation,
                                       shedding: SheddingService(state: state),
                                       anomaly: AnomalyService(state: state, reputation: reputation, time: time, logger: logger),
                                       operations: nil, time: time, version: SluiceVersion.current)
    }

    /// The reputation book.
    public var book: ReputationBookAccess { ReputationBookAccess(service: dispatcher.reputation) }

    /// Commits what is pending and stops the background queues.
    public func stop() { dispatcher.reputation?.stop() }

    /// Commits what is pending now; returns events committed so far.
    @discardableResult
    public func flush() -> UInt64 {
        guard let reputation = dispatcher.reputation else { return 0 }
        reputation.pump.drainNow()
        reputation.writer.flush()
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
