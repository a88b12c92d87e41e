import SluiceProto
import SluiceWire
import SwiftProtobuf

/// A request body read both ways: swift-protobuf (the reference) never crashes, re-encodes what
/// it decoded to bytes that decode to the same message; and whenever the fast check codec reads
/// a frame, swift-protobuf reads the same checks from it (the codec may decline, never disagree).
///
/// Input: one frame's body (a `sluice.v1.Request`).
enum DecoderTarget {
    static func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        var options = BinaryDecodingOptions()
        options.discardUnknownFields = true
        options.messageDepthLimit = 16
        let reference = try? WireRequest(serializedBytes: Array(bytes), options: options)
        if let reference {
            guard let again: [UInt8] = try? reference.serializedBytes() else { return "a decoded request does not encode" }
            // Compared as bytes: a NaN read from a double field is not equal to itself.
            guard let twice = try? WireRequest(serializedBytes: again, options: options),
                  let thrice: [UInt8] = try? twice.serializedBytes(), thrice == again else {
                return "a decoded request does not survive its own encoding"
            }
        }
        guard let (id, body) = CheckFrameCodec.checkBody(bytes), let count = CheckFrameCodec.countChecks(body),
              count > 0, count <= 10_000 else { return nil }
        return withUnsafeTemporaryAllocation(of: CheckView.self, capacity: count) { views -> String? in
            views.initialize(repeating: CheckView())
            guard CheckFrameCodec.readChecks(body, into: views, trustUTF8: false) else { return nil }
            guard let reference else { return "the fast codec read \(count) checks that swift-protobuf refuses" }
            guard reference.id == id, case .check(let request) = reference.body, request.checks.count == count else {
                return "the fast codec read a check request of \(count) checks, id \(id); swift-protobuf read \(reference)"
            }
            for (index, check) in request.checks.enumerated() {
                let view = views[index]
                func text(_ raw: UnsafeRawBufferPointer) -> String { String(decoding: raw, as: UTF8.self) }
                var same = text(view.tenant) == check.tenant && text(view.key) == check.key && text(view.subject) == check.subject
                    && text(view.ip) == check.ip && text(view.route) == check.route && view.nowMs == check.nowMs
                same = same && view.hits == { if case .hits(let hits)? = check.hitsPresence { return hits } else { return nil } }()
                switch check.limitSource {
                case .rule(let rule)?: same = same && view.rule.map(text) == rule && view.limit == nil
                case .limit(let limit)?:
                    same = same && view.rule == nil && view.limit == LimitView(limit: limit.limit, periodMs: limit.periodMs, burst: limit.burst,
                                                                               algorithm: Int32(truncatingIfNeeded: limit.algorithm.rawValue))
                case nil: same = same && view.rule == nil && view.limit == nil
                }
                if !same { return "check \(index) read differently: the fast codec's \(view.limit as Any) vs \(check)" }
            }
            return nil
        }
    }
}
