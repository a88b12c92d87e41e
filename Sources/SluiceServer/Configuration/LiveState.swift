import NIOConcurrencyHelpers
import NIOPosix
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import Synchronization

/// One applied configuration: what the hot path reads, and how its checks are counted.
public final class LiveConfiguration: Sendable {
    /// The configuration, with its metric series numbered.
    public let configuration: Configuration
    /// 1 for the configuration the daemon started with, one more for each reload.
    public let generation: UInt64
    let series: CheckSeries
    /// The rules and tenants compiled for the check path.
    let rules: RuleIndex
    /// Reputation compiled for the hot path; nil when the feature is off.
    let reputation: ReputationGate?
    /// The reputation model, read in place for tracked subjects (a copy would retain its parts).
    let reputationModel: ReputationModel
    /// Tiers compiled for the hot path; nil when the adaptive feature is off or there are none.
    let tiers: TierTable?
    /// Load-aware scaling compiled for the hot path; nil when the adaptive feature is off or no
    /// rule names a service.
    let load: SheddingTable?
    /// Rules relative to learned baselines, compiled for the hot path; nil when the adaptive
    /// feature is off or no rule has a baseline.
    let baseline: BaselineTable?
    /// The adaptive flag; nil when off.
    let adaptive: AdaptiveGate?
    /// Whether checks are offered to anomaly detection (globally, or for some tenant).
    let anomaly: Bool
    /// Whether the global flag has detection on (for tenants without a flag of their own).
    let anomalyGlobal: Bool
    /// Whether anomaly detection's responses only report (shadow mode).
    let anomalyShadow: Bool
    /// The subjects anomaly detection's responses apply to (its rollout); detection sees all.
    let anomalyRollout: CompiledFlag?
    /// The limits of rules whose own `backend` is not `backend:`'s (``Configuration/backendExceptions``).
    let backendExceptions: Set<UInt64>
    /// The limits of rules whose own `mode` is not `redis.mode`'s (``Configuration/modeExceptions``).
    let modeExceptions: Set<UInt64>
    /// Tenants' checks-per-second quotas; nil when none is set.
    let quotas: QuotaTable?
    /// Tenants' own tables (`max_keys`); nil when no tenant has one.
    let partitions: TablePartitions?
    /// Tenants' own feature flags and reputation weights; nil when no tenant has any.
    let tenantGates: TenantGates?
    /// Rules' shadow, unlimited and replaces, per series; nil when no rule has any.
    let ruleModes: RuleModes?

    init(_ configuration: Configuration, generation: UInt64, previous: LiveConfiguration? = nil) {
        var numbered = configuration
        series = CheckSeries.assign(&numbered)
        rules = RuleIndex(numbered, series: series)
        self.configuration = numbered
        self.generation = generation
        reputation = ReputationGate(numbered)
        reputationModel = numbered.reputation.model
        // The adaptive tables exist when any tenant has the feature on, even if it is off globally.
        var adaptiveTables = numbered
        if numbered.enabledAnywhere(AdaptiveFeature.name), numbered.features[AdaptiveFeature.name]?.enabled != true {
            adaptiveTables.features[AdaptiveFeature.name] = FeatureFlag(name: AdaptiveFeature.name)
        }
        tiers = TierTable(adaptiveTables)
        load = SheddingTable(adaptiveTables, series: series, tiers: tiers)
        baseline = BaselineTable(adaptiveTables, series: series)
        adaptive = AdaptiveGate(numbered)
        tenantGates = TenantGates(numbered)
        anomalyGlobal = numbered.features[AnomalyService.feature]?.enabled == true
        anomaly = anomalyGlobal || tenantGates?.anyAnomaly == true
        anomalyShadow = numbered.features[AnomalyService.feature]?.shadow == true
        anomalyRollout = numbered.features[AnomalyService.feature].map(CompiledFlag.init)
        backendExceptions = numbered.backendExceptions
        modeExceptions = numbered.modeExceptions
        quotas = QuotaTable(numbered, previous: previous?.quotas)
        partitions = TablePartitions(numbered, previous: previous?.partitions)
        ruleModes = RuleModes(numbered, series: series)
    }
}

