import Foundation

/// The decoders and state machines that take bytes from outside the daemon — a client, a file,
/// an operator — each as a function of arbitrary bytes that checks what it can besides not
/// crashing (an answer per request, in order, with the request's id; codecs that agree).
///
/// libFuzzer drives them in `sluice-fuzz` (docs/FUZZING.md); the test suite runs every input of
/// the checked-in corpora (`Fuzz/corpus/TARGET/`) through them, so an input that once failed
/// stays a regression test.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// The connection handler's framing, fed the same stream at arbitrary read boundaries.
    case framer
    /// swift-protobuf's request decoder against the fast check codec: same bytes, same checks.
    case decoder
    /// The whole dispatcher, every feature on, over an in-memory table: a stream of frames.
    case dispatcher
    /// The YAML configuration loader.
    case configuration
    /// The limiter table's snapshot reader, and a table restored from what it accepts.
    case snapshot
    /// Anomaly detection's saved-state reader, and a detector restored from what it accepts.
    case anomalyState = "anomaly-state"
    /// The labeled trace reader, and the detector replaying what it accepts.
    case trace
    /// The Redis client's reply reader: whole or in pieces, the same replies.
    case redis
    /// Envoy's `ShouldRateLimit`, from a request's bytes to its answer.
    case envoy
    /// The HTTP/JSON API, from a connection's bytes through NIO's HTTP parser to its answers.
    case http

    /// Runs the target on `bytes`; returns what property failed, or nil. A crash is a failure too.
    public func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        switch self {
        case .framer: FramerTarget.run(bytes)
        case .decoder: DecoderTarget.run(bytes)
        case .dispatcher: DispatcherTarget.shared.run(bytes)
        case .configuration: ConfigurationTarget.run(bytes)
        case .snapshot: SnapshotTarget.run(bytes)
        case .anomalyState: AnomalyStateTarget.run(bytes)
        case .trace: TraceTarget.run(bytes)
        case .redis: RedisReplyTarget.run(bytes)
        case .envoy: EnvoyTarget.shared.run(bytes)
        case .http: HTTPTarget.run(bytes)
        }
    }

    /// Runs the target on `bytes`.
    public func run(_ bytes: [UInt8]) -> String? { bytes.withUnsafeBytes { run($0) } }
}

/// A tiny deterministic generator (SplitMix64), for choices drawn from an input's own bytes.
struct SplitMix {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in 1...bound.
    mutating func size(upTo bound: Int) -> Int { Int(next() % UInt64(bound)) + 1 }
}
