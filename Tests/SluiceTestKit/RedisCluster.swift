import Foundation
import SluiceLoad

/// A real Redis Cluster on loopback for one test: `nodes` cluster-enabled redis-servers, each on
/// a free TCP port (and its own Unix socket), joined by `redis-cli --cluster create` with no
/// replicas, so the 16,384 slots are spread over them. ``stop()`` kills them all.
///
/// Its waits are `Task.sleep`s: a test that blocked its thread for the seconds a Cluster takes to
/// form would hold one of the few threads every other test's tasks run on (two on two cores).
public final class RedisCluster: @unchecked Sendable {
    public static let cli = "/usr/bin/redis-cli"
    public static var installed: Bool { RedisServer.installed && FileManager.default.isExecutableFile(atPath: cli) }

    public let servers: [RedisServer]
    /// Each node's TCP port, in the order of `servers`.
    public let ports: [Int]

    init(servers: [RedisServer], ports: [Int]) {
        self.servers = servers
        self.ports = ports
    }

    /// Starts `nodes` servers and joins them into a Cluster whose every node is ok, with
    /// `replicas` replicas per primary; a node unreachable for `nodeTimeoutMs` is failed over.
    public static func start(nodes: Int = 3, replicas: Int = 0, nodeTimeoutMs: Int = 5_000) async throws -> RedisCluster {
        var servers: [RedisServer] = [], ports: [Int] = []
        var taken: Set<Int> = []
        func port() throws -> Int {
            for _ in 0..<50 {
                if let port = RedisServer.freePort(), taken.insert(port).inserted { return port }
            }
            throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "no free TCP port for a Redis Cluster node"])
        }
        do {
            for _ in 0..<nodes {
                let client = try port(), bus = try port()
                // The bus port is given (not port + 10,000, which may be past 65,535 or taken).
                servers.append(try await RedisServer.start(["--port", String(client), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                                                "--cluster-config-file", "nodes.conf", "--cluster-port", String(bus),
                                                "--cluster-node-timeout", String(nodeTimeoutMs)]))
                ports.append(client)
            }
            let cluster = RedisCluster(servers: servers, ports: ports)
            let created = try Self.run(["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", String(replicas), "--cluster-yes"])
            guard created.status == 0 else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "redis-cli --cluster create failed: \(created.output)"])
            }
            // Every node must know every slot's owner before a test starts.
            var ready = false
            for _ in 0..<600 {
                ready = ports.allSatisfy { cluster.isOK(asking: $0) }
                if ready { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            guard ready else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "the Redis Cluster was not ok within 30 s"])
            }
            return cluster
        } catch {
            for server in servers { server.stop() }
            throw error
        }
    }

    /// Runs redis-cli with `arguments`; its exit status and what it wrote.
    @discardableResult
    public static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: cli)
        process.arguments = arguments
        return try ChildProcess.output(of: process)
    }

    /// One command to the node on `port`; its reply as redis-cli prints it (raw).
    @discardableResult
    public func cli(_ port: Int, _ command: String...) throws -> String {
        try Self.run(["-h", "127.0.0.1", "-p", String(port)] + command).output
    }

    /// The node id of the node on `port`.
    public func nodeID(_ port: Int) throws -> String {
        try cli(port, "CLUSTER", "MYID").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The port of the node that owns `slot` now, as the node on `asking` sees it.
    public func owner(of slot: Int, asking: Int? = nil) throws -> Int? {
        let shards = try cli(asking ?? ports[0], "CLUSTER", "SLOTS").split(separator: "\n").map(String.init)
        // Raw output: start, end, then per node host, port, id (and more in newer servers).
        var index = 0
        while index + 4 < shards.count {
            if let start = Int(shards[index]), let end = Int(shards[index + 1]), (start...end).contains(slot) {
                return Int(shards[index + 3])
            }
            index += 1
        }
        return nil
    }

    /// Whether the node on `port` says the Cluster is ok (every slot served).
    public func isOK(asking port: Int) -> Bool {
        (try? cli(port, "CLUSTER", "INFO").contains("cluster_state:ok")) ?? false
    }

    /// Keys held by the node on `port`.
    public func keys(_ port: Int) throws -> Int {
        Int(try cli(port, "DBSIZE").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    /// Moves `slot` from the node on `from` to the node on `to`, as `redis-cli --cluster reshard`
    /// does: the target imports, the source migrates, keys go over in `keysPerStep`, then every
    /// node is told the new owner, with `pause` after each step (a test's load keeps going).
    public func moveSlot(_ slot: Int, from: Int, to: Int, keysPerStep: Int = 1, pause: Duration = .zero) async throws {
        let source = try nodeID(from), target = try nodeID(to)
        try cli(to, "CLUSTER", "SETSLOT", String(slot), "IMPORTING", source)
        try cli(from, "CLUSTER", "SETSLOT", String(slot), "MIGRATING", target)
        try await Task.sleep(for: pause)
        while true {
            let keys = try cli(from, "CLUSTER", "GETKEYSINSLOT", String(slot), String(keysPerStep)).split(separator: "\n").map(String.init)
                .filter { !$0.isEmpty }
            if keys.isEmpty { break }
            try command(from, ["MIGRATE", "127.0.0.1", String(to), "", "0", "5000", "KEYS"] + keys)
            try await Task.sleep(for: pause)
        }
        // The target first, then the source, then the others (the order redis-cli keeps).
        for port in [to, from] + ports.filter({ $0 != to && $0 != from }) { try cli(port, "CLUSTER", "SETSLOT", String(slot), "NODE", target) }
    }

    func command(_ port: Int, _ command: [String]) throws {
        try Self.run(["-h", "127.0.0.1", "-p", String(port)] + command)
    }

    public func stop() {
        for server in servers { server.stop() }
    }
}
