import Foundation
import NIOCore
import NIOPosix
import SluiceTestKit
import Testing
@testable import SluiceRedis

@Suite("Redis client pool, against a real redis-server", .enabled(if: RedisServer.installed))
struct RedisClientTests {
    static func client(_ socket: String, connections: Int = 2, maximumPending: Int = 10_000) -> RedisClient {
        var configuration = RedisClient.Configuration(endpoint: .unix(path: socket))
        configuration.connections = connections
        configuration.maximumPending = maximumPending
        configuration.reconnect = (.milliseconds(20), .milliseconds(200))
        return RedisClient(configuration, group: MultiThreadedEventLoopGroup.singleton)
    }

    /// Waits until `condition` holds, up to 10 s.
    static func eventually(_ condition: () -> Bool) async throws {
        for _ in 0..<1_000 where !condition() { try await Task.sleep(for: .milliseconds(10)) }
    }

    func soon() -> NIODeadline { .now() + .seconds(10) }

    @Test("commands go out over every connection, and a script runs by its SHA1, reloaded after SCRIPT FLUSH")
    func scripts() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = Self.client(server.socket)
        defer { client.shutdown() }
        try await Self.eventually { client.connected == 2 }
        #expect(client.connected == 2)
        // Round robin: two sends land on two connections (two client ids).
        let first = try await client.send([RESPCommand("CLIENT", "ID")], deadline: soon()).get()
        let second = try await client.send([RESPCommand("CLIENT", "ID")], deadline: soon()).get()
        #expect(first[0].integer != nil && first[0] != second[0])
        let script = "return {KEYS[1], ARGV[1] + 1}"
        let calls = (0..<5).map { RedisClient.ScriptCall(keys: [.string("k\($0)")], arguments: [.integer(Int64($0))]) }
        let expected = (0..<5).map { RESPValue.array([.bulk(Array("k\($0)".utf8)), .integer(Int64($0 + 1))]) }
        #expect(try await client.evaluate(script, calls: calls, deadline: soon()).get() == expected)
        // The server forgets its scripts: NOSCRIPT, the script is loaded again, the calls retried.
        #expect(try await client.send([RESPCommand("SCRIPT", "FLUSH")], deadline: soon()).get() == [.simple("OK")])
        #expect(try await client.evaluate(script, calls: calls, deadline: soon()).get() == expected)
        // A script the server refuses is an error reply in its place (the caller decides).
        let broken = try await client.evaluate("return redis.call('NOSUCH')", calls: [calls[0]], deadline: soon()).get()
        #expect(broken[0].errorMessage != nil)
    }

    @Test("while Redis is down sends fail at once as unavailable; when it is back the pool reconnects and scripts reload")
    func restart() async throws {
        let server = try await RedisServer.start()
        let client = Self.client(server.socket)
        defer { client.shutdown() }
        try await Self.eventually { client.connected == 2 }
        let call = [RedisClient.ScriptCall(keys: ["k"], arguments: [1])]
        #expect(try await client.evaluate("return ARGV[1]", calls: call, deadline: soon()).get() == [.bulk(Array("1".utf8))])
        server.stop(keepFolder: true)
        try await Self.eventually { client.connected == 0 }
        #expect(client.connected == 0)
        // Failed at once as unavailable, not at the deadline as a timeout: the code says which
        // (a wall-clock bound failed on a CI machine loaded enough to take 11 s for the await).
        do {
            _ = try await client.send([RESPCommand("PING")], deadline: .now() + .seconds(3_600)).get()
            Issue.record("a reply with Redis down")
        } catch let error as RedisClientError {
            #expect(error.code == .unavailable)
        }
        // Back at the same socket, with an empty script cache.
        let again = try await RedisServer.start(directory: server.directory)
        defer { again.stop() }
        try await Self.eventually { client.connected == 2 }
        #expect(client.connected == 2)
        #expect(try await client.send([RESPCommand("PING")], deadline: soon()).get() == [.simple("PONG")])
        #expect(try await client.evaluate("return ARGV[1]", calls: call, deadline: soon()).get() == [.bulk(Array("1".utf8))])
    }

    @Test("what waits on Redis is bounded: past the most in flight a send fails at once")
    func bounded() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = Self.client(server.socket, connections: 1, maximumPending: 10)
        defer { client.shutdown() }
        let admin = try await RedisConnection.connect(to: .unix(path: server.socket), on: MultiThreadedEventLoopGroup.singleton.next()).get()
        defer { _ = admin.close() }
        try await Self.eventually { client.connected == 1 }
        // Writes are held until CLIENT UNPAUSE (a write pause lets it through).
        _ = try await admin.send(RESPCommand("CLIENT", "PAUSE", 60_000, "WRITE"), deadline: soon()).get()
        let held = client.send((0..<10).map { _ in RESPCommand("INCR", "held") }, deadline: soon())
        do {
            _ = try await client.send([RESPCommand("PING")], deadline: soon()).get()
            Issue.record("an eleventh command was queued")
        } catch let error as RedisClientError {
            #expect(error.code == .unavailable)
            #expect(error.description.contains("more than 10"))
        }
        _ = try await admin.send(RESPCommand("CLIENT", "UNPAUSE"), deadline: soon()).get()
        // The ten held come back once the pause ends, and the bound frees.
        #expect(try await held.get().count == 10)
        #expect(try await client.send([RESPCommand("PING")], deadline: soon()).get() == [.simple("PONG")])
    }

    @Test("with nothing listening from the start, sends fail at once, and the pool connects once Redis comes up")
    func neverUp() async throws {
        let directory = NSTemporaryDirectory() + "sluice-redis-later-\(UUID().uuidString.prefix(8))"
        let client = Self.client(directory + "/redis.sock")
        defer { client.shutdown() }
        try await Task.sleep(for: .milliseconds(100))
        await #expect(throws: RedisClientError.self) { try await client.send([RESPCommand("PING")], deadline: soon()).get() }
        #expect(client.connected == 0)
        // The pool kept trying (backoff at most 200 ms here).
        let server = try await RedisServer.start(directory: directory)
        defer { server.stop() }
        try await Self.eventually { client.connected == 2 }
        #expect(client.connected == 2)
        #expect(try await client.send([RESPCommand("PING")], deadline: soon()).get() == [.simple("PONG")])
    }
}
