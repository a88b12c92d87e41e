import SluiceCore
import Foundation
import SwiftProtobuf
import SluiceIntelligence
import SluiceTestKit
import Testing
@testable import SluiceLoad
import SluiceProto

@Suite("Load harness wire", .computes)
struct LoadWireTests {
    func check(_ key: String) -> Sluice_V1_Check {
        Sluice_V1_Check.with {
            $0.key = key
            $0.limit = .with { $0.limit = 10; $0.periodMs = 1000 }
        }
    }

    /// Feeds `stream` to the scanner `split` bytes at a time; returns the answers and what is left.
    func scan(_ stream: [UInt8], split: Int, protocol target: TargetProtocol) throws -> ([Answer], [UInt8]) {
        var answers: [Answer] = []
        var buffer: [UInt8] = []
        var offset = 0
        while offset < stream.count {
            buffer += stream[offset..<min(stream.count, offset + split)]
            offset += split
            while let (answer, used) = try buffer.withUnsafeBytes({ try AnswerScanner.next($0, protocol: target) }) {
                answers.append(answer)
                buffer.removeFirst(used)
            }
        }
        return (answers, buffer)
    }

    @Test("a pre-encoded request decodes with swift-protobuf to the same checks")
    func requestRoundTrip() throws {
        let encoder = RequestEncoder(targetProtocol: .sluice)
        let checks = (0..<300).map { check("key-\($0)") }
        let entries = try checks.map { try encoder.encodeEntry($0, redisArguments: .init(burst: 1, count: 1, periodMs: 1)) }
        let table = EntryTable(entries)
        var out: [UInt8] = []
        let pointers = (0..<table.count).map { table[$0] }
        pointers.withUnsafeBufferPointer { encoder.appendRequest(id: 300_000, entries: $0, to: &out) }
        let length = Int(out[0]) << 24 | Int(out[1]) << 16 | Int(out[2]) << 8 | Int(out[3])
        #expect(length == out.count - 4)
        let request = try Sluice_V1_Request(serializedBytes: Array(out[4...]))
        #expect(request.id == 300_000)
        #expect(request.check.checks == checks)
    }

    @Test("the answer scanner agrees with swift-protobuf, also when the bytes arrive split anywhere")
    func scannerAgrees() throws {
        var stream: [UInt8] = []
        var expected: [Answer] = []
        for id in UInt64(1)...40 {
            var response = Sluice_V1_Response()
            response.id = id * 1_000_003
            if id % 7 == 0 {
                response.error = .with { $0.code = .unknownRule; $0.message = "no rule"; $0.checkIndex = 2 }
                expected.append(Answer(id: response.id, allowed: 0, denied: 0, isError: true))
            } else {
                let verdicts = (0..<Int(id % 5 + 1)).map { index in
                    Sluice_V1_Verdict.with {
                        $0.allowed = (index + Int(id)) % 3 != 0
                        $0.limit = 10; $0.remaining = 3; $0.resetAfterMs = 100; $0.rule = "r"; $0.algorithm = .gcra
                        $0.reason = .withinLimit; $0.leaseID = UInt64(index) << 40
                    }
                }
                response.check = .with { $0.verdicts = verdicts }
                let allowed = verdicts.filter(\.allowed).count
                expected.append(Answer(id: response.id, allowed: allowed, denied: verdicts.count - allowed, isError: false))
            }
            let body: [UInt8] = try response.serializedBytes()
            stream += [UInt8(body.count >> 24 & 0xFF), UInt8(body.count >> 16 & 0xFF), UInt8(body.count >> 8 & 0xFF), UInt8(body.count & 0xFF)] + body
        }
        for split in [1, 2, 3, 5, 17, stream.count] {
            let (answers, rest) = try scan(stream, split: split, protocol: .sluice)
            #expect(answers == expected, "split \(split)")
            #expect(rest.isEmpty)
        }
    }

