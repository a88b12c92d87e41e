import NIOConcurrencyHelpers

/// A clock that moves only when a test says so, in nanoseconds since the epoch.
public final class ManualClock: Sendable {
    private let current: NIOLockedValueBox<Int64>

    /// A clock at `start` (default: 2026-01-01T00:00:00Z, well inside any window arithmetic).
    public init(start: Int64 = 1_767_225_600_000_000_000) { current = NIOLockedValueBox(start) }

    /// The current time.
    public var now: Int64 { current.withLockedValue { $0 } }

    /// Sets the clock to `nanoseconds` (a test stepping through a timeline it lays out itself).
    public func reset(to nanoseconds: Int64) { current.withLockedValue { $0 = nanoseconds } }

    /// Moves the clock forward by `nanoseconds`.
    public func advance(by nanoseconds: Int64) { current.withLockedValue { $0 += nanoseconds } }

    /// Moves the clock forward by milliseconds.
    public func advance(ms: Int64) { advance(by: ms * 1_000_000) }
}

/// A small deterministic random generator (SplitMix64), so failing sequences can be replayed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    /// A generator starting from `seed`.
    public init(seed: UInt64) { state = seed }
    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
