import SluiceCore
import Foundation
import SluiceIntelligence

/// How keys are drawn.
public enum KeyDistribution: Sendable, Equatable {
    case uniform
    /// Key of rank k (from 1) drawn with probability proportional to 1 / k^exponent.
    case zipf(exponent: Double)
}

/// xorshift64*: fast, seedable, good enough to pick keys.
public struct FastRandom: Sendable {
    var state: UInt64

    public init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }


    public mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }

    /// Uniform in 0..<bound.

    public mutating func next(below bound: Int) -> Int {
        Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(bound)).high)
    }

    /// Uniform in [0, 1).

    public mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }
}

/// Draws key indices in 0..<count by a distribution. Zipf draws by binary search over the
/// cumulative distribution (built once: 8 bytes per key).
public final class KeySampler: Sendable {
    public let count: Int
    public let distribution: KeyDistribution
    let cumulative: [Double]

    public init(count: Int, distribution: KeyDistribution) {
        self.count = max(1, count)
        self.distribution = distribution
        if case .zipf(let s) = distribution {
            var sums = [Double](repeating: 0, count: self.count)
            var total = 0.0
            for rank in 0..<self.count {
                total += 1 / pow(Double(rank + 1), s)
                sums[rank] = total
            }
            for rank in 0..<self.count { sums[rank] /= total }
            cumulative = sums
        } else {
            cumulative = []
        }
    }


    public func sample(_ random: inout FastRandom) -> Int {
        if cumulative.isEmpty { return random.next(below: count) }
        return sampleZipf(random.unit())
    }


