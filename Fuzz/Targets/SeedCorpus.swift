import Foundation
import NIOCore
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceProto
import SluiceServer
import SluiceWire

/// The seed inputs of every target: valid inputs of each kind (every request kind, limit
/// source and algorithm; the embedded configuration; a snapshot holding every state; a learned
/// detector's state; a trace), from which the fuzzer mutates. `sluice-fuzz seed DIR` writes
/// them; the checked-in corpora (`Fuzz/corpus/`) started as these.
public enum SeedCorpus {
    static let epochMs: UInt64 = 1_767_225_600_000

    /// One request of every kind the protocol has, with the fields each reads.
    static var requests: [WireRequest] {
        var all: [WireRequest] = []
        func add(_ id: UInt64, _ fill: (inout WireRequest) -> Void) {
            var request = WireRequest()
            request.id = id
            fill(&request)
            all.append(request)
        }
        func check(_ key: String, rule: String? = nil, limit: Sluice_V1_Limit? = nil, hits: UInt64? = nil, tenant: String = "",
                   subject: String = "", ip: String = "", route: String = "", nowMs: UInt64 = epochMs) -> WireCheck {
            var check = WireCheck()
            check.key = key
            check.tenant = tenant
            check.subject = subject
            check.ip = ip
            check.route = route
            check.nowMs = nowMs
            if let hits { check.hits = hits }
            if let rule { check.rule = rule }
            if let limit { check.limit = limit }
            return check
        }
        func limit(_ limit: UInt64, _ periodMs: UInt64, burst: UInt64 = 0, _ algorithm: Sluice_V1_Algorithm) -> Sluice_V1_Limit {
            .with { $0.limit = limit; $0.periodMs = periodMs; $0.burst = burst; $0.algorithm = algorithm }
        }
        add(1) { $0.check.checks = [check("user:1", rule: "default")] }
        add(2) { $0.check.checks = ["default", "api", "export", "leases", "sliding", "fixed", "bucket"].map {
            check("user:2", rule: $0, hits: 2, subject: "acct-2", ip: "203.0.113.2", route: "GET /api/items/48213")
        } }
        add(3) { $0.check.checks = [Sluice_V1_Algorithm.gcra, .tokenBucket, .slidingWindow, .fixedWindow, .concurrency].map {
            check("inline", limit: limit(5, 1_000, burst: 10, $0), hits: 1)
        } }
        add(4) { $0.check.checks = [check("login", rule: "login", tenant: "acme", subject: "alice", ip: "198.51.100.7", route: "POST /login")] }
        add(5) { $0.check.checks = [check("peek", rule: "default", hits: 0), check("big", rule: "default", hits: 1 << 40)] }
        add(6) { $0.ping.payload = Data("hello".utf8) }
        add(7) { $0.release = .with { $0.key = "inline"; $0.leaseID = 1; $0.rule = "leases"; $0.nowMs = epochMs + 10 } }
        add(8) { $0.stats = .init() }
        add(9) { $0.reload = .init() }
        add(10) { $0.snapshot = .init() }
        add(11) { $0.recordEvents = .with { $0.events = [
            .with { $0.subject = "acct-2"; $0.kind = "auth_failure"; $0.note = "POST /login" },
            .with { $0.tenant = "acme"; $0.subject = "alice"; $0.kind = "success"; $0.weight = -3.5; $0.atMs = epochMs },
        ] } }
        add(12) { $0.recordEvents = .with { $0.durable = true; $0.events = [.with { $0.subject = "acct-3"; $0.kind = "bad_request" }] } }
        add(13) { $0.getReputation = .with { $0.subject = "acct-2"; $0.recentEvents = 5 } }
        add(14) { $0.listReputations = .with { $0.allTenants = true; $0.order = .best; $0.pageSize = 10 } }
        add(15) { $0.setReputation = .with { $0.subject = "acct-2"; $0.action = .pin; $0.score = 3 } }
        add(16) { $0.setReputation = .with { $0.subject = "acct-2"; $0.action = .reset } }
        add(17) { $0.flags = .with { $0.changes = [.with { $0.name = "anomaly"; $0.rolloutPercent = 50; $0.shadow = true }] } }
        add(18) { $0.setTier = .with { $0.subject = "acct-2"; $0.tier = "vip" } }
        add(19) { $0.getTier = .with { $0.subject = "acct-2" } }
        add(20) { $0.listTiers = .with { $0.allTenants = true; $0.tier = "vip"; $0.pageSize = 5 } }
        add(21) { $0.removeTier = .with { $0.subject = "acct-2" } }
        add(22) { $0.reportLoad = .with { $0.service = "checkout"; $0.inFlight = 40; $0.latencyP50Us = 20_000; $0.latencyP99Us = 900_000; $0.errorRate = 0.2 } }
        add(23) { $0.reportOutcome = .with { $0.outcomes = (0..<20).map { index in
            .with { $0.subject = "user\(index)"; $0.ip = "192.0.2.1"; $0.route = "POST /login"; $0.status = 401; $0.timeMs = epochMs + UInt64(index) * 100 }
        } } }
        add(24) { $0.watchAlerts = .with { $0.kinds = ["credential_stuffing"]; $0.recent = 10 } }
        add(25) { $0.top = .with { $0.count = 5 } }
        add(26) { $0.report = .with { $0.top = 5 } }
        return all
    }

