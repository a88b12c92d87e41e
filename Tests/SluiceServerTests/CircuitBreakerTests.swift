import Testing
@testable import SluiceServer

@Suite("Circuit breaker")
struct CircuitBreakerTests {
    static let second: Int64 = 1_000_000_000

    @Test("opens after the threshold of failures in a row, probes after the cooldown, closes on a probe's success")
    func cycle() {
        var breaker = CircuitBreaker(threshold: 3, cooldown: Self.second, maximumCooldown: 4 * Self.second)
        // Called through these: #expect cannot take a mutating call.
        func allows(_ now: Int64) -> Bool { breaker.allows(now: now) }
        func record(_ success: Bool, _ now: Int64) -> CircuitBreaker.State? { breaker.record(success: success, now: now) }
        let second = Self.second
        // Failures with a success between do not open it.
        for success in [false, false, true, false, false] {
            #expect(allows(0))
            #expect(record(success, 0) == nil)
        }
        #expect(allows(0))
        #expect(record(false, 0) == .open, "the third failure in a row")
        #expect(!allows(second / 2), "open: degraded at once")
        #expect(allows(second), "the cooldown is over: one probe")
        #expect(breaker.state == .halfOpen)
        #expect(!allows(second), "only one probe at a time")
        // The probe fails: open again for twice as long.
        #expect(record(false, second) == .open)
        #expect(!allows(2 * second))
        #expect(allows(3 * second))
        #expect(record(false, 3 * second) == .open)
        #expect(!allows(6 * second))
        #expect(allows(7 * second), "doubled to 4 s, no longer: the maximum")
        #expect(record(false, 7 * second) == .open)
        #expect(!allows(10 * second))
        #expect(allows(11 * second), "still 4 s")
        #expect(record(true, 11 * second) == .closed)
        #expect(allows(11 * second) && breaker.failures == 0)
        // A fresh run of failures starts from the first cooldown again.
        for _ in 0..<2 { _ = record(false, 12 * second) }
        #expect(record(false, 12 * second) == .open)
        #expect(allows(13 * second))
    }

    @Test("a breaker per node: one node failing opens only its own; the state reported is the worst")
    func perNode() {
        let second = Self.second
        var breakers = Breakers(CircuitBreaker(threshold: 2, cooldown: second))
        // Called through these: #expect cannot take a mutating call.
        func allows(_ node: String, _ now: Int64) -> Bool { breakers.allows(node, now: now) }
        func record(_ node: String, _ success: Bool, _ now: Int64) -> CircuitBreaker.State? { breakers.record(node, success: success, now: now) }
        #expect(allows("a", 0) && allows("b", 0))
        #expect(record("a", false, 0) == nil)
        #expect(record("b", true, 0) == nil)
        #expect(record("a", false, 1) == .open)
        #expect(!allows("a", 2) && allows("b", 2) && allows("c", 2))
        #expect(breakers.state == .open && breakers.notClosed == (open: 1, of: 3))
        // After the cooldown, one probe for "a"; its success closes it.
        #expect(allows("a", second + 1) && breakers.state == .halfOpen)
        #expect(!allows("a", second + 2))
        #expect(record("a", true, second + 3) == .closed)
        #expect(breakers.state == .closed && breakers.notClosed.open == 0)
    }
}
