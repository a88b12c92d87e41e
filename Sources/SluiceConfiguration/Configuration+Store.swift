import SluiceCore
import SluiceIntelligence

extension Configuration {
    /// Where and how reputation, tiers and baselines are persisted.
    public struct StoreSettings: Sendable, Equatable {
        /// The database: the embedded SQLite file (the default), or PostgreSQL, which several
        /// daemons share.
        public enum Backend: String, Sendable, Equatable {
            case sqlite
            case postgres
        }

        /// Which database holds the state.
        public var backend = Backend.sqlite
        /// The SQLite database file; nil keeps everything in memory (lost at restart).
        public var path: String?
        /// PostgreSQL's URL (`postgres://user:password@host:port/database`, or
        /// `postgres://user@/database?host=/socket/folder`), for the postgres backend.
        public var url: String?
        /// How long one PostgreSQL operation may take, connecting included (ns).
        public var timeout: Int64 = 5_000_000_000
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
        /// How often a daemon on PostgreSQL reads the other daemons' new events, tiers and
        /// anomaly responses (ns): with `commitInterval`, how long a change on one daemon takes
        /// to reach the others.
        public var syncInterval: Int64 = 100_000_000

        /// The defaults (no file).
        public init() {}

        /// Whether anything is persisted (a file, or PostgreSQL).
        public var isPersistent: Bool {
            switch backend {
            case .sqlite: path != nil
            case .postgres: url != nil
            }
        }

        /// Where, for logs and errors: the file, or the URL without its password.
        public var location: String {
            switch backend {
            case .sqlite: return path ?? "memory"
            case .postgres: return url.map(Self.redacted) ?? "memory"
            }
        }

        /// `url` with any password replaced by `***`.
        public static func redacted(_ url: String) -> String {
            guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@") else { return url }
            let credentials = url[scheme.upperBound..<at]
            guard let colon = credentials.firstIndex(of: ":") else { return url }
            return String(url[..<colon]) + ":***" + String(url[at...])
        }
    }

    /// The features a flag can switch.
    public static let knownFeatures = ["adaptive", "anomaly", "reputation"]
}
