import Foundation
import SluiceCore
import Yams

extension Reader {
    /// `redis:` the shared server's address and the client's settings.
    func readRedis(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = configuration.redis
        let keys: Set = ["url", "username", "password", "connections", "timeout", "on_failure", "expected_daemons", "clock", "max_pending",
                         "cluster", "batch_window", "max_batch", "deny_cache_size", "checks_per_call", "mode", "sync_interval",
                         "sync_max_entries", "writes_in_flight"]
        for (key, value) in try mapping(node, "redis", keys: keys) {
            let path = "redis.\(key)"
            switch key {
            case "url": settings.address = try redisAddress(value, path)
            case "cluster":
                let nodes = try sequence(value, path)
                guard !nodes.isEmpty, nodes.count <= 1_000 else { throw error(value, path, "expected from 1 to 1000 node addresses") }
                settings.cluster = []
                for (index, node) in nodes.enumerated() {
                    settings.cluster.append(try redisAddress(node, "\(path)[\(index)]"))
                }
            case "username": settings.username = try string(value, path)
            case "password": settings.password = try string(value, path)
            case "connections": settings.connections = try integer(value, path, 1...64)
            case "timeout": settings.timeout = try duration(value, path, 1_000_000...10_000_000_000)
            case "on_failure": settings.onFailure = try choice(value, path, expected: "local, fail_open or fail_closed")
            case "expected_daemons": settings.expectedDaemons = try integer(value, path, 1...10_000)
            case "clock":
                let text = try string(value, path)
                guard text == "redis" || text == "daemon" else { throw error(value, path, "expected redis or daemon, got '\(text)'") }
                settings.daemonClock = text == "daemon"
            case "batch_window":
                if case .scalar(let scalar) = value, scalar.string == "0" {
                    settings.batchWindow = 0
                } else {
                    settings.batchWindow = try duration(value, path, 1_000...10_000_000)
                }
            case "max_batch": settings.maxBatch = try integer(value, path, 1...100_000)
            case "deny_cache_size": settings.denialCacheSize = try integer(value, path, 0...10_000_000)
            case "checks_per_call": settings.checksPerCall = try integer(value, path, 1...1_000)
            case "mode": settings.mode = try choice(value, path, expected: "exact or fast")
            case "sync_interval": settings.syncInterval = try duration(value, path, 100_000...10_000_000_000)
            case "sync_max_entries": settings.syncMaxEntries = try integer(value, path, 1...1_000_000)
            case "writes_in_flight": settings.writesInFlight = try integer(value, path, 0...1_024)
            default: settings.maxPending = try integer(value, path, 1...10_000_000)
            }
        }
        if !settings.cluster.isEmpty, let url = try mapping(node, "redis", keys: keys).first(where: { $0.key == "url" }) {
            throw error(url.value, "redis.url", "give either redis.url (one server) or redis.cluster (a Cluster's nodes), not both")
        }
        configuration.redis = settings
    }

    /// One of an enumeration's names (`expected` lists them for the error).
    func choice<Choice: RawRepresentable>(_ node: Node, _ path: String, expected: String) throws(SluiceError) -> Choice
    where Choice.RawValue == String {
        let text = try string(node, path)
        guard let value = Choice(rawValue: text) else { throw error(node, path, "expected \(expected), got '\(text)'") }
        return value
    }

    /// `redis://[user:password@]host:port`, `redis://host` (port 6379) or `unix:///path/to.sock`.
    func redisAddress(_ node: Node, _ path: String) throws(SluiceError) -> Configuration.RedisSettings.Address {
        let text = try string(node, path).trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("unix://") {
            let file = String(text.dropFirst("unix://".count))
            guard file.hasPrefix("/") else { throw error(node, path, "expected unix:///absolute/path.sock, got '\(text)'") }
            return .unix(path: file)
        }
        guard text.hasPrefix("redis://") else {
            throw error(node, path, "expected redis://host:port or unix:///path.sock, got '\(text)' (rediss:// with TLS is not supported yet)")
        }
        var rest = Substring(text.dropFirst("redis://".count))
        if rest.contains("@") {
            throw error(node, path, "put the password in redis.password and the user in redis.username, not in the URL")
        }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        var host = rest, port = 6379
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw error(node, path, "an IPv6 address without its closing ] in '\(text)'") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let number = Int(after.dropFirst()), (1...65_535).contains(number) else {
                    throw error(node, path, "expected a port from 1 to 65535 in '\(text)'")
                }
                port = number
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let number = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(number) else {
                throw error(node, path, "expected a port from 1 to 65535 in '\(text)'")
            }
            port = number
        }
        guard !host.isEmpty else { throw error(node, path, "no host in '\(text)'") }
        return .tcp(host: String(host), port: port)
    }

    /// `backend:` local or redis.
    func readBackend(_ node: Node, _ path: String) throws(SluiceError) -> Configuration.Backend {
        let text = try string(node, path)
        guard let backend = Configuration.Backend(rawValue: text) else { throw error(node, path, "expected local or redis, got '\(text)'") }
        return backend
    }
}
