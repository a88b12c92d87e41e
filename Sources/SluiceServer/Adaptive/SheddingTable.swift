import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import Synchronization

/// Load-aware scaling compiled for the hot path (the adaptive feature): which checks count
/// toward which protected service, the multiplier the background controller publishes for each
/// (service, tier), and each one's demand. Nil in ``LiveConfiguration`` when the adaptive flag
/// is off or no rule names a `service`.
///
/// A check reads its series' service slot from an array, one atomic multiplier, and adds its
/// hits to one atomic counter (which also decides, under load, whether it is admitted);
/// everything else happens in ``SheddingService``.
// @unchecked: the atomics are allocated once here and freed in deinit; the rest is immutable.
final class SheddingTable: @unchecked Sendable {
    /// Service names by slot.
    let services: [String]
    /// The service slot of each metric series (see ``CheckSeries``); -1 when its rule names none.
    let slotOfSeries: [Int32]
    /// Tier classes per service: the tier table's tiers in its order, then subjects without one.
    let classes: Int
    /// The class of subjects without a tier.
    var untiered: Int { classes - 1 }
    /// Multipliers (bits of a `Double`), by `slot × classes + class`.
    let multipliers: UnsafeMutablePointer<Synchronization.Atomic<UInt64>>
    /// Hits asked for since start, by `slot × classes + class`.
    let demand: UnsafeMutablePointer<Synchronization.Atomic<UInt64>>
    let gate: AdaptiveGate
    /// How long a shed check is told to wait (the controller's interval, ns).
    let retryAfter: Int64

    init?(_ configuration: Configuration, series: CheckSeries, tiers: TierTable?) {
        guard let gate = AdaptiveGate(configuration) else { return nil }
        var services: [String] = []
        var slots: [String: Int32] = [:]
        slotOfSeries = series.rules(in: configuration).map { rule -> Int32 in
            guard let service = rule?.service else { return -1 }
            if let slot = slots[service] { return slot }
            let slot = Int32(services.count)
            services.append(service)
            slots[service] = slot
            return slot
        }
        guard !services.isEmpty else { return nil }
        self.services = services
        classes = (tiers?.names.count ?? 0) + 1
        let count = services.count * classes
        multipliers = .allocate(capacity: count)
        demand = .allocate(capacity: count)
        for index in 0..<count {
            (multipliers + index).initialize(to: Synchronization.Atomic(Double(1).bitPattern))
            (demand + index).initialize(to: Synchronization.Atomic(0))
        }
        self.gate = gate
        retryAfter = configuration.adaptive.interval
    }

    deinit {
        multipliers.deinitialize(count: services.count * classes)
        multipliers.deallocate()
        demand.deinitialize(count: services.count * classes)
        demand.deallocate()
    }

    /// The service slot of checks counted under `series`, -1 for none.
    @inline(__always)
    func slot(ofSeries series: Int) -> Int {
        Int(slotOfSeries[series])
    }


    /// The multiplier of `tierClass` at `slot` now.
    @inline(__always)
    func multiplier(slot: Int, tierClass: Int) -> Double {
        Double(bitPattern: multipliers[slot &* classes &+ tierClass].load(ordering: .relaxed))
    }

    /// Counts `hits` asked for by `tierClass` at `slot`; returns whether they are admitted at
    /// `multiplier`: of every run of hits, the share `multiplier` is, spread evenly (the n-th hit
    /// is admitted when ⌊(n+1)·m⌋ > ⌊n·m⌋), so admission follows the multiplier exactly and
    /// without randomness.
    @inline(__always)
    func admit(slot: Int, tierClass: Int, hits: UInt64, multiplier: Double) -> Bool {
        let before = demand[slot &* classes &+ tierClass].add(hits, ordering: .relaxed).oldValue
        guard multiplier < 1 else { return true }
        guard multiplier > 0 else { return false }
        // Modulo 2^40 keeps the products exact in a Double; the pattern repeats every 2^40 hits.
        let base = Double(before & 0xFF_FFFF_FFFF)
        return ((base + Double(max(1, hits))) * multiplier).rounded(.down) > (base * multiplier).rounded(.down)
    }

    /// Publishes the multipliers of every class at `slot`.
    func publish(slot: Int, _ values: [Double]) {
        for (tierClass, value) in values.prefix(classes).enumerated() {
            multipliers[slot * classes + tierClass].store(value.bitPattern, ordering: .relaxed)
        }
    }

    /// Every counter of demand, by `slot × classes + class`.
    func demandCounts() -> [UInt64] {
        (0..<(services.count * classes)).map { demand[$0].load(ordering: .relaxed) }
    }
}
