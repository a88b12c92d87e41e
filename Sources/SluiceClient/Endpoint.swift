/// Where a daemon listens: a Unix socket path or a TCP host and port.
public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: Int)

    /// Parses `unix:PATH`, a path containing `/`, `HOST:PORT` or `[IPv6]:PORT`.
    ///
    /// - Throws: ``EndpointError`` with a sentence saying what was expected.
    public init(parsing text: String) throws(EndpointError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { throw EndpointError("unix endpoint needs a path, as in unix:/tmp/sluice.sock") }
            self = .unix(path: path)
            return
        }
        if text.contains("/") {
            self = .unix(path: text)
            return
        }
        guard let colon = text.lastIndex(of: ":") else {
            throw EndpointError("expected HOST:PORT or a socket path, got '\(text)'")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else {
            throw EndpointError("expected HOST:PORT with a port from 0 to 65535, got '\(text)'")
        }
        self = .tcp(host: host, port: port)
    }

    /// `unix:PATH` or `HOST:PORT`.
    public var description: String {
        switch self {
        case .unix(let path): "unix:\(path)"
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}

/// An endpoint string that does not parse.
public struct EndpointError: Error, Sendable, CustomStringConvertible {
    /// What was wrong.
    public var description: String
    init(_ description: String) { self.description = description }
}
