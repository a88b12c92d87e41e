#if canImport(Glibc)
import Glibc
#endif

/// The process metrics every Prometheus client library exports (`process_*`, the names and help
/// of client_golang's process collector), read from `/proc/self` at scrape time: dashboards and
/// alerts written for any other service work on Sluice unchanged.
enum ProcessMetrics {
    struct Reading: Equatable {
        var cpuSeconds: Double
        var residentBytes: Double
        var virtualBytes: Double
        var startTimeSeconds: Double
        var openDescriptors: Double
        var maxDescriptors: Double?
    }

    /// This process now; nil where `/proc` cannot be read (then nothing is exported).
    static func read() -> Reading? {
        guard let stat = contents("/proc/self/stat"), let system = contents("/proc/stat") else { return nil }
        let bootTime = system.split(separator: "\n").first { $0.hasPrefix("btime ") }.flatMap { Double($0.dropFirst(6)) }
        var limit = rlimit()
        let maxDescriptors = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 && limit.rlim_cur != rlim_t.max ? Double(limit.rlim_cur) : nil
        return parse(stat: stat, bootTime: bootTime ?? 0, ticksPerSecond: Double(sysconf(Int32(_SC_CLK_TCK))),
                     pageSize: Double(sysconf(Int32(_SC_PAGESIZE))), openDescriptors: countDescriptors(), maxDescriptors: maxDescriptors)
    }

    /// `/proc/self/stat`'s fields after the command's name (which may hold spaces and
    /// parentheses: it ends at the last `)`): utime and stime are the 14th and 15th fields,
    /// starttime the 22nd (clock ticks since boot), vsize the 23rd (bytes), rss the 24th (pages).
    static func parse(stat: String, bootTime: Double, ticksPerSecond: Double, pageSize: Double, openDescriptors: Int,
                      maxDescriptors: Double?) -> Reading? {
        guard let end = stat.lastIndex(of: ")"), ticksPerSecond > 0 else { return nil }
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        // fields[0] is the 3rd field (state): field n is fields[n - 3].
        func field(_ n: Int) -> Double? { fields.indices.contains(n - 3) ? Double(fields[n - 3]) : nil }
        guard let user = field(14), let system = field(15), let start = field(22), let virtual = field(23), let resident = field(24) else {
            return nil
        }
        return Reading(cpuSeconds: (user + system) / ticksPerSecond, residentBytes: resident * pageSize, virtualBytes: virtual,
                       startTimeSeconds: bootTime + start / ticksPerSecond, openDescriptors: Double(openDescriptors),
                       maxDescriptors: maxDescriptors)
    }

    /// The exposition text of a reading.
    static func exposition(_ reading: Reading) -> String {
        var text = ""
        func family(_ name: String, _ type: String, _ help: String, _ value: Double) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", reading.cpuSeconds)
        family("process_open_fds", "gauge", "Number of open file descriptors.", reading.openDescriptors)
        if let max = reading.maxDescriptors { family("process_max_fds", "gauge", "Maximum number of open file descriptors.", max) }
        family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", reading.virtualBytes)
        family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", reading.residentBytes)
        family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", reading.startTimeSeconds)
        return text
    }

    static func contents(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4_096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func countDescriptors() -> Int {
        guard let directory = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(directory) }
        var count = 0
        // Entries are counted, never read: copying an entry's 256-byte name field out of glibc's
        // buffer reads past its end when the entry is the buffer's last (it crashed the test
        // process in CI). procfs lists "." and ".." first, as every directory.
        while readdir(directory) != nil { count += 1 }
        // Less "." and "..", and the directory's own descriptor, open while counting.
        return max(0, count - 3)
    }
}
