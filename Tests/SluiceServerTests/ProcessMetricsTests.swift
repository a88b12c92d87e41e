@testable import SluiceServer
import Testing

@Suite("Process metrics")
struct ProcessMetricsTests {
    @Test("/proc/self/stat is read after the command's last parenthesis, whatever the name holds")
    func statFields() throws {
        // The 52 fields of proc(5), with a command name holding spaces and parentheses.
        var fields = (3...52).map { "\($0)" }
        fields[14 - 3] = "250"          // utime, ticks
        fields[15 - 3] = "150"          // stime
        fields[22 - 3] = "1000"         // starttime, ticks since boot
        fields[23 - 3] = "123456789"    // vsize, bytes
        fields[24 - 3] = "2048"         // rss, pages
        let stat = "4242 (sluiced (x) y) " + fields.joined(separator: " ") + "\n"
        let reading = try #require(ProcessMetrics.parse(stat: stat, bootTime: 1_700_000_000, ticksPerSecond: 100, pageSize: 4_096,
                                                        openDescriptors: 12, maxDescriptors: 1_024))
        #expect(reading == .init(cpuSeconds: 4, residentBytes: Double(8 << 20), virtualBytes: 123_456_789, startTimeSeconds: 1_700_000_010,
                                 openDescriptors: 12, maxDescriptors: 1_024))
        let text = ProcessMetrics.exposition(reading)
        #expect(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 4.0\n"))
        #expect(text.contains("process_resident_memory_bytes 8388608.0\n"))
        #expect(ProcessMetrics.parse(stat: "4242 (short) R 1 2", bootTime: 0, ticksPerSecond: 100, pageSize: 4_096,
                                     openDescriptors: 0, maxDescriptors: nil) == nil, "a truncated line exports nothing")
        #expect(ProcessMetrics.parse(stat: "garbage", bootTime: 0, ticksPerSecond: 100, pageSize: 4_096,
                                     openDescriptors: 0, maxDescriptors: nil) == nil)
    }

    @Test("this process reads as itself: CPU spent, memory resident, descriptors open, started before now")
    func thisProcess() throws {
        let reading = try #require(ProcessMetrics.read())
        #expect(reading.cpuSeconds > 0)
        #expect(reading.residentBytes > Double(1 << 20))
        #expect(reading.openDescriptors >= 3)
        #expect(reading.startTimeSeconds > 1_600_000_000)
    }
}
