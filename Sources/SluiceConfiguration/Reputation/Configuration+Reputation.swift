import SluiceCore
import SluiceIntelligence

extension Configuration {
    /// How reputation scores are computed and kept in memory.
    public struct ReputationSettings: Sendable, Equatable {
        /// Neutral start, weights, half-life, curve and block threshold.
        public var model = ReputationModel()
        /// Whether the daemon records a `rate_limited` event when a limit denies a check.
        public var recordDenials = true
        /// Subjects kept in memory at most; beyond, the mildest are forgotten at the next sweep.
        public var maxSubjects = 1_000_000
        /// How often the background sweep forgets subjects back at neutral and expires events (ns).
        public var sweepInterval: Int64 = 10_000_000_000

        /// The defaults.
        public init() {}
    }
}