    @Test("garbage, absurd lengths and truncated fields are errors, never a crash", arguments: [
        [0x7F, 0xFF, 0xFF, 0xFF] as [UInt8],            // 2 GiB frame
        [0, 0, 0, 3, 0x12, 0x05, 0x0A],                  // a field longer than its message
        [0, 0, 0, 2, 0x08, 0xFF],                        // a truncated varint
        [0, 0, 0, 1, 0x00],                              // field number 0
        [0, 0, 0, 11] + [UInt8](repeating: 0xFF, count: 11), // an overlong varint
        [0, 0, 0, 1, 0x0F],                              // wire type 7
    ])
    func garbage(_ bytes: [UInt8]) {
        #expect(throws: AnswerStreamError.self) {
            try bytes.withUnsafeBytes { try AnswerScanner.next($0, protocol: .sluice) }
        }
    }

    @Test("random bytes never crash the scanners")
    func randomBytes() {
        var random = FastRandom(seed: 7)
        for round in 0..<2_000 {
            let bytes = (0..<(round % 64)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            for target in [TargetProtocol.sluice, .echo, .redis(sha: String(repeating: "0", count: 40)), .redisIncrement(limit: 3)] {
                _ = try? bytes.withUnsafeBytes { try AnswerScanner.next($0, protocol: target) }
            }
        }
        #expect(Bool(true), "survived 8,000 random inputs")
    }

    @Test("RESP replies: an EVALSHA array, an error, split anywhere")
    func resp() throws {
        let stream = Array("*5\r\n:0\r\n:100\r\n:99\r\n:-1\r\n:10\r\n-NOSCRIPT No matching script\r\n*5\r\n:1\r\n:100\r\n:0\r\n:10\r\n:1000\r\n*2\r\n$3\r\nabc\r\n:1\r\n".utf8)
        let expected = [Answer(id: 0, allowed: 1, denied: 0, isError: false),
                        Answer(id: 0, allowed: 0, denied: 0, isError: true),
                        Answer(id: 0, allowed: 0, denied: 1, isError: false),
                        Answer(id: 0, allowed: 0, denied: 0, isError: true)]
        for split in 1...stream.count {
            let (answers, rest) = try scan(stream, split: split, protocol: .redis(sha: ""))
            #expect(answers == expected, "split \(split)")
            #expect(rest.isEmpty)
        }
        #expect(throws: AnswerStreamError.self) {
            try Array("?what\r\n".utf8).withUnsafeBytes { try AnswerScanner.next($0, protocol: .redis(sha: "")) }
        }
        #expect(throws: AnswerStreamError.self) {
            try Array("*99999999999\r\n".utf8).withUnsafeBytes { try AnswerScanner.next($0, protocol: .redis(sha: "")) }
        }
    }

    @Test("envoy's way: INCRBY then EXPIRE per request; allowed while the count is within the limit, split anywhere")
    func increment() throws {
        let commands = RedisGCRAArguments(burst: 5, count: 5, periodMs: 1_500).incrementCommands(key: "k1", quantity: 2)
        #expect(String(decoding: commands, as: UTF8.self)
            == "*3\r\n$6\r\nINCRBY\r\n$12\r\nratelimit_k1\r\n$1\r\n2\r\n*3\r\n$6\r\nEXPIRE\r\n$12\r\nratelimit_k1\r\n$1\r\n2\r\n")
        let stream = Array(":3\r\n:1\r\n:4\r\n:1\r\n-OOM command not allowed\r\n:0\r\n".utf8)
        let expected = [Answer(id: 0, allowed: 1, denied: 0, isError: false), Answer(id: 0, allowed: 0, denied: 1, isError: false),
                        Answer(id: 0, allowed: 0, denied: 0, isError: true)]
        for split in 1...stream.count {
            let (answers, rest) = try scan(stream, split: split, protocol: .redisIncrement(limit: 3))
            #expect(answers == expected, "split \(split)")
            #expect(rest.isEmpty)
        }
    }

    @Test("the EVALSHA command is a RESP array of bulk strings")
    func evalsha() {
        let command = RedisGCRAArguments(burst: 20, count: 10, periodMs: 1000).command(sha: "abc", key: "k1", quantity: 1)
        #expect(String(decoding: command, as: UTF8.self)
            == "*8\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$2\r\nk1\r\n$2\r\n20\r\n$2\r\n10\r\n$4\r\n1000\r\n$1\r\n1\r\n")
    }
}

