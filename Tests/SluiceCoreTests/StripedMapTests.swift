import Dispatch
import SluiceCore
import Synchronization
import SluiceTestKit
import Testing

/// The map every in-memory book keeps its entries in.
@Suite("Striped map", .computes)
struct StripedMapTests {
    static func key(_ number: Int) -> Fingerprint { Fingerprint.of(tenant: "t", key: "k\(number)") }

    @Test("set, read, update and remove keep the count exact; nil removes")
    func basics() {
        let map = StripedMap<Int>(stripeBits: 3)
        #expect(map.isEmpty && map.count == 0 && map.stripeCount == 8)
        #expect(map.set(1, for: Self.key(1)) == nil)
        #expect(map.set(2, for: Self.key(1)) == 1, "replacing returns the old value and adds nothing")
        #expect(map.count == 1)
        #expect(map.value(for: Self.key(1)) == 2)
        #expect(map.read(Self.key(1)) { ($0 ?? 0) * 10 } == 20)
        #expect(map.value(for: Self.key(2)) == nil)
        // An update that inserts, one that changes in place, one that removes.
        map.update(Self.key(2)) { $0 = 5 }
        map.update(Self.key(2)) { $0! += 1 }
        #expect(map.value(for: Self.key(2)) == 6 && map.count == 2)
        let seen = map.update(Self.key(2)) { slot -> Int? in
            defer { slot = nil }
            return slot
        }
        #expect(seen == 6 && map.count == 1)
        #expect(map.removeValue(for: Self.key(1)) == 2)
        #expect(map.removeValue(for: Self.key(1)) == nil)
        #expect(map.isEmpty)
    }

    @Test("the filter never hides a key present, and forgets removed keys when their stripes are swept")
    func filter() {
        let map = StripedMap<Int>(stripeBits: 2, filterWordsPerStripe: 3)
        let unfiltered = StripedMap<Int>(stripeBits: 2)
        #expect(unfiltered.mayContain(Self.key(1)), "without a filter every key may be present")
        #expect((0..<1_000).allSatisfy { !map.mayContain(Self.key($0)) }, "an empty map's filter says absent")
        for number in 0..<100 { map.set(number, for: Self.key(number)) }
        map.update(Self.key(100)) { $0 = 100 }
        #expect((0...100).allSatisfy { map.mayContain(Self.key($0)) }, "no false negative")
        // 101 keys in 4 × 4 words (rounded up to a power of two): some absent keys share bits.
        let falsePositives = (1_000..<3_000).filter { map.mayContain(Self.key($0)) }.count
        #expect(falsePositives < 2_000 / 3, "\(falsePositives) of 2,000 absent keys pass")
        // Removed one by one: still "maybe" until a sweep rebuilds the stripes.
        for number in 0..<50 { map.removeValue(for: Self.key(number)) }
        #expect((0..<50).allSatisfy { map.mayContain(Self.key($0)) })
        map.removeAll { _, value in value >= 50 && value < 100 }
        #expect(map.count == 1 && map.mayContain(Self.key(100)), "the key left is still found")
        let stale = (0..<100).filter { map.mayContain(Self.key($0)) }.count
        #expect(stale <= 2, "after the sweep only keys sharing key 100's bit pass: \(stale)")
        map.removeValue(for: Self.key(100))
        map.rebuildFilter()
        #expect((0...100).allSatisfy { !map.mayContain(Self.key($0)) }, "rebuilt empty")
    }

    @Test("readers and writers racing on a filtered map: a key present is always seen")
    func filterUnderContention() {
        let map = StripedMap<Int>(stripeBits: 3, filterWordsPerStripe: 2)
        let missed = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for round in 0..<2_000 {
                // Each worker sweeps only its own old keys while the others write theirs.
                let key = Self.key(worker * 10_000 + round), value = worker * 1_000_000 + round
                map.set(value, for: key)
                if !map.mayContain(key) || map.value(for: key) != value { missed.withLock { $0 += 1 } }
                if round % 100 == 0 { map.removeAll { _, value in value / 1_000_000 == worker && value % 1_000_000 < round - 50 } }
            }
        }
        #expect(missed.withLock { $0 } == 0)
    }

    @Test("removeAll, entries, values and stripes walk every entry once; the count follows")
    func walks() {
        let map = StripedMap<Int>(stripeBits: 4, shift: 7)
        for number in 0..<1_000 { map.set(number, for: Self.key(number)) }
        #expect(map.count == 1_000)
        #expect(Set(map.values()).count == 1_000)
        #expect(map.entries { _, value in value < 10 }.count == 10)
        let removed = map.removeAll { _, value in value % 2 == 0 }
        #expect(removed.count == 500 && removed.allSatisfy { $0.value % 2 == 0 })
        #expect(map.count == 500 && map.values().allSatisfy { $0 % 2 == 1 })
        var sizes = 0
        map.forEachStripe { index, stripe in
            #expect(stripe.keys.allSatisfy { map.stripe(of: $0) == index }, "every key is in its own stripe")
            sizes += stripe.count
            stripe = stripe.filter { $0.value < 500 }
        }
        #expect(sizes == 500)
        #expect(map.count == 250, "a stripe rewritten whole still counts right")
        map.withStripe(0) { $0.removeAll() }
        #expect(map.count == map.values().count)
    }

    @Test("the stripe is the fingerprint's low bits past the shift, within bounds for any key")
    func stripes() {
        let map = StripedMap<Int>(stripeBits: 6, shift: 7)
        let none = StripedMap<Int>(stripeBits: -3)
        let huge = StripedMap<Int>(stripeBits: 99, shift: 99)
        #expect(none.stripeCount == 1 && huge.stripeCount == 1 << 16)
        for number in 0..<200 {
            let key = Self.key(number)
            #expect(map.stripe(of: key) == Int(truncatingIfNeeded: key.low >> 7) & 63)
            #expect(none.stripe(of: key) == 0)
            #expect((0..<huge.stripeCount).contains(huge.stripe(of: key)))
        }
    }

    @Test("concurrent writers on every stripe: no update lost, the count exact")
    func concurrent() {
        let map = StripedMap<Int>(stripeBits: 2)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for round in 0..<2_000 {
                map.update(Self.key(round % 100)) { $0 = ($0 ?? 0) + 1 }
                if round % 10 == 0 { map.set(worker, for: Self.key(10_000 + worker * 10_000 + round)) }
            }
        }
        #expect(map.count == 100 + 8 * 200)
        #expect((0..<100).reduce(0) { $0 + (map.value(for: Self.key($1)) ?? 0) } == 8 * 2_000)
    }
}
