import Logging
import NIOCore
import NIOPosix
import SluiceConfiguration
import SluiceProto
import SluiceServer
import SluiceWire
import SwiftProtobuf

/// The whole dispatcher with every feature on (reputation enforced, tiers, load shedding,
/// baselines, anomaly detection with responses), over an in-memory table, with the request
/// clock: a stream of frames, each answered once with its request's id; then the background
/// features take what the requests offered them (reputation events, anomaly observations), so
/// what a request starts there runs within the same input.
///
/// Input: frames as on the wire (a 4-byte big-endian length, then a `sluice.v1.Request`).
final class DispatcherTarget: @unchecked Sendable {
    static let shared = DispatcherTarget()

    /// What every in-memory target's daemon runs with: the request clock, small bounds, no files.
    static let base = """
    server: { clock: request, max_batch: 64, max_key_bytes: 256 }
    table: { shards: 4, max_entries: 4096 }
    snapshot: { path: "" }
    store: { path: "" }
    metrics: { listen: "off" }

    """

    static let yaml = base + """
    reputation: { max_subjects: 4096, block_below: 10 }
    features:
      reputation: { enabled: true, rollout: 100, shadow: false }
      adaptive: { enabled: true, rollout: 100, shadow: false }
      anomaly: { enabled: true, rollout: 100, shadow: false }
    anomaly:
      warmup: 1ms
      max_subjects: 4096
      max_sources: 4096
      responses:
        credential_stuffing: { action: block, ttl: 1h }
        rate_spike: { action: tighten, factor: 0.1, ttl: 10m }
        brute_force: { action: penalty }
    tiers:
      vip: { multiplier: 4, priority: 100, reserve: 0.9 }
      free: { multiplier: 0.5, priority: 0 }
    rules:
      default:
        limits:
          - { limit: 10, period: 1s, burst: 20 }
          - { limit: 10000, period: 1d }
      api: { limit: 100, period: 1s, service: checkout }
      export: { limit: 100, period: 1m, baseline: { factor: 3, floor: 10, ceiling: 1000 } }
      leases: { limit: 3, period: 1m, algorithm: concurrency }
      sliding: { limit: 5, period: 1m, algorithm: sliding_window }
      fixed: { limit: 5, period: 1m, algorithm: fixed_window }
      bucket: { limit: 5, period: 1s, burst: 10, algorithm: token_bucket }
    tenants:
      acme:
        quotas: { checks_per_second: 100000, burst: 100, max_keys: 256 }
        features: { reputation: { shadow: true }, adaptive: { rollout: 50 } }
        reputation: { weights: { auth_failure: -20 } }
        tiers: { vip: { multiplier: 8, rules: { api: { limit: 500, period: 1s } } } }
        rules:
          login: { limit: 5, period: 1m, algorithm: sliding_window }
    """

    let standalone: StandaloneDispatcher
    /// The same configuration, fed the same frames in runs (`answerCheckFrames`, as a read that
    /// brings several frames is answered).
    let batched: StandaloneDispatcher
    let loop: any EventLoop
    /// `batched` as a connection bound to tenant acme (``StandaloneDispatcher/connection(tenant:roles:)``).
    let scoped: any RequestProcessor
    var options = BinaryDecodingOptions()

    init() {
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        let configuration: Configuration
        do {
            configuration = try ConfigurationLoader.parse(Self.yaml, source: "fuzz.yaml")
        } catch {
            // The configuration is this file's own: a failure is a bug here, not an input.
            fatalError("the dispatcher target's configuration is invalid: \(error)")
        }
        standalone = StandaloneDispatcher(configuration: configuration, logger: logger, withBackground: false)
        batched = StandaloneDispatcher(configuration: configuration, logger: logger, withBackground: false)
        scoped = batched.connection(tenant: "acme", roles: [.operator])
        loop = MultiThreadedEventLoopGroup.singleton.next()
        options.discardUnknownFields = true
        options.messageDepthLimit = 16
    }

