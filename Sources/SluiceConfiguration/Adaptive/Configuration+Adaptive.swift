import SluiceCore
import SluiceIntelligence

extension Configuration {
    /// A tier of subjects (VIP, standard, best effort …): how their limits scale and, under load,
    /// in which order they are shed.
    public struct Tier: Sendable, Equatable {
        /// The tier's name.
        public var name: String
        /// Scales every limit of the tier's subjects.
        public var multiplier: Double
        /// Higher is shed later under load.
        public var priority: Int
        /// Explicit limits for some rules, by rule name: they replace the rule's limits (and the
        /// multiplier) for the tier's subjects.
        public var rules: [String: [BoundLimit]] = [:]
        /// Under load, the least multiplier the tier is cut to (0…1): its reserved share.
        public var reserve: Double = 0

        /// Creates a tier.
        public init(name: String, multiplier: Double = 1, priority: Int = 0, rules: [String: [BoundLimit]] = [:]) {
            self.name = name
            self.multiplier = multiplier
            self.priority = priority
            self.rules = rules
        }
    }

    /// The load controller's settings (`adaptive:`).
    public struct AdaptiveSettings: Sendable, Equatable {
        /// How each service's controller reacts to its reports.
        public var controller = SheddingController.Settings(targetLatency: 100_000_000)
        /// Services (or tenants) that may report load at once; more are refused.
        public var maxServices = 100
        /// How often the background controller measures the daemon's own load and demand per
        /// tier, and republishes the multipliers (ns).
        public var interval: Int64 = 1_000_000_000
        /// A service silent this long recovers, one healthy step per interval (ns).
        public var staleAfter: Int64 = 10_000_000_000
        /// Where subjects without a tier stand when shedding (tiers' priorities are compared with it).
        public var untieredPriority = 0
        /// The event-loop delay the daemon's own controller (service `sluiced`) keeps under (ns).
        public var maxLoopDelay: Int64 = 50_000_000

        /// The defaults.
        public init() {}
    }

    /// A rule's limit relative to the subject's learned normal rate (`baseline:` in a rule): the
    /// limit becomes `factor × normal` per period, between `floor` and `ceiling`.
    public struct BaselineLimit: Sendable, Equatable {
        /// How many times the subject's normal rate it may reach.
        public var factor: Double
        /// The least limit, per the rule's (first) period.
        public var floor: UInt64
        /// The greatest limit, per the rule's (first) period.
        public var ceiling: UInt64

        /// Creates a relative limit.
        public init(factor: Double, floor: UInt64, ceiling: UInt64) {
            self.factor = factor
            self.floor = floor
            self.ceiling = ceiling
        }
    }
}
