import Foundation
import NIOCore
import SluiceCore
import SluiceProto
import SwiftProtobuf
import Testing
@testable import SluiceWire

/// The fast codec held to swift-protobuf, the reference: same bytes in, same checks out; its
/// verdicts decode to the very messages swift-protobuf would have written.
@Suite("Check frame codec")
struct CheckFrameCodecTests {
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &+ 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func value() -> UInt64 {
            [0, 1, 127, 128, 16_383, 16_384, UInt64(UInt32.max), 1 << 40, UInt64.max, next()][below(10)]
        }
        mutating func text() -> String {
            ["", "a", "user:42", String(repeating: "k", count: 200), "tenant-\(below(1_000))"][below(5)]
        }
    }

    static func randomCheck(_ random: inout Random) -> WireCheck {
        var check = WireCheck()
        check.tenant = random.text()
        check.key = random.text()
        check.subject = random.text()
        if random.below(2) == 0 { check.hits = random.value() }
        check.nowMs = random.value()
        switch random.below(3) {
        case 0: check.rule = random.text()
        case 1:
            check.limit = WireLimit(limit: random.value(), periodMs: random.value(), burst: random.value(),
                                    algorithm: [.unspecified, .gcra, .concurrency, .UNRECOGNIZED(77), .UNRECOGNIZED(-3)][random.below(5)])
        default: break
        }
        return check
    }

    func views(of bytes: [UInt8], trustUTF8: Bool = false) -> (UInt64, [CheckView])? {
        bytes.withUnsafeBytes { raw -> (UInt64, [CheckView])? in
            guard let (id, body) = CheckFrameCodec.checkBody(raw), let count = CheckFrameCodec.countChecks(body) else { return nil }
            var views = [CheckView](repeating: CheckView(), count: count)
            let ok = views.withUnsafeMutableBufferPointer { CheckFrameCodec.readChecks(body, into: $0, trustUTF8: trustUTF8) }
            return ok ? (id, views) : nil
        }
    }

    func matches(_ view: CheckView, _ check: WireCheck) -> Bool {
        func text(_ bytes: UnsafeRawBufferPointer) -> String { String(decoding: bytes, as: UTF8.self) }
        guard text(view.tenant) == check.tenant, text(view.key) == check.key, text(view.subject) == check.subject,
              view.nowMs == check.nowMs, view.hits == (check.hitsPresence == nil ? nil : check.hits) else { return false }
        switch check.limitSource {
        case .rule(let rule): return view.rule.map(text) == rule && view.limit == nil
        case .limit(let limit):
            return view.rule == nil && view.limit == LimitView(limit: limit.limit, periodMs: limit.periodMs, burst: limit.burst,
                                                                algorithm: Int32(truncatingIfNeeded: limit.algorithm.rawValue))
        case nil: return view.rule == nil && view.limit == nil
        }
    }

    @Test("random requests read to the checks swift-protobuf encoded")
    func readsWhatSwiftProtobufWrites() throws {
        var random = Random(state: 1)
        for round in 0..<2_000 {
            var request = WireRequest()
            request.id = random.value()
            request.check.checks = (0..<random.below(6)).map { _ in Self.randomCheck(&random) }
            let bytes: [UInt8] = try request.serializedBytes()
            let decoded = try #require(views(of: bytes), "round \(round)")
            #expect(decoded.0 == request.id)
            #expect(decoded.1.count == request.check.checks.count)
            for (view, check) in zip(decoded.1, request.check.checks) {
                #expect(matches(view, check), "round \(round): \(check)")
            }
        }
    }

    @Test("non-canonical or foreign frames are declined, never misread")
    func declines() throws {
        var check = WireCheck()
        check.key = "k"
        check.rule = "r"
        var request = WireRequest()
        request.id = 5
        request.check.checks = [check]
        let canonical: [UInt8] = try request.serializedBytes()
        #expect(views(of: canonical) != nil)

        var ping = WireRequest()
        ping.ping = .init()
        #expect(views(of: try ping.serializedBytes()) == nil, "a ping is not a check request")
        #expect(views(of: []) == nil, "no body")
        // The key field twice inside the check (proto: the last wins).
        let checkBytes: [UInt8] = try check.serializedBytes() + [0x12, 0x01, UInt8(ascii: "z")]
        #expect(views(of: [0x08, 5, 0x12, UInt8(checkBytes.count + 2), 0x0A, UInt8(checkBytes.count)] + checkBytes) == nil)
        // Both a rule and a limit.
        var both = check
        both.limit = WireLimit(limit: 1, periodMs: 1_000)
        let bothBytes: [UInt8] = try check.serializedBytes() + (try both.serializedBytes())
        #expect(views(of: [0x12, UInt8(bothBytes.count + 2), 0x0A, UInt8(bothBytes.count)] + bothBytes) == nil)
        // The id twice; the body twice (proto merges them).
        #expect(views(of: [0x08, 1] + canonical) == nil)
        #expect(views(of: canonical + [0x12, 0x00]) == nil)
        // A non-ASCII key is declined unless its UTF-8 was validated already.
        var accented = WireRequest()
        accented.check.checks = [WireCheck.with { $0.key = "clé"; $0.rule = "r" }]
        let accentedBytes: [UInt8] = try accented.serializedBytes()
        #expect(views(of: accentedBytes) == nil)
        #expect(views(of: accentedBytes, trustUTF8: true)?.1.first.map { String(decoding: $0.key, as: UTF8.self) } == "clé")
        // A wire type that does not match the field.
        #expect(views(of: [0x12, 0x04, 0x0A, 0x02, 0x10, 0x01]) == nil, "key as a varint")
        // Unknown fields are skipped, as swift-protobuf discards them.
        #expect(views(of: canonical + [0xF8, 0x07, 0x01])?.1.count == 1)
        // Another body after the check: the last member of the oneof wins, so it is not a
        // check (found by the decoder fuzz target: a check then a reload body).
        var reload = WireRequest()
        reload.reload = .init()
        let then: [UInt8] = canonical + (try reload.serializedBytes())
        let decoded = try WireRequest(serializedBytes: then)
        var isReload = false
        if case .reload = decoded.body { isReload = true }
        #expect(isReload, "swift-protobuf reads \(decoded)")
        #expect(views(of: then) == nil)
        #expect(views(of: canonical + [0xA2, 0x01, 0x00]) == nil, "field 20, a body this build does not know")
    }

    @Test("truncations and random bytes never crash the reader")
    func garbage() throws {
        var random = Random(state: 9)
        var request = WireRequest()
        request.id = 77
        request.check.checks = (0..<5).map { _ in Self.randomCheck(&random) }
        let bytes: [UInt8] = try request.serializedBytes()
        for cut in 0..<bytes.count { _ = views(of: Array(bytes[..<cut])) }
        for _ in 0..<5_000 {
            var mutated = bytes
            for _ in 0..<3 { mutated[random.below(mutated.count)] = UInt8(truncatingIfNeeded: random.next()) }
            if let (_, checks) = views(of: mutated) {
                // Whatever reads must be what swift-protobuf reads too.
                let reference = try WireRequest(serializedBytes: mutated)
                #expect(reference.check.checks.count == checks.count)
            }
            _ = views(of: (0..<random.below(40)).map { _ in UInt8(truncatingIfNeeded: random.next()) })
        }
    }

    @Test("verdict frames are byte for byte what swift-protobuf writes")
    func writesWhatSwiftProtobufWrites() throws {
        var random = Random(state: 3)
        for round in 0..<1_000 {
            let id = random.value()
            let count = 1 + random.below(8)
            var decisions: [Decision] = []
            var rules: [String] = []
            for _ in 0..<count {
                decisions.append(Decision(allowed: random.below(2) == 0, limit: random.value(), remaining: random.value(),
                                          resetAfter: Int64(truncatingIfNeeded: random.value() >> 1),
                                          retryAfter: Int64(truncatingIfNeeded: random.value() >> 1),
                                          reason: [.withinLimit, .overLimit, .exceedsCapacity, .blocked][random.below(4)],
                                          algorithm: [.gcra, .tokenBucket, .concurrency][random.below(3)],
                                          leaseID: random.value(), limitIndex: UInt32(truncatingIfNeeded: random.value())))
                rules.append(random.text())
            }
            var expected = WireResponse()
            expected.id = id
            expected.check.verdicts = zip(decisions, rules).map { WireVerdict($0, rule: $1) }
            var reference = ByteBuffer()
            reference.writeFrame(try expected.serializedBytes() as [UInt8])

            var out = ByteBuffer()
            let verdicts = decisions.map(CheckFrameCodec.VerdictFields.init)
            let ruleBytes = rules.map { Array($0.utf8) }
            // Keep the rule bytes alive for the call.
            let pointers = ruleBytes.map { bytes -> UnsafeMutableRawBufferPointer in
                let p = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes.count), alignment: 1)
                p.copyBytes(from: bytes)
                return p
            }
            defer { pointers.forEach { $0.deallocate() } }
            let views = zip(pointers, ruleBytes).map { UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer($0)[0..<$1.count]) }
            verdicts.withUnsafeBufferPointer { v in
                views.withUnsafeBufferPointer { r in CheckFrameCodec.writeCheckResponse(id: id, verdicts: v, rules: r, into: &out) }
            }
            #expect(out == reference, "round \(round)")
        }
    }

    @Test("varint sizes")
    func varintSizes() {
        var random = Random(state: 5)
        for shift in 0..<64 {
            for value in [UInt64(1) << shift, (UInt64(1) << shift) - 1, random.next() >> shift] {
                var writer = [UInt8]()
                var v = value
                repeat { writer.append(UInt8(v & 0x7F)); v >>= 7 } while v > 0
                #expect(varintSize(value) == writer.count, "\(value)")
            }
        }
    }
}
