import Foundation

/// Runs `body` on a thread of its own and waits for it without holding a thread of Swift's
/// concurrency pool. Every test runs on that pool, and on a two-core machine it has two
/// threads: a test that blocks one (a child process waited for, a socket read, a replay that
/// computes for seconds) halts every other test, and the tests bound by time fail for it.
///
/// Not `DispatchQueue.global()`: on Linux the pool's jobs run on the same threads as that
/// queue's, so blocking there starves the pool just the same (measured: four blocked global
/// work items held four 10 ms tasks for the whole 3 s they slept).
public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// ``blocking(_:)`` for work that does not throw.
public func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(returning: body())
        }
    }
}
