import Foundation
import Logging
import NIOConcurrencyHelpers
import SluiceClient
import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import Testing

/// A backend that answers a batch later, on a queue of its own, as one over the network would
/// (Redis): it decides with the table underneath after `delay`, or, when `held`, once the test
/// lets it (``letGo()``).
final class LaterBackend: LimiterBackend, @unchecked Sendable {
    let table: LimiterTable
    let delay: DispatchTimeInterval
    let queue = DispatchQueue(label: "test.later-backend")
    let batches = NIOLockedValueBox(0)
    let gate: DispatchSemaphore?

    init(table: LimiterTable, delay: DispatchTimeInterval, held: Bool = false) {
        self.table = table
        self.delay = delay
        gate = held ? DispatchSemaphore(value: 0) : nil
    }

    /// Lets a held backend answer.
    func letGo() { gate?.signal() }

    var answersAtOnce: Bool { false }
    func check(_ item: UnsafePointer<BatchCheck>) -> Decision { table.check(item) }
    func check(batch: UnsafeBufferPointer<BatchCheck>, into decisions: UnsafeMutableBufferPointer<Decision>) {
        table.check(batch: batch, into: decisions)
    }
    func evaluate(_ item: BatchCheck, factor: Double) -> Decision { table.evaluate(item, factor: factor) }
    func decide(_ batch: [BatchCheck], completion: @escaping @Sendable ([Decision]) -> Void) {
        batches.withLockedValue { $0 += 1 }
        queue.asyncAfter(deadline: .now() + delay) { [table, gate] in
            gate?.wait()
            table.decide(batch, completion: completion)
        }
    }
    func release(key: Fingerprint, limit: BoundLimit, leaseID: UInt64, now: Int64) -> Bool {
        table.release(key: key, limit: limit, leaseID: leaseID, now: now)
    }
    func statistics() -> TableStatistics { table.statistics() }
}

/// A backend whose batches wait until the test answers them, in any order.
final class ManualBackend: LimiterBackend, @unchecked Sendable {
    let table: LimiterTable
    let waiting = NIOLockedValueBox<[(batch: [BatchCheck], completion: @Sendable ([Decision]) -> Void)]>([])

    init(table: LimiterTable) { self.table = table }

    var answersAtOnce: Bool { false }
    func check(_ item: UnsafePointer<BatchCheck>) -> Decision { table.check(item) }
    func check(batch: UnsafeBufferPointer<BatchCheck>, into decisions: UnsafeMutableBufferPointer<Decision>) {
        table.check(batch: batch, into: decisions)
    }
    func evaluate(_ item: BatchCheck, factor: Double) -> Decision { table.evaluate(item, factor: factor) }
    func decide(_ batch: [BatchCheck], completion: @escaping @Sendable ([Decision]) -> Void) {
        waiting.withLockedValue { $0.append((batch, completion)) }
    }
    func release(key: Fingerprint, limit: BoundLimit, leaseID: UInt64, now: Int64) -> Bool {
        table.release(key: key, limit: limit, leaseID: leaseID, now: now)
    }
    func statistics() -> TableStatistics { table.statistics() }

    /// Batches waiting now.
    var count: Int { waiting.withLockedValue { $0.count } }
    /// Checks answered so far.
    let answered = NIOLockedValueBox(0)

    /// Answers every waiting batch, the last first: each check allowed, with `remaining` set to
    /// the batch's place in arrival order.
    func answerAllBackwards() {
        let all = waiting.withLockedValue { all in
            defer { all = [] }
            return all
        }
        answered.withLockedValue { $0 += all.reduce(0) { $0 + $1.batch.count } }
        for (place, waiting) in all.enumerated().reversed() {
            waiting.completion(waiting.batch.map { _ in
                Decision(allowed: true, limit: 1_000, remaining: UInt64(place), resetAfter: 0, retryAfter: 0, reason: .withinLimit,
                         algorithm: .fixedWindow)
            })
        }
    }
}

@Suite("A backend that answers later")
struct DeferredBackendTests {
    static func start(delay: DispatchTimeInterval, held: Bool = false) async throws -> (SluiceDaemon, LaterBackend, String) {
        try await start { table in LaterBackend(table: table, delay: delay, held: held) }
    }

