// In-process benchmark of reputation: what it adds to a check, how fast events reach SQLite, and
// what a tracked subject costs in memory.
//
//   swift run -c release sluice-reputation-bench [--seconds 2] [--rounds 5] [--subjects 100000]
//                                                [--memory-subjects 1000000] [--only checks|ingest|memory]
//
// Checks: the same pre-encoded check frames (one check per frame, 100,000 subjects) answered by
// dispatchers that differ only in their configuration, in alternation, round after round; the
// figure is the median nanoseconds per check and its ratio to reputation off. Figures go to
// docs/BENCHMARKS.md with the command, the machine and the date. Not a test: it asserts nothing.
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceProto
import SluicePostgres
import SluiceServer
import SluiceStore

#if canImport(Glibc)
import Glibc
#endif

@main
struct ReputationBenchmark {
    static func nanoseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }

    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return (Int(fields.count > 1 ? fields[1] : "0") ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Runs `work` and waits for it on this (the main, not a pooled) thread.
    static func blocking(_ work: @escaping @Sendable () async -> Void) {
        let done = DispatchSemaphore(value: 0)
        Task {
            await work()
            done.signal()
        }
        done.wait()
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }

    struct Options {
        var seconds = 2.0
        var rounds = 5
        var subjects = 100_000
        var memorySubjects = 1_000_000
        var only: String?
        /// Check modes to run (default: all).
        var modes: Set<String>?
        /// A fixed number of checks per mode and round instead of a duration (for instruction
        /// counts: scripts/bench-reputation.sh). Each check then carries its own time
        /// (`clock: request`), 20 µs after the one before: what a check costs must not depend on
        /// how fast the run goes (under callgrind, entries expired and baseline windows closed
        /// by the wall clock, and the counts of one build moved by 3 %).
        var checks: Int?
        /// A PostgreSQL database to measure ingestion into as well, beside SQLite, in the same
        /// run (scripts/bench-store.sh starts one); its tables are emptied first.
        var postgres: String?
    }

    static func parse() -> Options {
        var options = Options()
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--seconds": options.seconds = Double(arguments.next() ?? "") ?? options.seconds
            case "--rounds": options.rounds = Int(arguments.next() ?? "") ?? options.rounds
            case "--subjects": options.subjects = Int(arguments.next() ?? "") ?? options.subjects
            case "--memory-subjects": options.memorySubjects = Int(arguments.next() ?? "") ?? options.memorySubjects
            case "--only": options.only = arguments.next()
            case "--checks": options.checks = Int(arguments.next() ?? "")
            case "--postgres": options.postgres = arguments.next()
            case "--modes": options.modes = Set((arguments.next() ?? "").split(separator: ",").map(String.init))
            default:
                FileHandle.standardError.write(Data("unknown argument \(argument)\n".utf8))
                exit(2)
            }
        }
        return options
    }

    static var logger: Logger {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        return logger
    }

    static func main() throws {
        let options = parse()
        print("sluice-reputation-bench: \(ProcessInfo.processInfo.processorCount) cores, \(options.rounds) rounds of \(options.seconds) s")
        if options.only == nil || options.only == "checks" { try checks(options) }
        if options.only == nil || options.only == "ingest" { try ingest(options) }
        if let url = options.postgres, options.only == nil || options.only == "ingest" || options.only == "fleet" { try fleet(options, url: url) }
        if options.only == nil || options.only == "memory" { memory(options) }
    }

    // MARK: cost per check

    static func configuration(_ features: String, rule: String = "{ limit: 1000000, period: 1s }", requestClock: Bool = false)
        throws -> Configuration {
        var configuration = try ConfigurationLoader.parse("""
        rules:
          api: \(rule)
        reputation: { block_below: 5 }
        tiers:
          vip: { multiplier: 2, priority: 100 }
        \(features)
        """, source: "bench.yaml")
        configuration.shards = 64
        if requestClock { configuration.clock = .request }
        return configuration
    }

    static func checks(_ options: Options) throws {
        // The adaptive modes: the flag on with nothing to apply; every subject in a tier; the
        // rule naming a protected service (demand counted, admission decided); the rule
        // relative to learned baselines (every subject's baseline read and fed).
        let adaptive = "features: { adaptive: { enabled: true } }"
        let modes: [(name: String, features: String, tracked: Bool, rule: String?)] = [
            ("off", "", false, nil),
            ("on_untracked", "features: { reputation: { rollout: 100 } }", false, nil),
            ("on_tracked", "features: { reputation: { rollout: 100 } }", true, nil),
            ("shadow_tracked", "features: { reputation: { rollout: 100, shadow: true } }", true, nil),
            ("adaptive_idle", adaptive, false, nil),
            ("tiered", adaptive, false, nil),
            ("load", adaptive, false, "{ limit: 1000000, period: 1s, service: upstream }"),
            ("baseline", adaptive, false, "{ limit: 1000000, period: 1s, baseline: { factor: 3, floor: 10, ceiling: 10000000 } }"),
            // Every feature at once, enforced: reputation (every subject tracked), adaptive (every
            // subject tiered, the rule protecting a service and relative to baselines), anomaly
            // detection (each check observed) with a response in force for another subject.
            ("all", "features: { reputation: { rollout: 100 }, adaptive: { enabled: true }, anomaly: { enabled: true } }", true,
             "{ limit: 1000000, period: 1s, service: upstream, baseline: { factor: 3, floor: 10, ceiling: 10000000 } }"),
        ].filter { options.modes?.contains($0.0) ?? true }
        let requestClock = options.checks != nil
        var dispatchers: [StandaloneDispatcher] = []
        for mode in modes {
            let standalone = try StandaloneDispatcher(configuration: configuration(mode.features, rule: mode.rule ?? "{ limit: 1000000, period: 1s }",
                                                                                   requestClock: requestClock), logger: logger)
            if mode.name == "all" { standalone.putAnomalyResponse(subject: "someone-else") }
            if mode.name == "tiered" || mode.name == "all", let tiers = standalone.dispatcher.reputation?.tiers {
                for index in 0..<options.subjects {
                    tiers.assign(TierAssignment(tenant: "", subject: "user-\(index)", tier: "vip", assignedAt: 0))
                }
            }
            if mode.tracked {
                // Every subject has a record (score 35: 0.625x under the standard curve).
                var request = WireRequest()
                for start in stride(from: 0, to: options.subjects, by: 1_000) {
                    request.recordEvents.events = (start..<min(start + 1_000, options.subjects)).map { index in
                        Sluice_V1_ReputationEvent.with {
                            $0.subject = "user-\(index)"
                            $0.kind = "auth_failure"
                            $0.weight = -15
                        }
                    }
                    _ = standalone.dispatcher.process(request)
                }
            }
            dispatchers.append(standalone)
        }
        // One frame per subject, one check each (the costliest case per check: nothing shared);
        // with a fixed count of checks, one frame per check, each carrying its time.
        // The start of the next minute, plus a second: after the reputation events recorded above
        // (so scores decay), and 50,000 checks stay within one baseline window.
        let start = (UInt64(Date().timeIntervalSince1970 * 1_000) / 60_000 + 1) * 60_000 + 1_000
        let frames: [[UInt8]] = try (0..<(options.checks ?? options.subjects)).map { position in
            let index = position % options.subjects
            var request = WireRequest()
            request.id = UInt64(position + 1)
            var check = WireCheck()
            check.key = "api:user-\(index)"
            check.subject = "user-\(index)"
            check.rule = "api"
            if requestClock { check.nowMs = start + UInt64(position / 50) }
            request.check.checks = [check]
            return try request.serializedBytes()
        }
        var results: [String: [Double]] = [:]
        var out = ByteBufferAllocator().buffer(capacity: 1 << 20)
        for round in 1...options.rounds {
            for (index, mode) in modes.enumerated() {
                let dispatcher = dispatchers[index].dispatcher
                let deadline = nanoseconds() + Int64(options.seconds * 1e9)
                var checks = 0
                let started = nanoseconds()
                var position = 0
                while true {
                    for _ in 0..<1_000 {
                        _ = frames[position].withUnsafeBytes { dispatcher.answerCheckFrame($0, into: &out) }
                        position += 1
                        if position == frames.count { position = 0 }
                    }
                    out.clear()
                    checks += 1_000
                    if let fixed = options.checks { if checks >= fixed { break } } else if nanoseconds() >= deadline { break }
                }
                let perCheck = Double(nanoseconds() - started) / Double(checks)
                results[mode.name, default: []].append(perCheck)
            }
            FileHandle.standardError.write(Data("checks: round \(round) done\n".utf8))
        }
        let base = median(results["off"] ?? [])
        print("\n== cost per check (one check per frame, \(options.subjects) subjects; ns per check, median of \(options.rounds) rounds)")
        for mode in modes {
            let values = results[mode.name] ?? []
            let ratios = zip(values, results["off"] ?? []).map { $0 / $1 }
            print(String(format: "%-16@ %7.1f ns  x%.3f of off (per round: %@)", mode.name as NSString, median(values), median(ratios),
                         values.map { String(format: "%.0f", $0) }.joined(separator: ", ") as NSString))
        }
        print(String(format: "reputation adds %.1f ns per check untracked, %.1f ns tracked", median(results["on_untracked"] ?? []) - base,
                     median(results["on_tracked"] ?? []) - base))
        print(String(format: "adaptive adds %.1f ns idle, %.1f ns tiered, %.1f ns on a service's rule, %.1f ns on a baseline rule",
                     median(results["adaptive_idle"] ?? []) - base, median(results["tiered"] ?? []) - base,
                     median(results["load"] ?? []) - base, median(results["baseline"] ?? []) - base))
        for standalone in dispatchers { blocking { await standalone.stop() } }
    }

    // MARK: ingestion

    static func ingest(_ options: Options) throws {
        let directory = NSTemporaryDirectory() + "sluice-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        print("\n== event ingestion into the store (SQLite in \(directory))")

        // 1 and 2, into SQLite, then into PostgreSQL when one is given.
        try ingestIntoStore(options, label: "SQLite") { name in try SQLiteReputationStore(path: "\(directory)/\(name).db") }
        if let url = options.postgres {
            try ingestIntoStore(options, label: "PostgreSQL") { _ in
                let store = try PostgresStore(PostgresEndpoint(url: url), timeout: .seconds(60), logger: logger)
                try store.emptyForBenchmark()
                return store
            }
        }

        // 3. The whole path: RecordEvents (fire-and-forget) through the dispatcher, validated,
        //    applied to the book, and group-committed every 100 ms by the write-behind; offered
        //    at a fixed rate, then as fast as one thread can send.
        for rate in [200_000, 300_000, 0] {
            try ingestThroughDispatcher(options, directory: directory, rate: rate)
        }
    }

    /// 1. The store alone: one transaction of 100,000 events at a time, `rounds` times.
    /// 2. Group commit alone: events handed to the write-behind (one thread) as fast as it takes
    ///    them, committed every 100 ms on its queue, for 10 s.
    static func ingestIntoStore(_ options: Options, label: String, open: (String) throws -> any DurableStore) throws {
        do {
            let store = try open("store-only")
            var rates: [Double] = []
            for round in 0..<options.rounds {
                var batch = StoreBatch()
                batch.events = (0..<100_000).map {
                    ReputationEvent(tenant: "", subject: "user-\(($0 * 7_919 + round) % options.subjects)", kind: "auth_failure",
                                    weight: -5, at: Int64(round * 100_000 + $0))
                }
                let started = nanoseconds()
                try store.commit(batch)
                rates.append(100_000 / (Double(nanoseconds() - started) / 1e9))
            }
            print(String(format: "%@: store.commit, 100k events per transaction: %.0f events/s (median; %@)", label as NSString, median(rates),
                         rates.map { String(format: "%.0f", $0) }.joined(separator: ", ") as NSString))
        }
        do {
            let store = try open("write-behind")
            let writer = WriteBehind(store: store, interval: .milliseconds(100), maxPendingEvents: 1_000_000)
            // The daemon's reputation-writer service does this; here a timer stands in for it.
            let committer = DispatchSource.makeTimerSource(queue: writer.queue)
            committer.schedule(deadline: .now() + .milliseconds(100), repeating: .milliseconds(100))
            committer.setEventHandler { writer.commitOnQueue() }
            committer.resume()
            let events = (0..<100_000).map {
                ReputationEvent(tenant: "", subject: "user-\(($0 * 7_919) % options.subjects)", kind: "auth_failure", weight: -5, at: Int64($0))
            }
            let started = nanoseconds()
            var sent = 0
            while nanoseconds() - started < 10_000_000_000 {
                if writer.current.pendingEvents > 400_000 { usleep(1_000); continue }
                writer.enqueue(events: Array(events[(sent % 100_000)..<(sent % 100_000 + 1_000)]))
                sent += 1_000
            }
            committer.cancel()
            writer.flush()
            let elapsed = Double(nanoseconds() - started) / 1e9
            let statistics = writer.current
            print(String(format: "%@: write-behind, group commit every 100 ms: %.0f events/s committed over %.1f s (%d transactions, %d dropped)",
                         label as NSString, Double(statistics.eventsWritten) / elapsed, elapsed, statistics.commits, statistics.eventsDropped))
        }
    }

    /// 100 RecordEvents requests of 500 events each (one in five `success`, the rest
    /// `auth_failure`) spread over `subjects` subjects.
    static func recordBatches(subjects: Int) -> [WireRequest] {
        (0..<100).map { batch in
            var request = WireRequest()
            request.recordEvents.events = (0..<500).map { index in
                Sluice_V1_ReputationEvent.with {
                    $0.subject = "user-\((batch * 500 + index) * 7_919 % subjects)"
                    $0.kind = index % 5 == 0 ? "success" : "auth_failure"
                }
            }
            return request
        }
    }

    /// Offers RecordEvents batches of 500 at `rate` events/s (0: as fast as possible) for 10 s.
    static func ingestThroughDispatcher(_ options: Options, directory: String, rate: Int) throws {
        var configuration = try configuration("features: { reputation: { rollout: 100 } }")
        let path = "\(directory)/sluice-\(rate).db"
        configuration.store.path = path
        let standalone = StandaloneDispatcher(configuration: configuration, logger: logger)
        let batches = recordBatches(subjects: options.subjects)
        let seconds = 10.0
        let started = nanoseconds()
        let deadline = started + Int64(seconds * 1e9)
        var sent = 0, position = 0, maxPending = 0
        var steadyFrom: (time: Int64, written: UInt64)?
        while true {
            let now = nanoseconds()
            if now >= deadline { break }
            if steadyFrom == nil, now - started >= 2_000_000_000 { steadyFrom = (now, standalone.storeStatistics.eventsWritten) }
            if rate > 0, Double(sent) >= Double(now - started) / 1e9 * Double(rate) {
                usleep(200)
                continue
            }
            let response = standalone.dispatcher.process(batches[position])
            guard case .recordEvents = response.body else { fatalError("unexpected answer \(response)") }
            sent += 500
            position = (position + 1) % batches.count
            if sent % 20_000 == 0 { maxPending = max(maxPending, standalone.storeStatistics.pendingEvents) }
        }
        let fed = nanoseconds()
        let writtenAtStop = standalone.storeStatistics.eventsWritten
        let written = standalone.flush()
        let finished = nanoseconds()
        let statistics = standalone.storeStatistics
        let steady = steadyFrom.map { Double(writtenAtStop - $0.written) / (Double(fed - $0.time) / 1e9) } ?? 0
        let offered = rate > 0 ? "offered \(rate / 1_000)k/s" : "offered as fast as one thread can"
        print(String(format: "RecordEvents -> book -> group commit, %@: sent %.0f events/s; committed %.0f events/s (seconds 2-10); dropped %d; at most %d pending; the rest committed %.2f s after the stop",
                     offered as NSString, Double(sent) / (Double(fed - started) / 1e9), steady, sent - Int(written), maxPending,
                     Double(finished - fed) / 1e9))
        _ = statistics
        blocking { await standalone.stop() }
        let bytes = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        print(String(format: "  database: %.1f MB for %d events (%.0f bytes per event, indexes included); %d subjects tracked",
                     Double(bytes) / 1e6, written, Double(bytes) / Double(max(1, written)), standalone.book.count))
    }

    // MARK: a fleet on PostgreSQL

    /// Three daemons' reputation engines (standalone dispatchers: the daemon's own service,
    /// write-behind and sync, without sockets) on one PostgreSQL database, and one alone:
    /// - as fast as they take them: each fed RecordEvents by its own thread for 10 s (what is
    ///   committed per second, in all);
    /// - at a fixed rate (`rate` events/s each, for 10 s) while a probe event recorded on one is
    ///   timed until another's book has it (the propagation delay under load);
    /// - idle, the same probes.
    static func fleet(_ options: Options, url: String) throws {
        print("\n== a fleet on PostgreSQL: event ingestion and propagation (store.commit_interval and store.sync_interval 100 ms)")
        for daemons in [1, 3] {
            let store = try PostgresStore(PostgresEndpoint(url: url), timeout: .seconds(60), logger: logger)
            try store.emptyForBenchmark()
            store.close()
            var configuration = try configuration("features: { reputation: { rollout: 100 } }")
            configuration.store.backend = .postgres
            configuration.store.url = url
            configuration.store.timeout = 60_000_000_000
            let fleet = (0..<daemons).map { _ in StandaloneDispatcher(configuration: configuration, logger: logger) }
            if daemons > 1 { print("  idle, before any load: propagation: \(summary(probe(fleet, until: nanoseconds() + 5_000_000_000)))") }
            let (sent, committed) = feed(fleet, subjects: options.subjects, rate: nil, seconds: 10)
            print(String(format: "%d daemon(s), as fast as they take them: sent %.0f events/s in all; committed %.0f events/s in all (seconds 2-10)",
                         daemons, sent, committed))
            if daemons > 1 {
                for rate in [5_000, 20_000] {
                    let deadline = nanoseconds() + 10_000_000_000
                    let probes = DispatchQueue(label: "probes")
                    let delays = NIOLockedValueBox<[Double]>([])
                    probes.async { delays.withLockedValue { $0 = probe(fleet, until: deadline) } }
                    let (loadedSent, loadedCommitted) = feed(fleet, subjects: options.subjects, rate: rate, seconds: 10)
                    probes.sync {}
                    print(String(format: "  at %d events/s each: sent %.0f events/s in all; committed %.0f events/s in all; propagation: %@",
                                 rate, loadedSent, loadedCommitted, summary(delays.withLockedValue { $0 }) as NSString))
                }
                let idle = probe(fleet, until: nanoseconds() + 10_000_000_000)
                print("  idle, after: propagation: \(summary(idle))")
            }
            for member in fleet { blocking { await member.stop() } }
        }
    }

    /// Feeds each daemon RecordEvents batches of 500 from its own thread for `seconds`, at
    /// `rate` events/s each (nil: as fast as it takes them, keeping at most 400,000 pending);
    /// returns events sent per second and events committed per second from second 2 on, in all.
    static func feed(_ fleet: [StandaloneDispatcher], subjects: Int, rate: Int?, seconds: Double) -> (sent: Double, committed: Double) {
        let batches = recordBatches(subjects: subjects)
        let started = nanoseconds()
        let deadline = started + Int64(seconds * 1e9)
        let sent = NIOLockedValueBox(0)
        let steadyFrom = NIOLockedValueBox<(time: Int64, written: UInt64)?>(nil)
        let group = DispatchGroup()
        for (index, member) in fleet.enumerated() {
            DispatchQueue.global().async(group: group) {
                var position = index * 33, mine = 0
                while nanoseconds() < deadline {
                    let now = nanoseconds()
                    if index == 0, now - started >= 2_000_000_000 {
                        steadyFrom.withLockedValue { steady in
                            if steady == nil { steady = (now, fleet.reduce(0) { $0 + $1.storeStatistics.eventsWritten }) }
                        }
                    }
                    if let rate, Double(mine) >= Double(now - started) / 1e9 * Double(rate) { usleep(500); continue }
                    // Not beyond what the write-behind keeps: the rate is what is committed.
                    if member.storeStatistics.pendingEvents > 400_000 { usleep(1_000); continue }
                    _ = member.dispatcher.process(batches[position])
                    position = (position + 1) % batches.count
                    mine += 500
                }
                sent.withLockedValue { $0 += mine }
            }
        }
        group.wait()
        let fed = nanoseconds()
        let written = fleet.reduce(0) { $0 + $1.storeStatistics.eventsWritten }
        for member in fleet { member.flush() }
        var committed = 0.0
        if let from = steadyFrom.withLockedValue({ $0 }) { committed = Double(written - from.written) / (Double(fed - from.time) / 1e9) }
        return (Double(sent.withLockedValue { $0 }) / (Double(fed - started) / 1e9), committed)
    }

    /// Every 50 ms until `deadline`: an event recorded on one daemon (in turn), and how long (ms)
    /// until the next daemon's book has it; probes still out at the deadline are waited for (up
    /// to 10 s more, then counted as 10 s).
    static func probe(_ fleet: [StandaloneDispatcher], until deadline: Int64) -> [Double] {
        var delays: [Double] = []
        var out: [(subject: String, to: StandaloneDispatcher, sent: Int64)] = []
        var round = 0, nextProbe = nanoseconds()
        while true {
            let now = nanoseconds()
            if now >= nextProbe, now < deadline {
                let subject = "probe-\(UUID().uuidString)"
                var request = WireRequest()
                request.recordEvents.events = [.with {
                    $0.subject = subject
                    $0.kind = "auth_failure"
                }]
                _ = fleet[round % fleet.count].dispatcher.process(request)
                out.append((subject, fleet[(round + 1) % fleet.count], now))
                round += 1
                nextProbe = now + 50_000_000
            }
            out.removeAll { probe in
                let arrived = probe.to.book.record(subject: probe.subject) != nil
                let gaveUp = nanoseconds() - probe.sent > 10_000_000_000
                if arrived || gaveUp { delays.append(Double(nanoseconds() - probe.sent) / 1e6) }
                return arrived || gaveUp
            }
            if now >= deadline, out.isEmpty { return delays }
            usleep(500)
        }
    }

    static func summary(_ delays: [Double]) -> String {
        let sorted = delays.sorted()
        guard !sorted.isEmpty else { return "no probes" }
        func at(_ q: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] }
        return String(format: "%d probes, median %.0f ms, p99 %.0f ms, worst %.0f ms", sorted.count, at(0.5), at(0.99), sorted.last ?? 0)
    }

    // MARK: memory

    static func memory(_ options: Options) {
        let count = options.memorySubjects
        let model = ReputationModel()
        let before = residentBytes()
        let book = ReputationBook()
        for index in 0..<count {
            book.apply(ReputationEvent(tenant: "acme", subject: "user-\(index)@example.com", kind: "auth_failure", weight: -5, at: 0),
                       model: model)
        }
        let after = residentBytes()
        print("\n== memory per tracked subject")
        print(String(format: "%d subjects (tenant 'acme', 24-byte subjects): %.1f MB resident, %.0f bytes per subject (the 64 KiB filter included)",
                     book.count, Double(after - before) / 1e6, Double(after - before) / Double(count)))
    }
}