/// Counters that one thread writes and scrapes read from any thread.
///
/// The writer loads and stores (no read-modify-write, so no locked instruction and no shared
/// cache line with other threads' counters); readers load. Each value is an atomic so that a
/// read racing a write is defined, and sees the old or the new count.
final class CounterBlock: @unchecked Sendable {
    let values: UnsafeMutablePointer<Synchronization.Atomic<UInt64>>
    let count: Int

    init(count: Int) {
        self.count = max(1, count)
        values = .allocate(capacity: self.count)
        for index in 0..<self.count { (values + index).initialize(to: Synchronization.Atomic(0)) }
    }

    deinit {
        values.deinitialize(count: count)
        values.deallocate()
    }

    /// Adds `amount` to counter `index`. Only the owning thread may call it.
    @inline(__always)
    func bump(_ index: Int, by amount: UInt64 = 1) {
        let value = values[index].load(ordering: .relaxed)
        values[index].store(value &+ amount, ordering: .relaxed)
    }

    /// Adds `amount` to counter `index` from any thread (a read-modify-write: for rare events).
    func add(_ index: Int, by amount: UInt64 = 1) {
        values[index].add(amount, ordering: .relaxed)
    }

    /// Counter `index` as last written.
    func read(_ index: Int) -> UInt64 { values[index].load(ordering: .relaxed) }
}

/// Decision latency in power-of-two buckets of nanoseconds: bucket `i` counts latencies of at
/// most 2^(i+8) ns (256 ns ... 8.4 ms), the last one everything longer.
enum LatencyBuckets {
    /// Buckets with an upper bound.
    static let bounded = 16
    /// Counters in a block: the buckets, +Inf, the sum of nanoseconds, the count.
    static let counters = bounded + 3
    static let sumIndex = bounded + 1
    static let countIndex = bounded + 2

    /// The upper bound of bucket `index`, in nanoseconds.
    static func bound(_ index: Int) -> Int64 { Int64(1) << (index + 8) }

    @inline(__always)
    static func index(nanoseconds: Int64) -> Int {
        guard nanoseconds > 256 else { return 0 }
        let width = 64 - UInt64(nanoseconds - 1).leadingZeroBitCount
        return min(bounded, width - 8)
    }
}

/// What one event-loop thread keeps for the dispatcher: the configuration it last saw and its
/// own counters, so the hot path neither locks nor shares a cache line to count.
// @unchecked: used only by the thread that created it (it lives in a thread-specific variable).
final class WorkerContext: @unchecked Sendable {
    /// Unique per state; unlike an object identifier, never reused after a thread exits.
    let id: Int
    /// The state it belongs to: a thread-specific slot outlives its variable, and must never
    /// hand one daemon's context to another.
    let owner: Int
    var live: LiveConfiguration
    var checks: CounterBlock
    let latency = CounterBlock(count: LatencyBuckets.counters)

    init(id: Int, owner: Int, live: LiveConfiguration) {
        self.id = id
        self.owner = owner
        self.live = live
        checks = CounterBlock(count: live.series.counterCount)
    }

    /// Counts one decided check.
    @inline(__always)
    func count(series: Int, reason: DecisionReason) {
        checks.bump(CheckSeries.counter(series: series, reason: reason))
    }

    /// Counts a check a rule in shadow allowed but would have denied.
    @inline(__always)
    func countShadowed(series: Int) {
        checks.bump(CheckSeries.shadowCounter(series: series))
    }

    /// Records how long one request took to decide.
    @inline(__always)
    func record(latency nanoseconds: Int64) {
        let clamped = max(0, nanoseconds)
        latency.bump(LatencyBuckets.index(nanoseconds: clamped))
        latency.bump(LatencyBuckets.sumIndex, by: UInt64(clamped))
        latency.bump(LatencyBuckets.countIndex)
    }
}

/// The configuration in force, swapped whole on reload, and every thread's counters.
///
/// The hot path calls ``context()`` once per request: a thread-specific lookup and one relaxed
/// load of the generation. A thread notices a reload at its next request and picks the new
/// configuration up under the lock; requests already being decided finish with the old one.
public final class LiveState: Sendable {
    /// One (tenant, rule, decision) series, summed over threads and generations.
    public struct SeriesKey: Hashable, Sendable {
        /// The tenant label.
        public var tenant: String
        /// The rule label.
        public var rule: String
        /// The decision label.
        public var decision: String
    }

