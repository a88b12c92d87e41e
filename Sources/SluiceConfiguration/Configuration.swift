import SluiceCore
import SluiceIntelligence

/// Everything `sluiced` is configured with: immutable, validated once at load.
public struct Configuration: Sendable {
    /// Where time comes from.
    public enum ClockMode: String, Sendable, Hashable {
        /// The daemon's monotonic clock, anchored to the wall clock at start.
        case monotonic
        /// Each check's `now_ms` (for replays and deterministic tests).
        case request
    }

    /// A Unix socket listener.
    public struct UnixListener: Sendable, Hashable {
        /// The socket path.
        public var path: String
        /// The file mode set on the socket (default 0660).
        public var mode: UInt16 = 0o660
        /// `none` (the default): the socket's mode is the gate, and a peer not in
        /// `auth.unix_peers` may do everything; `token`: such a peer must authenticate.
        public var auth = ListenerAuth.none
        /// Creates a listener.
        public init(path: String, mode: UInt16 = 0o660, auth: ListenerAuth = .none) {
            self.path = path
            self.mode = mode
            self.auth = auth
        }
    }

    /// A TCP listener.
    public struct TCPListener: Sendable, Hashable, CustomStringConvertible {
        /// The address to bind (default 127.0.0.1: never the whole network unless asked).
        public var host: String
        /// The port; 0 picks a free one.
        public var port: Int
        /// TLS on this listener: its files (nil: plain TCP).
        public var tls: TLSFiles?
        /// Whether a connection must authenticate first (the default), or not (loopback only).
        public var auth: ListenerAuth
        /// Creates a listener.
        public init(host: String, port: Int, tls: TLSFiles? = nil, auth: ListenerAuth = .token) {
            self.host = host
            self.port = port
            self.tls = tls
            self.auth = auth
        }
        /// `HOST:PORT`.
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// A TLS listener's files, read at start and again at each reload (SIGHUP): rotating a
    /// certificate is replacing the files and reloading.
    public struct TLSFiles: Sendable, Hashable {
        /// The server's certificate chain (PEM: its certificate first, then intermediates).
        public var certificate: String
        /// Its private key (PEM).
        public var key: String
        /// Certificate authorities (PEM) whose client certificates are required (mutual TLS);
        /// nil: no client certificate is asked for.
        public var clientCA: String?

        public init(certificate: String, key: String, clientCA: String? = nil) {
            self.certificate = certificate
            self.key = key
            self.clientCA = clientCA
        }
    }

    /// A named rule: one or more limits decided together.
    public struct Rule: Sendable {
        /// The rule's name.
        public var name: String
        /// Its limits, bound to the rule's name.
        public var limits: [BoundLimit]
        /// Where its checks are counted within a tenant's metric series (see ``CheckSeries``).
        public var seriesSlot = 0
        /// The protected service whose load scales this rule (adaptive limiting); nil: none.
        public var service: String?
        /// A limit relative to each subject's learned baseline; nil: the configured limits only.
        public var baseline: BaselineLimit?
        /// Where its checks are decided, when not where `backend:` says for every rule.
        public var backend: Backend?
        /// How it is decided in Redis (each check there, or on each daemon's table synced with
        /// it), when not as `redis.mode` says; no effect on a rule decided locally.
        public var mode: RedisSettings.Mode?
        /// `shadow`: decided and counted, but never denies; a check it would deny is allowed
        /// with `would_deny` and counted as `shadow_over_limit`.
        public var shadow = false
        /// `unlimited`: every check allowed, nothing counted or stored (an exemption).
        public var unlimited = false
        /// `replaces`: rules this one stands in for when a request checks both (those checks are
        /// allowed without counting), as envoy ratelimit's `replaces`.
        public var replaces: [String] = []

        /// A rule.
        public init(name: String, limits: [BoundLimit]) {
            self.name = name
            self.limits = limits
        }
    }

