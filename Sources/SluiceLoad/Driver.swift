#if canImport(Glibc)
import Glibc
#endif
import CSluiceSupport
import Foundation
import Histogram
import SluiceProto
import Synchronization

/// Where the target listens.
public enum LoadEndpoint: Sendable, Equatable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: Int)

    /// Parses `unix:PATH`, a path containing `/`, `HOST:PORT` or `[IPv6]:PORT`.
    public init?(_ text: String) {
        if text.hasPrefix("unix:") { self = .unix(path: String(text.dropFirst(5))); return }
        if text.contains("/") { self = .unix(path: text); return }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self = .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .unix(let path): "unix:\(path)"
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}

/// Every check the run can send, encoded once into one block: entry `i` is the wire bytes of
/// check `i` (see ``RequestEncoder/encodeEntry(_:redisArguments:)``).
public final class EntryTable: @unchecked Sendable {
    let storage: UnsafeMutableBufferPointer<UInt8>
    let offsets: [Int]

    public init(_ entries: [[UInt8]]) {
        var offsets = [0]
        offsets.reserveCapacity(entries.count + 1)
        for entry in entries { offsets.append(offsets[offsets.count - 1] + entry.count) }
        storage = .allocate(capacity: max(1, offsets[offsets.count - 1]))
        var position = 0
        for entry in entries {
            for byte in entry { storage[position] = byte; position += 1 }
        }
        self.offsets = offsets
    }

    deinit { storage.deallocate() }

    public var count: Int { offsets.count - 1 }


    public subscript(index: Int) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: UnsafeBufferPointer(storage)[offsets[index]..<offsets[index + 1]])
    }
}

/// What the connections send.
public enum LoadSource: Sendable {
    /// Checks drawn from `entries` by `sampler`.
    case generated(entries: EntryTable, sampler: KeySampler)
    /// A trace: `schedule[c]` lists connection c's checks in order, with their offsets in
    /// nanoseconds from the trace's start; `entries` holds the checks.
    case replay(entries: EntryTable, schedule: [[(offset: Int64, entry: Int32)]], pace: ReplayPace)
}

/// A whole run.
public struct LoadPlan: Sendable {
    public var endpoint: LoadEndpoint
    public var targetProtocol: TargetProtocol
    public var connections = 50
    /// Requests in flight per connection at most.
    public var depth = 1
    /// Checks per request (Sluice only).
    public var batch = 1
    public var threads = 1
    /// Seconds to send for (nil: until `requests` are sent or the trace ends).
    public var duration: Double?
    /// Requests to send in all (nil: until `duration`).
    public var requests: Int?
    /// Open loop: requests per second in all, sent on schedule whatever the answers do.
    public var rate: Double?
    /// Seconds at the start whose answers are not counted.
    public var warmup: Double = 0
    /// Print a progress line every second to standard error.
    public var progress = false
    public var source: LoadSource
    public var seed: UInt64 = 1
    /// An API token each connection presents first (a listener that requires one); nil: none.
    public var token: String?

    public init(endpoint: LoadEndpoint, targetProtocol: TargetProtocol, source: LoadSource) {
        self.endpoint = endpoint
        self.targetProtocol = targetProtocol
        self.source = source
    }

    var openLoop: Bool {
        if case .replay(_, _, let pace) = source { return pace != .asFastAsPossible }
        return rate != nil
    }
}

/// What a run measured.
public struct LoadResult: Sendable, Codable {
    public var requests: Int = 0
    public var decisions: Int = 0
    public var allowed: Int = 0
    public var denied: Int = 0
    public var errors: Int = 0
    /// Requests never answered (connections that broke, or answers still missing at the end).
    public var unanswered: Int = 0
    public var connectionErrors: Int = 0
    public var seconds: Double = 0
    public var requestsPerSecond: Double = 0
    public var decisionsPerSecond: Double = 0
    /// Microseconds; for an open loop measured from each request's intended send time.
    public var latencyMicroseconds: [String: Double] = [:]
}

