import Dispatch
import Synchronization
import SluiceCore
import SluiceTestKit
import Testing

/// The byte ring anomaly detection's events travel in, from the event loops to its queue.
@Suite("Packed event tap", .computes)
struct PackedEventTapTests {
    static func event(_ number: Int, route: String = "GET /x") -> CheckEvent {
        CheckEvent(timestampMs: Int64(number), tenant: number % 2 == 0 ? "" : "acme", subject: "user-\(number)", ip: "10.0.0.\(number % 256)",
                   route: route, status: number % 5, cost: UInt64(number + 1), key: "k\(number)", rule: number % 3 == 0 ? "" : "login",
                   allowed: number % 2 == 0, reason: number % 2 == 0 ? .withinLimit : .overLimit)
    }

    @Test("every field and the mark come back as offered, oldest first, across many wraps of the ring")
    func roundTrip() {
        let tap = PackedEventTap(capacityBytes: 4_096)
        var expected: [PackedEventTap.Entry] = []
        var number = 0
        for round in 0..<200 {
            // Records of uneven sizes, so the end of the ring is skipped at every offset.
            for _ in 0..<(round % 7 + 1) {
                let event = Self.event(number, route: String(repeating: "r", count: number % 97))
                #expect(tap.offer(event, mark: number % 3 == 1))
                expected.append(PackedEventTap.Entry(event: event, mark: number % 3 == 1))
                number += 1
            }
            let drained = tap.drain(limit: round % 2 == 0 ? .max : 3)
            #expect(drained == Array(expected.prefix(drained.count)))
            expected.removeFirst(drained.count)
        }
        #expect(tap.drain() == expected)
        #expect(tap.pendingBytes == 0)
        #expect(tap.offered == UInt64(number) && tap.dropped == 0)
    }

    @Test("a full ring drops and counts, and takes events again once drained; an event longer than a quarter is dropped")
    func full() {
        let tap = PackedEventTap(capacityBytes: 4_096)
        var accepted = 0
        while tap.offer(Self.event(accepted)) { accepted += 1 }
        #expect(accepted > 20)
        #expect(tap.dropped == 1)
        #expect(tap.drain().count == accepted)
        #expect(tap.offer(Self.event(0)))
        #expect(!tap.offer(Self.event(1, route: String(repeating: "x", count: 1_100))))
        #expect(tap.dropped == 2)
        #expect(tap.drain().map(\.event) == [Self.event(0)])
    }

    @Test("one drain returns more than one hold of the lock copies (64 KiB), in order; a limit stops it")
    func longDrain() {
        let tap = PackedEventTap(capacityBytes: 1 << 20)
        let events = (0..<5_000).map { Self.event($0) }
        for event in events { #expect(tap.offer(event)) }
        #expect(tap.pendingBytes > 4 * (64 << 10))
        #expect(tap.drain(limit: 1_234).map(\.event) == Array(events.prefix(1_234)))
        #expect(tap.drain().map(\.event) == Array(events.dropFirst(1_234)))
        #expect(tap.pendingBytes == 0)
    }

    @Test("bytes that are not UTF-8 are repaired when drained, not refused")
    func invalidUTF8() {
        let tap = PackedEventTap(capacityBytes: 4_096)
        let bad: [UInt8] = [0x75, 0xFF, 0x76]
        bad.withUnsafeBytes { bytes in
            #expect(tap.offer(timestampMs: 7, tenant: UnsafeRawBufferPointer(start: nil, count: 0), subject: bytes))
        }
        let entry = tap.drain()
        #expect(entry.count == 1 && entry[0].event.subject == "u\u{FFFD}v" && entry[0].event.timestampMs == 7 && !entry[0].mark)
    }

    @Test("offers from many threads while one drains lose nothing that was accepted")
    func concurrent() {
        let tap = PackedEventTap(capacityBytes: 1 << 20)
        let drainedCount = Mutex(0)
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            var seen = 0
            while seen < 4 * 5_000 {
                seen += tap.drain().count
            }
            drainedCount.withLock { $0 = seen }
        }
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for number in 0..<5_000 { while !tap.offer(Self.event(thread * 10_000 + number)) {} }
        }
        group.wait()
        #expect(drainedCount.withLock { $0 } == 20_000)
        #expect(tap.offered == 20_000 + tap.dropped)
    }
}