    /// A tenant and its own rules (which shadow global rules of the same name).
    public struct Tenant: Sendable {
        /// The tenant's name.
        public var name: String
        /// Its rules.
        public var rules: [String: Rule]
        /// What it may consume (over the top-level `quotas:`); nil: the defaults.
        public var quotas: TenantQuotas?
        /// Its own feature flags, key by key over the global ones (``Configuration/settings(for:)``).
        public var featureOverrides: [String: FlagOverride] = [:]
        /// Its own reputation event weights, over the global ones; nil: the global ones.
        public var reputationWeights: [String: Double]?
        /// Its own anomaly responses, kind by kind over `anomaly.responses`.
        public var anomalyResponses: [String: AnomalyResponse] = [:]
        /// Its own thresholds for subject signals (`spike_factor` …), key by key over `anomaly:`.
        public var anomalyThresholds: [String: Double] = [:]
        /// Its own multiplier and limits for tiers the configuration defines (`tiers:`), tier by tier.
        public var tierOverrides: [String: TierOverride] = [:]
        /// The first of its metric series (see ``CheckSeries``).
        public var seriesBase = 0

        /// A tenant.
        public init(name: String, rules: [String: Rule]) {
            self.name = name
            self.rules = rules
        }
    }

    /// How log lines are written.
    public enum LogFormat: String, Sendable, Hashable {
        /// `2026-11-29T10:00:00+0000 info sluiced: message key=value`, for people.
        case text
        /// One JSON object per line, for log pipelines.
        case json
    }

    /// Unix socket listeners.
    public var unixListeners: [UnixListener] = [UnixListener(path: "/tmp/sluice.sock")]
    /// TCP listeners.
    public var tcpListeners: [TCPListener] = [TCPListener(host: "127.0.0.1", port: 7420, auth: .none)]
    /// Credentials and identities (docs/SECURITY.md).
    public var auth = Auth()
    /// Quotas every declared tenant has unless it says otherwise (`quotas:`); nil: none.
    public var defaultQuotas: TenantQuotas?
    /// The largest frame body accepted, in bytes.
    public var maxFrameBytes = 1 << 20
    /// Connections served at once; more are answered `CODE_OVERLOADED` and closed.
    public var maxConnections = 10_000
    /// Milliseconds a connection may receive nothing (following no stream) before it is
    /// closed; 0: never.
    public var idleTimeoutMs: Int64 = 600_000
    /// Milliseconds a frame may take from its first byte to its last before the connection is
    /// closed; 0: never.
    public var readTimeoutMs: Int64 = 10_000
    /// Milliseconds a connection's answers may wait unwritten (past `maxQueuedBytes`: the client
    /// is not reading them) before the connection is closed and they are dropped; 0: never.
    public var writeTimeoutMs: Int64 = 30_000
    /// Unix socket connections accepted past `maxConnections`, so that local clients (sluicectl,
    /// a sidecar) still get in when TCP clients fill the daemon.
    public var unixReserve = 64
    /// With `maxConnections` open, a new connection closes the TCP connection idle the longest
    /// if it has been idle at least this many milliseconds (else it is refused); 0: never evict.
    public var evictIdleAfterMs: Int64 = 10_000
    /// Milliseconds of queueing delay (how late an event loop runs its work) past which checks
    /// are answered `CODE_OVERLOADED` at once; 0: never refused.
    public var maxQueueDelayMs: Int64 = 100
    /// Frames a connection answers per turn while its event loop runs late (the rest wait for
    /// its next turn); 0: no bound (the default, see docs/BENCHMARKS.md).
    public var framesPerTurn = 0
    /// Checks in one request.
    public var maxBatch = 1_000
    /// Bytes in a tenant, key, subject or rule name.
    public var maxKeyBytes = 4_096
    /// Event-loop threads; 0 means one per core.
    public var threads = 0
    /// Where time comes from.
    public var clock = ClockMode.monotonic
    /// Table shards; 0 means 16 per core.
    public var shards = 0
    /// Entries kept before the least recently used are evicted.
    public var maxEntries = 5_000_000
    /// Where the limiter table is kept across restarts; nil: nowhere (the table starts empty).
    public var snapshotPath: String?
    /// Milliseconds between snapshots (one more is written on shutdown).
    public var snapshotIntervalMs: Int64 = 30_000
    /// Where Prometheus metrics, /healthz and /readyz are served over HTTP; nil: not served.
    public var metricsListener: TCPListener?
    /// A file holding the bearer token `GET /metrics` must present (`Authorization: Bearer …`);
    /// read at start and at each reload. Nil: /metrics is open.
    public var metricsBearerTokenFile: String?
    /// Whether operator requests (reload, snapshot) are served on TCP connections too. They are
    /// always served on Unix sockets, whose file mode says who may connect.
    public var adminOverTCP = false
    /// Answer bytes a connection may have waiting to be written before the daemon stops reading
    /// its requests (TCP backpressure), so a client that never reads cannot grow memory.
    public var maxQueuedBytes = 1 << 20
    /// The lowest level logged.
    public var logLevel = "info"
    /// How log lines are written.
    public var logFormat = LogFormat.text
    /// The algorithm of inline limits and rules that name none.
    public var defaultAlgorithm = Algorithm.gcra
    /// When true, only declared tenants (and the default one) are served.
    public var strictTenants = false
    /// Rules every tenant can use.
    public var rules: [String: Rule] = [:]
    /// Declared tenants.
    public var tenants: [String: Tenant] = [:]
    /// Whether the file has a top-level `rules:` key (even an empty one): a reload to a file
    /// without rules removes the rules in force only when it says so.
    public var declaresRules = false
    /// Where the configuration came from ("embedded default" or a path).
    public var source = "embedded default"
    /// Reputation: the model and its in-memory bounds.
    public var reputation = ReputationSettings()
    /// Persistence (SQLite).
    public var store = StoreSettings()
    /// Where every rule's counters live (`backend:`); `redis` shares them through `redis:`.
    public var backend = Backend.local
    /// The Redis a `redis` backend uses.
    public var redis = RedisSettings()
    /// Feature flags by feature name; a feature without one is off.
    public var features: [String: FeatureFlag] = [:]
    /// Tiers by name (applied to subjects an operator assigned, under the `adaptive` flag).
    public var tiers: [String: Tier] = [:]
    /// The load controller.
    public var adaptive = AdaptiveSettings()
    /// How per-subject baselines are learned (`baseline:`), for rules with a relative limit.
    public var baseline = BaselineSettings()
    /// Anomaly detection's thresholds (`anomaly:`).
    public var anomaly = AnomalySettings()
    /// Where alerts are appended as JSON Lines (`anomaly.alert_log`); nil: none.
    public var anomalyLog: String?
    /// What anomaly detection does per alert kind (`anomaly.responses`); a kind not named only alerts.
    public var anomalyResponses: [String: AnomalyResponse] = [:]
    /// Where alerts are POSTed (`anomaly.webhook`); nil: nowhere.
    public var anomalyWebhook: WebhookSettings?

