import NIOCore
import NIOPosix
import SluiceTestKit
import Testing
@testable import SluiceRedis

@Suite("Cluster key slots")
struct KeySlotTests {
    @Test("CRC16 and slots match Redis's published values; keys sharing a hash tag share a slot")
    func published() {
        #expect(KeySlot.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(KeySlot.of("foo") == 12_182)
        #expect(KeySlot.of("somekey") == 11_058)
        #expect(KeySlot.of("{user1000}.following") == KeySlot.of("{user1000}.followers"))
        #expect(KeySlot.of("{user1000}.following") == KeySlot.of("user1000"))
        // `{}` is no tag: the whole key is hashed; only the first `{` counts.
        #expect(KeySlot.of("foo{}{bar}") == KeySlot.of(Array("foo{}{bar}".utf8)))
        #expect(KeySlot.tag(of: Array("foo{}{bar}".utf8)).elementsEqual("foo{}{bar}".utf8))
        #expect(KeySlot.tag(of: Array("foo{{bar}}zap".utf8)).elementsEqual("{bar".utf8))
        #expect(KeySlot.tag(of: Array("foo{bar}{zap}".utf8)).elementsEqual("bar".utf8))
        #expect(KeySlot.tag(of: Array("{".utf8)).elementsEqual("{".utf8))
    }

    @Test("the slots of 2,000 keys agree with CLUSTER KEYSLOT on a real cluster-enabled redis-server",
          .enabled(if: RedisServer.installed))
    func agreesWithRedis() async throws {
        // The cluster bus needs a TCP port: one that is free now, not port 0's 10000 (a server
        // an earlier, crashed run left behind held it).
        let server = try await RedisServer.start(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                      "--cluster-port", String(try #require(RedisServer.freePort()))])
        defer { server.stop() }
        let redis = try await RedisConnection.connect(to: .unix(path: server.socket), on: MultiThreadedEventLoopGroup.singleton.next()).get()
        defer { _ = redis.close() }
        var random = SystemRandomNumberGenerator()
        let keys: [[UInt8]] = (0..<2_000).map { index in
            let body = (0..<Int.random(in: 0...24, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            // Some with tags, some with braces that make no tag.
            switch index % 4 {
            case 0: return Array("{tag\(index % 7)}".utf8) + body
            case 1: return body + Array("{}".utf8)
            default: return body
            }
        }
        let replies = try await redis.send(keys.map { RESPCommand("CLUSTER", "KEYSLOT", .bytes($0)) }, deadline: .now() + .seconds(10)).get()
        for (key, reply) in zip(keys, replies) {
            #expect(reply.integer == Int64(KeySlot.of(key)), "\(key)")
        }
    }
}
