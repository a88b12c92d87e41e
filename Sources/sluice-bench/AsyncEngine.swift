import Dispatch
import NIOConcurrencyHelpers

/// What the Swift-client engines (`nio`, `grpc`) share: running their async load from the
/// command's synchronous entry, and their latency percentiles.
enum AsyncEngine {
    /// Runs `work` on the cooperative pool and waits for it here.
    static func block<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
        let outcome = NIOLockedValueBox<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do {
                let value = try await work()
                outcome.withLockedValue { $0 = .success(value) }
            } catch {
                outcome.withLockedValue { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        return try outcome.withLockedValue { $0! }.get()
    }

    /// p50, p99 and p99.9 of `latencies` (ns), in µs.
    static func percentiles(_ latencies: [Int64]) -> [String: Double] {
        let sorted = latencies.sorted()
        func percentile(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1_000
        }
        return ["p50": percentile(0.5), "p99": percentile(0.99), "p999": percentile(0.999)]
    }

    /// A duration's nanoseconds.
    static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    }
}
