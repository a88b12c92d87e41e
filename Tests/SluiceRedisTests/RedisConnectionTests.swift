import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceTestKit
import Testing
@testable import SluiceRedis

@Suite("Redis connection, against a real redis-server", .enabled(if: RedisServer.installed))
struct RedisConnectionTests {
    let group = MultiThreadedEventLoopGroup.singleton

    func connect(_ server: RedisServer, password: String? = nil) async throws -> RedisConnection {
        // 5 s to connect and authenticate: a full run on two cores has stalled for over a second.
        try await RedisConnection.connect(to: .unix(path: server.socket), on: group.next(), password: password, connectTimeout: .seconds(5)).get()
    }

    func soon() -> NIODeadline { .now() + .seconds(5) }

    @Test("commands get their replies: status, integers, bulk strings, nulls, errors, nested arrays")
    func replies() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let redis = try await connect(server)
        defer { _ = redis.close() }
        #expect(try await redis.send(RESPCommand("PING"), deadline: soon()).get() == .simple("PONG"))
        #expect(try await redis.send(RESPCommand("SET", "k", "v"), deadline: soon()).get() == .simple("OK"))
        #expect(try await redis.send(RESPCommand("GET", "k"), deadline: soon()).get() == .bulk(Array("v".utf8)))
        #expect(try await redis.send(RESPCommand("GET", "missing"), deadline: soon()).get() == .bulk(nil))
        let error = try await redis.send(RESPCommand("NOSUCHCOMMAND"), deadline: soon()).get()
        #expect(error.errorMessage?.hasPrefix("ERR unknown command") == true, "\(error)")
        let nested = try await redis.send(RESPCommand("EVAL", "return {1, {'a', 2}, redis.call('TIME')[1] ~= nil}", 0), deadline: soon()).get()
        #expect(nested.elements?.count == 3)
        #expect(nested.elements?[1] == .array([.bulk(Array("a".utf8)), .integer(2)]))
        // The connection still works after an error reply.
        #expect(try await redis.send(RESPCommand("PING"), deadline: soon()).get() == .simple("PONG"))
    }

    @Test("a thousand commands in one write come back in order, each with its own reply")
    func pipelined() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let redis = try await connect(server)
        defer { _ = redis.close() }
        let replies = try await redis.send((0..<1_000).map { _ in RESPCommand("INCR", "counter") }, deadline: soon()).get()
        #expect(replies == (1...1_000).map { RESPValue.integer(Int64($0)) })
        // Batches sent together without waiting keep their order too.
        let futures = (0..<50).map { index in redis.send([RESPCommand("INCRBY", "counter", .integer(Int64(index)))], deadline: soon()) }
        var total: Int64 = 1_000
        for (index, future) in futures.enumerated() {
            total += Int64(index)
            #expect(try await future.get() == [.integer(total)])
        }
    }

    @Test("a reply late past its deadline fails that command only; the replies after it still match theirs")
    func deadline() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let redis = try await connect(server)
        let admin = try await connect(server)
        defer {
            _ = redis.close()
            _ = admin.close()
        }
        _ = try await redis.send(RESPCommand("SET", "n", 1), deadline: soon()).get()
        // Writes (INCR) are held, until the late command has failed (a minute at most: long
        // enough for any machine, ended early by CLIENT UNPAUSE, which a write pause lets through).
        #expect(try await admin.send(RESPCommand("CLIENT", "PAUSE", 60_000, "WRITE"), deadline: soon()).get() == .simple("OK"))
        let late = redis.send(RESPCommand("INCR", "n"), deadline: .now() + .milliseconds(50))
        // As long as the pause may last: what is tested is the order, and on a loaded machine
        // the UNPAUSE below once came more than 5 s after this was sent (seen in CI).
        let next = redis.send(RESPCommand("INCR", "n"), deadline: .now() + .seconds(60))
        // Which completed first, on the connection's event loop: the timeout, or the reply
        // that can only come once the pause is over.
        let order = NIOLockedValueBox<[String]>([])
        late.whenComplete { _ in order.withLockedValue { $0.append("late") } }
        next.whenComplete { _ in order.withLockedValue { $0.append("next") } }
        await #expect(throws: RedisClientError(.timeout, "no reply from Redis within the deadline")) { try await late.get() }
        #expect(try await admin.send(RESPCommand("CLIENT", "UNPAUSE"), deadline: soon()).get() == .simple("OK"))
        // The late reply (2) arrives and is dropped; the next command gets its own (3).
        #expect(try await next.get() == .integer(3))
        #expect(order.withLockedValue { $0 } == ["late", "next"], "failed at its deadline, not when the pause ended")
        #expect(try await redis.send(RESPCommand("GET", "n"), deadline: soon()).get() == .bulk(Array("3".utf8)))
    }

    @Test("nothing listening is a connect failure, not a hang")
    func unreachable() async throws {
        let missing = NSTemporaryDirectory() + "no-redis-\(UUID().uuidString).sock"
        do {
            _ = try await RedisConnection.connect(to: .unix(path: missing), on: group.next()).get()
            Issue.record("connected to nothing")
        } catch let error as RedisClientError {
            #expect(error.code == .connectFailed)
            #expect(error.description.contains(missing))
        }
        // A TCP port nobody listens on.
        do {
            _ = try await RedisConnection.connect(to: .tcp(host: "127.0.0.1", port: 1), on: group.next()).get()
            Issue.record("connected to port 1")
        } catch let error as RedisClientError {
            #expect(error.code == .connectFailed)
        }
    }

    @Test("a wrong or missing password is refused with a clear error; the right one works")
    func password() async throws {
        let server = try await RedisServer.start(["--requirepass", "s3cret"])
        defer { server.stop() }
        do {
            _ = try await connect(server, password: "wrong")
            Issue.record("a wrong password was accepted")
        } catch let error as RedisClientError {
            #expect(error.code == .authenticationFailed)
            #expect(error.description.contains("WRONGPASS") || error.description.contains("invalid"), "\(error)")
        }
        // Without one, commands get NOAUTH error replies.
        let anonymous = try await connect(server)
        let refused = try await anonymous.send(RESPCommand("GET", "k"), deadline: soon()).get()
        #expect(refused.errorMessage?.hasPrefix("NOAUTH") == true, "\(refused)")
        _ = anonymous.close()
        let redis = try await connect(server, password: "s3cret")
        #expect(try await redis.send(RESPCommand("PING"), deadline: soon()).get() == .simple("PONG"))
        _ = redis.close()
    }

    @Test("a server killed with commands in flight fails them as closed; the next connect fails cleanly")
    func killed() async throws {
        let server = try await RedisServer.start()
        let redis = try await connect(server)
        let admin = try await connect(server)
        _ = try await admin.send(RESPCommand("CLIENT", "PAUSE", 2_000, "ALL"), deadline: soon()).get()
        let waiting = redis.send(RESPCommand("PING"), deadline: soon())
        server.stop()
        do {
            _ = try await waiting.get()
            Issue.record("a reply from a killed server")
        } catch let error as RedisClientError {
            #expect(error.code == .connectionClosed)
        }
        #expect(!redis.isActive)
        // Commands on the closed connection fail at once.
        await #expect(throws: RedisClientError.self) { try await redis.send(RESPCommand("PING"), deadline: soon()).get() }
        await #expect(throws: RedisClientError.self) { try await connect(server) }
    }
}

