import SluiceCore

extension Configuration {
    /// Envoy's rate limit service (`envoy:`, docs/MIGRATING.md): where it listens, envoy ratelimit's
    /// descriptor files, and what it adds to Envoy's answers.
    public struct EnvoySettings: Sendable {
        /// Which RateLimit header fields go into `response_headers_to_add`.
        public enum Headers: String, Sendable, Hashable {
            /// None (envoy ratelimit's default).
            case off
            /// The IETF draft's `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
            case draft
            /// The older `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
            case legacy
            /// Both.
            case both
        }

        /// gRPC listeners on TCP (`HOST:PORT`, or with `tls` and `auth`).
        public var tcpListeners: [TCPListener] = []
        /// gRPC listeners on Unix sockets.
        public var unixListeners: [UnixListener] = []
        /// envoy ratelimit's YAML files and folders, as configured (resolved paths).
        public var configPaths: [String] = []
        /// Every domain, by name, from the files and from `envoy.domains`.
        public var domains: [String: DescriptorDomain] = [:]
        /// RateLimit header fields on the answers.
        public var headers = Headers.off
        /// The descriptor entry whose value is the caller (reputation, tiers, anomaly detection)
        /// and its address; a descriptor without it counts its own key as the caller.
        public var subjectKey = "remote_address"
        /// A descriptor allowed with at least this share of its limit used is counted as near its
        /// limit (`sluice_envoy_rule_descriptors_total{result="near_limit"}`), as envoy ratelimit's
        /// `near_limit` stat with its `NEAR_LIMIT_RATIO` (0.8).
        public var nearLimitRatio = 0.8

        public init() {}

        /// Whether the service is served at all.
        public var isServed: Bool { !tcpListeners.isEmpty || !unixListeners.isEmpty }
    }
}
