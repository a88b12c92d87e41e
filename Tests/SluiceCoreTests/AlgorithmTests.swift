import Testing
import SluiceTestKit
@testable import SluiceCore

private let second: Int64 = 1_000_000_000
private let start: Int64 = 1_767_225_600_000_000_000

@Suite("Algorithms", .computes)
struct AlgorithmTests {
    static let bucketAlgorithms: [Algorithm] = [.gcra, .tokenBucket]

    @Test("from empty exactly burst single hits pass; the next waits period/limit", arguments: bucketAlgorithms)
    func burstThenSpacing(algorithm: Algorithm) throws {
        let spec = try LimitSpec(limit: 10, period: second, burst: 20, algorithm: algorithm)
        var state = AnyState.fresh(spec, now: start)
        for i in 0..<20 {
            let (decision, next) = state.evaluate(hits: 1, now: start, spec: spec)
            #expect(decision.allowed, "hit \(i) should pass")
            #expect(decision.remaining == UInt64(19 - i))
            state = next
        }
        let (denied, unchanged) = state.evaluate(hits: 1, now: start, spec: spec)
        #expect(!denied.allowed)
        #expect(denied.reason == .overLimit)
        #expect(denied.retryAfter == second / 10)
        #expect(unchanged == state, "a denied check consumes nothing")
        let (early, _) = state.evaluate(hits: 1, now: start + second / 10 - 1, spec: spec)
        #expect(!early.allowed)
        let (again, _) = state.evaluate(hits: 1, now: start + second / 10, spec: spec)
        #expect(again.allowed)
    }

    @Test("a check larger than what is left is denied and consumes nothing", arguments: Algorithm.allCases)
    func partialConsumesNothing(algorithm: Algorithm) throws {
        let spec = try LimitSpec(limit: 5, period: 60 * second, algorithm: algorithm)
        var state = AnyState.fresh(spec, now: start)
        let (first, afterThree) = state.evaluate(hits: 3, now: start, spec: spec, leaseID: 1)
        #expect(first.allowed)
        state = afterThree
        let (second, unchanged) = state.evaluate(hits: 3, now: start, spec: spec, leaseID: 2)
        #expect(!second.allowed)
        #expect(second.remaining == 2)
        #expect(unchanged == state)
        let (third, _) = state.evaluate(hits: 2, now: start, spec: spec, leaseID: 3)
        #expect(third.allowed)
        #expect(third.remaining == 0)
    }

    @Test("hits above capacity are denied as such, with no retry", arguments: Algorithm.allCases)
    func exceedsCapacity(algorithm: Algorithm) throws {
        let spec = try LimitSpec(limit: 5, period: second, algorithm: algorithm)
        let (decision, _) = AnyState.fresh(spec, now: start).evaluate(hits: 6, now: start, spec: spec)
        #expect(!decision.allowed)
        #expect(decision.reason == .exceedsCapacity)
        #expect(decision.retryAfter == 0)
        #expect(decision.remaining == 5)
    }

