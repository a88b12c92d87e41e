/// Where anomaly alerts are POSTed (`anomaly.webhook`): a JSON array of alerts per request,
/// retried with exponential backoff, never blocking detection. Plain HTTP (put a local relay in
/// front of an HTTPS endpoint).
public struct WebhookSettings: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var path: String
    /// Attempts after the first.
    public var retries = 5
    /// The wait before the first retry (ns); it doubles each time.
    public var backoff: Int64 = 500_000_000
    /// How long one attempt may take (ns).
    public var timeout: Int64 = 5_000_000_000

    /// Parses `http://HOST[:PORT]/PATH`; nil when it is not one.
    public init?(url: String) {
        guard url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst("http://".count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        path = slash == rest.endIndex ? "/" : String(rest[slash...])
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            guard let port = Int(authority[authority.index(after: colon)...]), (1...65_535).contains(port) else { return nil }
            host = String(authority[..<colon])
            self.port = port
        } else {
            host = String(authority)
            port = 80
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
    }
}
