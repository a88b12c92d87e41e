import NIOConcurrencyHelpers
import NIOCore
import SluiceWire

/// Tracks open connections across every listener so shutdown can drain them.
///
/// NIOExtras' ServerQuiescingHelper collects the children of a single server channel and fails
/// a promise from its deinit; the daemon has several listeners and outlives its event loops, so
/// it keeps this small registry instead.
final class ConnectionTracker: Sendable {
    struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        /// What the handlers record of each connection (for eviction).
        var activities: [ObjectIdentifier: ConnectionActivity] = [:]
        var draining = false
    }

    let state = NIOLockedValueBox(State())

    /// Registers `channel`; returns false (and registers nothing) once draining has begun.
    func add(_ channel: any Channel, activity: ConnectionActivity? = nil) -> Bool {
        let id = ObjectIdentifier(channel)
        let added = state.withLockedValue { state -> Bool in
            guard !state.draining else { return false }
            state.channels[id] = channel
            if let activity { state.activities[id] = activity }
            return true
        }
        if added {
            channel.closeFuture.whenComplete { _ in
                self.state.withLockedValue {
                    $0.channels.removeValue(forKey: id)
                    $0.activities.removeValue(forKey: id)
                }
            }
        }
        return added
    }

    /// Refuses connections from now on (and makes /readyz say so).
    func beginDraining() {
        state.withLockedValue { $0.draining = true }
    }

    /// Whether shutdown has begun.
    var isDraining: Bool { state.withLockedValue { $0.draining } }

    /// Asks every open connection to answer what it has read and close, waits up to `deadline`
    /// for them, then closes whatever is left.
    func drain(deadline: TimeAmount) async {
        let channels = state.withLockedValue { state in
            state.draining = true
            return Array(state.channels.values)
        }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let waitAll = Task {
            for channel in channels { try? await channel.closeFuture.get() }
        }
        let timer = Task {
            // Cancelled when every connection closed in time: then there is nothing to close
            // (and the event loops may already be gone).
            guard (try? await Task.sleep(for: .nanoseconds(deadline.nanoseconds))) != nil else { return }
            for channel in channels { try? await channel.close() }
        }
        await waitAll.value
        timer.cancel()
    }

    /// Connections open now.
    var count: Int { state.withLockedValue { $0.channels.count } }

    /// Evicts the TCP connection that has received nothing for the longest, if that is at least
    /// `idle`, to make room for a new one; returns whether one was evicted. Connections that
    /// follow a stream and Unix socket connections are never evicted.
    ///
    /// - Complexity: O(n) in the connections open (called only when `max_connections` are).
    func evictIdlest(idleAtLeast idle: TimeAmount) -> Bool {
        let now = NIODeadline.now()
        let idlest = state.withLockedValue { state -> ConnectionActivity? in
            var best: (ConnectionActivity, TimeAmount)?
            for activity in state.activities.values where activity.kind == .tcp {
                let waited = activity.idle(at: now)
                if waited >= idle, waited > (best?.1 ?? .zero) { best = (activity, waited) }
            }
            // Taken out now, so that two connections arriving together evict two.
            if let best { state.activities.removeValue(forKey: ObjectIdentifier(best.0.channel)) }
            return best?.0
        }
        idlest?.evict()
        return idlest != nil
    }
}