    @Test("hits 0 peeks and never consumes", arguments: Algorithm.allCases)
    func peek(algorithm: Algorithm) throws {
        let spec = try LimitSpec(limit: 2, period: second, algorithm: algorithm)
        var state = AnyState.fresh(spec, now: start)
        for _ in 0..<5 {
            let (decision, next) = state.evaluate(hits: 0, now: start, spec: spec)
            #expect(decision.allowed)
            #expect(decision.remaining == 2)
            if algorithm == .gcra || algorithm == .concurrency { #expect(next == state) }
            state = next
        }
        state = state.evaluate(hits: 2, now: start, spec: spec, leaseID: 9).1
        let (full, _) = state.evaluate(hits: 0, now: start, spec: spec)
        #expect(!full.allowed)
        #expect(full.remaining == 0)
        #expect(full.retryAfter > 0)
    }

    @Test("fixed windows reset on epoch-aligned boundaries")
    func fixedWindowBoundary() throws {
        let spec = try LimitSpec(limit: 3, period: 60 * second, algorithm: .fixedWindow)
        let t = start + 59 * second // one second before a minute boundary
        var state = AnyState.fresh(spec, now: t)
        for _ in 0..<3 { state = state.evaluate(hits: 1, now: t, spec: spec).1 }
        let (denied, _) = state.evaluate(hits: 1, now: t, spec: spec)
        #expect(!denied.allowed)
        #expect(denied.retryAfter == second)
        #expect(denied.resetAfter == second)
        let (allowed, _) = state.evaluate(hits: 1, now: t + second, spec: spec)
        #expect(allowed.allowed)
        #expect(allowed.remaining == 2)
    }

    @Test("sliding window weighs the previous window by its overlap")
    func slidingWeights() throws {
        let spec = try LimitSpec(limit: 10, period: 10 * second, algorithm: .slidingWindow)
        var state = AnyState.fresh(spec, now: start)
        for _ in 0..<10 { state = state.evaluate(hits: 1, now: start, spec: spec).1 }
        // A quarter into the next window, 75 % of the previous 10 still count: 7.5 → 2 fit.
        let quarter = start + 12_500_000_000
        let (first, s1) = state.evaluate(hits: 2, now: quarter, spec: spec)
        #expect(first.allowed)
        #expect(first.remaining == 0)
        let (second, _) = s1.evaluate(hits: 1, now: quarter, spec: spec)
        #expect(!second.allowed)
        // 7.5 + 2 + 1 ≤ 10 once the weight is ≤ 7, i.e. 30 % into the window.
        #expect(second.retryAfter == 500_000_000)
    }

    @Test("concurrency leases expire after the TTL and can be released")
    func leases() throws {
        let spec = try LimitSpec(limit: 2, period: 30 * second, algorithm: .concurrency)
        var state = LeaseSet()
        let (a, s1) = state.evaluate(hits: 1, now: start, spec: spec, leaseID: 11)
        let (b, s2) = s1.evaluate(hits: 1, now: start + second, spec: spec, leaseID: 12)
        #expect(a.allowed && b.allowed)
        #expect(a.leaseID == 11 && b.leaseID == 12)
        state = s2
        let (c, _) = state.evaluate(hits: 1, now: start + second, spec: spec, leaseID: 13)
        #expect(!c.allowed)
        #expect(c.retryAfter == 29 * second, "the first lease expires at start + 30 s")
        let releasedOnce = state.release(11, now: start + 2 * second)
        let releasedTwice = state.release(11, now: start + 2 * second)
        #expect(releasedOnce)
        #expect(!releasedTwice, "a lease is released once")
        let (d, _) = state.evaluate(hits: 1, now: start + 2 * second, spec: spec, leaseID: 14)
        #expect(d.allowed)
        let (e, _) = s2.evaluate(hits: 2, now: start + 31 * second, spec: spec, leaseID: 15)
        #expect(e.allowed, "both leases expired")
    }

    @Test("limits are validated with a sentence")
    func validation() {
        #expect(throws: SluiceError.self) { try LimitSpec(limit: 0, period: second) }
        #expect(throws: SluiceError.self) { try LimitSpec(limit: 1, period: 999_999) }
        #expect(throws: SluiceError.self) { try LimitSpec(limit: 1, period: second, burst: 1 << 41) }
        do {
            _ = try LimitSpec(limit: 0, period: second)
        } catch {
            #expect(error.code == .invalidLimit)
            #expect(error.message.contains("got 0"))
        }
    }

    @Test("every algorithm agrees with its reference model over random sequences",
          arguments: Algorithm.allCases)
    func randomizedAgainstReference(algorithm: Algorithm) throws {
        var random = SeededGenerator(seed: 0x5EED_0000 + UInt64(algorithm.rawValue))
        for round in 0..<60 {
            let limit = UInt64.random(in: 1...12, using: &random)
            let periodMs = Int64.random(in: 1...5, using: &random) * [1, 7, 100, 1_000][Int.random(in: 0...3, using: &random)]
            let burst = algorithm == .gcra || algorithm == .tokenBucket ? UInt64.random(in: 0...15, using: &random) : 0
            let spec = try LimitSpec(limit: limit, period: periodMs * 1_000_000, burst: burst, algorithm: algorithm)
            var model: any ReferenceModel = switch algorithm {
            case .gcra: LeakyBucketModel(spec)
            case .tokenBucket: TokenBucketModel(spec)
            case .slidingWindow: WindowLogModel(spec, sliding: true)
            case .fixedWindow: WindowLogModel(spec, sliding: false)
            case .concurrency: LeaseModel(spec: spec)
            }
            var state = AnyState.fresh(spec, now: start)
            var now = start + Int64.random(in: 0...spec.period, using: &random)
            for step in 0..<200 {
                let hits = UInt64.random(in: 0...(spec.burst + 1), using: &random)
                let (decision, next) = state.evaluate(hits: hits, now: now, spec: spec, leaseID: UInt64(step + 1))
                let expected = model.check(hits: hits, now: now)
                let context = "round \(round) step \(step) \(spec) hits \(hits)"
                #expect(decision.allowed == expected.allowed, "\(context)")
                #expect(decision.remaining == expected.remaining, "\(context)")
                #expect(decision.retryAfter == expected.retryAfter, "\(context)")
                if decision.allowed { state = next }
                // Mostly small steps (bursts), sometimes whole periods.
                let step = Int64.random(in: 0...3, using: &random) == 0
                    ? Int64.random(in: 0...(2 * spec.period), using: &random)
                    : Int64.random(in: 0...(spec.period / Int64(spec.limit)), using: &random)
                now += step
            }
        }
    }
}

@Suite("Sliding window, empty", .computes)
struct SlidingWindowEmptyTests {
    /// A fresh key's state has nothing to recover from: its reset time was `.min &- now`,
    /// which wrapped to about 233 years (found comparing the table with the Redis script).
    @Test("a check a fresh sliding window denies, or peeks at, resets after 0, not after centuries")
    func emptyResetsAtOnce() throws {
        let second: Int64 = 1_000_000_000
        let now: Int64 = 1_767_225_600 * second
        let spec = try LimitSpec(limit: 3, period: 2 * second, algorithm: .slidingWindow)
        let (tooMany, _) = SlidingWindowState().evaluate(hits: 4, now: now, spec: spec)
        #expect(tooMany.reason == .exceedsCapacity)
        #expect(tooMany.resetAfter == 0)
        let (peek, _) = SlidingWindowState().evaluate(hits: 0, now: now, spec: spec)
        #expect(peek.allowed)
        #expect(peek.resetAfter == 0)
        // Once a hit is counted, the reset is when it leaves the sliding window.
        let (counted, state) = SlidingWindowState().evaluate(hits: 1, now: now, spec: spec)
        #expect(counted.resetAfter == 4 * second)
        #expect(state.evaluate(hits: 0, now: now + second, spec: spec).0.resetAfter == 3 * second)
    }
}
