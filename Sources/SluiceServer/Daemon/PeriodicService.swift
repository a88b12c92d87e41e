@preconcurrency import Dispatch
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// A background engine's timer as a service-lifecycle `Service`: every `interval` on `clock`, it
/// runs `tick` on the engine's serial Dispatch queue (where everything else the engine does runs,
/// so nothing it does runs concurrently with itself), until graceful shutdown reaches it; then it
/// runs `finish` there once (a last commit, a last snapshot, the last events drained). Every
/// timer of the daemon is one of these, started and stopped in order by the daemon's one
/// `ServiceGroup`.
///
/// The interval is read before each wait, so a reload that changes it takes effect at the next
/// turn. The clock is injected: tests drive it by hand.
struct PeriodicService<C: Clock>: Service, CustomStringConvertible where C.Duration == Duration {
    let description: String
    let clock: C
    let queue: DispatchQueue
    let interval: @Sendable () -> Duration
    let tick: @Sendable () -> Void
    let finish: (@Sendable () -> Void)?

    init(_ name: String, every interval: @escaping @Sendable () -> Duration, on queue: DispatchQueue, clock: C,
         tick: @escaping @Sendable () -> Void, finish: (@Sendable () -> Void)? = nil) {
        self.description = name
        self.clock = clock
        self.queue = queue
        self.interval = interval
        self.tick = tick
        self.finish = finish
    }

    func run() async throws {
        // The loop runs on the engine's queue itself: a tick is a job on that queue, so it is
        // serialised with the engine's other work without a further hop between threads.
        await withTaskExecutorPreference(QueueTaskExecutor(queue: queue)) { [self] in
            // Cancelled by graceful shutdown (or by the group's cancellation): the wait throws.
            try? await cancelWhenGracefulShutdown { [self] in
                while !Task.isCancelled {
                    try await clock.sleep(for: max(interval(), .milliseconds(1)))
                    guard !Task.isCancelled else { return }
                    tick()
                }
            }
            finish?()
        }
    }
}

/// One shutdown step of a running daemon: it runs until graceful shutdown reaches it, then
/// carries out its step (stop accepting and drain, close the metrics endpoint).
struct ShutdownStep: Service, CustomStringConvertible {
    let description: String
    let step: @Sendable () async -> Void

    func run() async throws {
        try? await gracefulShutdown()
        await step()
    }
}

/// A service group running from the moment it is made until ``shutdown()``: the daemon's
/// (every background engine, then the metrics endpoint, the SIGHUP reloader and the listeners)
/// and a standalone dispatcher's (its engines alone). Graceful shutdown stops the services in
/// reverse order, each after the one started after it has finished.
///
/// The group and its services run on a Dispatch queue of their own, not on the shared
/// cooperative pool: an embedder (or a test process) that keeps the pool's few threads busy
/// must not stop the timers that commit, snapshot and drain.
final class RunningServices: Sendable {
    let group: ServiceGroup
    let task: Task<Void, Never>

    init(_ services: [any Service], logger: Logger) {
        let group = ServiceGroup(services: services, logger: logger)
        self.group = group
        task = Task(executorPreference: QueueTaskExecutor(queue: DispatchQueue(label: "sluice.services"))) {
            do {
                try await group.run()
            } catch {
                logger.error("a background service failed; the others were stopped", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Starts the graceful shutdown and returns at once.
    func beginShutdown() {
        Task { [group] in await group.triggerGracefulShutdown() }
    }

    /// Shuts every service down in order and returns when the last has finished.
    func shutdown() async {
        await group.triggerGracefulShutdown()
        await task.value
    }

    /// Returns when the group has finished (after a shutdown someone else began).
    func finished() async { await task.value }
}

/// Runs the jobs of tasks that prefer it on a Dispatch queue.
final class QueueTaskExecutor: TaskExecutor {
    let queue: DispatchQueue

    init(queue: DispatchQueue) { self.queue = queue }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { [self] in job.runSynchronously(on: asUnownedTaskExecutor()) }
    }
}

/// The daemon's clock for its timers: continuous time, with each wait a Dispatch timer on a
/// serial queue of its own rather than Swift concurrency's default sleep. That sleep wakes on the
/// shared global pool, and libdispatch's monitor of that pool reads `/proc/self/task/*/stat`:
/// out of descriptors (a flood of connections), it could not open the file and crashed the
/// daemon (HardeningProcessTests' descriptor exhaustion, one run in four).
struct DispatchClock: Clock {
    typealias Instant = ContinuousClock.Instant
    typealias Duration = Swift.Duration

    static let queue = DispatchQueue(label: "sluice.timers")

    var now: Instant { ContinuousClock.now }
    var minimumResolution: Duration { ContinuousClock().minimumResolution }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let wait = ContinuousClock.now.duration(to: deadline)
        let once = NIOLockedValueBox<CheckedContinuation<Void, any Error>?>(nil)
        let cancelled = NIOLockedValueBox(false)
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let early = cancelled.withLockedValue { cancelled -> Bool in
                    if !cancelled { once.withLockedValue { $0 = continuation } }
                    return cancelled
                }
                if early { return continuation.resume(throwing: CancellationError()) }
                let nanoseconds = max(0, wait.components.seconds &* 1_000_000_000 &+ wait.components.attoseconds / 1_000_000_000)
                Self.queue.asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: nanoseconds))) {
                    once.withLockedValue { pending in
                        defer { pending = nil }
                        return pending
                    }?.resume()
                }
            }
        } onCancel: {
            cancelled.withLockedValue { $0 = true }
            once.withLockedValue { pending in
                defer { pending = nil }
                return pending
            }?.resume(throwing: CancellationError())
        }
    }
}
