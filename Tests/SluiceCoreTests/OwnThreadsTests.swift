import Foundation
#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import SluiceTestKit
import Testing

/// The test process's executor for work that blocks: jobs that block at once each hold a thread
/// of their own, where Swift's pool has one per core.
@Suite("Own threads (the tests' executor)", .ownThreads)
struct OwnThreadsTests {
    @Test("eight tasks that each block until all eight are blocked all get there", .ownThreads)
    func blockedTasksEachHaveAThread() async throws {
        let arrived = NIOLockedValueBox(0)
        let all = DispatchSemaphore(value: 0)
        let met = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    // A blocking wait, as a child process or SQLite's busy handler does.
                    let last = arrived.withLockedValue { count -> Bool in
                        count += 1
                        return count == 8
                    }
                    if last { for _ in 0..<8 { all.signal() } }
                    return all.wait(timeout: .now() + 30) == .success
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(met == Array(repeating: true, count: 8))
    }

    @Test("work under .computes runs at nice 19, under .ownThreads at the process's own", .computes)
    func niceness() async {
        #expect(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) == 19)
        let plain = await Task { @Sendable () -> Int32 in
            await withTaskExecutorPreference(ElasticExecutor.shared) { getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) }
        }.value
        #expect(plain == getpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(getpid())))
    }

    @Test("an idle worker takes the next job, and a job's result comes back to its task", .ownThreads)
    func reuse() async {
        var total = 0
        for index in 1...100 {
            total += await Task { index }.value
            try? await Task.sleep(for: .milliseconds(1))
        }
        #expect(total == 5_050)
    }
}
