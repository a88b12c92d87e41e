import NIOCore
import NIOPosix
import SluiceTestKit
import Testing
@testable import SluiceRedis

/// The Cluster client's readings of what nodes answer (redirections, slot maps) and its grouping
/// of checks by slot; its calls against a real Cluster are in SluiceServerTests (RedisClusterTests).
@Suite("Redis Cluster client: redirections, slot maps, calls by slot", .ownThreads)
struct RedisClusterClientTests {
    typealias Redirect = RedisClusterClient.Redirect
    static let node = RedisEndpoint.tcp(host: "10.0.0.9", port: 7000)

    @Test("MOVED, ASK and TRYAGAIN are read with their slot and node; an empty host is the answering node's; anything else is no redirection")
    func redirections() {
        #expect(Redirect("MOVED 3999 127.0.0.1:6381", from: Self.node) == .moved(slot: 3_999, .tcp(host: "127.0.0.1", port: 6_381)))
        #expect(Redirect("ASK 16383 redis-2.internal:7001", from: Self.node) == .ask(.tcp(host: "redis-2.internal", port: 7_001)))
        #expect(Redirect("MOVED 0 :7002", from: Self.node) == .moved(slot: 0, .tcp(host: "10.0.0.9", port: 7_002)))
        #expect(Redirect("MOVED 12 [::1]:7003", from: Self.node) == .moved(slot: 12, .tcp(host: "::1", port: 7_003)))
        #expect(Redirect("MOVED 12 ::1:7003", from: Self.node) == .moved(slot: 12, .tcp(host: "::1", port: 7_003)))
        #expect(Redirect("TRYAGAIN Multiple keys request during rehashing of slot", from: Self.node) == .tryAgain)
        for garbage in ["MOVED 16384 a:1", "MOVED -1 a:1", "MOVED x a:1", "MOVED 1 a:0", "MOVED 1 a:70000", "MOVED 1 a", "MOVED 1",
                        "ASK 1 a:1 extra", "ERR unknown command", "NOSCRIPT No matching script", "CROSSSLOT Keys in request don't hash to the same slot",
                        "CLUSTERDOWN The cluster is down", ""] {
            #expect(Redirect(garbage, from: Self.node) == nil, "\(garbage)")
        }
        // An empty host from a node reached over a Unix socket names no node.
        #expect(Redirect("MOVED 1 :7000", from: .unix(path: "/tmp/r.sock")) == nil)
    }

    static func entry(_ start: Int64, _ end: Int64, _ host: String, _ port: Int64) -> RESPValue {
        .array([.integer(start), .integer(end), .array([.bulk(Array(host.utf8)), .integer(port), .bulk(Array("id".utf8))])])
    }

    @Test("a CLUSTER SLOTS reply gives each range its primary; unknown nodes are skipped; a malformed reply is refused whole")
    func slotMaps() throws {
        let map = try #require(RedisClusterClient.slotMap(.array([
            Self.entry(0, 5_460, "127.0.0.1", 7_000), Self.entry(5_461, 10_922, "", 7_001), Self.entry(10_923, 16_383, "?", 7_002),
        ]), from: Self.node))
        #expect(map.count == 2)
        #expect(map[0].0 == 0...5_460 && map[0].1 == .tcp(host: "127.0.0.1", port: 7_000))
        #expect(map[1].0 == 5_461...10_922 && map[1].1 == .tcp(host: "10.0.0.9", port: 7_001))
        let refused: [RESPValue] = [
            .error("ERR This instance has cluster support disabled"), .array([]), .array(nil), .integer(1),
            .array([Self.entry(10, 5, "a", 1)]), .array([Self.entry(0, 16_384, "a", 1)]), .array([Self.entry(-1, 5, "a", 1)]),
            .array([Self.entry(0, 5, "a", 0)]), .array([.array([.integer(0), .integer(5)])]),
            .array([.array([.integer(0), .integer(5), .array([.integer(1)])])]),
        ]
        for reply in refused { #expect(RedisClusterClient.slotMap(reply, from: Self.node) == nil, "\(reply)") }
    }

    @Test("calls gathering many checks take only checks of one slot in a Cluster, at most perCall each, in order; one server takes them as they come")
    func groupsBySlot() {
        let group = MultiThreadedEventLoopGroup.singleton
        let cluster = RedisClusterClient(RedisClusterClient.Configuration(seeds: [.tcp(host: "127.0.0.1", port: 1)],
                                                                          node: RedisClient.Configuration(endpoint: .tcp(host: "127.0.0.1", port: 1))),
                                         group: group)
        defer { cluster.shutdown() }
        let single = RedisClient(RedisClient.Configuration(endpoint: .tcp(host: "127.0.0.1", port: 1)), group: group)
        defer { single.shutdown() }
        let slots = [5, 9, 5, 5, 9, 1, 5]
        #expect(single.groups(count: 7, perCall: 3) { slots[$0] } == [[0, 1, 2], [3, 4, 5], [6]])
        #expect(cluster.groups(count: 7, perCall: 2) { slots[$0] } == [[0, 2], [1, 4], [3, 6], [5]])
        #expect(cluster.groups(count: 7, perCall: 64) { slots[$0] } == [[0, 2, 3, 6], [1, 4], [5]])
        #expect(cluster.groups(count: 0, perCall: 64) { slots[$0] }.isEmpty)
        #expect(RESPArgument.string("sluice:{abc}:1").slot == KeySlot.of("abc") && RESPArgument.bytes(Array("{abc}x".utf8)).slot == KeySlot.of("abc"))
    }

    @Test("with no node reachable a call fails at once as unavailable, within its deadline, and never hangs")
    func unreachable() async throws {
        var node = RedisClient.Configuration(endpoint: .tcp(host: "127.0.0.1", port: 1))
        node.connectTimeout = .milliseconds(100)
        let cluster = RedisClusterClient(RedisClusterClient.Configuration(seeds: [.tcp(host: "127.0.0.1", port: 1)], node: node),
                                         group: MultiThreadedEventLoopGroup.singleton)
        defer { cluster.shutdown() }
        let call = RedisClient.ScriptCall(keys: ["{k}:1"], arguments: [])
        // Timed to the future's completion on its event loop, not to this task's resumption (a
        // full run's other tests hold the pool's threads for seconds).
        let started = NIODeadline.now()
        let evaluated = cluster.evaluate(CheckScript.script, calls: [call], deadline: started + .milliseconds(500))
        let took = try await evaluated.map { _ in TimeAmount.zero }.flatMapErrorThrowing { _ in NIODeadline.now() - started }.get()
        await #expect(throws: RedisClientError.self) { try await evaluated.get() }
        #expect(took < .seconds(2), "failed after \(took)")
    }
}