/// Why a run could not start.
public struct LoadError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

@inline(__always)
func monotonicNanoseconds() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
}

/// Runs load plans: one epoll loop per thread over nonblocking sockets. No NIO here on purpose:
/// the harness shares two cores with the daemon it measures, so it must cost as little per
/// request as a C client would (see docs/BENCHMARKS.md).
public enum LoadDriver {
    public static func run(_ plan: LoadPlan) throws -> LoadResult {
        guard plan.connections >= 1, plan.depth >= 1, plan.batch >= 1, plan.threads >= 1 else {
            throw LoadError("connections, depth, batch and threads must be at least 1")
        }
        if plan.targetProtocol.isRedis, plan.batch != 1 {
            throw LoadError("Redis takes one check per request: --batch must be 1")
        }
        if plan.duration == nil, plan.requests == nil, case .generated = plan.source {
            throw LoadError("give a duration or a request count")
        }
        let threads = min(plan.threads, plan.connections)
        // Connect everything first, so that a wrong endpoint fails fast and the clock starts
        // with every connection ready.
        var sockets: [[Int32]] = Array(repeating: [], count: threads)
        for index in 0..<plan.connections {
            let fd = try connect(plan.endpoint)
            if case .grpc = plan.targetProtocol {
                do {
                    try http2Handshake(fd)
                } catch {
                    close(fd)
                    throw error
                }
            }
            if let token = plan.token {
                do {
                    try authenticate(fd, token: token)
                } catch {
                    close(fd)
                    throw error
                }
            }
            sockets[index % threads].append(fd)
        }
        let counters = ProgressCounters()
        let start = monotonicNanoseconds() + 1_000_000
        let results = Mutex<[WorkerResult]>([])
        let group = DispatchGroup()
        for thread in 0..<threads {
            group.enter()
            let fds = sockets[thread]
            let firstConnection = thread
            Thread {
                let worker = Worker(plan: plan, fds: fds, connectionStride: threads, firstConnection: firstConnection,
                                    threadIndex: thread, threadCount: threads, start: start, counters: counters)
                let result = worker.run()
                results.withLock { $0.append(result) }
                group.leave()
            }.start()
        }
        let reporter = plan.progress ? ProgressReporter(counters: counters, start: start) : nil
        reporter?.begin()
        group.wait()
        reporter?.end()
        let all = results.withLock { $0 }
        var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000_000,
                                          numberOfSignificantValueDigits: .three)
        var result = LoadResult()
        var end = start
        for worker in all {
            histogram.add(worker.histogram)
            result.requests += worker.requests
            result.decisions += worker.decisions
            result.allowed += worker.allowed
            result.denied += worker.denied
            result.errors += worker.errors
            result.unanswered += worker.unanswered
            result.connectionErrors += worker.connectionErrors
            end = max(end, worker.lastAnswer)
        }
        let measuredFrom = start + Int64(plan.warmup * 1e9)
        result.seconds = Double(max(1, end - measuredFrom)) / 1e9
        result.requestsPerSecond = Double(result.requests) / result.seconds
        result.decisionsPerSecond = Double(result.decisions) / result.seconds
        if histogram.totalCount > 0 {
            func us(_ p: Double) -> Double { Double(histogram.valueAtPercentile(p)) / 1000 }
            result.latencyMicroseconds = ["p50": us(50), "p90": us(90), "p99": us(99), "p99.9": us(99.9),
                                          "max": Double(histogram.max) / 1000, "mean": histogram.mean / 1000]
        }
        return result
    }

    static func connect(_ endpoint: LoadEndpoint) throws -> Int32 {
        switch endpoint {
        case .unix(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw LoadError("socket(): \(String(cString: strerror(errno)))") }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
                close(fd)
                throw LoadError("the socket path \(path) is too long")
            }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
                raw[bytes.count] = 0
            }
            let status = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard status == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw LoadError("cannot connect to unix:\(path): \(reason)")
            }
            try setNonBlocking(fd)
            return fd
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let lookup = getaddrinfo(host, String(port), &hints, &list)
            guard lookup == 0, let first = list else {
                throw LoadError("cannot resolve \(host): \(String(cString: gai_strerror(lookup)))")
            }
            defer { freeaddrinfo(list) }
            var current: UnsafeMutablePointer<addrinfo>? = first
            var reason = "no address"
            while let info = current {
                let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
                if fd >= 0 {
                    if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
                        var one: Int32 = 1
                        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                        try setNonBlocking(fd)
                        return fd
                    }
                    reason = String(cString: strerror(errno))
                    close(fd)
                }
                current = info.pointee.ai_next
            }
            throw LoadError("cannot connect to \(host):\(port): \(reason)")
        }
    }

    /// Opens HTTP/2 on a fresh connection: the preface and SETTINGS, then waits (at most 5 s)
    /// for the server's SETTINGS and acknowledges them.
    static func http2Handshake(_ fd: Int32) throws {
        let deadline = monotonicNanoseconds() + 5_000_000_000
        func wait(_ events: Int16) throws {
            var poller = pollfd(fd: fd, events: events, revents: 0)
            let left = Int32(max(0, (deadline - monotonicNanoseconds()) / 1_000_000))
            guard left > 0, poll(&poller, 1, left) > 0 else { throw LoadError("no HTTP/2 SETTINGS from the server within 5 s") }
        }
        func write(_ bytes: [UInt8]) throws {
            var sent = 0
            while sent < bytes.count {
                let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n > 0 { sent += n; continue }
                guard n < 0, errno == EAGAIN || errno == EINTR else { throw LoadError("writing the HTTP/2 preface: \(String(cString: strerror(errno)))") }
                try wait(Int16(POLLOUT))
            }
        }
        try write(GRPCWire.preface)
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4_096)
        while true {
            // The server's own SETTINGS (not an acknowledgement) is its first frame.
            if received.count >= 9 {
                let length = Int(received[0]) << 16 | Int(received[1]) << 8 | Int(received[2])
                guard received[3] == 4, received[4] & 0x1 == 0 else { throw LoadError("the server did not open with HTTP/2 SETTINGS") }
                if received.count >= 9 + length { break }
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { received += chunk[0..<n]; continue }
            guard n < 0, errno == EAGAIN || errno == EINTR else { throw LoadError("the server closed the connection during the HTTP/2 handshake") }
            try wait(Int16(POLLIN))
        }
        try write(GRPCWire.settingsAck)
    }

    /// Presents `token` on a fresh connection and waits (at most 5 s) for the daemon to accept it.
    static func authenticate(_ fd: Int32, token: String) throws {
        var request = Sluice_V1_Request()
        request.id = 1
        request.authenticate.token = token
        let body: [UInt8] = try request.serializedBytes()
        var frame: [UInt8] = [UInt8(truncatingIfNeeded: body.count >> 24), UInt8(truncatingIfNeeded: body.count >> 16),
                              UInt8(truncatingIfNeeded: body.count >> 8), UInt8(truncatingIfNeeded: body.count)]
        frame += body
        let deadline = monotonicNanoseconds() + 5_000_000_000
        func wait(_ events: Int16) throws {
            var poller = pollfd(fd: fd, events: events, revents: 0)
            let left = Int32(max(0, (deadline - monotonicNanoseconds()) / 1_000_000))
            guard left > 0, poll(&poller, 1, left) > 0 else { throw LoadError("no answer to Authenticate within 5 s") }
        }
        var sent = 0
        while sent < frame.count {
            let n = frame[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { sent += n; continue }
            guard n < 0, errno == EAGAIN || errno == EINTR else { throw LoadError("writing Authenticate: \(String(cString: strerror(errno)))") }
            try wait(Int16(POLLOUT))
        }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4_096)
        while true {
            if answer.count >= 4 {
                let length = Int(answer[0]) << 24 | Int(answer[1]) << 16 | Int(answer[2]) << 8 | Int(answer[3])
                if answer.count >= 4 + length {
                    let response = try Sluice_V1_Response(serializedBytes: Array(answer[4..<(4 + length)]))
                    if case .error(let error) = response.body { throw LoadError("the token was refused: \(error.code.name): \(error.message)") }
                    guard answer.count == 4 + length else { throw LoadError("the daemon sent more than the answer to Authenticate") }
                    return
                }
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { answer += chunk[0..<n]; continue }
            guard n < 0, errno == EAGAIN || errno == EINTR else { throw LoadError("the daemon closed the connection during Authenticate") }
            try wait(Int16(POLLIN))
        }
    }

    static func setNonBlocking(_ fd: Int32) throws {
        let flags = fcntl(fd, F_GETFL, 0)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
            throw LoadError("fcntl(O_NONBLOCK): \(String(cString: strerror(errno)))")
        }
    }
}

