import NIOCore
import Synchronization

/// What the daemon knows of one connection from outside its event loop: when it last received
/// bytes, whether it follows a stream, and a way to evict it. The connection tracker reads it
/// from any thread to pick the idlest connection when `max_connections` are open.
public final class ConnectionActivity: Sendable {
    /// The socket it arrived on.
    public let kind: ConnectionKind
    let lastRead = Atomic<UInt64>(NIODeadline.now().uptimeNanoseconds)
    let following = Atomic<Bool>(false)
    /// The connection.
    public let channel: any Channel

    /// The activity of `channel`, which arrived on a `kind` socket.
    public init(channel: any Channel, kind: ConnectionKind) {
        self.channel = channel
        self.kind = kind
    }

    /// Records bytes received now.
    @inline(__always)
    func touch(_ now: NIODeadline) { lastRead.store(now.uptimeNanoseconds, ordering: .relaxed) }

    /// How long since it last received bytes (zero while it follows a stream: it waits on the
    /// daemon, not the other way round).
    public func idle(at now: NIODeadline) -> TimeAmount {
        guard !following.load(ordering: .relaxed) else { return .zero }
        let last = lastRead.load(ordering: .relaxed)
        return .nanoseconds(Int64(clamping: now.uptimeNanoseconds &- min(last, now.uptimeNanoseconds)))
    }

    /// Closes the connection to make room for another (on its own event loop; counted as
    /// `evicted`).
    public func evict() { channel.pipeline.fireUserInboundEventTriggered(ConnectionEviction()) }
}

/// Asks a connection to close because the daemon needs its place (see ``ConnectionActivity/evict()``).
public struct ConnectionEviction: Sendable {}

/// Why the daemon closed a connection on its own.
public enum ConnectionEnd: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// Nothing was received for `server.idle_timeout`.
    case idle
    /// A frame was begun and not finished within `server.read_timeout`.
    case readTimeout
    /// `max_connections` were open and it had been idle the longest.
    case evicted
    /// Its answers could not be written for `server.write_timeout`: the client stopped reading.
    case writeTimeout
    /// It failed to authenticate `auth.max_failures` times, or was refused for its address.
    case unauthenticated

    /// The metric label.
    public var description: String {
        switch self {
        case .idle: "idle"
        case .readTimeout: "read_timeout"
        case .evicted: "evicted"
        case .writeTimeout: "write_timeout"
        case .unauthenticated: "unauthenticated"
        }
    }
}
