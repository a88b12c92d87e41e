import Foundation
#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import Testing

/// A task executor that runs each job on a thread no other job holds: an idle worker if one
/// waits, else a new thread; a worker idle for five seconds ends. It is the test process's
/// answer to Swift's pool of one thread per core (two in CI), on which every test runs by
/// default: a test that computes for seconds or blocks in a system call there halts every
/// other test, and the tests bound by time (Redis deadlines, stalled frames, leases) fail
/// for it. Work under ``OwnThreadsTrait`` runs here instead and shares the cores with the
/// rest through the kernel's scheduler.
public final class ElasticExecutor: TaskExecutor, @unchecked Sendable {
    public static let shared = ElasticExecutor(niceness: 0)
    /// For tests that compute for seconds: their threads run at nice 19, so the tests bound by
    /// time, the daemons and Redis servers get the cores first.
    public static let computing = ElasticExecutor(niceness: 19)

    /// The nice value of this executor's threads: on Linux a thread's own, set by the thread
    /// with `setpriority(PRIO_PROCESS, 0, n)`, and inherited by the threads it starts.
    let niceness: Int32

    init(niceness: Int32) {
        self.niceness = niceness
    }

    final class Worker: @unchecked Sendable {
        let wake = DispatchSemaphore(value: 0)
        /// Set by `enqueue` before `wake` is signalled; read by the worker after.
        var job: UnownedJob?
    }

    let idle = NIOLockedValueBox<[Worker]>([])

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if let worker = idle.withLockedValue({ $0.popLast() }) {
            worker.job = job
            worker.wake.signal()
        } else {
            Thread.detachNewThread { [self] in
                if niceness != 0 { setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, niceness) }
                work(first: job)
            }
        }
    }

    func work(first: UnownedJob) {
        let me = Worker()
        var job: UnownedJob? = first
        while let next = job {
            next.runSynchronously(on: asUnownedTaskExecutor())
            job = nil
            idle.withLockedValue { $0.append(me) }
            if me.wake.wait(timeout: .now() + 5) == .timedOut {
                let stillIdle = idle.withLockedValue { workers -> Bool in
                    guard let index = workers.firstIndex(where: { $0 === me }) else { return false }
                    workers.remove(at: index)
                    return true
                }
                if stillIdle { return }
                // Handed a job as the wait ended: its signal is on its way.
                me.wake.wait()
            }
            job = me.job
            me.job = nil
        }
    }
}

/// Permits for tests, taken without holding a thread: at most `width` tests hold one at once,
/// the others wait their turn.
public actor TestPermits {
    let width: Int
    var taken = 0
    var waiting: [CheckedContinuation<Void, Never>] = []

    public init(width: Int) {
        self.width = width
    }

    func take() async {
        if taken < width {
            taken += 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func give() {
        if waiting.isEmpty {
            taken -= 1
        } else {
            waiting.removeFirst().resume()
        }
    }
}

/// Runs each test of a suite on an ``ElasticExecutor``, at most a few such tests at once. For
/// suites whose tests block (child processes, SQLite's busy waits, `openssl`, `redis-cli`) or
/// compute for seconds: on the pool one such test held up every other test. Run all at once
/// on threads of their own they are a herd: a full run started some forty daemons, servers
/// and floods together, and the tests bound by time (connects within 5 s, Redis deadlines)
/// failed for it. Taking turns costs little: the rest of the suite runs on the pool meanwhile.
public struct OwnThreadsTrait: TestTrait, SuiteTrait, TestScoping {
    let executor: ElasticExecutor
    let permits: TestPermits

    public var isRecursive: Bool { true }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        guard !test.isSuite else { return try await function() }
        await permits.take()
        do {
            try await withTaskExecutorPreference(executor) { try await function() }
        } catch {
            await permits.give()
            throw error
        }
        await permits.give()
    }
}

/// Shared by every suite that carries the trait: the turns are the whole run's. Four at once,
/// or `SLUICE_TEST_TURNS` (scripts/test.sh gives the PostgreSQL suites two: their fleets of
/// daemons are held to propagation within a second).
let ownThreadsPermits = TestPermits(width: ProcessInfo.processInfo.environment["SLUICE_TEST_TURNS"].flatMap { Int($0) }.map { max(1, $0) } ?? 4)
let computingPermits = TestPermits(width: 2)

extension Trait where Self == OwnThreadsTrait {
    /// The test's work runs on threads of its own (``ElasticExecutor/shared``), not on Swift's
    /// pool, four such tests at a time.
    public static var ownThreads: Self { Self(executor: .shared, permits: ownThreadsPermits) }

    /// The same at a lower priority (``ElasticExecutor/computing``), two at a time: for suites
    /// whose tests compute for seconds (models, sketches, fuzz corpora, trace replays) and
    /// wait on no clock.
    public static var computes: Self { Self(executor: .computing, permits: computingPermits) }
}
