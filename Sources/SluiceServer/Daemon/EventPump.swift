@preconcurrency import Dispatch
import SluiceCore
import Synchronization

/// Drains an ``EventTap`` (or any ``EventSource``) on a background Dispatch queue and hands the events, in batches, to a
/// consumer (reputation, anomaly scoring and the like). The hot path only ever offers to the tap;
/// everything slow happens here, off the event loops. The pump keeps no timer: its
/// ``service(_:clock:finish:)`` drains it every ``interval`` in the daemon's service group, and
/// every ``idleInterval`` once ``quietTurnsBeforeIdle`` drains in a row found nothing (an idle
/// daemon does not wake a hundred times a second; the first events after a quiet spell wait at
/// most ``idleInterval``, in a tap that holds far more than that).
public final class EventPump<Element: Sendable>: Sendable {
    let tap: any EventSource<Element>
    let queue: DispatchQueue
    /// How often its service drains the tap.
    let interval: Duration
    let batchLimit: Int
    let consumer: @Sendable ([Element]) -> Void
    /// Drains in a row that found nothing.
    let quietTurns = Atomic<Int>(0)

    /// The wait between drains once the tap has been empty for ``quietTurnsBeforeIdle`` drains.
    static var idleInterval: Duration { .milliseconds(100) }
    static var quietTurnsBeforeIdle: Int { 10 }

    /// The wait before the next drain: ``interval`` while events come, longer once they stop.
    var nextWait: Duration {
        quietTurns.load(ordering: .relaxed) >= Self.quietTurnsBeforeIdle ? max(interval, Self.idleInterval) : interval
    }

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
        PeriodicService(name, every: { [self] in nextWait }, on: queue, clock: clock, tick: { [self] in
                            if drainOnQueue() {
                                quietTurns.store(0, ordering: .relaxed)
                            } else {
                                quietTurns.add(1, ordering: .relaxed)
                            }
                        },
                        finish: { [self] in
                            drainOnQueue()
                            finish?()
                        })
    }

    /// Drains the tap now, on the pump's queue, and returns when the consumer is done.
    public func drainNow() {
        queue.sync { _ = drainOnQueue() }
    }

    /// Drains the tap; returns whether there was anything in it.
    @discardableResult
    func drainOnQueue() -> Bool {
        var drained = false
        while true {
            let batch = tap.drain(limit: batchLimit)
            if batch.isEmpty { return drained }
            drained = true
            consumer(batch)
            if batch.count < batchLimit { return drained }
        }
    }
}
