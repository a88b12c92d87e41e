import Dispatch
import NIOConcurrencyHelpers
@testable import SluiceConfiguration
import SluiceCore
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

    @Test("a started pump delivers on its own, and stop hands over what is left")
    func startAndStop() async throws {
        let tap = EventTap<Int>(capacity: 1_000)
        let total = NIOLockedValueBox(0)
        let pump = EventPump(tap: tap, interval: .milliseconds(1)) { batch in total.withLockedValue { $0 += batch.count } }
        pump.start()
        pump.start()
        for i in 0..<500 { tap.offer(i) }
        for _ in 0..<500 where total.withLockedValue({ $0 }) < 500 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(total.withLockedValue { $0 } == 500)
        pump.stop()
        for i in 0..<7 { tap.offer(i) }
        pump.stop()
        #expect(total.withLockedValue { $0 } == 507)
    }
}