@Suite("Redis connection, against servers that are not Redis")
struct NotRedisTests {
    /// A server answering every read with `reply` (an HTTP server's, garbage, a reply too many).
    final class Answer: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let reply: [UInt8]
        init(_ reply: [UInt8]) { self.reply = reply }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: reply)), promise: nil)
        }
    }

    /// Expects `redis` to be closed within 5 s.
    static func closed(_ redis: RedisConnection) async throws {
        for _ in 0..<500 where redis.isActive { try await Task.sleep(for: .milliseconds(10)) }
        #expect(!redis.isActive)
    }

    func serve(_ reply: String) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Answer(Array(reply.utf8))) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    @Test("garbage, an HTTP answer or an extra reply fail the commands as a protocol error and close the connection",
          arguments: ["HTTP/1.1 400 Bad Request\r\n\r\n", "$5\r\nab", "+OK\r\n+EXTRA\r\n", ":1x\r\n", "*99999999\r\n"])
    func garbage(reply: String) async throws {
        let server = try await serve(reply)
        defer { server.close(promise: nil) }
        // A connect to a local socket given 10 s, not the default 1 s: the run starts many
        // servers and daemons at once.
        let redis = try await RedisConnection.connect(to: .tcp(host: "127.0.0.1", port: try #require(server.localAddress?.port)),
                                                      on: MultiThreadedEventLoopGroup.singleton.next(), connectTimeout: .seconds(10)).get()
        defer { _ = redis.close() }
        // Only the cut reply waits out its deadline; the others are refused as soon as they come,
        // which on a loaded machine can take a while.
        let deadline = NIODeadline.now() + (reply == "$5\r\nab" ? .milliseconds(500) : .seconds(10))
        let answer = redis.send(RESPCommand("PING"), deadline: deadline)
        switch reply {
        case "+OK\r\n+EXTRA\r\n":
            // The first reply is PING's; the second nobody asked for.
            #expect(try await answer.get() == .simple("OK"))
            try await Self.closed(redis)
        case "$5\r\nab":
            // Not all of it came: the deadline is what ends the wait.
            await #expect(throws: RedisClientError(.timeout, "no reply from Redis within the deadline")) { try await answer.get() }
        default:
            do {
                _ = try await answer.get()
                Issue.record("a reply read out of \(reply.debugDescription)")
            } catch let error as RedisClientError {
                #expect(error.code == .protocolError, "\(error)")
            }
            try await Self.closed(redis)
        }
    }
}
