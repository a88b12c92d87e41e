@preconcurrency import Dispatch
import SluiceCore

/// Drains an ``EventTap`` (or any ``EventSource``) on a background Dispatch queue and hands the events, in batches, to a
/// consumer (reputation, anomaly scoring and the like). The hot path only ever offers to the tap;
/// everything slow happens here, off the event loops. The pump keeps no timer: its
/// ``service(_:clock:finish:)`` drains it every ``interval`` in the daemon's service group.
public final class EventPump<Element: Sendable>: Sendable {
    let tap: any EventSource<Element>
    let queue: DispatchQueue
    /// How often its service drains the tap.
    let interval: Duration
    let batchLimit: Int
    let consumer: @Sendable ([Element]) -> Void

    /// A pump for `tap`.
    ///
    /// - Parameters:
    ///   - queue: where `consumer` runs (serially).
    ///   - interval: how often the tap is drained.
    ///   - batchLimit: the most events handed over at once.
    ///   - consumer: receives each non-empty batch, oldest first.
    public init(tap: any EventSource<Element>, queue: DispatchQueue = DispatchQueue(label: "sluice.events", qos: .utility),
                interval: Duration = .milliseconds(10), batchLimit: Int = 4_096,
                consumer: @escaping @Sendable ([Element]) -> Void) {
        self.tap = tap
        self.queue = queue
        self.interval = interval
        self.batchLimit = max(1, batchLimit)
        self.consumer = consumer
    }

    /// The service that drains the pump every interval and once more at shutdown (then `finish`,
    /// on the same queue).
    func service<C: Clock>(_ name: String, clock: C, finish: (@Sendable () -> Void)? = nil) -> PeriodicService<C>
    where C.Duration == Duration {
        PeriodicService(name, every: { [interval] in interval }, on: queue, clock: clock, tick: { [self] in drainOnQueue() },
                        finish: { [self] in
                            drainOnQueue()
                            finish?()
                        })
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
