@testable import SluiceIntelligence
import SluiceTestKit
import Foundation
import Testing

/// The space-saving sketch against exact counts.
@Suite(.computes) struct SpaceSavingTests {
    @Test func heavyKeysAreKeptWithCountsWithinTheirErrorOfTheTruth() {
        var sketch = SpaceSaving<Int>(capacity: 50)
        var exact: [Int: UInt64] = [:]
        var random = SeededGenerator(seed: 11)
        // A heavy-tailed stream over 10,000 keys: key k about 1/k as often.
        for _ in 0..<200_000 {
            let u = Double(random.next() % 1_000_000) / 1_000_000
            let key = Int(pow(10_000.0, u))
            sketch.add(key)
            exact[key, default: 0] += 1
        }
        #expect(sketch.total == 200_000)
        let heaviest = exact.sorted { $0.value > $1.value }.prefix(5).map(\.key)
        let top = sketch.top(5)
        #expect(Set(top.map(\.key)) == Set(heaviest), "\(top.map(\.key)) vs \(heaviest)")
        for entry in sketch.top(50) {
            let truth = exact[entry.key, default: 0]
            #expect(entry.count >= truth && entry.count - entry.error <= truth)
        }
        // Every key over N / capacity is kept.
        for (key, count) in exact where count > 200_000 / 50 { #expect(sketch.top(50).contains { $0.key == key }) }
    }

    @Test func aWeightedAddCountsItsWeight() {
        var sketch = SpaceSaving<String>(capacity: 2)
        sketch.add("a", count: 5)
        sketch.add("b", count: 2)
        sketch.add("c", count: 1)
        #expect(sketch.top(2).map(\.key) == ["a", "c"])
        #expect(sketch.top(1).first?.count == 5 && sketch.top(2).last?.error == 2)
    }
}
