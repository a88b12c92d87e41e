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
    let state = NIOLockedValueBox<(timer: (any DispatchSourceTimer)?, seenOpen: UInt64, seenTotal: UInt64)>((nil, 0, 0))

    init(counters: ServerCounters) {
        self.counters = counters
        _ = sluice_malloc_map_from(128 << 10)
    }

    func start(interval: DispatchTimeInterval = .seconds(10)) {
        let source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now() + interval, repeating: interval, leeway: .seconds(1))
        source.setEventHandler { [self] in trimIfConnectionsClosed() }
        source.resume()
        state.withLockedValue { $0.timer = source }
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

    func stop() {
        let timer = state.withLockedValue { state -> (any DispatchSourceTimer)? in
            defer { state.timer = nil }
            return state.timer
        }
        timer?.cancel()
    }
}
