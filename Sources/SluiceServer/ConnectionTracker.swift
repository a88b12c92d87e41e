import NIOConcurrencyHelpers
import NIOCore

/// Tracks open connections across every listener so shutdown can drain them.
///
/// NIOExtras' ServerQuiescingHelper collects the children of a single server channel and fails
/// a promise from its deinit; the daemon has several listeners and outlives its event loops, so
/// it keeps this small registry instead.
final class ConnectionTracker: Sendable {
    struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var draining = false
    }

    let state = NIOLockedValueBox(State())

    /// Registers `channel`; returns false (and registers nothing) once draining has begun.
    func add(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let added = state.withLockedValue { state -> Bool in
            guard !state.draining else { return false }
            state.channels[id] = channel
            return true
        }
        if added {
            channel.closeFuture.whenComplete { _ in
                _ = self.state.withLockedValue { $0.channels.removeValue(forKey: id) }
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
}