    /// Envoy's rate limit service and envoy ratelimit's descriptor files (`envoy:`).
    public var envoy = EnvoySettings()

    /// The HTTP/JSON API's listeners (`http:`).
    public var http = HTTPSettings()

    /// The built-in defaults (what the embedded default file also says).
    public init() {}

    /// The rule `name` as seen by `tenant`: the tenant's own first, then the global one.
    @inlinable
    public func rule(_ name: String, tenant: String) -> Rule? {
        rule(name, declaredBy: tenant.isEmpty ? nil : tenants[tenant])
    }

    /// The rule `name` as seen by a tenant whose declaration (if any) was already looked up.
    @inlinable
    public func rule(_ name: String, declaredBy tenant: Tenant?) -> Rule? {
        tenant?.rules[name] ?? rules[name]
    }

    /// The protected services rules name (`service:`, global or a tenant's): the only ones that
    /// may report load.
    public var protectedServices: Set<String> {
        var names = Set(rules.values.compactMap(\.service))
        for tenant in tenants.values { names.formUnion(tenant.rules.values.compactMap(\.service)) }
        return names
    }

    /// Whether `tenant` may be served.
    @inlinable
    public func knows(tenant: String) -> Bool {
        tenant.isEmpty || !strictTenants || tenants[tenant] != nil
    }
}

extension Configuration {
    /// The names `log.level` accepts, lowest first.
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
}
