import NIOConcurrencyHelpers
import SluiceRedis
import Synchronization

/// What the Redis backend counts for `/metrics`: atomics bumped once per batch, and histograms
/// and error counts under a lock taken once per write to Redis (never per check), read at
/// scrape time.
final class RedisStatistics: Sendable {
    /// Upper bounds of the round-trip histogram (seconds): a pipelined write to its replies.
    static let latencyBounds: [Double] = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25, 0.5, 1]
    /// Upper bounds of the batch-size histogram (script calls in one write).
    static let sizeBounds: [Double] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 4_096]
    /// Every error kind, in a fixed order (the metric's `kind` label).
    static let errorKinds: [String] = [RedisClientError.Code.connectFailed, .connectionClosed, .protocolError, .timeout,
                                       .authenticationFailed, .unavailable, .scriptError].map(\.rawValue) + ["reply"]

    /// Checks decided in Redis, denied from the over-limit cache, and on the degraded path.
    let decided = Atomic<UInt64>(0)
    let cached = Atomic<UInt64>(0)
    let degraded = Atomic<UInt64>(0)
    /// Checks of rules decided on this daemon's own table (a rule's `backend: local`).
    let local = Atomic<UInt64>(0)
    /// Pipelined writes sent.
    let writes = Atomic<UInt64>(0)
    /// Times the breaker opened.
    let breakerOpened = Atomic<UInt64>(0)
    let errors = NIOLockedValueBox([UInt64](repeating: 0, count: RedisStatistics.errorKinds.count))
    let latency: Histogram
    let sizes: Histogram

    init() {
        latency = Histogram(bounds: Self.latencyBounds)
        sizes = Histogram(bounds: Self.sizeBounds)
    }

    /// Counts one failed write or error reply of kind `kind` (one of ``errorKinds``).
    func recordError(_ kind: String) {
        guard let index = Self.errorKinds.firstIndex(of: kind) else { return }
        errors.withLockedValue { $0[index] &+= 1 }
    }

    /// The count of errors of each kind.
    var errorCounts: [(kind: String, count: UInt64)] {
        Array(zip(Self.errorKinds, errors.withLockedValue { $0 }))
    }

    /// A cumulative histogram of fixed bounds, one atomic per bucket.
    final class Histogram: Sendable {
        let bounds: [Double]
        /// One more than `bounds` (the last is +Inf), and the sum of observations.
        let counts: NIOLockedValueBox<(buckets: [UInt64], sum: Double)>

        init(bounds: [Double]) {
            self.bounds = bounds
            counts = NIOLockedValueBox(([UInt64](repeating: 0, count: bounds.count + 1), 0))
        }

        func observe(_ value: Double) {
            let index = bounds.firstIndex { value <= $0 } ?? bounds.count
            counts.withLockedValue { counts in
                counts.buckets[index] &+= 1
                counts.sum += value.isFinite ? value : 0
            }
        }

        /// Cumulative counts by upper bound (the last +Inf), the sum and the count.
        func snapshot() -> (cumulative: [UInt64], sum: Double, count: UInt64) {
            let (buckets, sum) = counts.withLockedValue { $0 }
            var running: UInt64 = 0
            let cumulative = buckets.map { bucket -> UInt64 in
                running &+= bucket
                return running
            }
            return (cumulative, sum, running)
        }

        /// The histogram in the Prometheus text format.
        func exposition(name: String, help: String) -> String {
            let (cumulative, sum, count) = snapshot()
            var text = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
            for (bound, value) in zip(bounds, cumulative) { text += "\(name)_bucket{le=\"\(bound)\"} \(value)\n" }
            text += "\(name)_bucket{le=\"+Inf\"} \(count)\n\(name)_sum \(sum)\n\(name)_count \(count)\n"
            return text
        }
    }
}
