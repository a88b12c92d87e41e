@preconcurrency import Dispatch
import NIOConcurrencyHelpers
import SluiceCore

/// Drains an ``EventTap`` on a background Dispatch queue and hands the events, in batches, to a
/// consumer (reputation, anomaly scoring and the like). The hot path only ever offers to the tap;
/// everything slow happens here, off the event loops.
public final class EventPump<Element: Sendable>: Sendable {
    let tap: EventTap<Element>
    let queue: DispatchQueue
    let interval: DispatchTimeInterval
    let batchLimit: Int
    let consumer: @Sendable ([Element]) -> Void
    let timer = NIOLockedValueBox<(any DispatchSourceTimer)?>(nil)

    /// A pump for `tap`.
    ///
    /// - Parameters:
    ///   - queue: where `consumer` runs (serially).
    ///   - interval: how often the tap is drained.
    ///   - batchLimit: the most events handed over at once.
    ///   - consumer: receives each non-empty batch, oldest first.
    public init(tap: EventTap<Element>, queue: DispatchQueue = DispatchQueue(label: "sluice.events", qos: .utility),
                interval: DispatchTimeInterval = .milliseconds(10), batchLimit: Int = 4_096,
                consumer: @escaping @Sendable ([Element]) -> Void) {
        self.tap = tap
        self.queue = queue
        self.interval = interval
        self.batchLimit = max(1, batchLimit)
        self.consumer = consumer
    }

    /// Starts draining every `interval`. Calling it twice changes nothing.
    public func start() {
        timer.withLockedValue { timer in
            guard timer == nil else { return }
            let source = DispatchSource.makeTimerSource(queue: queue)
            source.schedule(deadline: .now() + interval, repeating: interval)
            source.setEventHandler { [weak self] in self?.drainOnQueue() }
            source.resume()
            timer = source
        }
    }

    /// Stops the timer and hands over whatever is still in the tap.
    public func stop() {
        let source = timer.withLockedValue { timer -> (any DispatchSourceTimer)? in
            defer { timer = nil }
            return timer
        }
        source?.cancel()
        drainNow()
    }

    /// Drains the tap now, on the pump's queue, and returns when the consumer is done.
    public func drainNow() {
        queue.sync { drainOnQueue() }
    }

    func drainOnQueue() {
        while true {
            let batch = tap.drain(limit: batchLimit)
            if batch.isEmpty { return }
            consumer(batch)
            if batch.count < batchLimit { return }
        }
    }
}
