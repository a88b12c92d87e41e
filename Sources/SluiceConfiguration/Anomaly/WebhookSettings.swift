/// Where anomaly alerts are POSTed (`anomaly.webhook`): over HTTP or HTTPS, a batch of alerts per
/// request, retried with exponential backoff, never blocking detection.
public struct WebhookSettings: Sendable, Equatable {
    /// What a request's body is.
    public enum Format: String, Sendable, Equatable, CaseIterable {
        /// A JSON array of alert objects, the alert log's form (docs/ANOMALY.md).
        case json
        /// `{"text": "..."}`, a line per alert: what Slack's incoming webhooks (and Mattermost's,
        /// and Rocket.Chat's) take.
        case slack
    }

    /// The URL as written (`http://` or `https://`).
    public var url: String
    public var secure: Bool
    public var host: String
    public var port: Int
    public var path: String
    /// Attempts after the first.
    public var retries = 5
    /// The wait before the first retry (ns); it doubles each time.
    public var backoff: Int64 = 500_000_000
    /// How long one attempt may take, connecting and the TLS handshake included (ns).
    public var timeout: Int64 = 5_000_000_000
    /// HTTPS: a PEM file of the certificate authorities trusted instead of the system's (a
    /// private CA); nil: the system's store.
    public var caFile: String?
    /// Headers sent with every request (an `Authorization` a receiver asks for).
    public var headers: [Header] = []
    public var format = Format.json

    public struct Header: Sendable, Equatable {
        public var name: String
        public var value: String

        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// Parses `http://HOST[:PORT]/PATH` or `https://HOST[:PORT]/PATH`; nil when it is neither.
    public init?(url: String) {
        let rest: Substring
        if url.hasPrefix("https://") {
            secure = true
            rest = url.dropFirst("https://".count)
        } else if url.hasPrefix("http://") {
            secure = false
            rest = url.dropFirst("http://".count)
        } else {
            return nil
        }
        guard !url.unicodeScalars.contains(where: { $0.value <= 32 || $0 == "#" || $0.value == 127 }) else { return nil }
        self.url = url
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        guard !authority.contains("@") else { return nil }
        path = slash == rest.endIndex ? "/" : String(rest[slash...])
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            guard let port = Int(authority[authority.index(after: colon)...]), (1...65_535).contains(port) else { return nil }
            host = String(authority[..<colon])
            self.port = port
        } else {
            host = String(authority)
            port = secure ? 443 : 80
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
    }
}

extension WebhookSettings {
    /// The URL for logs: its path (where a Slack-style webhook keeps its secret) left out.
    public var redactedURL: String {
        let scheme = secure ? "https" : "http"
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(shownHost):\(port)/…"
    }
}
