import NIOConcurrencyHelpers
import NIOCore
import SluiceRedis
import Synchronization

/// Gathers the script calls of many requests, from every connection's event loop, into one
/// pipelined write. A batch goes
/// - at once when it holds `maxBatch` calls;
/// - otherwise once its window has passed (`redis.batch_window` from its first call; 0: none)
///   and fewer than `maxInFlight` writes wait for their replies (`redis.writes_in_flight`; 0: no
///   bound), or else when one of them is answered.
/// So a lone check goes at once, and under load checks gather while earlier writes are out: the
/// batches grow with the load, and the wait with them, no longer than a round trip (the way
/// Nagle's algorithm and corking clients gather). Each request gets its own replies back, in
/// order, or the error that failed the write. The checks of a write go `checksPerCall` to a
/// script call (``CheckScript/batchSource``; 1: one call of ``CheckScript/source`` each).
final class RedisBatcher: Sendable {
    typealias Replies = Result<ArraySlice<RESPValue>, RedisClientError>

    struct Waiting {
        let calls: [CheckScript.Check]
        let deliver: @Sendable (Replies) -> Void
        /// When it was submitted: its answer is due `timeout` after, however long it waited for
        /// a write to go.
        let submitted: NIODeadline
    }

    struct Gathering {
        var waiting: [Waiting] = []
        var calls = 0
        /// Set while a window is open (its flush is scheduled).
        var open = false
        /// Set once the waiting batch's window has passed (at once with no window).
        var due = false
        /// Writes sent and not answered yet.
        var inFlight = 0

        /// Takes the waiting batch to send, counting its write.
        mutating func take() -> [Waiting] {
            let batch = waiting
            waiting = []
            calls = 0
            due = false
            inFlight += 1
            return batch
        }
    }

    let client: any RedisScripting
    let window: TimeAmount
    let maxBatch: Int
    let timeout: TimeAmount
    /// Where windows are timed.
    let eventLoop: any EventLoop
    let gathering = NIOLockedValueBox(Gathering())
    let statistics: RedisStatistics
    let checksPerCall: Int
    let slackMs: Int64
    let maxInFlight: Int

    init(client: any RedisScripting, window: TimeAmount, maxBatch: Int, maxInFlight: Int = 0, timeout: TimeAmount, eventLoop: any EventLoop,
         statistics: RedisStatistics, checksPerCall: Int, slackMs: Int64) {
        self.maxInFlight = maxInFlight > 0 ? maxInFlight : .max
        self.statistics = statistics
        self.checksPerCall = max(1, checksPerCall)
        self.slackMs = slackMs
        self.client = client
        self.window = window
        self.maxBatch = max(1, maxBatch)
        self.timeout = timeout
        self.eventLoop = eventLoop
    }

    /// Sends `calls` with the others of their batch; `deliver` gets one reply per call.
    func submit(_ calls: [CheckScript.Check], deliver: @escaping @Sendable (Replies) -> Void) {
        enum Next { case nothing, schedule, send([Waiting]) }
        let next = gathering.withLockedValue { state -> Next in
            state.waiting.append(Waiting(calls: calls, deliver: deliver, submitted: .now()))
            state.calls += calls.count
            if state.calls >= maxBatch { return .send(state.take()) }
            if window > .zero {
                guard !state.open, !state.due else { return .nothing }
                state.open = true
                return .schedule
            }
            state.due = true
            return state.inFlight < maxInFlight ? .send(state.take()) : .nothing
        }
        switch next {
        case .nothing: break
        case .send(let batch): send(batch)
        case .schedule: eventLoop.scheduleTask(in: window) { self.windowPassed() }
        }
    }

    /// The window ended: the batch goes if a write may go out, else when one is answered.
    func windowPassed() {
        let batch = gathering.withLockedValue { state -> [Waiting]? in
            state.open = false
            guard !state.waiting.isEmpty else { return nil }
            state.due = true
            return state.inFlight < maxInFlight ? state.take() : nil
        }
        if let batch { send(batch) }
    }

    /// A write was answered: the batch waiting for it goes, if its window has passed.
    func answered() {
        let batch = gathering.withLockedValue { state -> [Waiting]? in
            state.inFlight -= 1
            guard state.due, !state.waiting.isEmpty, state.inFlight < maxInFlight else { return nil }
            return state.take()
        }
        if let batch { send(batch) }
    }

    /// One reply per check from one reply per call of ``CheckScript/batchSource`` (`sizes`:
    /// the checks of each call). A call answered with an error, or with a reply of the wrong
    /// shape, gives each of its checks that reply: those checks take the degraded path.
    static func spread(_ replies: [RESPValue], sizes: [Int]) -> [RESPValue] {
        var spread: [RESPValue] = []
        spread.reserveCapacity(sizes.reduce(0, +))
        for (reply, size) in zip(replies, sizes) {
            if let elements = reply.elements, elements.count == size {
                spread += elements
            } else {
                spread += repeatElement(reply.errorMessage != nil ? reply : .error("ERR sluice: \(size) checks answered \(reply)"), count: size)
            }
        }
        return spread
    }

    func send(_ batch: [Waiting]) {
        statistics.writes.add(1, ordering: .relaxed)
        let calls = batch.flatMap(\.calls)
        statistics.sizes.observe(Double(calls.count))
        let started = NIODeadline.now()
        // The oldest request's due time: no check waits longer than the timeout in all.
        let deadline = (batch.map(\.submitted).min() ?? started) + timeout
        let sent: EventLoopFuture<[RESPValue]>
        if checksPerCall == 1 {
            sent = client.evaluate(CheckScript.script, calls: calls.map { CheckScript.call($0, slackMs: slackMs) }, deadline: deadline)
        } else {
            // In a Cluster a call's checks share a slot (their keys' hash tag): the replies are
            // put back in the checks' order.
            let groups = client.groups(count: calls.count, perCall: checksPerCall) { calls[$0].keys.first?.slot ?? 0 }
            let grouped = groups.map { group in CheckScript.batchCall(group.map { calls[$0] }, slackMs: slackMs) }
            let sizes = groups.map(\.count)
            let inOrder = !client.slotted
            sent = client.evaluate(CheckScript.batchScript, calls: grouped, deadline: deadline).map { replies in
                let spread = Self.spread(replies, sizes: sizes)
                guard !inOrder, spread.count == calls.count else { return spread }
                var ordered = spread
                for (position, index) in groups.joined().enumerated() { ordered[index] = spread[position] }
                return ordered
            }
        }
        sent.whenComplete { result in
            self.answered()
            let failure: RedisClientError
            switch result {
            case .success(let replies) where replies.count == calls.count:
                self.statistics.latency.observe(Double((NIODeadline.now() - started).nanoseconds) / 1e9)
                var start = 0
                for waiting in batch {
                    waiting.deliver(.success(replies[start..<(start + waiting.calls.count)]))
                    start += waiting.calls.count
                }
                return
            case .success(let replies):
                failure = RedisClientError(.protocolError, "\(replies.count) replies to \(calls.count) script calls")
            case .failure(let error as RedisClientError):
                failure = error
            case .failure(let error):
                failure = RedisClientError(.protocolError, "\(error)")
            }
            self.statistics.recordError(failure.code.rawValue)
            for waiting in batch { waiting.deliver(.failure(failure)) }
        }
    }
}
