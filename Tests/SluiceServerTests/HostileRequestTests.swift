import Foundation
import Logging
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import SluiceTestKit
import Testing

/// The real dispatcher fed requests whose every field takes extreme or random values: it must
/// answer each one (a verdict or an error with a code), never trap.
@Suite("Hostile requests", .computes)
struct HostileRequestTests {
    static let extremes: [UInt64] = [0, 1, 2, 999, 1_000, 999_999, 1 << 32, 1 << 40, (1 << 40) + 1, 1 << 62,
                                     UInt64(Int64.max), UInt64.max - 1, UInt64.max]

    static func pick(_ random: inout SeededGenerator) -> UInt64 {
        Int.random(in: 0..<3, using: &random) == 0 ? UInt64.random(in: 0 ... .max, using: &random)
            : extremes[Int.random(in: 0..<extremes.count, using: &random)]
    }

    @Test("random and extreme field values always get an answer", arguments: [Configuration.ClockMode.request, .monotonic])
    func neverTraps(clock: Configuration.ClockMode) throws {
        var configuration = try ConfigurationLoader.parse("""
        rules:
          r: { limits: [ { limit: 3, period: 1s }, { limit: 100, period: 1d, algorithm: sliding_window } ] }
          c: { limit: 2, period: 1m, algorithm: concurrency }
        """, source: "hostile.yaml")
        configuration.clock = clock
        configuration.maxBatch = 20
        configuration.shards = 4
        configuration.maxEntries = 2_000
        let dispatcher = StandaloneDispatcher(configuration: configuration, logger: Logger(label: "test"), withBackground: false).dispatcher
        var random = SeededGenerator(seed: clock == .request ? 1 : 2)
        let algorithms: [Sluice_V1_Algorithm] = [.unspecified, .gcra, .tokenBucket, .slidingWindow, .fixedWindow,
                                                 .concurrency, .UNRECOGNIZED(99)]
        var verdicts = 0, errors = 0
        for round in 0..<10_000 {
            var request = WireRequest()
            request.id = UInt64(round)
            switch Int.random(in: 0..<10, using: &random) {
            case 0:
                request.release.key = ["", "k", String(repeating: "x", count: 5_000)][Int.random(in: 0..<3, using: &random)]
                request.release.leaseID = Self.pick(&random)
                request.release.nowMs = Self.pick(&random)
                if Bool.random(using: &random) { request.release.rule = "c" } else {
                    request.release.limit = WireLimit(limit: Self.pick(&random), periodMs: Self.pick(&random),
                                                      burst: Self.pick(&random), algorithm: .concurrency)
                }
            case 1:
                request.stats = .init()
            case 2, 3:
                request.check.checks = (0..<Int.random(in: 0...22, using: &random)).map { _ in
                    var check = WireCheck()
                    check.key = "k\(Int.random(in: 0..<50, using: &random))"
                    if Int.random(in: 0..<30, using: &random) == 0 { check.key = "" }
                    check.tenant = Bool.random(using: &random) ? "" : "t"
                    if Bool.random(using: &random) { check.hits = Self.pick(&random) }
                    check.nowMs = Int.random(in: 0..<4, using: &random) == 0 ? Self.pick(&random)
                        : 1_767_225_600_000 + UInt64(round) * UInt64.random(in: 0...5_000, using: &random)
                    switch Int.random(in: 0..<4, using: &random) {
                    case 0: check.rule = ["r", "c", "missing", ""][Int.random(in: 0..<4, using: &random)]
                    case 1: break
                    default:
                        check.limit = WireLimit(limit: Self.pick(&random), periodMs: Self.pick(&random), burst: Self.pick(&random),
                                                algorithm: algorithms[Int.random(in: 0..<algorithms.count, using: &random)])
                        if Bool.random(using: &random) {
                            check.limit.limit = UInt64.random(in: 1...1_000, using: &random)
                            check.limit.periodMs = UInt64.random(in: 1...86_400_000, using: &random)
                            check.limit.burst = UInt64.random(in: 0...2_000, using: &random)
                        }
                    }
                    return check
                }
            default:
                // Valid, but at the edges of every range validation accepts.
                request.check.checks = (0..<Int.random(in: 1...20, using: &random)).map { _ in
                    var check = WireCheck()
                    check.key = "k\(Int.random(in: 0..<50, using: &random))"
                    check.hits = [0, 1, 2, 1 << 40, UInt64.random(in: 0...(1 << 40), using: &random)][Int.random(in: 0..<5, using: &random)]
                    check.nowMs = [1, RequestDispatcher.maximumNowMs, 1_767_225_600_000 + UInt64(round) * 997,
                                   UInt64.random(in: 1...RequestDispatcher.maximumNowMs, using: &random)][Int.random(in: 0..<4, using: &random)]
                    if Int.random(in: 0..<3, using: &random) == 0 {
                        check.rule = ["r", "c"][Int.random(in: 0..<2, using: &random)]
                    } else {
                        check.limit = WireLimit(limit: [1, 1 << 40, UInt64.random(in: 1...(1 << 40), using: &random)][Int.random(in: 0..<3, using: &random)],
                                                periodMs: [1, 315_360_000_000, UInt64.random(in: 1...315_360_000_000, using: &random)][Int.random(in: 0..<3, using: &random)],
                                                burst: [0, 1, 1 << 40][Int.random(in: 0..<3, using: &random)],
                                                algorithm: algorithms[Int.random(in: 0..<(algorithms.count - 1), using: &random)])
                    }
                    return check
                }
            }
            let response = dispatcher.process(request)
            #expect(response.id == request.id)
            switch response.body {
            case .check(let answer):
                #expect(answer.verdicts.count == request.check.checks.count)
                verdicts += answer.verdicts.count
            case .error(let error):
                #expect(error.code != .unspecified && error.code != .internal)
                #expect(!error.message.isEmpty)
                errors += 1
            case .release, .stats: break
            default: Issue.record("unexpected answer \(response)")
            }
        }
        #expect(verdicts > 10_000, "enough requests were valid to exercise the table")
        #expect(errors > 1_000, "enough were invalid to exercise validation")
    }

    @Test("rounding times to milliseconds never overflows")
    func ceilingMilliseconds() {
        #expect(Int64.max.ceilingMilliseconds == UInt64(Int64.max / 1_000_000) + 1)
        #expect(Int64(1).ceilingMilliseconds == 1)
        #expect(Int64(1_000_000).ceilingMilliseconds == 1)
        #expect(Int64(1_000_001).ceilingMilliseconds == 2)
        #expect(Int64.min.ceilingMilliseconds == 0)
    }
}