/// Totals every worker adds to after each loop turn, read by the progress line.
final class ProgressCounters: Sendable {
    let answers = Atomic<Int>(0)
    let decisions = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
}

final class ProgressReporter: @unchecked Sendable {
    let counters: ProgressCounters
    let start: Int64
    let done = Atomic<Bool>(false)
    var thread: Thread?

    init(counters: ProgressCounters, start: Int64) {
        self.counters = counters
        self.start = start
    }

    func begin() {
        let thread = Thread { [self] in
            var lastAnswers = 0, lastDecisions = 0
            var lastTime = start
            while !done.load(ordering: .relaxed) {
                for _ in 0..<10 where !done.load(ordering: .relaxed) { usleep(100_000) }
                let answers = counters.answers.load(ordering: .relaxed)
                let decisions = counters.decisions.load(ordering: .relaxed)
                let now = monotonicNanoseconds()
                // Per second over the interval since the last line (the last one may be short).
                let interval = Double(max(1, now - lastTime)) / 1e9
                let line = String(format: "%6.1f s  %9.0f requests/s  %10.0f decisions/s  %d errors\n", Double(now - start) / 1e9,
                                  Double(answers - lastAnswers) / interval, Double(decisions - lastDecisions) / interval,
                                  counters.errors.load(ordering: .relaxed))
                FileHandle.standardError.write(Data(line.utf8))
                lastAnswers = answers
                lastDecisions = decisions
                lastTime = now
            }
        }
        self.thread = thread
        thread.start()
    }

