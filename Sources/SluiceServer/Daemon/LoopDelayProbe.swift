import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Synchronization

/// Measures how late the event loops run a task: one of the daemon's own load signals.
///
/// Each ``sample()`` queues a task on every loop and returns the longest delay seen since the
/// previous sample, counting a task still waiting as late by the time it has waited so far, so a
/// loop blocked for longer than the sampling interval is not missed.
final class LoopDelayProbe: Sendable {
    let loops: [any EventLoop]
    /// When each loop's pending task was queued (uptime ns); 0 when none is pending. Read and
    /// written once per loop per sample: a lock costs nothing here.
    let pending: NIOLockedValueBox<[Int64]>
    /// The longest delay completed since the last sample (ns).
    let longest = Synchronization.Atomic<Int64>(0)

    init(group: MultiThreadedEventLoopGroup) {
        loops = Array(group.makeIterator())
        pending = NIOLockedValueBox(Array(repeating: 0, count: loops.count))
    }

    /// The longest delay (ns) since the last call; starts the next measurement.
    func sample() -> Int64 {
        let now = Self.now()
        var delay = longest.exchange(0, ordering: .relaxed)
        for (index, loop) in loops.enumerated() {
            let queued = pending.withLockedValue { pending in
                defer { if pending[index] == 0 { pending[index] = now } }
                return pending[index]
            }
            if queued != 0 {
                delay = max(delay, now - queued)
                continue
            }
            loop.execute { [self] in
                let waited = Self.now() - now
                pending.withLockedValue { $0[index] = 0 }
                var current = longest.load(ordering: .relaxed)
                while waited > current {
                    let (exchanged, original) = longest.compareExchange(expected: current, desired: waited, ordering: .relaxed)
                    if exchanged { break }
                    current = original
                }
            }
        }
        return delay
    }

    static func now() -> Int64 { max(1, Int64(NIODeadline.now().uptimeNanoseconds)) }
}
