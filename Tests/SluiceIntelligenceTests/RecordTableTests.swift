import SluiceTestKit
import Testing
@testable import SluiceIntelligence

/// The detector's compact table behaves as a dictionary would, through growth, removal and sweeps.
@Suite(.computes) struct RecordTableTests {
    @Test(arguments: [10, 1_000, 100_000])
    func randomInsertsReplacementsAndRemovalsMatchADictionary(maxCount: Int) {
        var table = RecordTable<Int>(maxCount: maxCount)
        var model: [UInt64: Int] = [:]
        var random = SeededGenerator(seed: UInt64(maxCount))
        // Keys from a small space, so replacements and removals of present keys are common;
        // some keys share their low bits, so they probe past each other.
        let space = UInt64(maxCount)
        for step in 0..<20_000 {
            let key = (random.next() % space) << (step % 3 == 0 ? 20 : 0)
            switch random.next() % 4 {
            case 0:
                #expect(table.removeValue(forKey: key) == model.removeValue(forKey: key))
            default:
                if model[key] != nil || model.count < maxCount {
                    table[key] = step
                    model[key] = step
                }
            }
            #expect(table.count == model.count)
        }
        for (key, value) in model { #expect(table[key] == value) }
        var seen = 0
        table.forEach { key, value in
            #expect(model[key] == value)
            seen += 1
        }
        #expect(seen == model.count)
        #expect(table[UInt64.max] == nil || model[UInt64.max] != nil)
    }

    @Test func aSweepRemovesExactlyWhatItIsToldAndReportsEachKey() {
        var table = RecordTable<Int>(maxCount: 50_000)
        for key in 0..<50_000 { table[UInt64(key) &* 0x1_0000_0001] = key }
        var removed: [UInt64] = []
        table.removeAll(where: { $0 % 3 == 0 }) { removed.append($0) }
        #expect(removed.count == 16_667)
        #expect(table.count == 50_000 - 16_667)
        for key in 0..<50_000 {
            #expect(table[UInt64(key) &* 0x1_0000_0001] == (key % 3 == 0 ? nil : key))
        }
        table.removeAll()
        #expect(table.count == 0 && table[0] == nil)
    }

    @Test func aPositionStaysValidUntilTheTableChanges() {
        var table = RecordTable<Int>(maxCount: 100)
        for key in 1...64 { table[UInt64(key)] = key * 10 }
        let position = table.position(of: 33)
        #expect(position != nil)
        if let position {
            #expect(table[position: position] == 330 && table.storedKey(at: position) == 33)
            table[position: position] = 331
        }
        #expect(table[33] == 331)
    }

    @Test func memoryIsTheRecordsAndAnIndexOfFourBytesASlot() {
        var table = RecordTable<AnomalyDetector.Subject>(maxCount: 1_000_000)
        for key in 0..<100_000 {
            table[UInt64(key)] = AnomalyDetector.Subject(lastBaselineUpdate: 0, firstSeen: 0, lastSeen: 0)
        }
        // 25 chunks of 4,096 records of 8 + 120 bytes, and 2^17 slots of 4 bytes.
        #expect(table.bytes == 25 * 4_096 * 128 + (1 << 17) * 4)
        #expect(Double(table.bytes) / 100_000 < 140)
    }

    @Test(arguments: [Int64(0), 1_577_836_800_000, 1_767_225_600_999, 1_234, -1, AnomalyDetector.never, 1 << 52])
    func aPackedTimeIsItsSecondOrNever(time: Int64) {
        let packed = PackedTime(time)
        if time == AnomalyDetector.never {
            #expect(packed == .never && packed.milliseconds == AnomalyDetector.never)
        } else if time <= 3_700_000_000_000 {
            // Rounded down to its second, within 1952…2088.
            #expect(packed.milliseconds <= time && time - packed.milliseconds < 1_000)
            #expect(packed.milliseconds % 1_000 == 0 || time < 0)
        } else {
            // Past 2088: the last second it holds, never "never".
            #expect(packed != .never && packed.milliseconds < time)
        }
    }
}