    struct Shared {
        var live: LiveConfiguration
        /// Every thread's counters of the configuration it currently runs.
        var checkBlocks: [Int: (live: LiveConfiguration, block: CounterBlock)] = [:]
        /// Counts of blocks retired by a reload, by series.
        var retired: [SeriesKey: UInt64] = [:]
        var latencyBlocks: [CounterBlock] = []
        var nextContextID = 0
    }

    let generation: Synchronization.Atomic<UInt64>
    /// Unique in the process (an object identifier may be reused once a state is freed).
    let identity = LiveState.identities.add(1, ordering: .relaxed).newValue
    static let identities = Synchronization.Atomic<Int>(0)
    let shared: NIOLockedValueBox<Shared>
    let threadContext = ThreadSpecificVariable<WorkerContext>()

    /// State running `configuration` as generation 1.
    public init(configuration: Configuration) {
        let live = LiveConfiguration(configuration, generation: 1)
        generation = Synchronization.Atomic(1)
        shared = NIOLockedValueBox(Shared(live: live))
    }

    /// The configuration in force.
    public var current: LiveConfiguration { shared.withLockedValue { $0.live } }

    /// Makes `configuration` the one in force; returns it as applied.
    @discardableResult
    public func apply(_ configuration: Configuration) -> LiveConfiguration {
        shared.withLockedValue { shared in
            let live = LiveConfiguration(configuration, generation: shared.live.generation + 1, previous: shared.live)
            shared.live = live
            generation.store(live.generation, ordering: .releasing)
            return live
        }
    }

    /// The calling thread's context, up to date with the configuration in force.
    @inline(__always)
    func context() -> WorkerContext {
        if let context = threadContext.currentValue, context.live.generation == generation.load(ordering: .relaxed),
           context.owner == identity {
            return context
        }
        return refreshContext()
    }

    @inline(never)
    func refreshContext() -> WorkerContext {
        if let context = threadContext.currentValue, context.owner == identity {
            shared.withLockedValue { shared in
                // This thread is the block's only writer and has stopped writing it: its counts
                // are final and can be folded into the totals.
                Self.fold(context.checks, of: context.live, into: &shared.retired)
                context.live = shared.live
                context.checks = CounterBlock(count: shared.live.series.counterCount)
                shared.checkBlocks[context.id] = (context.live, context.checks)
            }
            return context
        }
        let context = shared.withLockedValue { shared in
            let context = WorkerContext(id: shared.nextContextID, owner: identity, live: shared.live)
            shared.nextContextID += 1
            shared.checkBlocks[context.id] = (context.live, context.checks)
            shared.latencyBlocks.append(context.latency)
            return context
        }
        threadContext.currentValue = context
        return context
    }

    static func fold(_ block: CounterBlock, of live: LiveConfiguration, into totals: inout [SeriesKey: UInt64]) {
        for (series, labels) in live.series.labels.enumerated() {
            for (decision, name) in CheckSeries.decisions.enumerated() {
                let value = block.read(series * CheckSeries.decisions.count + decision)
                if value > 0 { totals[SeriesKey(tenant: labels.tenant, rule: labels.rule, decision: name), default: 0] += value }
            }
        }
    }

    /// Checks decided since start, by tenant, rule and decision (series never counted are absent).
    public func checkTotals() -> [SeriesKey: UInt64] {
        shared.withLockedValue { shared in
            var totals = shared.retired
            for (live, block) in shared.checkBlocks.values { Self.fold(block, of: live, into: &totals) }
            return totals
        }
    }

    /// Decision latency since start: per-bucket counts (not cumulative, the last one unbounded),
    /// the sum of nanoseconds and the count.
    public func latencyTotals() -> (buckets: [UInt64], sumNanoseconds: UInt64, count: UInt64) {
        let blocks = shared.withLockedValue { $0.latencyBlocks }
        var buckets = [UInt64](repeating: 0, count: LatencyBuckets.bounded + 1)
        var sum: UInt64 = 0, count: UInt64 = 0
        for block in blocks {
            for index in buckets.indices { buckets[index] &+= block.read(index) }
            sum &+= block.read(LatencyBuckets.sumIndex)
            count &+= block.read(LatencyBuckets.countIndex)
        }
        return (buckets, sum, count)
    }
}
