import Foundation
import SluiceCore
import SluiceIntelligence
import SluiceTestKit
import Testing

/// The sketches against exact counts, within their published error bounds.
@Suite(.computes) struct SketchTests {
    static func key(_ index: Int) -> Fingerprint { .of(tenant: "", key: "subject-\(index)") }

    /// A skewed stream: key k drawn with probability ∝ 1/(k+1) over `keys` keys.
    static func stream(count: Int, keys: Int, seed: UInt64) -> [Int] {
        var random = SeededGenerator(seed: seed)
        var cumulative: [Double] = []
        var sum = 0.0
        for rank in 0..<keys {
            sum += 1 / Double(rank + 1)
            cumulative.append(sum)
        }
        return (0..<count).map { _ in
            let u = Double.random(in: 0..<sum, using: &random)
            var low = 0, high = keys - 1
            while low < high {
                let middle = (low + high) / 2
                if cumulative[middle] < u { low = middle + 1 } else { high = middle }
            }
            return low
        }
    }

    @Test func countMinNeverUndercountsAndOvercountsWithinEpsilonN() async {
        let epsilon = 0.001, delta = 0.01
        // 200,000 adds take a while in a debug build: on a thread of their own, not one of the
        // two every test shares; one expectation for the whole stream, not one per key.
        var (sketch, exact, undercounts, within) = await blocking { () -> (CountMinSketch, [Int: UInt32], Int, Int) in
            var sketch = CountMinSketch(epsilon: epsilon, delta: delta)
            var exact: [Int: UInt32] = [:]
            for key in Self.stream(count: 200_000, keys: 50_000, seed: 7) {
                sketch.add(Self.key(key))
                exact[key, default: 0] += 1
            }
            var undercounts = 0, within = 0
            for (key, count) in exact {
                let estimate = sketch.estimate(Self.key(key))
                if estimate < count { undercounts += 1 } else if Double(estimate - count) <= epsilon * 200_000 { within += 1 }
            }
            return (sketch, exact, undercounts, within)
        }
        #expect(sketch.width >= 2_719 && sketch.depth == 5)
        #expect(sketch.total == 200_000)
        #expect(undercounts == 0)
        // The bound holds for each key with probability 1 − δ.
        #expect(Double(within) >= Double(exact.count) * (1 - delta), "\(within) of \(exact.count)")
        // A key never added is estimated within the same bound.
        #expect(Double(sketch.estimate(Self.key(-1))) <= epsilon * 200_000 * 2)
        // Decay halves what was counted.
        let before = sketch.estimate(Self.key(0))
        sketch.decay()
        #expect(sketch.estimate(Self.key(0)) == before / 2)
        #expect(sketch.total == 100_000)
    }
}

@Suite(.computes) struct LinearCounterTests {
    @Test func countsDistinctValuesWithinAFewPercentUpToAHundredAndFifty() {
        for distinct in [1, 5, 20, 50, 100, 150] {
            var errors: [Double] = []
            for trial in 0..<50 {
                var counter = LinearCounter()
                for value in 0..<distinct {
                    let id = UInt64(trial * 1_000_003 + value * 7_919)
                    counter.add(id)
                    counter.add(id)   // duplicates do not count
                }
                errors.append(abs(counter.estimate - Double(distinct)) / Double(distinct))
            }
            let mean = errors.reduce(0, +) / Double(errors.count)
            #expect(mean < 0.1, "\(distinct): mean relative error \(mean)")
        }
        #expect(LinearCounter().estimate == 0)
        #expect(MemoryLayout<LinearCounter>.size == 16)
    }
}
