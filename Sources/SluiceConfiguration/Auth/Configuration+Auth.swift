import SluiceCore

extension Configuration {
    /// Who may connect and what each may do (docs/SECURITY.md): API tokens (salted hashes),
    /// client certificates and Unix peers, each mapped to an identity with a tenant and roles.
    public struct Auth: Sendable, Equatable {
        /// What an identity may ask. `operator` may ask everything.
        public enum Role: String, Sendable, Hashable, CaseIterable, Comparable {
            /// Checks, releases, pings.
            case check
            /// Reputation events, outcomes, load reports.
            case report
            /// Reading reputation, tiers, alerts and statistics.
            case read
            /// Setting reputation and tiers; for an identity of every tenant also flags,
            /// reloads and snapshots.
            case `operator`

            public static func < (a: Role, b: Role) -> Bool {
                allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
            }
        }

        /// A caller the daemon knows: a name for logs, the tenant it acts for and its roles.
        public struct Identity: Sendable, Hashable {
            public var name: String
            /// The one tenant it may name ("" is the default tenant); nil: every tenant.
            public var tenant: String?
            public var roles: Set<Role>

            public init(name: String, tenant: String?, roles: Set<Role>) {
                self.name = name
                self.tenant = tenant
                self.roles = roles
            }

            /// Whether it may do what `role` allows.
            public func may(_ role: Role) -> Bool { roles.contains(.operator) || roles.contains(role) }

            /// What a Unix socket without auth grants, and a loopback listener with `auth: none`
            /// (operator requests there still need admin.allow_tcp).
            public static let everything = Identity(name: "unauthenticated", tenant: nil, roles: [.operator])
        }

        /// A token's entry: its id, salted hash and identity.
        public struct Token: Sendable, Hashable {
            public var id: String
            public var digest: AccessToken.Digest
            public var identity: Identity
            /// When it was made (as `sluicectl token create` wrote it), for listing.
            public var created: String?

            public init(id: String, digest: AccessToken.Digest, identity: Identity, created: String? = nil) {
                self.id = id
                self.digest = digest
                self.identity = identity
                self.created = created
            }
        }

        /// Tokens written in the configuration and read from `tokensFile`, ids unique.
        public var tokens: [Token] = []
        /// The file `sluicectl token create` writes: read at start and at each reload.
        public var tokensFile: String?
        /// Client certificates (mutual TLS) by their subject's common name.
        public var certificates: [String: Identity] = [:]
        /// Unix socket peers by user id (SO_PEERCRED).
        public var unixPeers: [UInt32: Identity] = [:]
        /// Failed authentications one connection may make before it is closed.
        public var maxFailures = 3
        /// Failed authentications one address may make per minute; past it its attempts are
        /// refused without their tokens being looked at, until a minute has passed.
        public var failuresPerMinute = 30

        public init() {}

        /// The token entry with `id`.
        public func token(id: Substring) -> Token? { tokens.first { $0.id == id } }

        /// Whether any credential is configured that a listener requiring one could accept.
        public var hasCredentials: Bool { !tokens.isEmpty || !certificates.isEmpty }
    }

    /// How a listener treats connections before they authenticate.
    public enum ListenerAuth: String, Sendable, Hashable {
        /// A token first (or a mapped client certificate, or a mapped Unix peer); the default on TCP.
        case token
        /// None: every connection may do everything (operator requests on TCP still need
        /// admin.allow_tcp). The default on Unix sockets; allowed on TCP only on loopback.
        case none
    }

    /// Whether `host` is a loopback address (where `auth: none` is allowed on TCP).
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Refuses listeners whose authentication cannot work: `auth: none` off loopback, or a
    /// listener requiring credentials when none is configured. Checked at start and at reload
    /// (command-line listeners included).
    public func checkAuthentication() throws(SluiceError) {
        for listener in tcpListeners {
            switch listener.auth {
            case .none:
                guard Self.isLoopback(listener.host) else {
                    throw SluiceError(.invalidConfiguration,
                                      "listen.tcp \(listener): auth: none is allowed only on a loopback address (127.0.0.1, ::1); anyone who can reach \(listener.host) could act for every tenant")
                }
            case .token:
                guard auth.hasCredentials else {
                    throw SluiceError(.invalidConfiguration,
                                      "listen.tcp \(listener) requires every client to authenticate, but no credential is configured: create a token (sluicectl token create --file FILE, then auth.tokens_file: FILE), or set auth: none on a loopback listener (--tcp-auth none)")
                }
            }
        }
        for listener in unixListeners where listener.auth == .token {
            guard auth.hasCredentials || !auth.unixPeers.isEmpty else {
                throw SluiceError(.invalidConfiguration,
                                  "listen.unix \(listener.path) requires every client to authenticate, but no token and no auth.unix_peers entry is configured")
            }
        }
    }
}
