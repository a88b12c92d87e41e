import CSluiceSupport
@preconcurrency import Dispatch
import NIOConcurrencyHelpers

/// Gives the memory of closed connections back to the system. A client that never reads leaves
/// a megabyte or so of answers queued; freed when it closes, glibc kept it in its arenas (50 such
/// clients left 175 MB resident). From start, buffers of 128 KiB and more are mapped on their own
/// and unmapped when freed; and every `interval` in which connections closed, the arenas' free
/// memory is returned (`malloc_trim`), off the event loops.
final class MemoryReturner: Sendable {
    let counters: ServerCounters
    let queue = DispatchQueue(label: "sluice.memory", qos: .background)
    let state = NIOLockedValueBox<(seenOpen: UInt64, seenTotal: UInt64)>((0, 0))

    init(counters: ServerCounters) {
        self.counters = counters
        _ = sluice_malloc_map_from(128 << 10)
    }

    /// Looks every `interval` (the daemon's `memory-returner` service).
    func service<C: Clock>(clock: C, interval: Duration = .seconds(10)) -> PeriodicService<C> where C.Duration == Duration {
        PeriodicService("memory-returner", every: { interval }, on: queue, clock: clock, tick: { [self] in trimIfConnectionsClosed() })
    }

    /// Trims when a connection closed since the last look (the accepted total grew by more than
    /// the open count did).
    func trimIfConnectionsClosed() {
        let open = counters.connectionsOpen.load(ordering: .relaxed)
        let total = counters.connectionsTotal.load(ordering: .relaxed)
        let closed = state.withLockedValue { state -> Bool in
            defer { state.seenOpen = open; state.seenTotal = total }
            return Int64(truncatingIfNeeded: total &- state.seenTotal) > Int64(truncatingIfNeeded: open &- state.seenOpen)
        }
        if closed { _ = sluice_malloc_trim() }
    }
}
