import Foundation
import NIOCore
import SluiceClient
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import Testing
import SluiceTestKit
import SluiceLoad

@Suite("Connections end to end", .ownThreads)
struct ConnectionEndToEndTests {
    static let limit = WireLimit(limit: 1_000_000, periodMs: 60_000, algorithm: .fixedWindow)

    @Test("10,000 pipelined requests on one connection come back in order", arguments: [false, true])
    func pipelining(tcp: Bool) async throws {
        try await TestDaemon.with { daemon in
            let client = try await SluiceClient.connect(to: tcp ? daemon.tcp : daemon.unix)
            let requests = (1...10_000).map { i -> WireRequest in
                var request = Make.request(Make.check("p\(i % 100)", limit: Self.limit))
                request.id = UInt64(i)
                return request
            }
            let responses = try await client.send(pipelined: requests)
            #expect(responses.count == 10_000)
            #expect(responses.map(\.id) == Array(1...10_000).map(UInt64.init))
            #expect(responses.allSatisfy { $0.check.verdicts.first?.allowed == true })
            // Each of 100 keys was hit 100 times: its remaining count proves nothing was lost.
            let peek = try await client.verdict(Make.check("p7", limit: Self.limit, hits: 0))
            #expect(peek.remaining == 1_000_000 - 100)
            await client.close()
        }
    }