    func end() { done.store(true, ordering: .relaxed) }
}

struct WorkerResult: Sendable {
    var histogram: Histogram<UInt64>
    var requests = 0
    var decisions = 0
    var allowed = 0
    var denied = 0
    var errors = 0
    var unanswered = 0
    var connectionErrors = 0
    var lastAnswer: Int64 = 0
}

/// One connection's state inside a worker.
final class LoadConnection {
    let fd: Int32
    let index: Int
    /// Its place in its worker's list (the epoll cookie).
    var position = 0
    var out: [UInt8] = []
    var written = 0
    var input: UnsafeMutableRawBufferPointer
    var inputStart = 0
    var inputEnd = 0
    /// In-flight requests, oldest first: (id, start time).
    var inflightIDs: [UInt64]
    var inflightStarts: [Int64]
    var inflightHead = 0
    var inflightCount = 0
    var nextID: UInt64 = 1
    var open = true
    var wantsWrite = false
    // Open loop and replay.
    var nextDue: Int64 = 0
    var scheduleIndex = 0

    init(fd: Int32, index: Int, depth: Int) {
        self.fd = fd
        self.index = index
        input = .allocate(byteCount: 1 << 18, alignment: 8)
        inflightIDs = Array(repeating: 0, count: depth)
        inflightStarts = Array(repeating: 0, count: depth)
        out.reserveCapacity(1 << 16)
    }

