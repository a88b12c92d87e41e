#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Monotonic time expressed as nanoseconds since the Unix epoch: the wall clock is read once at
/// start and the monotonic clock after that, so time never jumps when NTP steps the wall clock,
/// yet fixed windows still align to real minutes and days.
public struct TimeSource: Sendable {
    @usableFromInline let wallAtStart: Int64
    @usableFromInline let monotonicAtStart: Int64

    /// Anchors the monotonic clock to the wall clock now.
    public init() {
        wallAtStart = Self.read(CLOCK_REALTIME)
        monotonicAtStart = Self.read(CLOCK_MONOTONIC)
    }

    /// Now, in nanoseconds since the epoch.
    @inlinable
    public func now() -> Int64 { wallAtStart &+ (Self.read(CLOCK_MONOTONIC) &- monotonicAtStart) }

    /// Nanoseconds since start.
    public func uptime() -> Int64 { Self.read(CLOCK_MONOTONIC) &- monotonicAtStart }

    @usableFromInline
    static func read(_ clock: clockid_t) -> Int64 {
        var spec = timespec()
        clock_gettime(clock, &spec)
        return Int64(spec.tv_sec) &* 1_000_000_000 &+ Int64(spec.tv_nsec)
    }
}
