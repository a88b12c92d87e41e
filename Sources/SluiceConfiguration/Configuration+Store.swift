import SluiceCore
import SluiceIntelligence

extension Configuration {
    /// Where and how reputation (and later, other shared state) is persisted.
    public struct StoreSettings: Sendable, Equatable {
        /// The SQLite database file; nil keeps everything in memory (lost at restart).
        public var path: String?
        /// Changes are written together once per interval (ns): what a crash can lose of events
        /// not sent as durable.
        public var commitInterval: Int64 = 100_000_000
        /// Events older than this (ns) are deleted.
        public var retention: Int64 = 7 * 86_400_000_000_000
        /// At most this many events are kept; the oldest go first.
        public var maxEvents = 10_000_000
        /// How long a write waits for a lock another process holds on the file (ns).
        public var busyTimeout: Int64 = 1_000_000_000
        /// Events held in memory while the store cannot be written, at most.
        public var maxPendingEvents = 1_000_000

        /// The defaults (no file).
        public init() {}
    }

    /// The features a flag can switch.
    public static let knownFeatures = ["adaptive", "anomaly", "reputation"]
}