    @Test("200 concurrent connections are all served, with exact counts")
    func manyConnections() async throws {
        try await TestDaemon.with { daemon in
            let limit = WireLimit(limit: 1_000, periodMs: 60_000, algorithm: .fixedWindow)
            let allowed = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<200 {
                    group.addTask {
                        // 200 connects at once on a busy 2-core machine: more room than the default 5 s.
                        let client = try await SluiceClient.connect(to: i % 2 == 0 ? daemon.unix : daemon.tcp, timeout: .seconds(30))
                        var allowed = 0
                        for _ in 0..<10 where try await client.verdict(Make.check("shared", limit: limit)).allowed {
                            allowed += 1
                        }
                        await client.close()
                        return allowed
                    }
                }
                return try await group.reduce(0, +)
            }
            // 2,000 checks against a limit of 1,000 on one key: exactly 1,000 pass.
            #expect(allowed == 1_000)
            #expect(daemon.daemon.dispatcher.counters.connectionsTotal.load(ordering: .relaxed) >= 200)
        }
    }

    @Test("garbage on one connection gets an error there, and every other connection is still served")
    func garbageIsolated() async throws {
        try await TestDaemon.with { daemon in
            let healthy = try await SluiceClient.connect(to: daemon.unix)
            let raw = try await RawConnection.connect(daemon.unix)
            try await raw.write([0, 0, 0, 5, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
            var good = Make.request(Make.check("g", limit: Self.limit))
            good.id = 77
            try await raw.write(try RawConnection.frame(good))
            let answers = try await raw.responses(atLeast: 2)
            #expect(answers.count == 2)
            #expect(answers.first?.error.code == .malformedMessage)
            #expect(answers.last?.id == 77)
            #expect(answers.last?.check.verdicts.first?.allowed == true, "the same connection keeps serving")
            #expect(try await healthy.verdict(Make.check("g", limit: Self.limit)).allowed)
            await raw.close()
            await healthy.close()
        }
    }

    @Test("a frame above the maximum is refused, that connection closed, the others served")
    func frameTooLarge() async throws {
        try await TestDaemon.with({ $0.maxFrameBytes = 1_024 }) { daemon in
            let healthy = try await SluiceClient.connect(to: daemon.tcp)
            let raw = try await RawConnection.connect(daemon.tcp)
            try await raw.write([0x00, 0x00, 0x04, 0x01]) // 1,025: one byte too many, and no body follows
            let answers = try await raw.responses(atLeast: 1)
            #expect(answers.first?.error.code == .frameTooLarge)
            #expect(answers.first?.error.message.contains("1025") == true)
            #expect(try await raw.waitUntilClosed())
            let hostile = try await RawConnection.connect(daemon.unix)
            try await hostile.write([0xFF, 0xFF, 0xFF, 0xFF])
            #expect(try await hostile.waitUntilClosed())
            #expect(try await healthy.verdict(Make.check("x", limit: Self.limit)).allowed)
            await healthy.close()
        }
    }

    @Test("frames the fast codec declines (non-ASCII keys, repeated fields) are answered by the general path the same way")
    func declinedFramesAnswered() async throws {
        try await TestDaemon.with { daemon in
            let raw = try await RawConnection.connect(daemon.unix)
            // "clé" twice under a limit of 1: allowed, then denied, whichever path decides.
            var accented = Make.request(Make.check("clé", limit: WireLimit(limit: 1, periodMs: 60_000)))
            accented.id = 1
            try await raw.write(try RawConnection.frame(accented))
            accented.id = 2
            try await raw.write(try RawConnection.frame(accented))
            // A check whose key field appears twice: protobuf's last one ("b") wins.
            let check = Make.check("a", limit: WireLimit(limit: 1, periodMs: 60_000))
            let checkBytes: [UInt8] = try check.serializedBytes() + [0x12, 0x01, UInt8(ascii: "b")]
            let body: [UInt8] = [0x08, 3, 0x12, UInt8(checkBytes.count + 2), 0x0A, UInt8(checkBytes.count)] + checkBytes
            try await raw.write([0, 0, 0, UInt8(body.count)] + body)
            var plainB = Make.request(Make.check("b", limit: WireLimit(limit: 1, periodMs: 60_000)))
            plainB.id = 4
            try await raw.write(try RawConnection.frame(plainB))
            let answers = try await raw.responses(atLeast: 4)
            #expect(answers.map(\.id) == [1, 2, 3, 4])
            #expect(answers.map { $0.check.verdicts.first?.allowed } == [true, false, true, false],
                    "the repeated key was read as \"b\", which the plain request then found used")
            await raw.close()
        }
    }

    @Test("frames arriving together are decided together as if one by one: an invalid one, a declined one and a batch too large answered in their place")
    func framesInOneWrite() async throws {
        try await TestDaemon.with { daemon in
            let raw = try await RawConnection.connect(daemon.unix)
            let two = WireLimit(limit: 2, periodMs: 60_000)
            func frame(_ id: UInt64, _ checks: [WireCheck]) throws -> [UInt8] {
                var request = Make.request(checks[0])
                request.check.checks = checks
                request.id = id
                return try RawConnection.frame(request)
            }
            var bytes: [UInt8] = []
            bytes += try frame(1, [Make.check("k", limit: two)])
            bytes += try frame(2, [Make.check("", limit: two)])               // invalid: an empty key
            bytes += try frame(3, [Make.check("k", limit: two), Make.check("other", limit: two)])
            bytes += try frame(4, [Make.check("ké", limit: two)])            // declined by the fast codec
            bytes += try frame(5, [Make.check("k", limit: two)])             // the key's third hit: denied
            bytes += try frame(6, Array(repeating: Make.check("big", limit: two), count: 1_001))  // above max_batch
            bytes += try frame(7, [Make.check("ké", limit: two)])
            bytes += try frame(8, [Make.check("other", limit: two)])
            try await raw.write(bytes)
            let answers = try await raw.responses(atLeast: 8)
            try #require(answers.map(\.id) == Array(1...8))
            #expect(answers[0].check.verdicts.map(\.allowed) == [true])
            #expect(answers[1].error.code == .invalidArgument && answers[1].error.checkIndex == 0)
            #expect(answers[2].check.verdicts.map(\.allowed) == [true, true])
            #expect(answers[3].check.verdicts.map(\.allowed) == [true])
            #expect(answers[4].check.verdicts.map(\.allowed) == [false], "the key had 2 of 2 used by frames 1 and 3")
            #expect(answers[5].error.code == .invalidArgument, "\(answers[5])")
            #expect(answers[6].check.verdicts.map(\.allowed) == [true])
            #expect(answers[7].check.verdicts.map(\.allowed) == [true])
            await raw.close()
        }
    }

    @Test("a request split into single bytes over a real socket is answered once")
    func splitOverSocket() async throws {
        // A byte a millisecond can take seconds on a loaded machine: no read timeout in the way.
        try await TestDaemon.with({ $0.readTimeoutMs = 0 }) { daemon in
            let raw = try await RawConnection.connect(daemon.unix)
            var request = Make.request(Make.check("split", limit: Self.limit))
            request.id = 5
            for byte in try RawConnection.frame(request) {
                try await raw.write([byte])
                try await Task.sleep(for: .milliseconds(1))
            }
            let answers = try await raw.responses(atLeast: 1)
            #expect(answers.count == 1)
            #expect(answers.first?.id == 5)
            #expect(answers.first?.check.verdicts.first?.allowed == true)
            await raw.close()
        }
    }

    @Test("connections above max_connections are answered overloaded and closed")
    func connectionLimit() async throws {
        try await TestDaemon.with({ $0.maxConnections = 2; $0.unixReserve = 0 }) { daemon in
            let first = try await SluiceClient.connect(to: daemon.unix)
            let second = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await first.verdict(Make.check("c", limit: Self.limit)).allowed)
            // Each connection is counted when its event loop sets it up, not when the client's
            // connect returns: with two loops, a third connection made before the second was
            // answered could be set up first and take its place (CI, stop 34). An answer on the
            // second proves it was counted.
            #expect(try await second.verdict(Make.check("c", limit: Self.limit)).allowed)
            let third = try await RawConnection.connect(daemon.unix)
            let answers = try await third.responses(atLeast: 1)
            #expect(answers.first?.error.code == .overloaded)
            #expect(try await third.waitUntilClosed())
            #expect(try await second.verdict(Make.check("c", limit: Self.limit)).allowed)
            await first.close()
            await second.close()
        }
    }

    @Test("shutdown answers every request already sent, then closes")
    func drainOnShutdown() async throws {
        let daemon = try await TestDaemon.start()
        let raw = try await RawConnection.connect(daemon.unix)
        var bytes: [UInt8] = []
        for i in 1...2_000 {
            var request = Make.request(Make.check("d\(i % 10)", limit: Self.limit))
            request.id = UInt64(i)
            bytes += try RawConnection.frame(request)
        }
        try await raw.write(bytes)
        // Stop at once: most of the 2,000 requests are still in the socket buffer.
        await daemon.stop()
        #expect(try await raw.waitUntilClosed())
        let answers = raw.collector.responses.withLockedValue { $0 }
        #expect(answers.count == 2_000)
        #expect(answers.map(\.id) == (1...2_000).map { UInt64($0) })
        #expect(answers.allSatisfy { $0.check.verdicts.first?.allowed == true })
        // New connections are refused once shutdown began.
        await #expect(throws: (any Error).self) { _ = try await RawConnection.connect(daemon.unix) }
        #expect(!FileManager.default.fileExists(atPath: daemon.daemon.unixPaths[0]), "the socket file is removed")
    }

    @Test("a stale socket file is replaced; a live daemon's socket is never taken")
    func socketOwnership() async throws {
        let directory = TestDaemon.temporaryDirectory()
        let path = "\(directory)/stale.sock"
        // A stale socket: bound, then its owner went away without removing it.
        let stale = try await RawListener.bindAndAbandon(path: path)
        #expect(stale)
        #expect(FileManager.default.fileExists(atPath: path))
        let first = try await TestDaemon.start { $0.unixListeners = [.init(path: path)] }
        let client = try await SluiceClient.connect(to: .unix(path: path))
        #expect(try await client.verdict(Make.check("o", limit: Self.limit)).allowed)
        await #expect(throws: SluiceError.self) {
            _ = try await TestDaemon.start { $0.unixListeners = [.init(path: path)] }
        }
        #expect(try await client.verdict(Make.check("o", limit: Self.limit)).allowed, "the first daemon still serves")
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o660)
        await client.close()
        await first.stop()
        // A regular file at the path is never deleted.
        _ = FileManager.default.createFile(atPath: path, contents: Data("keep me".utf8))
        await #expect(throws: SluiceError.self) {
            _ = try await TestDaemon.start { $0.unixListeners = [.init(path: path)] }
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "keep me")
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Leaves a socket file behind with no one listening, as a crashed daemon would.
enum RawListener {
    static func bindAndAbandon(path: String) async throws -> Bool {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)", path]
        try process.run()
        await process.waitForExit(within: .seconds(60))
        return process.terminationStatus == 0
    }
}
