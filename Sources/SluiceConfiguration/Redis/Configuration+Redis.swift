extension Configuration {
    /// Where the limits' counters live: this daemon's table, or a Redis shared by a fleet.
    public enum Backend: String, Sendable, Equatable {
        case local
        case redis
    }

    /// Whether any check is decided in Redis: `backend: redis`, or a rule (of any tenant) that
    /// says so.
    public var usesRedis: Bool {
        backend == .redis || rules.values.contains { $0.backend == .redis }
            || tenants.values.contains { $0.rules.values.contains { $0.backend == .redis } }
    }

    /// The identities of the limits of rules decided elsewhere than `backend:` says for every
    /// rule (a rule's own `backend`).
    public var backendExceptions: Set<UInt64> {
        var exceptions: Set<UInt64> = []
        let all = Array(rules.values) + tenants.values.flatMap { Array($0.rules.values) }
        for rule in all where rule.backend != nil && rule.backend != backend {
            for limit in rule.limits { exceptions.insert(limit.identity) }
        }
        return exceptions
    }

    /// The identities of the limits of rules decided in Redis otherwise than `redis.mode` says
    /// for every rule (a rule's own `mode`).
    public var modeExceptions: Set<UInt64> {
        var exceptions: Set<UInt64> = []
        let all = Array(rules.values) + tenants.values.flatMap { Array($0.rules.values) }
        for rule in all where rule.mode != nil && rule.mode != redis.mode {
            for limit in rule.limits { exceptions.insert(limit.identity) }
        }
        return exceptions
    }

    /// Whether some check may be decided exactly, in Redis, and be answered later: `redis.mode`
    /// is exact, or a rule says so.
    public var decidesExactly: Bool {
        redis.mode == .exact || rules.values.contains { $0.mode == .exact }
            || tenants.values.contains { $0.rules.values.contains { $0.mode == .exact } }
    }

    /// Whether some check may be decided in fast mode: `redis.mode` is fast, or a rule says so.
    public var decidesFast: Bool {
        redis.mode == .fast || rules.values.contains { $0.mode == .fast }
            || tenants.values.contains { $0.rules.values.contains { $0.mode == .fast } }
    }

    /// `redis:` the server the fleet's daemons share, and what a check does when it cannot answer.
    public struct RedisSettings: Sendable, Equatable {
        public enum Address: Sendable, Equatable {
            case tcp(host: String, port: Int)
            case unix(path: String)
        }

        /// What a check does while Redis cannot answer.
        public enum OnFailure: String, Sendable, Equatable {
            /// Decided on this daemon's own table, with `limit / expected_daemons`.
            case local
            case failOpen = "fail_open"
            case failClosed = "fail_closed"
        }

        public var address = Address.tcp(host: "127.0.0.1", port: 6379)
        /// A Redis Cluster's nodes to read its slot map from (any of them; more than one in case
        /// one is down); empty: the one server at `address`.
        public var cluster: [Address] = []
        public var username: String?
        public var password: String?
        /// Connections kept open.
        public var connections = 2
        /// How long a check waits for Redis before it takes the `on_failure` path (ns).
        public var timeout: Int64 = 20_000_000
        public var onFailure = OnFailure.local
        /// Daemons sharing the limits (the `local` path's share).
        public var expectedDaemons = 1
        /// Time from Redis's `TIME` (the default: daemons' clocks may differ), or the daemons'.
        public var daemonClock = false
        /// Commands waiting on Redis at most; past it checks take the `on_failure` path.
        public var maxPending = 10_000
        /// How long a batch gathers checks from every connection, from its first, before it may
        /// go (ns); 0: at once (it still gathers while `writesInFlight` writes are out).
        public var batchWindow: Int64 = 0
        /// Writes to Redis out at once per event loop while more checks gather (0: no bound).
        public var writesInFlight = 1
        /// Checks that fill a write before the window ends.
        public var maxBatch = 128
        /// Denials kept to answer again without Redis until their retry time; 0: none.
        public var denialCacheSize = 100_000
        /// Checks decided by one script call (1: a call each).
        public var checksPerCall = 64
        /// Where checks are decided: each in Redis (exact), or on each daemon's table, synced
        /// with Redis every `syncInterval` (fast).
        public enum Mode: String, Sendable, Equatable {
            case exact
            case fast
        }
        public var mode = Mode.exact
        /// How often fast mode sends what a daemon admitted and takes the fleet's state (ns).
        public var syncInterval: Int64 = 5_000_000
        /// Entries (a key's limit each) one sync sends at most; more wait for the next sync.
        public var syncMaxEntries = 4_096

        public init() {}
    }
}
