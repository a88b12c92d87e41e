import NIOConcurrencyHelpers

/// A Swift `Clock` that moves only when a test says so: a sleeper wakes when ``advance(by:)``
/// takes the clock past its deadline, or throws `CancellationError` when its task is cancelled.
/// For services whose timers a test drives (``ManualClock`` is the request-time counterpart).
public final class TestClock: Clock, Sendable {
    public struct Instant: InstantProtocol, Sendable {
        public var offset: Duration
        public init(offset: Duration) { self.offset = offset }
        public func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        public func duration(to other: Instant) -> Duration { other.offset - offset }
        public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    struct Sleeper {
        let id: UInt64
        let deadline: Instant
        let continuation: CheckedContinuation<Void, any Error>
    }

    struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Sleeper] = []
        var nextID: UInt64 = 0
        /// Sleeps begun in all (a test waits for the n-th to know a service is idle again).
        var sleepsBegun = 0
        var cancelled: Set<UInt64> = []
    }

    let state = NIOLockedValueBox(State())
    /// Sleeps shorter than this pass in real time (the clock's `now` does not move for them).
    let liveBelow: Duration?

    /// A clock at zero. With `liveBelow`, sleeps shorter than it pass in real time and only
    /// longer ones wait for ``advance(by:)``: a daemon's fast engines (commits, event pumps) run
    /// as usual while its slow ones (a tick a test makes by hand, snapshots) wait for the test.
    public init(liveBelow: Duration? = nil) { self.liveBelow = liveBelow }

    public var now: Instant { state.withLockedValue { $0.now } }
    public var minimumResolution: Duration { .nanoseconds(1) }

    /// Sleeps begun so far.
    public var sleepsBegun: Int { state.withLockedValue { $0.sleepsBegun } }

    public func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        if let liveBelow, now.duration(to: deadline) < liveBelow {
            state.withLockedValue { $0.sleepsBegun += 1 }
            try await Task.sleep(for: now.duration(to: deadline))
            return
        }
        let id = state.withLockedValue { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resume: Result<Void, any Error>? = state.withLockedValue { state in
                    state.sleepsBegun += 1
                    if state.cancelled.remove(id) != nil { return .failure(CancellationError()) }
                    if deadline <= state.now { return .success(()) }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return nil
                }
                if let resume { continuation.resume(with: resume) }
            }
        } onCancel: {
            let sleeper = state.withLockedValue { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else {
                    state.cancelled.insert(id)   // cancelled before it was registered
                    return nil
                }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves the clock forward and wakes every sleeper whose deadline it passed.
    public func advance(by duration: Duration) {
        let woken = state.withLockedValue { state -> [Sleeper] in
            state.now = state.now.advanced(by: duration)
            let now = state.now
            let woken = state.sleepers.filter { $0.deadline <= now }
            state.sleepers.removeAll { $0.deadline <= now }
            return woken
        }
        for sleeper in woken { sleeper.continuation.resume() }
    }

    /// Waits (in real time, up to `timeout`) until `count` sleeps have begun in all.
    public func waitForSleeps(_ count: Int, timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while sleepsBegun < count {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return true
    }
}
