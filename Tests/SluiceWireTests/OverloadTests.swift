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

    @Test func theGaugeSamplesWhileItsLoopReadsAndSleepsAfterTenQuietSamples() {
        let loop = EmbeddedEventLoop()
        defer { try? loop.syncShutdownGracefully() }
        let gauge = QueueDelayGauge(bound: .milliseconds(100), interval: .milliseconds(10))
        var samples = 0
        func advance(_ turns: Int) {
            for _ in 0..<turns {
                let before = gauge.lastRun.load(ordering: .relaxed)
                loop.advanceTime(by: .milliseconds(10))
                if gauge.lastRun.load(ordering: .relaxed) != before { samples += 1 }
            }
        }
        advance(5)
        #expect(samples == 0, "nothing read yet: no sample")
        gauge.touch(on: loop)
        for _ in 0..<20 {
            advance(1)
            gauge.touch(on: loop)
        }
        #expect(samples == 20, "a sample every interval while reads come")
        advance(30)
        #expect(samples == 31, "the sample after the last read and ten quiet ones, then it sleeps")
        let armed = gauge.armed.load(ordering: .relaxed)
        #expect(!armed)
        gauge.touch(on: loop)
        advance(2)
        #expect(samples == 33, "a read wakes it")
        gauge.stop()
        gauge.touch(on: loop)
        advance(20)
        #expect(samples == 33, "stopped for good: nothing is scheduled on a loop about to shut down")
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

@Test("a refusal is one frame carrying the request's id, whatever its size, and CODE_OVERLOADED with a sentence")
func refusalFrames() throws {
    for id: UInt64 in [0, 1, 127, 128, 1 << 35, .max] {
        var out = ByteBufferAllocator().buffer(capacity: 0)
        QueueDelayGauge.writeRefusal(id: id, into: &out)
        let frame = try #require(try FrameDecoder.nextFrame(in: &out, maximum: 1 << 20))
        #expect(out.readableBytes == 0, "exactly one frame")
        let response = try WireResponse(serializedBytes: Array(frame.readableBytesView))
        #expect(response.id == id)
        #expect(response.error.code == .overloaded)
        #expect(response.error.message.contains("max_queue_delay"))
    }
}

/// The wait estimated for what a TCP socket holds unread, on a manual clock.
@Suite struct SocketBacklogTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let bound = TimeAmount.milliseconds(100).nanoseconds

    /// Reads of 16 KiB filling their buffer, 1 MB consumed in every 10 ms (about 105 MB/s: a
    /// millisecond of wait is 104,858 bytes).
    func consume(_ backlog: inout SocketBacklog, from: NIODeadline) {
        for step in 1...64 { _ = backlog.record(read: 16_384, full: true, now: from + .microseconds(Int64(step) * 156)) }
    }

    @Test("the wait is the queue over the rate it drains at; the share refused rises past half the bound and falls under it")
    func estimateAndShare() {
        var backlog = SocketBacklog(now: start)
        consume(&backlog, from: start)
        // 20 MB queued waits about 190 ms, past the bound: a share is refused.
        let result1 = backlog.sample(queued: 20_000_000, now: start + .milliseconds(10), bound: bound)
        #expect(result1)
        #expect(abs(backlog.wait - 190_734_863) < 1_000_000)
        let first = backlog.share
        #expect(first > 0 && first < 1, "a share, not every check")
        // Still 190 ms: the share grows.
        consume(&backlog, from: start + .milliseconds(10))
        _ = backlog.sample(queued: 20_000_000, now: start + .milliseconds(20), bound: bound)
        #expect(backlog.share > first)
        // Held at 30 ms, under half the bound: the share falls to nothing.
        var now = start + .milliseconds(20)
        for _ in 0..<200 {
            consume(&backlog, from: now)
            now = now + .milliseconds(10)
            _ = backlog.sample(queued: 3_000_000, now: now, bound: bound)
        }
        #expect(!backlog.refusing && backlog.share == 0)
        // A wait at the target (half the bound, 50 ms) holds the share where it is.
        consume(&backlog, from: now)
        now = now + .milliseconds(10)
        _ = backlog.sample(queued: 20_000_000, now: now, bound: bound)
        consume(&backlog, from: now)
        now = now + .milliseconds(10)
        _ = backlog.sample(queued: 5_242_880, now: now, bound: bound)
        let held = backlog.share
        #expect(held > 0)
        for _ in 0..<20 {
            consume(&backlog, from: now)
            now = now + .milliseconds(10)
            _ = backlog.sample(queued: 5_242_880, now: now, bound: bound)
        }
        #expect(abs(backlog.share - held) < 1e-6)
    }

    @Test("a connection idle for an hour, then a burst: the idle time is not taken for slowness")
    func idleThenBurst() {
        var backlog = SocketBacklog(now: start)
        _ = backlog.record(read: 100, full: false, now: start + .milliseconds(1))
        // An hour later, 1 MB in 10 ms with 2 MB queued: about 20 ms.
        consume(&backlog, from: start + .seconds(3_600))
        let refusing = backlog.sample(queued: 2_000_000, now: start + .seconds(3_600) + .milliseconds(10), bound: bound)
        #expect(!refusing)
        #expect(backlog.wait < 30_000_000, "about 20 ms, not an hour's worth")
    }

    @Test("a wait that grows fast but stays under half the bound refuses nothing")
    func underHalfTheBound() {
        var backlog = SocketBacklog(now: start)
        var now = start
        // 10, 20, 35, 47 ms: each sample the wait jumps, never past 50 ms.
        for queued in [1_048_576, 2_097_152, 3_670_016, 4_928_307] {
            consume(&backlog, from: now)
            now = now + .milliseconds(10)
            let refusing = backlog.sample(queued: queued, now: now, bound: bound)
            #expect(!refusing)
        }
        let refused = backlog.refuseNext()
        #expect(!refused && backlog.share == 0)
    }

    @Test("refusals are the share of checks, spread evenly")
    func spreadEvenly() {
        var backlog = SocketBacklog(now: start)
        consume(&backlog, from: start)
        _ = backlog.sample(queued: 20_000_000, now: start + .milliseconds(10), bound: bound)
        let share = backlog.share
        var refused = 0, longestRun = 0, run = 0
        for _ in 0..<10_000 {
            if backlog.refuseNext() {
                refused += 1
                run += 1
                longestRun = max(longestRun, run)
            } else {
                run = 0
            }
        }
        #expect(abs(Double(refused) - share * 10_000) <= 1)
        #expect(longestRun <= Int((share / (1 - share)).rounded(.up)), "no burst longer than the share implies")
    }

    @Test("a read that does not fill its buffer emptied the socket: the share falls, to none after a 40 ms silence; samples are at most every 5 ms")
    func drainedAndInterval() {
        var backlog = SocketBacklog(now: start)
        let result6 = backlog.record(read: 16_384, full: true, now: start + .milliseconds(1))
        #expect(!result6, "the first read starts the window")
        let result7 = backlog.record(read: 16_384, full: true, now: start + .milliseconds(6))
        #expect(result7)
        let result8 = backlog.sample(queued: 50_000_000, now: start + .milliseconds(6), bound: bound)
        #expect(result8)
        let before = backlog.share
        let result9 = backlog.record(read: 100, full: false, now: start + .milliseconds(7))
        #expect(!result9)
        #expect(backlog.wait == 0 && backlog.share < before && backlog.refusing, "emptied once: still refusing some")
        // After a 40 ms silence the backlog is gone.
        _ = backlog.record(read: 100, full: false, now: start + .milliseconds(50))
        #expect(!backlog.refusing)
        let refused = backlog.refuseNext()
        #expect(!refused)
    }

    @Test("absurd figures cannot trap: nothing consumed, nothing queued, no time, a huge queue")
    func extremes() {
        var backlog = SocketBacklog(now: start)
        let result10 = backlog.sample(queued: 1 << 40, now: start, bound: bound)
        #expect(!result10, "no time elapsed")
        let result11 = backlog.sample(queued: 0, now: start + .seconds(1), bound: bound)
        #expect(!result11)
        _ = backlog.record(read: 1, full: true, now: start + .seconds(2))
        _ = backlog.record(read: 1, full: true, now: start + .seconds(2) + .milliseconds(1))
        let result12 = backlog.sample(queued: .max, now: start + .seconds(1_000_000), bound: bound)
        #expect(result12)
        #expect(backlog.wait == .max)
    }
}
