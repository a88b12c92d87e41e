import Foundation
import Logging
import NIOCore
import NIOEmbedded
import SluiceProto
import Testing
@testable import SluiceWire

/// Past the queueing-delay bound a loop's connections refuse checks at once, and only checks.
@Suite("Queueing-delay bound")
struct OverloadTests {
    /// Answers checks (the fast path) with an allowed verdict frame, the rest as the echo does.
    final class Checks: RequestProcessor, @unchecked Sendable {
        var failed: [WireError.Code] = []
        func process(_ request: WireRequest) -> WireResponse {
            var response = WireResponse()
            response.id = request.id
            response.ping = .init()
            return response
        }
        func answerCheckFrame(_ frame: UnsafeRawBufferPointer, into out: inout ByteBuffer) -> Bool {
            guard let (id, _) = CheckFrameCodec.checkBody(frame) else { return false }
            var response = WireResponse()
            response.id = id
            response.check.verdicts = [.with { $0.allowed = true }]
            out.writeResponseFrame(response)
            return true
        }
        func recordFailedFrame(_ code: WireError.Code) { failed.append(code) }
    }

    /// A connected embedded channel served by a handler on `gauge`.
    static func connected(processor: Checks = Checks(), gauge: QueueDelayGauge, framesPerTurn: Int? = nil) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ConnectionHandler(processor: processor, logger: Logger(label: "test"),
                                                                         queueDelay: gauge, framesPerTurn: framesPerTurn))
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        return channel
    }

    static func check(id: UInt64) throws -> [UInt8] {
        var request = WireRequest()
        request.id = id
        request.check.checks = [.with { $0.key = "k"; $0.rule = "r" }]
        return try frame(request)
    }

    @Test func whileOverloadedChecksAreRefusedAtOnceWithTheirIdAndOtherRequestsAnswered() throws {
        let gauge = QueueDelayGauge(bound: .milliseconds(100))
        let processor = Checks()
        let channel = try Self.connected(processor: processor, gauge: gauge)
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }

        try channel.writeInbound(ByteBuffer(bytes: try Self.check(id: 1)))
        gauge.overloaded.store(true, ordering: .relaxed)
        try channel.writeInbound(ByteBuffer(bytes: try Self.check(id: 300) + (try frame(ping(id: 2))) + (try Self.check(id: 1 << 40))))
        gauge.overloaded.store(false, ordering: .relaxed)
        try channel.writeInbound(ByteBuffer(bytes: try Self.check(id: 4)))
        let answers = try responses(channel)
        #expect(answers.map(\.id) == [1, 300, 2, 1 << 40, 4])
        #expect(answers[0].check.verdicts.first?.allowed == true)
        #expect(answers[1].error.code == .overloaded && answers[1].error.message.contains("max_queue_delay"))
        #expect(answers[2].ping == .init(), "a ping is answered: it measures the daemon")
        #expect(answers[3].error.code == .overloaded)
        #expect(answers[4].check.verdicts.first?.allowed == true, "served again once under the bound")
        #expect(processor.failed == [.overloaded, .overloaded])
    }

    @Test func whileContendedAConnectionAnswers32FramesATurnAndTheRestInOrderOnLaterTurns() throws {
        let gauge = QueueDelayGauge(bound: nil)
        gauge.lastDelay.store(5_000_000, ordering: .relaxed)
        #expect(gauge.isContended)
        let channel = try Self.connected(gauge: gauge, framesPerTurn: 32)
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        var bytes: [UInt8] = []
        for id in 1...100 { bytes += try Self.check(id: UInt64(id)) }
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        var answered = try responses(channel).map(\.id)
        #expect(answered == Array(1...32), "one turn's worth")
        for _ in 0..<4 {
            channel.embeddedEventLoop.advanceTime(by: .microseconds(20))
            answered += try responses(channel).map(\.id)
        }
        #expect(answered == Array(1...100), "the rest on later turns, in order")
        // Not contended: everything read is answered at once.
        gauge.lastDelay.store(0, ordering: .relaxed)
        bytes = []
        for id in 101...200 { bytes += try Self.check(id: UInt64(id)) }
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        #expect(try responses(channel).map(\.id) == Array(101...200))
    }

    @Test func aBacklogOlderThanTheBoundIsRefusedAtOnceAndTheConnectionCatchesUp() throws {
        // Turns are bounded while the loop is contended, so the loop itself is never late; the
        // backlog's own age is the queueing delay its checks see.
        let gauge = QueueDelayGauge(bound: .milliseconds(50))
        gauge.lastDelay.store(5_000_000, ordering: .relaxed)
        let channel = try Self.connected(gauge: gauge, framesPerTurn: 32)
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        var bytes: [UInt8] = []
        for id in 1...200 { bytes += try Self.check(id: UInt64(id)) }
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        var answers = try responses(channel)
        #expect(answers.count == 32 && answers.allSatisfy { $0.error.code != .overloaded })
        // The next turn comes after the bound: what is left waited too long and is refused, all at once.
        Thread.sleep(forTimeInterval: 0.06)
        channel.embeddedEventLoop.advanceTime(by: .microseconds(20))
        answers += try responses(channel)
        #expect(answers.map(\.id) == Array(1...200), "every request answered once, in order")
        #expect(answers.dropFirst(32).allSatisfy { $0.error.code == .overloaded })
        // Caught up: the next checks are decided again.
        try channel.writeInbound(ByteBuffer(bytes: try Self.check(id: 201)))
        #expect(try responses(channel).first?.check.verdicts.first?.allowed == true)
    }

    @Test func theLoopIsOverloadedAfterTwoLateSamplesAndNotAfterOne() {
        let gauge = QueueDelayGauge(bound: .milliseconds(100), interval: .milliseconds(10))
        func sample(late milliseconds: Int64) {
            gauge.lastRun.store(NIODeadline.now().uptimeNanoseconds - UInt64(milliseconds + 10) * 1_000_000, ordering: .relaxed)
            gauge.sample()
        }
        sample(late: 300)
        #expect(!gauge.isOverloaded, "one late turn is a hiccup")
        sample(late: 300)
        #expect(gauge.isOverloaded)
        sample(late: 0)
        #expect(!gauge.isOverloaded)
        #expect(gauge.takeLongest() >= 300_000_000)
        let unbounded = QueueDelayGauge(bound: nil)
        unbounded.lastRun.store(1, ordering: .relaxed)
        unbounded.sample()
        unbounded.sample()
        #expect(!unbounded.isOverloaded, "without a bound it only measures")
    }
}

