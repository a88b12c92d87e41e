// In-process benchmark of the limiter table: decisions per second and bytes per key.
//
//   swift run -c release sluice-table-bench [--keys 1000000] [--seconds 3] [--memory-keys 1000000,10000000]
//                                    [--only batch_100.threads_1]   (only the figures whose name contains it)
//
// Figures go to docs/BENCHMARKS.md with the command, the machine and the date. This is a
// benchmark, not a test: it asserts nothing and is never run by the test suite.
import Foundation
import SluiceCore

#if canImport(Glibc)
import Glibc
#endif

@main
struct TableBenchmark {
    static func monotonicNanoseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }

    /// Human-readable lines go to standard error when --json puts the figures on standard output.
    nonisolated(unsafe) static var jsonMode = false
    static func log(_ line: String) {
        if jsonMode { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
    }

    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return (Int(fields.count > 1 ? fields[1] : "0") ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    struct Options {
        var keys = 1_000_000
        var seconds = 3.0
        var memoryKeys = [1_000_000, 10_000_000]
        var json = false
        var shards: Int? = nil
        /// Runs only the throughput figures whose name contains this (for profiling one mode).
        var only: String? = nil
    }

    static func parse() -> Options {
        var options = Options()
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--keys": options.keys = Int(arguments.next() ?? "") ?? options.keys
            case "--seconds": options.seconds = Double(arguments.next() ?? "") ?? options.seconds
            case "--memory-keys": options.memoryKeys = (arguments.next() ?? "").split(separator: ",").compactMap { Int($0) }
            case "--json": options.json = true
            case "--shards": options.shards = Int(arguments.next() ?? "")
            case "--only": options.only = arguments.next()
            default:
                FileHandle.standardError.write(Data("unknown argument \(argument)\n".utf8))
                exit(2)
            }
        }
        return options
    }

    /// Runs `body(worker, deadline)` on `threads` threads until `seconds` pass; each returns how
    /// many decisions it made. Returns decisions per second over all threads.
    static func runWorkers(threads: Int, seconds: Double, _ body: @escaping @Sendable (Int, Int64) -> Int) -> Double {
        let deadline = monotonicNanoseconds() + Int64(seconds * 1e9)
        // One padded slot per worker, each written by its own thread only.
        nonisolated(unsafe) let counts = UnsafeMutablePointer<Int>.allocate(capacity: threads * 16)
        counts.initialize(repeating: 0, count: threads * 16)
        defer { counts.deallocate() }
        let group = DispatchGroup()
        let start = monotonicNanoseconds()
        for worker in 0..<threads {
            group.enter()
            Thread {
                counts[worker * 16] = body(worker, deadline)
                group.leave()
            }.start()
        }
        group.wait()
        let elapsed = Double(monotonicNanoseconds() - start) / 1e9
        return Double((0..<threads).reduce(0) { $0 + counts[$1 * 16] }) / elapsed
    }

    /// Runs `threads` workers for `seconds`, each deciding random keys; returns decisions/s.
    static func throughput(table: LimiterTable, keys: [Fingerprint], limit: BoundLimit, threads: Int,
                           seconds: Double, readClockEachDecision: Bool, prefetchDistance: Int = 0) -> Double {
        runWorkers(threads: threads, seconds: seconds) { worker, deadline in
                var random = UInt64(0x9E37_79B9_7F4A_7C15) &* UInt64(worker + 1)
                var done = 0
                var now = 1_767_225_600_000_000_000 &+ monotonicNanoseconds()
                let keyCount = UInt64(keys.count)
                // The key's fingerprint is computed, not loaded: a daemon gets the key in the
                // request, so a random read of a key array would be a cache miss the real hot
                // path never has. A small ring holds the next `prefetchDistance` keys.
                var ring = [Fingerprint](repeating: Fingerprint(high: 0, low: 0), count: 16)
                func nextKey() -> Fingerprint {
                    random ^= random << 13; random ^= random >> 7; random ^= random << 17
                    var hasher = StableHasher()
                    hasher.combine(random.multipliedFullWidth(by: keyCount).high)
                    return hasher.finalize()
                }
                for i in 0..<prefetchDistance { ring[i] = nextKey(); table.prefetch(key: ring[i], limit: limit) }
                var slot = 0
                do {
                    while true {
                        // 1,024 decisions between deadline checks.
                        for _ in 0..<1_024 {
                            let key: Fingerprint
                            if prefetchDistance > 0 {
                                key = ring[slot]
                                let ahead = nextKey()
                                ring[slot] = ahead
                                table.prefetch(key: ahead, limit: limit)
                                slot = slot + 1 == prefetchDistance ? 0 : slot + 1
                            } else {
                                key = nextKey()
                            }
                            if readClockEachDecision { now = 1_767_225_600_000_000_000 &+ monotonicNanoseconds() }
                            _ = table.check(key: key, limit: limit, hits: 1, now: now)
                        }
                        done += 1_024
                        if monotonicNanoseconds() >= deadline { break }
                    }
                }
                return done
        }
    }

    /// Decisions/s when checks arrive in batches of `size`, decided with `check(batch:into:)`.
    static func batchThroughput(table: LimiterTable, keyCount: Int, limit: BoundLimit, threads: Int, seconds: Double,
                                size: Int, readClockEachBatch: Bool) -> Double {
        runWorkers(threads: threads, seconds: seconds) { worker, deadline in
                var random = UInt64(0x9E37_79B9_7F4A_7C15) &* UInt64(worker + 7)
                var batch = [BatchCheck](repeating: BatchCheck(key: Fingerprint(high: 0, low: 0), limits: .single(limit), hits: 1, now: 0), count: size)
                var decisions = [Decision](repeating: .blocked(), count: size)
                var now = 1_767_225_600_000_000_000 &+ monotonicNanoseconds()
                var done = 0
                while monotonicNanoseconds() < deadline {
                    for _ in 0..<16 {
                        if readClockEachBatch { now = 1_767_225_600_000_000_000 &+ monotonicNanoseconds() }
                        for i in 0..<size {
                            random ^= random << 13; random ^= random >> 7; random ^= random << 17
                            var hasher = StableHasher()
                            hasher.combine(random.multipliedFullWidth(by: UInt64(keyCount)).high)
                            batch[i].key = hasher.finalize()
                            batch[i].now = now
                        }
                        batch.withUnsafeBufferPointer { items in
                            decisions.withUnsafeMutableBufferPointer { table.check(batch: items, into: $0) }
                        }
                        done += size
                    }
                }
                return done
        }
    }

    static func main() throws {
        let options = parse()
        jsonMode = options.json
        var results: [String: Double] = [:]
        // A realistic limit: most keys stay in the table for the whole run (1,000 per hour).
        let limit = BoundLimit.inline(try LimitSpec(limit: 1_000, period: 3_600_000_000_000, algorithm: .gcra))
        let keys = (0..<options.keys).map { i -> Fingerprint in
            var hasher = StableHasher()
            hasher.combine(UInt64(i))
            return hasher.finalize()
        }
        log("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; keys: \(options.keys); \(options.seconds) s per run")
        log("decisions per second (uniform random keys, GCRA, table pre-filled):")
        let table = LimiterTable(shardCount: options.shards, maxEntries: options.keys * 2)
        for i in 0..<keys.count { _ = table.check(key: keys[i], limit: limit, hits: 1, now: 1_767_225_600_000_000_000) }
        for prefetch in [0, 8] {
            log(prefetch == 0 ? "  one check at a time (a request with one check):"
                                : "  a batch, prefetching 8 checks ahead (how the daemon decides a batch):")
            for threads in [1, 2] {
                for readClock in [true, false] {
                    let name = "decisions_per_s.prefetch_\(prefetch).threads_\(threads).\(readClock ? "clock_each" : "clock_cached")"
                    if let only = options.only, !name.contains(only) { continue }
                    let rate = throughput(table: table, keys: keys, limit: limit, threads: threads, seconds: options.seconds,
                                          readClockEachDecision: readClock, prefetchDistance: prefetch)
                    results[name] = rate
                    log("    \(threads) thread\(threads == 1 ? " " : "s"), clock \(readClock ? "read per decision" : "cached           "): \(String(format: "%8.2f", rate / 1e6)) M/s")
                }
            }
        }
        log("  batches of 100 checks, each shard locked once per batch (check(batch:into:)):")
        for threads in [1, 2] {
            for readClock in [true, false] {
                let name = "decisions_per_s.batch_100.threads_\(threads).\(readClock ? "clock_each" : "clock_cached")"
                if let only = options.only, !name.contains(only) { continue }
                let rate = batchThroughput(table: table, keyCount: keys.count, limit: limit, threads: threads,
                                           seconds: options.seconds, size: 100, readClockEachBatch: readClock)
                results[name] = rate
                log("    \(threads) thread\(threads == 1 ? " " : "s"), clock \(readClock ? "read per batch   " : "cached           "): \(String(format: "%8.2f", rate / 1e6)) M/s")
            }
        }
        // Hashing the strings is part of every real check: measure it apart.
        let strings = (0..<100_000).map { "user:\($0)" }
        let hashStart = monotonicNanoseconds()
        var sink: UInt64 = 0
        for _ in 0..<20 { for s in strings { sink &+= Fingerprint.of(tenant: "", key: s).low } }
        let hashRate = Double(strings.count * 20) / (Double(monotonicNanoseconds() - hashStart) / 1e9)
        results["fingerprints_per_s"] = hashRate
        log("  fingerprint of (tenant, key) alone: \(String(format: "%.2f", hashRate / 1e6)) M/s (sink \(sink & 1))")

        log("memory (GCRA, one limit per key):")
        for count in options.memoryKeys {
            let before = residentBytes()
            let table = LimiterTable(shardCount: options.shards, maxEntries: count * 2)
            let now: Int64 = 1_767_225_600_000_000_000
            for i in 0..<count {
                var hasher = StableHasher()
                hasher.combine(UInt64(i))
                _ = table.check(key: hasher.finalize(), limit: limit, hits: 1, now: now)
            }
            let after = residentBytes()
            let stats = table.statistics()
            let rss = Double(after - before) / Double(count)
            let allocated = Double(stats.allocatedBytes) / Double(count)
            results["bytes_per_key_rss.\(count)"] = rss
            results["bytes_per_key_allocated.\(count)"] = allocated
            log("  \(count) keys: \(String(format: "%.1f", rss)) bytes/key resident, \(String(format: "%.1f", allocated)) allocated (entries \(stats.entries))")
        }
        if options.json, let data = try? JSONSerialization.data(withJSONObject: results, options: [.sortedKeys, .prettyPrinted]) {
            print(String(decoding: data, as: UTF8.self))
        }
    }
}
