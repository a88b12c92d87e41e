import NIOConcurrencyHelpers
import NIOCore
import SluiceRedis
import Synchronization

/// Gathers the script calls of many requests, from every connection's event loop, into one
/// pipelined write: the first call of a batch starts a window (`redis.batch_window`, 200 µs by
/// default), and the batch goes when the window ends or when it holds `maxBatch` calls, whichever
/// comes first. Each request gets its own replies back, in order, or nil when the write failed.
final class RedisBatcher: Sendable {
    struct Waiting {
        let calls: [RedisClient.ScriptCall]
        let deliver: @Sendable ([RESPValue]?) -> Void
    }

    struct Gathering {
        var waiting: [Waiting] = []
        var calls = 0
        /// Set while a window is open (its flush is scheduled).
        var open = false
    }

    let client: RedisClient
    let window: TimeAmount
    let maxBatch: Int
    let timeout: TimeAmount
    /// Where windows are timed.
    let eventLoop: any EventLoop
    let gathering = NIOLockedValueBox(Gathering())
    let writes = Atomic<UInt64>(0)

    init(client: RedisClient, window: TimeAmount, maxBatch: Int, timeout: TimeAmount, eventLoop: any EventLoop) {
        self.client = client
        self.window = window
        self.maxBatch = max(1, maxBatch)
        self.timeout = timeout
        self.eventLoop = eventLoop
    }

    /// Sends `calls` with the others of their window; `deliver` gets one reply per call.
    func submit(_ calls: [RedisClient.ScriptCall], deliver: @escaping @Sendable ([RESPValue]?) -> Void) {
        guard window > .zero else {
            send([Waiting(calls: calls, deliver: deliver)])
            return
        }
        enum Next { case nothing, schedule, flush([Waiting]) }
        let next = gathering.withLockedValue { state -> Next in
            state.waiting.append(Waiting(calls: calls, deliver: deliver))
            state.calls += calls.count
            if state.calls >= maxBatch {
                let batch = state.waiting
                state = Gathering(waiting: [], calls: 0, open: state.open)
                return .flush(batch)
            }
            if state.open { return .nothing }
            state.open = true
            return .schedule
        }
        switch next {
        case .nothing: break
        case .flush(let batch): send(batch)
        case .schedule:
            eventLoop.scheduleTask(in: window) { self.flush() }
        }
    }

    /// The window ended: sends what it gathered.
    func flush() {
        let batch = gathering.withLockedValue { state -> [Waiting] in
            let batch = state.waiting
            state = Gathering()
            return batch
        }
        if !batch.isEmpty { send(batch) }
    }

    func send(_ batch: [Waiting]) {
        writes.add(1, ordering: .relaxed)
        let calls = batch.flatMap(\.calls)
        client.evaluate(CheckScript.source, calls: calls, deadline: .now() + timeout).whenComplete { result in
            switch result {
            case .success(let replies) where replies.count == calls.count:
                var start = 0
                for waiting in batch {
                    waiting.deliver(Array(replies[start..<(start + waiting.calls.count)]))
                    start += waiting.calls.count
                }
            default:
                for waiting in batch { waiting.deliver(nil) }
            }
        }
    }
}
