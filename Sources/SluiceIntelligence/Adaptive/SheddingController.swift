/// Decides how much of its normal capacity a protected service should admit, from the load it
/// reports: an AIMD controller with smoothing, a hysteresis band, a cooldown and hard bounds.
///
/// - The observed p99 latency is smoothed (EWMA) so one slow report does not shed traffic.
/// - Above the band (`target × (1 + tolerance)`, or errors above `maxErrorRate`), the factor is
///   multiplied by `decrease`, at most once per `cooldown` ticks, so that the effect of a cut is
///   seen before the next one; and not while the latency or the requests in flight are still
///   falling after a cut (by 5 % a tick or more): a queue built before the cut takes time to
///   drain, and cutting on through it would overshoot to the minimum. Inside the band it holds; below it (and errors low) it grows
///   by `increase` per tick: recovery is gradual. Within 10 % below the level the last overload
///   was found at, it grows at a quarter of that pace (latency gives no warning before a queue
///   forms, so the crossing should be gentle); past that level, at the whole pace again.
/// - The factor stays within `minimum…1`: under steady timeouts it settles at the minimum, and it
///   never grows past 1 (unlike a gradient limit that keeps growing while latency stays flat).
///
/// Pure state: `tick` takes the time as a parameter and reads no clock.
public struct SheddingController: Sendable, Equatable {
    /// How the controller reacts.
    public struct Settings: Sendable, Equatable {
        /// The p99 latency the service should stay under (ns).
        public var targetLatency: Int64
        /// Half-width of the band around the target in which the factor holds (0.1 = ±10 %).
        public var tolerance: Double = 0.1
        /// Error rate (0…1) above which the service counts as overloaded whatever its latency.
        public var maxErrorRate: Double = 0.05
        /// Multiplicative cut when overloaded.
        public var decrease: Double = 0.8
        /// Additive growth per tick when healthy.
        public var increase: Double = 0.02
        /// Ticks after a cut before the next one.
        public var cooldown: Int = 3
        /// The least share of capacity ever admitted.
        public var minimum: Double = 0.1
        /// Weight of a new sample in the smoothed latency (0…1).
        public var smoothing: Double = 0.3

        /// Settings for a target p99 latency in nanoseconds.
        public init(targetLatency: Int64) {
            self.targetLatency = targetLatency
        }
    }

    /// One load report (the service's own, or the daemon's).
    public struct Sample: Sendable, Equatable {
        /// p99 latency, ns.
        public var p99: Int64
        /// Errors per request, 0…1.
        public var errorRate: Double
        /// Requests in flight at the service now; nil when not known.
        public var inFlight: Double?

        /// Creates a sample.
        public init(p99: Int64, errorRate: Double = 0, inFlight: Double? = nil) {
            self.p99 = p99
            self.errorRate = errorRate
            self.inFlight = inFlight
        }
    }

    /// The settings (a reload may change them; the state carries over).
    public var settings: Settings
    /// The share of normal capacity to admit now, `minimum…1`.
    public private(set) var factor: Double = 1
    /// The smoothed p99 latency (ns); nil before the first sample.
    public private(set) var smoothedLatency: Double?
    /// Ticks since the last cut.
    var sinceCut = Int.max
    /// The smoothed latency of the previous tick.
    var previousSmoothed: Double?
    /// The requests in flight of the previous tick.
    var previousInFlight: Double?
    /// The factor the last descent (cuts with no growth between them) started from: the
    /// capacity last found, approached slowly.
    var lastCutFrom: Double?
    /// Whether the factor was cut since it last grew.
    var descending = false

    /// A controller admitting everything until told otherwise.
    public init(settings: Settings) {
        self.settings = settings
    }