    static func start<Backend: LimiterBackend>(_ make: @escaping @Sendable (LimiterTable) -> Backend) async throws
        -> (SluiceDaemon, Backend, String) {
        let directory = TestDaemon.temporaryDirectory()
        var configuration = try ConfigurationLoader.parse("""
        rules:
          api: { limit: 5, period: 1m, algorithm: fixed_window }
        """, source: "later.yaml")
        configuration.unixListeners = [.init(path: "\(directory)/s.sock")]
        configuration.tcpListeners = []
        configuration.metricsListener = nil
        configuration.clock = .request
        configuration.threads = 1   // one event loop: a blocked loop would hold every connection up
        configuration.maxQueueDelayMs = 0
        let made = NIOLockedValueBox<Backend?>(nil)
        let daemon = try await SluiceDaemon.start(configuration: configuration, logger: Logger(label: "test"), events: nil,
                                                 metrics: nil, reloadFrom: nil, stages: [], clock: ContinuousClock(), backend: { table in
            let backend = make(table)
            made.withLockedValue { $0 = backend }
            return backend
        })
        return (daemon, try #require(made.withLockedValue { $0 }), directory)
    }

    @Test("pipelined checks are decided by the backend, answered in order with the table's semantics")
    func pipelinedInOrder() async throws {
        let (daemon, backend, directory) = try await Self.start(delay: .milliseconds(2))
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let client = try await SluiceClient.connect(to: .unix(path: daemon.unixPaths[0]))
        var requests: [WireRequest] = []
        for index in 0..<40 {
            var request = WireRequest()
            request.id = UInt64(1_000 + index)
            // Two checks per batch: key a (5 allowed in the window), then key b.
            request.check.checks = [Make.check("a", rule: "api"), Make.check(index % 2 == 0 ? "b" : "c", rule: "api")]
            requests.append(request)
        }
        let answers = try await client.send(pipelined: requests)
        #expect(answers.map(\.id) == requests.map(\.id), "answers come in request order")
        let first = answers.map { $0.check.verdicts.first?.allowed == true }
        #expect(first == (0..<40).map { $0 < 5 }, "key a: the first five allowed, the rest denied, in order")
        #expect(answers.filter { $0.check.verdicts.last?.allowed == true }.count == 10, "b and c: five each")
        #expect(answers.allSatisfy { $0.check.verdicts.first?.rule == "api" })
        #expect(backend.batches.withLockedValue { $0 } == 40, "every batch went to the backend")
        // A malformed batch is refused before the backend sees it.
        var empty = WireRequest()
        empty.id = 7
        empty.check.checks = [Make.check("", rule: "api")]
        let refused = try await client.send(empty)
        #expect(refused.id == 7 && refused.error.code == .invalidArgument)
        #expect(backend.batches.withLockedValue { $0 } == 40)
        await client.close()
        await daemon.shutdown()
    }

    @Test("while the backend holds a batch, the event loop serves other connections")
    func theLoopIsNotBlocked() async throws {
        let (daemon, backend, directory) = try await Self.start(delay: .milliseconds(0), held: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let slow = try await SluiceClient.connect(to: .unix(path: daemon.unixPaths[0]))
        let other = try await SluiceClient.connect(to: .unix(path: daemon.unixPaths[0]))
        var check = WireRequest()
        check.id = 1
        check.check.checks = [Make.check("k", rule: "api")]
        async let decided = slow.send(check)
        while backend.batches.withLockedValue({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(5)) }
        // The batch is with the backend, which will not answer until let go: the one event loop
        // must still answer another connection.
        var ping = WireRequest()
        ping.id = 2
        ping.ping.payload = Data("hello".utf8)
        let pong = try await other.send(ping)
        #expect(pong.id == 2 && pong.ping.payload == Data("hello".utf8))
        backend.letGo()
        let answer = try await decided
        #expect(answer.id == 1 && answer.check.verdicts.first?.allowed == true)
        await slow.close()
        await other.close()
        await daemon.shutdown()
    }

    @Test("one connection has many batches out at once; answers decided out of order are written in request order, other frames too")
    func manyBatchesOutAtOnce() async throws {
        let (daemon, backend, directory) = try await Self.start { ManualBackend(table: $0) }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let client = try await SluiceClient.connect(to: .unix(path: daemon.unixPaths[0]))
        let requests = (0..<300).map { index in
            var request = WireRequest()
            request.id = UInt64(index + 1)
            if index % 10 == 9 {
                // A request answered at once, between batches: it waits for those before it.
                request.ping.payload = Data("p\(index)".utf8)
            } else {
                request.check.checks = [Make.check("k\(index)", rule: "api")]
            }
            return request
        }
        async let answered = client.send(pipelined: requests)
        // 270 batches: 128 are out at once (the connection's bound), the frames after them wait.
        try await RedisBackendTests.eventually { backend.count >= 128 }
        try await Task.sleep(for: .milliseconds(100))
        #expect(backend.count == 128)
        // Until all 270 are answered: the frames held behind the bound come as places free up,
        // later than a round of answers on a loaded machine (waiting for an empty backend once
        // left the last of them unanswered, and the test waiting for ever).
        for _ in 0..<3_000 where backend.answered.withLockedValue({ $0 }) < 270 {
            backend.answerAllBackwards()
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(backend.answered.withLockedValue { $0 } == 270)
        let answers = try await answered
        #expect(answers.map(\.id) == requests.map(\.id), "answers come in request order")
        #expect(answers.filter { $0.check.verdicts.count == 1 }.count == 270)
        #expect(zip(requests, answers).allSatisfy { request, answer in
            request.ping.payload.isEmpty || answer.ping.payload == request.ping.payload
        })
        // The first 128 were out at once: answered backwards, each still got its own answer.
        let places = answers.prefix(20).compactMap { $0.check.verdicts.first?.remaining }
        #expect(places == Array(0..<UInt64(places.count)))
        await client.close()
        await daemon.shutdown()
    }

    @Test("shutdown waits for the batches a connection has out and answers them before it closes")
    func shutdownWaitsForBatchesOut() async throws {
        let (daemon, backend, directory) = try await Self.start { ManualBackend(table: $0) }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let client = try await SluiceClient.connect(to: .unix(path: daemon.unixPaths[0]))
        let requests = (1...5).map { index in
            var request = WireRequest()
            request.id = UInt64(index)
            request.check.checks = [Make.check("k\(index)", rule: "api")]
            return request
        }
        async let answered = client.send(pipelined: requests)
        try await RedisBackendTests.eventually { backend.count >= 5 }
        async let stopped: Void = daemon.shutdown()
        // Past the quiet period the connection would close: it must wait for its answers.
        try await Task.sleep(for: .milliseconds(300))
        backend.answerAllBackwards()
        let answers = try await answered
        #expect(answers.map(\.id) == [1, 2, 3, 4, 5])
        #expect(answers.allSatisfy { $0.check.verdicts.first?.allowed == true })
        await stopped
        await client.close()
    }
}