    func sampleZipf(_ u: Double) -> Int {
        var low = 0, high = count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] < u { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

/// A trace file that cannot be read.
public struct TraceError: Error, CustomStringConvertible {
    public var description: String
}

public enum TraceReader {
    public static let header = "ts_ms,tenant,subject,ip,route,status,cost"

    /// The latest time a row may have (the last millisecond of 2199, as a check's `now_ms`): a
    /// later one is refused with its line, so a time always fits the signed milliseconds and
    /// nanoseconds replays and detection compute with.
    public static let latestTimestampMs: UInt64 = 7_258_118_399_999

    /// Reads a trace: a `.csv.gz` (through `gzip -dc`) or a plain `.csv`. Rows must have 7 fields
    /// and non-decreasing timestamps; a bad row is an error naming its line.
    public static func read(path: String, limit: Int? = nil) throws -> [CheckEvent] {
        try parse(contents(of: path), name: path, limit: limit)
    }

    /// Calls `body` with each row of the trace at `path`, in order, without keeping them: the
    /// file is decompressed and parsed 4 MiB at a time, so memory does not grow with its length.
    ///
    /// - Parameter progress: after each 4 MiB, the bytes read (decompressed) and how many the
    ///   whole trace has (an estimate for a `.gz`; ``expectedBytes(path:)``).
    public static func forEachRow(path: String, limit: Int? = nil, progress: ((_ read: UInt64, _ total: UInt64) -> Void)? = nil,
                                  _ body: (CheckEvent) throws -> Void) throws {
        guard FileManager.default.isReadableFile(atPath: path) else { throw TraceError(description: "\(path): cannot read the file") }
        let process = ChildProcess()
        let input: FileHandle
        if path.hasSuffix(".gz") {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["gzip", "-dc", path]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            input = pipe.fileHandleForReading
        } else {
            guard let handle = FileHandle(forReadingAtPath: path) else { throw TraceError(description: "\(path): cannot read the file") }
            input = handle
        }
        defer {
            if process.isRunning { process.terminate() }
            try? input.close()
        }
        var pending = Data()
        var state = ParseState()
        var total = progress == nil ? 0 : expectedBytes(path: path)
        var read: UInt64 = 0
        while true {
            let chunk = try input.read(upToCount: 4 << 20) ?? Data()
            if chunk.isEmpty { break }
            pending.append(chunk)
            if let progress {
                read &+= UInt64(chunk.count)
                // gzip keeps the size modulo 4 GiB: past it, the whole is 4 GiB more.
                while total < read, path.hasSuffix(".gz") { total &+= 1 << 32 }
                progress(read, max(total, read))
            }
            // Whole lines only; the rest waits for the next chunk.
            guard let lastNewline = pending.lastIndex(of: 10) else { continue }
            let whole = pending[pending.startIndex...lastNewline]
            if try !forEachRow(Data(whole), name: path, limit: limit, state: &state, body) { return }
            pending = Data(pending[pending.index(after: lastNewline)...])
        }
        if !pending.isEmpty { _ = try forEachRow(pending, name: path, limit: limit, state: &state, body) }
        if path.hasSuffix(".gz") {
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw TraceError(description: "\(path): gzip -dc failed") }
        }
        if state.lineNumber == 0 { throw TraceError(description: "\(path): the file is empty (no header)") }
    }

    /// How many bytes the trace at `path` holds, decompressed: a plain file's size, or what a
    /// gzip file's trailer says (the size modulo 4 GiB, of its last member); 0 when unknown.
    public static func expectedBytes(path: String) -> UInt64 {
        guard let handle = FileHandle(forReadingAtPath: path) else { return 0 }
        defer { try? handle.close() }
        guard let end = try? handle.seekToEnd() else { return 0 }
        guard path.hasSuffix(".gz") else { return end }
        guard end >= 18, (try? handle.seek(toOffset: end - 4)) != nil, let trailer = try? handle.read(upToCount: 4), trailer.count == 4 else {
            return 0
        }
        return trailer.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    /// Where a parse stopped, to go on with the next chunk.
    struct ParseState {
        var lineNumber = 0
        var rows = 0
        var previous: UInt64 = 0
    }

    /// The bytes of a trace file, decompressed.
    static func contents(of path: String) throws -> Data {
        if path.hasSuffix(".gz") {
            guard FileManager.default.isReadableFile(atPath: path) else { throw TraceError(description: "\(path): cannot read the file") }
            let gzip = ChildProcess()
            gzip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            gzip.arguments = ["gzip", "-dc", path]
            let pipe = Pipe()
            gzip.standardOutput = pipe
            try gzip.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            gzip.waitUntilExit()
            guard gzip.terminationStatus == 0 else { throw TraceError(description: "\(path): gzip -dc failed") }
            return data
        }
        guard let contents = FileManager.default.contents(atPath: path) else {
            throw TraceError(description: "\(path): cannot read the file")
        }
        return contents
    }

    public static func parse(_ data: Data, name: String, limit: Int? = nil) throws -> [CheckEvent] {
        var rows: [CheckEvent] = []
        try forEachRow(data, name: name, limit: limit) { rows.append($0) }
        return rows
    }

    /// Parses the rows of `data` one at a time, in place (no copy of a line or a field but the
    /// strings a row keeps): several hundred thousand rows a second.
    public static func forEachRow(_ data: Data, name: String, limit: Int? = nil, _ body: (CheckEvent) throws -> Void) throws {
        guard !data.isEmpty else { throw TraceError(description: "\(name): the file is empty (no header)") }
        var state = ParseState()
        _ = try forEachRow(data, name: name, limit: limit, state: &state, body)
    }

    /// Parses the whole lines of `data` after those `state` has seen; false once `limit` rows were read.
    static func forEachRow(_ data: Data, name: String, limit: Int?, state: inout ParseState, _ body: (CheckEvent) throws -> Void) throws -> Bool {
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Bool in
            guard let base = raw.baseAddress else { return true }
            let size = raw.count
            var position = 0
            var lineNumber = state.lineNumber, rows = state.rows
            var previous = state.previous
            defer {
                state.lineNumber = lineNumber
                state.rows = rows
                state.previous = previous
            }
            while position < size {
                let remaining = size - position
                let newline = memchr(base + position, 10, remaining)
                let end = newline.map { base.distance(to: UnsafeRawPointer($0)) } ?? size
                let line = UnsafeRawBufferPointer(start: base + position, count: end - position)
                position = end + 1
                lineNumber += 1
                guard !line.isEmpty else { continue }
                if lineNumber == 1 {
                    guard line.elementsEqual(header.utf8) else {
                        throw TraceError(description: "\(name):1: the header is not \"\(header)\"")
                    }
                    continue
                }
                if let limit, rows >= limit { return false }
                var fields: [UnsafeRawBufferPointer] = []
                fields.reserveCapacity(7)
                var start = 0
                for index in 0..<line.count where line[index] == UInt8(ascii: ",") {
                    fields.append(UnsafeRawBufferPointer(rebasing: line[start..<index]))
                    start = index + 1
                }
                fields.append(UnsafeRawBufferPointer(rebasing: line[start..<line.count]))
                guard fields.count == 7, let ts = number(fields[0]), let status = number(fields[5]), status <= 999,
                      let cost = number(fields[6]), cost >= 1 else {
                    throw TraceError(description: "\(name):\(lineNumber): expected ts_ms,tenant,subject,ip,route,status,cost")
                }
                guard ts <= Self.latestTimestampMs else {
                    throw TraceError(description: "\(name):\(lineNumber): ts_ms \(ts) is after the year 2199")
                }
                guard ts >= previous else { throw TraceError(description: "\(name):\(lineNumber): ts_ms goes backwards") }
                previous = ts
                rows += 1
                try body(CheckEvent(timestampMs: Int64(ts), tenant: String(decoding: fields[1], as: UTF8.self),
                                  subject: String(decoding: fields[2], as: UTF8.self), ip: String(decoding: fields[3], as: UTF8.self),
                                  route: String(decoding: fields[4], as: UTF8.self), status: Int(status), cost: cost))
            }
            return true
        }
    }

    /// A decimal number of 1 to 19 digits, nil otherwise.
    static func number(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard !bytes.isEmpty, bytes.count <= 19 else { return nil }
        var value: UInt64 = 0
        for byte in bytes {
            guard byte >= 48, byte <= 57 else { return nil }
            value = value * 10 + UInt64(byte - 48)
        }
        return value
    }
}

/// How a trace row becomes a check.
public enum ReplayKey: String, Sendable, CaseIterable {
    /// key = subject: one limit per user, API key or anonymous IP.
    case subject
    /// key = ip.
    case ip
    /// key = subject + " " + route: one limit per caller and endpoint.
    case subjectRoute = "subject-route"
}

/// How fast a trace is replayed.
public enum ReplayPace: Sendable, Equatable {
    /// At the trace's own timing.
    case recorded
    /// `factor` times faster than recorded.
    case scaled(Double)
    /// As fast as the pipeline allows (closed loop).
    case asFastAsPossible
}


extension CheckEvent {
    /// A trace row as detection sees it (`sluicectl replay`).
    public init(_ row: CheckEvent) {
        self.init(timestampMs: Int64(row.timestampMs), tenant: row.tenant, subject: row.subject, ip: row.ip, route: row.route,
                  status: row.status, cost: row.cost)
    }
}

