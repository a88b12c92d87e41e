import SluiceProto
import SluiceWire
import Synchronization

/// Counters the connection layer bumps; the table keeps its own per shard, and checks are
/// counted per thread (``LiveState``).
public final class ServerCounters: Sendable {
    static let codeSlots = 16
    /// Connections open now.
    public let connectionsOpen = Synchronization.Atomic<UInt64>(0)
    /// Connections accepted since start.
    public let connectionsTotal = Synchronization.Atomic<UInt64>(0)
    /// Connections refused because `max_connections` were open.
    public let connectionsRefused = Synchronization.Atomic<UInt64>(0)
    /// Connections refused because the daemon was shutting down.
    public let connectionsRefusedShuttingDown = Synchronization.Atomic<UInt64>(0)
    /// Requests answered.
    public let requests = Synchronization.Atomic<UInt64>(0)
    /// Error answers by code (index: the code's number; the last slot takes unknown numbers).
    let errors = CounterBlock(count: codeSlots)
    /// Connections the daemon closed on its own, by ``ConnectionEnd``.
    let ended = CounterBlock(count: ConnectionEnd.allCases.count)
    /// Accepts that failed for want of descriptors (EMFILE, ENFILE) or memory.
    public let acceptErrors = Synchronization.Atomic<UInt64>(0)
    /// Connections refused on the Unix sockets past `max_connections` plus `server.unix_reserve`.
    public let connectionsRefusedUnix = Synchronization.Atomic<UInt64>(0)

    /// All zero.
    public init() {}


    /// Counts one error answer.
    public func recordError(_ code: WireError.Code) {
        errors.add(min(max(0, code.rawValue), Self.codeSlots - 1))
    }

    /// Counts a connection the daemon closed on its own.
    public func recordEnd(_ reason: ConnectionEnd) { ended.add(reason.rawValue) }

    /// Connections the daemon closed on its own since start, for `reason`.
    public func ends(_ reason: ConnectionEnd) -> UInt64 { ended.read(reason.rawValue) }

    /// Error answers since start, whatever their code.
    public var errorTotal: UInt64 { (0..<Self.codeSlots).reduce(0) { $0 &+ errors.read($1) } }

    /// Error answers since start by code name (`CODE_UNKNOWN_RULE` …), codes never answered left out.
    public func errorsByCode() -> [(code: String, count: UInt64)] {
        (0..<Self.codeSlots).compactMap { index in
            let count = errors.read(index)
            guard count > 0 else { return nil }
            let code = WireError.Code(rawValue: index) ?? .UNRECOGNIZED(index)
            return (code.name, count)
        }
    }
}
