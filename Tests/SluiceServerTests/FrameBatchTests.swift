import Foundation
import Logging
import NIOCore
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import SluiceTestKit
import Testing

/// Frames that arrive together are decided as one batch (`answerCheckFrames`): the answers must
/// be, byte for byte, what answering them one at a time gives.
@Suite("Frames decided together")
struct FrameBatchTests {
    static let features = [
        "",
        """
        reputation: { block_below: 20 }
        tiers: { vip: { multiplier: 2, priority: 100 } }
        features: { reputation: { rollout: 100 }, adaptive: { enabled: true }, anomaly: { enabled: true } }
        """,
    ]

    /// Two dispatchers on the same configuration, one fed frame by frame, the other in runs.
    @Test("answers are the same bytes as one frame at a time, whatever the runs", arguments: features)
    func sameAsOneByOne(features: String) throws {
        var configuration = try ConfigurationLoader.parse("""
        rules:
          r: { limits: [ { limit: 5, period: 1s }, { limit: 40, period: 1m, algorithm: sliding_window } ] }
          s: { limit: 3, period: 1s, service: upstream }
        tenants: { t: { rules: { own: { limit: 2, period: 1s } } } }
        \(features)
        """, source: "frames.yaml")
        configuration.clock = .request
        configuration.maxBatch = 12
        configuration.shards = 4
        let one = StandaloneDispatcher(configuration: configuration, logger: Logger(label: "test"), withBackground: false).dispatcher
        let many = StandaloneDispatcher(configuration: configuration, logger: Logger(label: "test"), withBackground: false).dispatcher
        var random = SeededGenerator(seed: features.isEmpty ? 3 : 4)
        var frames: [[UInt8]] = []
        for id in 1...3_000 {
            var request = WireRequest()
            request.id = UInt64(id)
            request.check.checks = (0..<Int.random(in: 1...5, using: &random)).map { _ in
                var check = WireCheck()
                check.key = "k\(Int.random(in: 0..<30, using: &random))"
                // Now and then: an invalid check, a subject, a tenant, an unknown rule, an inline limit.
                if Int.random(in: 0..<40, using: &random) == 0 { check.key = "" }
                if Bool.random(using: &random) { check.subject = "s\(Int.random(in: 0..<10, using: &random))" }
                if Int.random(in: 0..<4, using: &random) == 0 { check.tenant = ["t", "u"][Int.random(in: 0..<2, using: &random)] }
                switch Int.random(in: 0..<10, using: &random) {
                case 0: check.rule = "missing"
                case 1: check.limit = WireLimit(limit: 4, periodMs: 1_000)
                case 2: check.rule = "own"
                case 3, 4: check.rule = "s"
                default: check.rule = "r"
                }
                check.nowMs = 1_767_225_600_000 + UInt64(id * 7)
                return check
            }
            if Int.random(in: 0..<50, using: &random) == 0 {
                request.check.checks += Array(repeating: request.check.checks[0], count: 12)  // above max_batch
            }
            frames.append(try request.serializedBytes())
        }
        var expected = ByteBufferAllocator().buffer(capacity: 1 << 20)
        for frame in frames {
            let answered = frame.withUnsafeBytes { one.answerCheckFrame($0, into: &expected) }
            #expect(answered)
        }
        var actual = ByteBufferAllocator().buffer(capacity: 1 << 20)
        var position = 0, batches = 0
        while position < frames.count {
            let run = min(frames.count - position, Int.random(in: 1...20, using: &random))
            let taken = withFrames(frames[position..<(position + run)]) { many.answerCheckFrames($0, into: &actual) }
            if taken == 0 {
                let answered = frames[position].withUnsafeBytes { many.answerCheckFrame($0, into: &actual) }
                #expect(answered)
                position += 1
            } else {
                #expect(taken <= run)
                if taken > 1 { batches += 1 }
                position += taken
            }
        }
        #expect(batches > 100, "most runs were decided together: \(batches)")
        #expect(actual.readableBytesView.elementsEqual(expected.readableBytesView))
    }

    /// Runs `body` with the frames' bytes side by side, as a read hands them over.
    func withFrames<Result>(_ frames: ArraySlice<[UInt8]>, _ body: (UnsafeBufferPointer<UnsafeRawBufferPointer>) -> Result) -> Result {
        let joined = frames.flatMap { $0 }
        return joined.withUnsafeBytes { raw in
            var pointers: [UnsafeRawBufferPointer] = []
            var offset = 0
            for frame in frames {
                pointers.append(UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + frame.count)]))
                offset += frame.count
            }
            return pointers.withUnsafeBufferPointer(body)
        }
    }
}