    func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        let dispatcher = standalone.dispatcher
        var stream = ByteBuffer(bytes: bytes)
        var out = ByteBufferAllocator().buffer(capacity: 4_096)
        while let frame = try? FrameDecoder.nextFrame(in: &stream, maximum: 1 << 16) {
            out.clear()
            let fast = frame.withUnsafeReadableBytes { dispatcher.answerCheckFrame($0, into: &out) }
            let answer: WireResponse
            let expectedID: UInt64?
            if fast {
                guard let length = out.readInteger(as: UInt32.self), Int(length) == out.readableBytes,
                      let body = out.readBytes(length: Int(length)), let response = try? WireResponse(serializedBytes: body) else {
                    return "the fast path wrote something other than one answer frame"
                }
                answer = response
                expectedID = frame.withUnsafeReadableBytes { CheckFrameCodec.checkBody($0)?.id }
            } else {
                guard let request = try? WireRequest(serializedBytes: Array(frame.readableBytesView), options: options) else { continue }
                if let future = dispatcher.deferredAnswer(to: request, on: .unix, eventLoop: loop) {
                    guard let response = try? future.wait() else { return "a deferred answer failed" }
                    // The connection sets the id of a deferred answer.
                    answer = response
                    expectedID = nil
                } else {
                    answer = dispatcher.process(request)
                    expectedID = request.id
                }
            }
            if let expectedID, answer.id != expectedID { return "an answer with id \(answer.id) to request \(expectedID)" }
            switch answer.body {
            case .error(let error)?: if error.message.isEmpty { return "an error without a sentence: \(error.code)" }
            case nil: return "an answer without a body"
            default: break
            }
        }
        standalone.drainBackground()
        return runBatched(bytes)
    }

    /// The frames again, on the second dispatcher through a connection bound to tenant acme, in runs of up to 64: every run answers a
    /// prefix of its frames, one whole answer frame each, with its request's id, in order; a
    /// frame the run does not take is answered alone.
    func runBatched(_ bytes: UnsafeRawBufferPointer) -> String? {
        var frames: [UnsafeRawBufferPointer] = []
        var offset = 0
        while bytes.count - offset >= 4 {
            let length = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            guard length <= 1 << 16, bytes.count - offset - 4 >= length else { break }
            frames.append(UnsafeRawBufferPointer(rebasing: bytes[(offset + 4)..<(offset + 4 + length)]))
            offset += 4 + length
        }
        // As a connection authenticated as tenant acme's operator: every tenant field held to
        // acme (empty ones become acme), checks of acme decided in its own table (max_keys).
        let dispatcher = scoped
        var out = ByteBufferAllocator().buffer(capacity: 4_096)
        var position = 0
        while position < frames.count {
            out.clear()
            let run = Array(frames[position..<min(frames.count, position + 64)])
            let taken = run.withUnsafeBufferPointer { dispatcher.answerCheckFrames($0, into: &out) }
            guard taken <= run.count else { return "answerCheckFrames took \(taken) of \(run.count) frames" }
            if taken == 0 {
                // Answered alone, as the single-frame path does (checked above).
                if frames[position].count > 0, !dispatcher.answerCheckFrame(frames[position], into: &out) {
                    if let request = try? WireRequest(serializedBytes: Array(frames[position]), options: options),
                       dispatcher.deferredAnswer(to: request, on: .unix, eventLoop: loop) == nil {
                        _ = dispatcher.process(request)
                    }
                }
                position += 1
                continue
            }
            for index in position..<(position + taken) {
                guard let length = out.readInteger(as: UInt32.self), let body = out.readBytes(length: Int(length)),
                      let response = try? WireResponse(serializedBytes: body) else {
                    return "frame \(index) of a run has no whole answer frame"
                }
                guard let id = CheckFrameCodec.checkBody(frames[index])?.id, response.id == id else {
                    return "frame \(index) of a run answered with id \(response.id)"
                }
                switch response.body {
                case .error(let error)?: if error.message.isEmpty { return "an error without a sentence: \(error.code)" }
                case .check?: break
                default: return "a check frame of a run answered with \(String(describing: response.body))"
                }
            }
            if out.readableBytes != 0 { return "a run wrote \(out.readableBytes) bytes past its answers" }
            position += taken
        }
        batched.drainBackground()
        return nil
    }
}