@Suite("Load harness workload", .computes)
struct LoadWorkloadTests {
    @Test("zipf draws rank 1 most, in proportion to 1/k^s; uniform spreads evenly")
    func zipf() {
        let sampler = KeySampler(count: 1_000, distribution: .zipf(exponent: 1.0))
        var random = FastRandom(seed: 3)
        var counts = [Int](repeating: 0, count: 1_000)
        let draws = 200_000
        for _ in 0..<draws { counts[sampler.sample(&random)] += 1 }
        let harmonic = (1...1_000).reduce(0.0) { $0 + 1 / Double($1) }
        let expectedFirst = Double(draws) / harmonic
        #expect(abs(Double(counts[0]) - expectedFirst) < expectedFirst * 0.05, "rank 1 drawn \(counts[0]), expected ~\(Int(expectedFirst))")
        #expect(abs(Double(counts[1]) - expectedFirst / 2) < expectedFirst * 0.05)
        #expect(counts[0] > counts[9] * 5)

        let uniform = KeySampler(count: 10, distribution: .uniform)
        var flat = [Int](repeating: 0, count: 10)
        for _ in 0..<100_000 { flat[uniform.sample(&random)] += 1 }
        #expect(flat.allSatisfy { abs($0 - 10_000) < 600 }, "\(flat)")
    }

    @Test("a trace reads with its header checked and a bad row named by line")
    func trace() throws {
        let good = Data("ts_ms,tenant,subject,ip,route,status,cost\n1710243000011,acme,key_1,54.1.1.1,GET /a,200,1\n1710243000047,acme,ip:1.2.3.4,1.2.3.4,POST /b,201,3\n".utf8)
        let rows = try TraceReader.parse(good, name: "t")
        #expect(rows.count == 2)
        #expect(rows[1] == CheckEvent(timestampMs: 1_710_243_000_047, tenant: "acme", subject: "ip:1.2.3.4", ip: "1.2.3.4",
                                    route: "POST /b", status: 201, cost: 3))
        #expect(throws: TraceError.self) { try TraceReader.parse(Data("ts,tenant\n".utf8), name: "t") }
        do {
            _ = try TraceReader.parse(Data("ts_ms,tenant,subject,ip,route,status,cost\n1,a,b,c,d,200\n".utf8), name: "t")
            Issue.record("a six-field row was accepted")
        } catch let error as TraceError {
            #expect(error.description.hasPrefix("t:2:"))
        }
        #expect(throws: TraceError.self) {
            try TraceReader.parse(Data("ts_ms,tenant,subject,ip,route,status,cost\n5,a,b,c,d,200,1\n4,a,b,c,d,200,1\n".utf8), name: "t")
        }
    }

    @Test("a row after the year 2199 is refused with its line: 19 digits once trapped sluicectl replay", arguments: [
        "7258118400000", "9223372036854775808", "9999999999999999999",
    ])
    func traceTimeBound(ts: String) throws {
        let header = "ts_ms,tenant,subject,ip,route,status,cost\n"
        let last = try TraceReader.parse(Data((header + "7258118399999,a,b,c,d,200,1\n").utf8), name: "t")
        #expect(last.first.map { CheckEvent($0).timestampMs } == 7_258_118_399_999)
        do {
            _ = try TraceReader.parse(Data((header + "1,a,b,c,d,200,1\n\(ts),a,b,c,d,200,1\n").utf8), name: "t")
            Issue.record("ts_ms \(ts) was accepted")
        } catch let error as TraceError {
            #expect(error.description.hasPrefix("t:3:") && error.description.contains("2199"), "\(error)")
        }
    }

    /// The first 3,000 rows of shared/traces/dev-sample.csv.gz, gzip'd, checked in.
    @Test("a gzip'd trace in the shared format reads in full")
    func sampleTrace() throws {
        let rows = try TraceReader.read(path: Self.sample, limit: 10_000)
        #expect(rows.count == 3_000)
        #expect(rows.allSatisfy { $0.cost >= 1 && !$0.subject.isEmpty })
    }

    static let sample: String = {
        let here = URL(fileURLWithPath: #filePath)
        return here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Tests/fixtures/trace-head-3000.csv.gz").path
    }()

    @Test("endpoints parse like the daemon's")
    func endpoints() {
        #expect(LoadEndpoint("unix:/tmp/s.sock") == .unix(path: "/tmp/s.sock"))
        #expect(LoadEndpoint("./s.sock") == .unix(path: "./s.sock"))
        #expect(LoadEndpoint("127.0.0.1:7420") == .tcp(host: "127.0.0.1", port: 7420))
        #expect(LoadEndpoint("[::1]:7420") == .tcp(host: "::1", port: 7420))
        #expect(LoadEndpoint("localhost") == nil)
        #expect(LoadEndpoint("host:0") == nil)
    }
}
