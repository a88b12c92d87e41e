import Testing
import SluiceTestKit
@testable import SluiceCore

@Suite("Batches", .computes)
struct BatchTests {
    /// 8 and 256 shards group a batch by counting sort, 1,024 by comparison sort.
    @Test("a batch decides exactly as one check at a time: same verdicts, leases in the same places, same state after",
          arguments: [1, 7, 100, 1_000], [8, 256, 1_024])
    func batchEqualsSequential(size: Int, shards: Int) throws {
        let second: Int64 = 1_000_000_000
        let limits: [BatchCheck.Limits] = [
            .single(.inline(try LimitSpec(limit: 3, period: second))),
            .single(.inline(try LimitSpec(limit: 5, period: 10 * second, algorithm: .slidingWindow))),
            .single(.inline(try LimitSpec(limit: 2, period: 5 * second, algorithm: .concurrency))),
            .rule([.rule("r", index: 0, spec: try LimitSpec(limit: 4, period: second, burst: 2)),
                   .rule("r", index: 1, spec: try LimitSpec(limit: 6, period: 60 * second, algorithm: .fixedWindow))]),
        ]
        var random = SeededGenerator(seed: UInt64(size))
        let sequential = LimiterTable(shardCount: shards, maxEntries: 10_000 * shards, seed: 1)
        let batched = LimiterTable(shardCount: shards, maxEntries: 10_000 * shards, seed: 1)
        var now: Int64 = 1_767_225_600_000_000_000
        for round in 0..<30 {
            now += Int64.random(in: 0...(2 * second), using: &random)
            let batch = (0..<size).map { _ in
                BatchCheck(key: .of(tenant: "", key: "k\(Int.random(in: 0..<(5 * shards), using: &random))"),
                           limits: limits[Int.random(in: 0..<limits.count, using: &random)],
                           hits: UInt64.random(in: 0...2, using: &random), now: now,
                           skip: Int.random(in: 0..<20, using: &random) == 0)
            }
            let expected: [Decision?] = batch.map { item in
                guard !item.skip else { return nil }
                switch item.limits {
                case .single(let limit): return sequential.check(key: item.key, limit: limit, hits: item.hits, now: item.now)
                case .rule(let limits): return sequential.check(key: item.key, limits: limits, hits: item.hits, now: item.now)
                }
            }
            var decisions = [Decision](repeating: .blocked(), count: size)
            batch.withUnsafeBufferPointer { items in decisions.withUnsafeMutableBufferPointer { batched.check(batch: items, into: $0) } }
            for index in 0..<size {
                if var want = expected[index] {
                    // Lease ids are unguessable, so every table has its own: compare where they are.
                    #expect((decisions[index].leaseID == 0) == (want.leaseID == 0), "round \(round) check \(index)")
                    want.leaseID = decisions[index].leaseID
                    #expect(decisions[index] == want, "round \(round) check \(index)")
                } else {
                    #expect(decisions[index] == .blocked(), "a skipped check is left alone")
                }
            }
        }
        #expect(sequential.statistics().entries == batched.statistics().entries)
        #expect(sequential.statistics().allowed == batched.statistics().allowed)
        #expect(sequential.statistics().reclaimed == batched.statistics().reclaimed)
    }
}