    static func frame(_ request: WireRequest) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeFrame((try? request.serializedBytes()) ?? [UInt8]())
        return Array(buffer.readableBytesView)
    }

    /// Inputs by target.
    public static func inputs() -> [FuzzTarget: [(name: String, bytes: [UInt8])]] {
        var inputs: [FuzzTarget: [(name: String, bytes: [UInt8])]] = [:]
        let requests = Self.requests
        let bodies = requests.map { (try? $0.serializedBytes()) ?? [] as [UInt8] }
        inputs[.decoder] = zip(requests, bodies).map { ("request-\($0.0.id)", $0.1) }
        let frames = requests.map(frame)
        let stream = frames.joined()
        // Every request alone, then all of them in one stream, and the crash frames of issue 15.
        inputs[.dispatcher] = zip(requests, frames).map { ("frame-\($0.0.id)", $0.1) } + [
            ("all-kinds", Array(stream)),
            ("report-outcome-huge-time", hex("0000000d08019201080a06120161289103")
                + hex("0000001808029201130a1112016128910330ffffffffffffffffff01")),
        ]
        let seed: [UInt8] = [7, 0, 0, 0, 0, 0, 0, 0]
        inputs[.framer] = [
            ("all-kinds", seed + Array(stream)),
            ("garbage-then-ping", seed + [0, 0, 0, 3, 0xFF, 0xFF, 0xFF] + frames[5]),
            ("oversized", seed + frames[0] + [0x00, 0x10, 0x00, 0x01, 1, 2, 3]),
            ("empty-frames", [1, 2, 3, 4, 5, 6, 7, 8] + [0, 0, 0, 0, 0, 0, 0, 0] + frames[0]),
        ]
        inputs[.envoy] = envoyInputs()
        inputs[.http] = httpInputs()
        inputs[.configuration] = [
            ("embedded-default", Array(DefaultConfiguration.yaml.utf8)),
            ("every-feature", Array(DispatcherTarget.yaml.utf8)),
            ("envoy-domains", Array(EnvoyTarget.yaml.utf8)),
            ("rule-modes", Array("rules:\n  a: { limit: 2, period: 1w, shadow: true }\n  b: { unlimited: true }\n  c: { limit: 1, period: month, replaces: [a] }\nhttp:\n  listen: { tcp: [\"127.0.0.1:0\"] }\n".utf8)),
            ("bad-key", Array("rules:\n  login:\n    limit: 5\n    perod: 1m\n".utf8)),
        ]
        inputs[.snapshot] = snapshotInputs()
        inputs[.anomalyState] = anomalyStateInputs()
        inputs[.trace] = [
            ("trace", Array("""
            ts_ms,tenant,subject,ip,route,status,cost
            1767225600000,t1,user:1,203.0.113.1,GET /api/items/1,200,1
            1767225600100,t1,user:2,203.0.113.2,POST /login,401,1
            1767225600200,t1,user:3,203.0.113.2,POST /login,401,1
            1767225600300,,ip:198.51.100.9,198.51.100.9,GET /,200,3

            """.utf8)),
        ]
        inputs[.redis] = [
            ("replies", seed + Array("+OK\r\n-ERR no\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n*3\r\n:0\r\n*2\r\n+a\r\n:-1\r\n$0\r\n\r\n".utf8)),
            ("script-verdicts", seed + Array("*4\r\n:1\r\n:99\r\n:0\r\n:600\r\n*4\r\n:0\r\n:0\r\n:1200\r\n:600\r\n".utf8)),
            ("noscript-then-moved", seed + Array("-NOSCRIPT No matching script.\r\n-MOVED 3999 127.0.0.1:7002\r\n-ASK 3999 127.0.0.1:7003\r\n".utf8)),
            ("http", seed + Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8)),
        ]
        return inputs
    }

    static func snapshotInputs() -> [(name: String, bytes: [UInt8])] {
        let table = LimiterTable(shardCount: 4, maxEntries: 64)
        let now: Int64 = 1_767_225_600_000_000_000
        for (index, algorithm) in Algorithm.allCases.enumerated() {
            guard let spec = try? LimitSpec(limit: 5, period: 1_000_000_000, burst: 10, algorithm: algorithm) else { continue }
            let limit = BoundLimit.inline(spec)
            for hits: UInt64 in [1, 3, 20] {
                _ = table.check(key: Fingerprint.of(tenant: "", key: "key-\(index)"), limit: limit, hits: hits, now: now + Int64(hits))
            }
        }
        let file = table.snapshot(writtenAt: now).encoded()
        // Unsealed: the file itself. Sealed: its body without the magic and checksum.
        return [("table", [0] + file), ("table-sealed", [1] + Array(file[8..<(file.count - 8)]))]
    }

    static func anomalyStateInputs() -> [(name: String, bytes: [UInt8])] {
        let detector = AnomalyDetector(settings: AnomalySettings())
        for index in 0..<200 {
            _ = detector.observe(CheckEvent(timestampMs: Int64(epochMs) + Int64(index) * 1_000, tenant: "t", subject: "user\(index % 20)",
                                                    ip: "10.0.0.\(index % 7)", route: "GET /api/items/\(index)", status: index % 9 == 0 ? 401 : 200))
        }
        let file = detector.encodedState()
        return [("learned", [0] + file), ("learned-sealed", [1] + Array(file[4..<(file.count - 8)]))]
    }

    static func hex(_ text: String) -> [UInt8] {
        stride(from: 0, to: text.count, by: 2).map { offset in
            let start = text.index(text.startIndex, offsetBy: offset)
            return UInt8(text[start..<text.index(start, offsetBy: 2)], radix: 16) ?? 0
        }
    }

    /// Envoy requests: each kind of descriptor of ``EnvoyTarget``'s domains, overrides, hits.
    static func envoyInputs() -> [(name: String, bytes: [UInt8])] {
        typealias Request = Envoy_Service_Ratelimit_V3_RateLimitRequest
        typealias Descriptor = Envoy_Service_Ratelimit_V3_RateLimitDescriptor
        func descriptor(_ entries: [(String, String)], hits: UInt64? = nil, override: UInt32? = nil) -> Descriptor {
            var descriptor = Descriptor()
            descriptor.entries = entries.map { key, value in
                var entry = Descriptor.Entry()
                entry.key = key
                entry.value = value
                return entry
            }
            if let hits { descriptor.hitsAddend = .init(hits) }
            if let override {
                descriptor.limit.requestsPerUnit = override
                descriptor.limit.unit = .minute
            }
            return descriptor
        }
        func request(_ name: String, _ descriptors: [Descriptor], hits: UInt32 = 0, domain: String = "edge") -> (String, [UInt8]) {
            var request = Request()
            request.domain = domain
            request.descriptors = descriptors
            request.hitsAddend = hits
            return (name, (try? request.serializedBytes()) ?? [])
        }
        return [
            request("every-kind", [descriptor([("remote_address", "203.0.113.1")]), descriptor([("path", "/api/v1")]),
                                   descriptor([("path", "/aXbYc")]), descriptor([("source", "proxy"), ("destination", "x")]),
                                   descriptor([("source", "proxy"), ("destination", "free")]),
                                   descriptor([("source", "proxy"), ("destination", "banned")]), descriptor([("service", "s")]),
                                   descriptor([("trial", "t")])], hits: 2),
            request("override-and-hits", [descriptor([("any", "thing")], hits: 0, override: 5), descriptor([("remote_address", "x")], hits: 7)]),
            request("unknown-domain", [descriptor([("a", "b")])], domain: "nope"),
            request("empty-domain", [descriptor([("a", "b")])], domain: ""),
            request("no-descriptors", []),
        ]
    }

    /// HTTP requests of every route, one connection's worth, pipelined.
    static func httpInputs() -> [(name: String, bytes: [UInt8])] {
        func post(_ path: String, _ body: String) -> String {
            "POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        }
        let all = post("/v1/check", #"{"key":"a","rule":"default"}"#)
            + post("/v1/check", #"{"checks":[{"key":"b","rule":"leases"},{"key":"c","limit":{"limit":"3","period_ms":1000}}]}"#)
            + post("/v1/release", #"{"key":"b","rule":"leases","lease_id":1}"#)
            + post("/v1/report", #"{"events":[{"subject":"s","kind":"auth_failure"}],"outcomes":[{"subject":"s","status":401}]}"#)
            + "GET /v1/reputation/s?recent_events=2 HTTP/1.1\r\nHost: x\r\n\r\n"
        return [
            ("every-route", Array(all.utf8)),
            ("bad-json", Array(post("/v1/check", #"{"key": [1, {"#).utf8)),
            ("wrong-type", Array("POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}".utf8)),
            ("not-http", [0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]),
        ]
    }

    /// Writes every seed input to `directory/TARGET/NAME`; returns how many.
    public static func write(to directory: String) throws -> Int {
        var written = 0
        for (target, files) in inputs() {
            let folder = "\(directory)/\(target.rawValue)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for file in files {
                try Data(file.bytes).write(to: URL(fileURLWithPath: "\(folder)/seed-\(file.name)"))
                written += 1
            }
        }
        return written
    }

    /// The files `paths` name, directories walked (sorted, so runs are repeatable).
    public static func files(_ paths: some Sequence<String>) throws -> [String] {
        var files: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
            if isDirectory.boolValue {
                files += try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { "\(path)/\($0)" }
            } else {
                files.append(path)
            }
        }
        return files
    }
}