/// The wait estimated for what a TCP socket holds unread, on a manual clock.
@Suite struct SocketBacklogTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let bound = TimeAmount.milliseconds(100).nanoseconds

    @Test("the wait is the queue over the rate it drains at; refusing starts past the bound and stops under half of it")
    func estimateAndHysteresis() {
        var backlog = SocketBacklog(now: start)
        // 16 KiB reads, 1 MB consumed in 10 ms (100 MB/s): 20 MB queued waits 200 ms.
        var now = start
        for _ in 0..<64 {
            now = now + .microseconds(156)
            _ = backlog.record(read: 16_384, full: true, now: now)
        }
        now = start + .milliseconds(10)
        let result1 = backlog.sample(queued: 20_000_000, now: now, bound: bound)
        #expect(result1)
        #expect(abs(backlog.wait - 190_734_863) < 1_000_000)
        // Still 80 ms: above half the bound, so it keeps refusing.
        let result2 = backlog.record(read: 16_384 * 64, full: true, now: now + .milliseconds(10))
        #expect(result2)
        let result3 = backlog.sample(queued: 8_000_000, now: now + .milliseconds(10), bound: bound)
        #expect(result3)
        // 40 ms: under half, it stops.
        _ = backlog.record(read: 16_384 * 64, full: true, now: now + .milliseconds(20))
        let result4 = backlog.sample(queued: 4_000_000, now: now + .milliseconds(20), bound: bound)
        #expect(!result4)
        // 80 ms again, not refusing: under the bound, it does not start.
        _ = backlog.record(read: 16_384 * 64, full: true, now: now + .milliseconds(30))
        let result5 = backlog.sample(queued: 8_000_000, now: now + .milliseconds(30), bound: bound)
        #expect(!result5)
    }

    @Test("a read that does not fill its buffer emptied the socket: refusing stops at once; samples are at most every 5 ms")
    func drainedAndInterval() {
        var backlog = SocketBacklog(now: start)
        let result6 = backlog.record(read: 16_384, full: true, now: start + .milliseconds(1))
        #expect(!result6, "too soon for a sample")
        let result7 = backlog.record(read: 16_384, full: true, now: start + .milliseconds(6))
        #expect(result7)
        let result8 = backlog.sample(queued: 50_000_000, now: start + .milliseconds(6), bound: bound)
        #expect(result8)
        let result9 = backlog.record(read: 100, full: false, now: start + .milliseconds(7))
        #expect(!result9)
        #expect(!backlog.refusing && backlog.wait == 0)
    }

    @Test("absurd figures cannot trap: nothing consumed, nothing queued, no time, a huge queue")
    func extremes() {
        var backlog = SocketBacklog(now: start)
        let result10 = backlog.sample(queued: 1 << 40, now: start, bound: bound)
        #expect(!result10, "no time elapsed")
        let result11 = backlog.sample(queued: 0, now: start + .seconds(1), bound: bound)
        #expect(!result11)
        _ = backlog.record(read: 1, full: true, now: start + .seconds(2))
        let result12 = backlog.sample(queued: .max, now: start + .seconds(1_000_000), bound: bound)
        #expect(result12)
        #expect(backlog.wait == .max)
    }
}