    deinit {
        input.deallocate()
        if open { close(fd) }
    }
}

/// One thread's share of the connections and its epoll loop.
final class Worker {
    let plan: LoadPlan
    let connections: [LoadConnection]
    let epoll: Int32
    let start: Int64
    let measureFrom: Int64
    let stopAt: Int64
    var budget: Int
    let counters: ProgressCounters
    var random: FastRandom
    var result: WorkerResult
    var sending = true
    let interval: Int64
    var scratch: [UnsafeBufferPointer<UInt8>]
    let encoder: RequestEncoder
    let checksIDs: Bool

    init(plan: LoadPlan, fds: [Int32], connectionStride: Int, firstConnection: Int, threadIndex: Int, threadCount: Int,
         start: Int64, counters: ProgressCounters) {
        self.plan = plan
        connections = fds.enumerated().map {
            LoadConnection(fd: $0.element, index: firstConnection + $0.offset * connectionStride, depth: plan.depth)
        }
        epoll = sluice_epoll_create()
        self.start = start
        measureFrom = start + Int64(plan.warmup * 1e9)
        stopAt = plan.duration.map { start + Int64($0 * 1e9) } ?? .max
        if let total = plan.requests {
            budget = total / threadCount + (threadIndex < total % threadCount ? 1 : 0)
        } else {
            budget = .max
        }
        self.counters = counters
        random = FastRandom(seed: plan.seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(threadIndex + 1))
        result = WorkerResult(histogram: Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000_000,
                                                           numberOfSignificantValueDigits: .three))
        let perConnectionRate = (plan.rate ?? 1) / Double(plan.connections)
        interval = max(1, Int64(1e9 / perConnectionRate))
        scratch = []
        scratch.reserveCapacity(plan.batch)
        encoder = RequestEncoder(targetProtocol: plan.targetProtocol)
        checksIDs = !plan.targetProtocol.isRedis
        for (position, connection) in connections.enumerated() {
            connection.position = position
            _ = sluice_epoll_watch(epoll, connection.fd, UInt32(SLUICE_EPOLL_IN), UInt64(position), 0)
            // Spread the open-loop schedules over one interval so the connections do not send in step.
            connection.nextDue = start + interval * Int64(position * connectionStride + firstConnection) / Int64(max(1, plan.connections))
        }
    }

    deinit { close(epoll) }

    func run() -> WorkerResult {
        while monotonicNanoseconds() < start {}
        for connection in connections { fill(connection, now: monotonicNanoseconds()) }
        var cookies = [UInt64](repeating: 0, count: 64)
        var events = [UInt32](repeating: 0, count: 64)
        let readable = UInt32(SLUICE_EPOLL_IN | SLUICE_EPOLL_ERR | SLUICE_EPOLL_HUP)
        let writable = UInt32(SLUICE_EPOLL_OUT)
        let drainDeadlineAfterStop: Int64 = 5_000_000_000
        var stoppedAt: Int64 = 0
        var lastReport = (answers: 0, decisions: 0, errors: 0)
        while true {
            let now = monotonicNanoseconds()
            if sending, now >= stopAt || budget <= 0 || scheduleFinished() {
                sending = false
                stoppedAt = now
            }
            if !sending {
                if connections.allSatisfy({ !$0.open || $0.inflightCount == 0 }) { break }
                if now - stoppedAt > drainDeadlineAfterStop { break }
            }
            if plan.openLoop, sending {
                for connection in connections where connection.open { fill(connection, now: now) }
            }
            var timeout: Int64 = 100_000_000
            if plan.openLoop, sending {
                var earliest = Int64.max
                for connection in connections where connection.open && connection.inflightCount < plan.depth {
                    earliest = min(earliest, connection.nextDue)
                }
                if earliest != .max { timeout = max(0, min(timeout, earliest - now)) }
            }
            let count = cookies.withUnsafeMutableBufferPointer { cookies in
                events.withUnsafeMutableBufferPointer { events in
                    sluice_epoll_wait(epoll, cookies.baseAddress, events.baseAddress, 64, timeout)
                }
            }
            if count < 0 {
                if errno == EINTR { continue }
                break
            }
            for i in 0..<Int(count) {
                let connection = connections[Int(cookies[i])]
                guard connection.open else { continue }
                if events[i] & writable != 0 { flush(connection) }
                if events[i] & readable != 0 { receive(connection) }
            }
            let answers = result.requests, decisions = result.decisions, errors = result.errors
            if answers != lastReport.answers {
                counters.answers.add(answers - lastReport.answers, ordering: .relaxed)
                counters.decisions.add(decisions - lastReport.decisions, ordering: .relaxed)
                counters.errors.add(errors - lastReport.errors, ordering: .relaxed)
                lastReport = (answers, decisions, errors)
            }
        }
        for connection in connections where connection.open {
            result.unanswered += connection.inflightCount
        }
        return result
    }

    /// When a trace row at `offset` nanoseconds into the trace is due.
    func replayTime(_ offset: Int64, _ pace: ReplayPace) -> Int64 {
        switch pace {
        case .recorded: start + offset
        case .scaled(let factor): start + Int64(Double(offset) / factor)
        case .asFastAsPossible: start
        }
    }

    func scheduleFinished() -> Bool {
        guard case .replay(_, let schedule, _) = plan.source else { return false }
        return connections.allSatisfy { $0.scheduleIndex >= schedule[$0.index].count }
    }

    /// Sends what this connection may send now: up to the depth in a closed loop; what is due,
    /// up to the depth, in an open loop.
    func fill(_ connection: LoadConnection, now: Int64) {
        guard connection.open else { return }
        var sent = false
        filling: while sending, budget > 0, connection.inflightCount < plan.depth {
            let intended: Int64
            switch plan.source {
            case .generated(let entries, let sampler):
                if plan.openLoop {
                    guard connection.nextDue <= now, connection.nextDue < stopAt else { break filling }
                    intended = connection.nextDue
                    connection.nextDue += interval
                } else {
                    intended = now
                }
                scratch.removeAll(keepingCapacity: true)
                for _ in 0..<plan.batch { scratch.append(entries[sampler.sample(&random)]) }
            case .replay(let entries, let schedule, let pace):
                let items = schedule[connection.index]
                guard connection.scheduleIndex < items.count else { break filling }
                let item = items[connection.scheduleIndex]
                intended = pace == .asFastAsPossible ? now : replayTime(item.offset, pace)
                if pace != .asFastAsPossible {
                    guard intended <= now else { connection.nextDue = intended; break filling }
                }
                connection.scheduleIndex += 1
                connection.nextDue = connection.scheduleIndex < items.count
                    ? replayTime(items[connection.scheduleIndex].offset, pace) : .max
                scratch.removeAll(keepingCapacity: true)
                scratch.append(entries[Int(item.entry)])
            }
            let id = connection.nextID
            connection.nextID &+= 1
            scratch.withUnsafeBufferPointer { encoder.appendRequest(id: id, entries: $0, to: &connection.out) }
            let slot = (connection.inflightHead + connection.inflightCount) % plan.depth
            connection.inflightIDs[slot] = id
            connection.inflightStarts[slot] = intended
            connection.inflightCount += 1
            budget -= 1
            sent = true
        }
        if sent { flush(connection) }
    }

    func flush(_ connection: LoadConnection) {
        while connection.written < connection.out.count {
            let n = connection.out.withUnsafeBytes {
                send(connection.fd, $0.baseAddress! + connection.written, $0.count - connection.written, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                connection.written += n
            } else if n < 0, errno == EINTR {
                continue
            } else if n < 0, errno == EAGAIN || errno == EWOULDBLOCK {
                if !connection.wantsWrite { watch(connection, writable: true) }
                return
            } else {
                broken(connection)
                return
            }
        }
        connection.out.removeAll(keepingCapacity: true)
        connection.written = 0
        if connection.wantsWrite { watch(connection, writable: false) }
    }

    func watch(_ connection: LoadConnection, writable: Bool) {
        connection.wantsWrite = writable
        let events = UInt32(SLUICE_EPOLL_IN) | (writable ? UInt32(SLUICE_EPOLL_OUT) : 0)
        _ = sluice_epoll_watch(epoll, connection.fd, events, UInt64(connection.position), 1)
    }

    func broken(_ connection: LoadConnection) {
        guard connection.open else { return }
        connection.open = false
        result.connectionErrors += 1
        result.unanswered += connection.inflightCount
        connection.inflightCount = 0
        _ = sluice_epoll_forget(epoll, connection.fd)
        close(connection.fd)
    }

    func receive(_ connection: LoadConnection) {
        while connection.open {
            if connection.inputStart == connection.inputEnd {
                connection.inputStart = 0
                connection.inputEnd = 0
            } else if connection.input.count - connection.inputEnd < 4096 {
                let pending = connection.inputEnd - connection.inputStart
                if connection.inputStart > 0 {
                    connection.input.baseAddress!.copyMemory(from: connection.input.baseAddress! + connection.inputStart, byteCount: pending)
                    connection.inputStart = 0
                    connection.inputEnd = pending
                }
                if connection.input.count - connection.inputEnd < 4096 {
                    let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: connection.input.count * 2, alignment: 8)
                    bigger.baseAddress!.copyMemory(from: connection.input.baseAddress!, byteCount: pending)
                    connection.input.deallocate()
                    connection.input = bigger
                }
            }
            let room = connection.input.count - connection.inputEnd
            let n = read(connection.fd, connection.input.baseAddress! + connection.inputEnd, room)
            if n > 0 {
                connection.inputEnd += n
                if !consume(connection) { return }
                if n < room { break } // drained: skip the read that would say EAGAIN
                continue
            }
            if n < 0, errno == EINTR { continue }
            if n < 0, errno == EAGAIN || errno == EWOULDBLOCK { break }
            broken(connection)
            return
        }
        if connection.open, sending { fill(connection, now: monotonicNanoseconds()) }
    }

    /// Takes every complete answer from the input; false if the stream broke.
    func consume(_ connection: LoadConnection) -> Bool {
        let now = monotonicNanoseconds()
        while true {
            let available = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(connection.input)[connection.inputStart..<connection.inputEnd])
            let next: (Answer, Int)?
            do {
                next = try AnswerScanner.next(available, protocol: plan.targetProtocol)
            } catch {
                broken(connection)
                return false
            }
            guard let (answer, used) = next else { return true }
            connection.inputStart += used
            guard connection.inflightCount > 0 else {
                broken(connection)
                return false
            }
            let slot = connection.inflightHead
            let id = connection.inflightIDs[slot], started = connection.inflightStarts[slot]
            connection.inflightHead = (slot + 1) % plan.depth
            connection.inflightCount -= 1
            // Redis answers carry no id; a Sluice error about an unreadable request may carry 0.
            if checksIDs, answer.id != id, !(answer.isError && answer.id == 0) {
                broken(connection)
                return false
            }
            guard started >= measureFrom else { continue }
            result.requests += 1
            result.lastAnswer = now
            if answer.isError {
                result.errors += 1
            } else {
                result.allowed += answer.allowed
                result.denied += answer.denied
                result.decisions += plan.targetProtocol == .echo ? plan.batch : answer.allowed + answer.denied
            }
            _ = result.histogram.record(UInt64(max(1, now - started)))
        }
    }
}
