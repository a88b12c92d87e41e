import SluiceCore
import SluiceTestKit
import Testing

/// `LimiterTable.evaluate`: shadow mode's "would this be denied with the capacity scaled?".
@Suite(.computes) struct EvaluateTests {
    let second: Int64 = 1_000_000_000

    func evaluate(_ table: LimiterTable, _ key: Fingerprint, _ limit: BoundLimit, hits: UInt64 = 1, now: Int64,
                  factor: Double) -> Decision {
        withUnsafePointer(to: limit) {
            table.evaluate(key: key, limits: UnsafeBufferPointer(start: $0, count: 1), hits: hits, now: now, multiplier: 1, factor: factor)
        }
    }

    @Test(arguments: [Algorithm.gcra, .tokenBucket, .slidingWindow, .fixedWindow, .concurrency])
    func aQuarterOfTheCapacityIsFullAfterAQuarterOfTheChecks(algorithm: Algorithm) throws {
        let table = LimiterTable(shardCount: 4)
        let limit = BoundLimit.inline(try LimitSpec(limit: 100, period: 60 * second, algorithm: algorithm))
        let key = Fingerprint.of(tenant: "", key: "k")
        let now = 1_000 * second
        for used in 0..<40 {
            let shadow = evaluate(table, key, limit, now: now, factor: 0.25)
            // The 26th check would not fit in 25.
            #expect(shadow.allowed == (used < 25), "\(algorithm) after \(used)")
            if !shadow.allowed { #expect(shadow.reason == .overLimit) }
            #expect(table.check(key: key, limit: limit, hits: 1, now: now).allowed)
        }
        // Evaluating consumed nothing and counted no check.
        #expect(table.statistics().checks == 40)
        #expect(evaluate(table, key, limit, hits: 30, now: now, factor: 0.25).reason == .exceedsCapacity)
        #expect(evaluate(table, key, limit, hits: 30, now: now, factor: 1).allowed)
    }

    @Test func aKeyNeverSeenIsNotCreated() throws {
        let table = LimiterTable(shardCount: 4)
        let limit = BoundLimit.inline(try LimitSpec(limit: 10, period: second))
        #expect(evaluate(table, Fingerprint.of(tenant: "", key: "new"), limit, now: second, factor: 0.5).allowed)
        #expect(table.statistics().entries == 0)
    }
}