    /// Takes one sample (one tick of the controller) and returns the new factor.
    @discardableResult
    public mutating func tick(_ sample: Sample) -> Double {
        let latency = Double(max(0, sample.p99))
        let smoothed = smoothedLatency.map { $0 + settings.smoothing * (latency - $0) } ?? latency
        previousSmoothed = smoothedLatency
        smoothedLatency = smoothed
        // Still over the band but draining: the latency, or the requests in flight (which answer
        // a cut at once, where a p99 lags by the queueing it measures), fell by 5 % or more since
        // the last tick. The last cut is working, and another would overshoot.
        let improving = (previousSmoothed.map { smoothed < $0 * 0.95 } ?? false)
            || (sample.inFlight.flatMap { now in previousInFlight.map { now < $0 * 0.95 } } ?? false)
        previousInFlight = sample.inFlight
        if sinceCut != .max { sinceCut += 1 }
        let target = Double(settings.targetLatency)
        let overloaded = smoothed > target * (1 + settings.tolerance) || sample.errorRate > settings.maxErrorRate
        let healthy = smoothed < target * (1 - settings.tolerance) && sample.errorRate <= settings.maxErrorRate / 2
        if overloaded {
            if sinceCut >= settings.cooldown, !(improving && sinceCut != .max && sample.errorRate <= settings.maxErrorRate) {
                if !descending { lastCutFrom = factor }
                descending = true
                factor = max(settings.minimum, factor * settings.decrease)
                sinceCut = 0
            }
        } else if healthy {
            // Near the level the last overload was found at, probe at a quarter of the pace:
            // latency gives no warning before a queue forms, so the crossing should be gentle.
            // Past that level, capacity grew and the pace is whole again.
            descending = false
            let near = lastCutFrom.map { factor >= 0.9 * $0 && factor < $0 } ?? false
            factor = min(1, factor + (near ? settings.increase / 4 : settings.increase))
            if let from = lastCutFrom, factor >= from { lastCutFrom = nil }
        }
        return factor
    }
}

/// Shares a reduced capacity between tiers by priority: the lowest priority gives up its share
/// first, down to its floor, then the next; the highest keeps a reserved share whatever happens.
public enum Shedding {
    /// One tier's place in the order.
    public struct Tier: Sendable, Equatable {
        /// Higher is shed later.
        public var priority: Int
        /// Its share of normal traffic (weights, summed over tiers).
        public var share: Double
        /// The least multiplier it is ever cut to (its reserve).
        public var floor: Double

        /// Creates a tier.
        public init(priority: Int, share: Double, floor: Double) {
            self.priority = priority
            self.share = share
            self.floor = floor
        }
    }

    /// The multiplier of each tier (same order as `tiers`) that admits `factor` of the total
    /// normal traffic, cutting the lowest priorities first.
    ///
    /// - Complexity: O(tiers log tiers).
    public static func multipliers(factor: Double, tiers: [Tier]) -> [Double] {
        let total = tiers.reduce(0) { $0 + max(0, $1.share) }
        guard total > 0 else { return tiers.map { _ in 1 } }
        // Traffic to take away, in units of shares.
        var excess = max(0, 1 - min(1, factor)) * total
        var result = tiers.map { _ in 1.0 }
        // What rounding leaves of an excess taken whole is no cut: it must not put an idle tier of
        // higher priority at its floor.
        let negligible = total * 1e-12
        // The highest priority the cut reached.
        var reached: Int?
        for index in tiers.indices.sorted(by: { tiers[$0].priority < tiers[$1].priority }) where excess > negligible {
            let tier = tiers[index]
            reached = tier.priority
            let share = max(0, tier.share)
            guard share > 0 else { continue }
            let available = share * (1 - max(0, min(1, tier.floor)))
            let taken = min(available, excess)
            result[index] = 1 - taken / share
            excess -= taken
        }
        // A tier measured idle, at or below the priority the cut reached: whatever it sends next is
        // excess, so it stands at its floor. At 1 it would be admitted whole until the next
        // measurement, while busy tiers of its priority or higher are being cut.
        if let reached {
            for index in tiers.indices where tiers[index].share <= 0 && tiers[index].priority <= reached {
                result[index] = max(0, min(1, tiers[index].floor))
            }
        }
        return result
    }
}
