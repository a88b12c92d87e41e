import Dispatch
import Logging
import NIOConcurrencyHelpers
@testable import SluiceConfiguration
import SluiceCore
import SluiceTestKit
@testable import SluiceServer
import Testing

@Suite("EventPump")
struct EventPumpTests {
    @Test("drains the tap in bounded batches, oldest first, on its own queue")
    func drainsInBatches() {
        let tap = EventTap<Int>(capacity: 100)
        let received = NIOLockedValueBox<[[Int]]>([])
        let queue = DispatchQueue(label: "test.pump")
        let pump = EventPump(tap: tap, queue: queue, batchLimit: 4) { batch in
            // The consumer runs on the pump's queue, never on a caller's thread.
            dispatchPrecondition(condition: .onQueue(queue))
            received.withLockedValue { $0.append(batch) }
        }
        for i in 0..<10 { tap.offer(i) }
        pump.drainNow()
        #expect(received.withLockedValue { $0 } == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
        pump.drainNow()
        #expect(received.withLockedValue { $0.count } == 3, "an empty tap hands over nothing")
    }

    /// A pump draining every 10 ms of a test clock into a count, running in its service group.
    static func running() -> (TestClock, EventTap<Int>, NIOLockedValueBox<Int>, EventPump<Int>, RunningServices) {
        let clock = TestClock()
        let tap = EventTap<Int>(capacity: 1_000)
        let total = NIOLockedValueBox(0)
        let pump = EventPump(tap: tap, interval: .milliseconds(10)) { batch in total.withLockedValue { $0 += batch.count } }
        return (clock, tap, total, pump, RunningServices([pump.service("test-pump", clock: clock)], logger: Logger(label: "test")))
    }

    @Test("its service drains the tap every interval of its clock, and what is left at shutdown")
    func serviceDrainsAndFinishes() async throws {
        let (clock, tap, total, _, services) = Self.running()
        #expect(await clock.waitForSleeps(1))
        for i in 0..<500 { tap.offer(i) }
        clock.advance(by: .milliseconds(9))
        try await Task.sleep(for: .milliseconds(20))
        #expect(total.withLockedValue { $0 } == 0, "nothing is drained before the interval has passed")
        clock.advance(by: .milliseconds(1))
        #expect(await clock.waitForSleeps(2), "drained, and waiting for the next interval")
        #expect(total.withLockedValue { $0 } == 500)
        for i in 0..<7 { tap.offer(i) }
        await services.shutdown()
        #expect(total.withLockedValue { $0 } == 507, "shutdown hands over what is left")
    }

    @Test("an idle tap is drained every 100 ms after ten empty drains, and every interval again once events come")
    func anIdleTapIsDrainedLessOften() async throws {
        let (clock, tap, total, pump, services) = Self.running()
        var sleeps = 1
        #expect(await clock.waitForSleeps(sleeps))
        for _ in 0..<10 {
            clock.advance(by: .milliseconds(10))
            sleeps += 1
            #expect(await clock.waitForSleeps(sleeps))
        }
        #expect(pump.nextWait == .milliseconds(100))
        tap.offer(1)
        clock.advance(by: .milliseconds(10))
        try await Task.sleep(for: .milliseconds(20))
        #expect(total.withLockedValue { $0 } == 0, "a quiet pump waits 100 ms")
        clock.advance(by: .milliseconds(90))
        sleeps += 1
        #expect(await clock.waitForSleeps(sleeps))
        #expect(total.withLockedValue { $0 } == 1)
        #expect(pump.nextWait == .milliseconds(10), "events came: every interval again")
        await services.shutdown()
    }
}
