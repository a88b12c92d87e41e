import SluiceCore
import Yams

extension Configuration {
    /// The HTTP/JSON API (`http:`, docs/PROTOCOL.md "HTTP/JSON"): where it listens. Its bodies
    /// are bounded by `server.max_frame_bytes`, its identities are the framed protocol's.
    public struct HTTPSettings: Sendable {
        /// TCP listeners (`HOST:PORT`, or with `tls` and `auth`; a token by default).
        public var tcpListeners: [TCPListener] = []
        /// Unix socket listeners (`curl --unix-socket`).
        public var unixListeners: [UnixListener] = []

        public init() {}

        /// Whether the API is served at all.
        public var isServed: Bool { !tcpListeners.isEmpty || !unixListeners.isEmpty }
    }
}

extension Reader {
    func readHTTP(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = Configuration.HTTPSettings()
        for (key, value) in try mapping(node, "http", keys: ["listen"]) where key == "listen" {
            (settings.tcpListeners, settings.unixListeners) = try readListeners(value, "http.listen")
        }
        configuration.http = settings
    }

    /// A front's own `listen: {tcp: […], unix: […]}`, read as the daemon's `listen:` is.
    func readListeners(_ node: Node, _ path: String) throws(SluiceError) -> ([Configuration.TCPListener], [Configuration.UnixListener]) {
        var listeners = Configuration()
        listeners.unixListeners = []
        listeners.tcpListeners = []
        try readListen(node, &listeners, path)
        return (listeners.tcpListeners, listeners.unixListeners)
    }
}
