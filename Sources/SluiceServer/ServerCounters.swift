import Synchronization

/// Counters the connection layer bumps; the table keeps its own per shard.
public final class ServerCounters: Sendable {
    /// Connections open now.
    public let connectionsOpen = Atomic<UInt64>(0)
    /// Connections accepted since start.
    public let connectionsTotal = Atomic<UInt64>(0)
    /// Connections refused because `max_connections` were open.
    public let connectionsRefused = Atomic<UInt64>(0)
    /// Requests answered.
    public let requests = Atomic<UInt64>(0)
    /// Requests answered with an error (including frames that did not decode).
    public let errors = Atomic<UInt64>(0)

    /// All zero.
    public init() {}
}
