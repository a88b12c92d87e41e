import SluiceCore
import SwiftProtobuf

/// The wire types, under shorter names.
public typealias WireRequest = Sluice_V1_Request
public typealias WireResponse = Sluice_V1_Response
public typealias WireCheck = Sluice_V1_Check
public typealias WireVerdict = Sluice_V1_Verdict
public typealias WireLimit = Sluice_V1_Limit
public typealias WireError = Sluice_V1_Error

extension Sluice_V1_Algorithm {
    /// The core algorithm, or nil for `ALGORITHM_UNSPECIFIED` and unknown values.
    public var core: Algorithm? {
        switch self {
        case .gcra: .gcra
        case .tokenBucket: .tokenBucket
        case .slidingWindow: .slidingWindow
        case .fixedWindow: .fixedWindow
        case .concurrency: .concurrency
        case .unspecified, .UNRECOGNIZED: nil
        }
    }

    /// The wire value of a core algorithm.
    public init(_ algorithm: Algorithm) {
        self = Sluice_V1_Algorithm(rawValue: Int(algorithm.rawValue)) ?? .unspecified
    }
}

extension Sluice_V1_Reason {
    /// The wire value of a core reason.
    public init(_ reason: DecisionReason) {
        self = Sluice_V1_Reason(rawValue: Int(reason.rawValue)) ?? .unspecified
    }
}

extension Sluice_V1_Verdict {
    /// The verdict for a core decision, in milliseconds (rounded up so clients never retry early).
    public init(_ decision: Decision, rule: String) {
        self.init()
        allowed = decision.allowed
        limit = decision.limit
        remaining = decision.remaining
        resetAfterMs = decision.resetAfter.ceilingMilliseconds
        retryAfterMs = decision.retryAfter.ceilingMilliseconds
        self.rule = rule
        algorithm = Sluice_V1_Algorithm(decision.algorithm)
        leaseID = decision.leaseID
        reason = Sluice_V1_Reason(decision.reason)
        limitIndex = decision.limitIndex
    }
}

extension Sluice_V1_Error {
    /// An error with a code and a sentence.
    public init(_ code: Code, _ message: String, checkIndex: Int32 = -1) {
        self.init()
        self.code = code
        self.message = message
        self.checkIndex = checkIndex
    }
}

extension Sluice_V1_Response {
    /// An error response for request `id`.
    public static func error(id: UInt64, _ code: Sluice_V1_Error.Code, _ message: String, checkIndex: Int32 = -1) -> Self {
        var response = Self()
        response.id = id
        response.error = Sluice_V1_Error(code, message, checkIndex: checkIndex)
        return response
    }
}

extension Sluice_V1_Limit {
    /// An inline limit.
    public init(limit: UInt64, periodMs: UInt64, burst: UInt64 = 0, algorithm: Sluice_V1_Algorithm = .unspecified) {
        self.init()
        self.limit = limit
        self.periodMs = periodMs
        self.burst = burst
        self.algorithm = algorithm
    }
}

/// A wire error can be thrown and carried in a `Result` until it is written back.
extension Sluice_V1_Error: Error {}

extension Sluice_V1_Error.Code {
    /// The stable name from the .proto file, e.g. `CODE_UNKNOWN_RULE`.
    public var name: String {
        switch self {
        case .unspecified: "CODE_UNSPECIFIED"
        case .invalidArgument: "CODE_INVALID_ARGUMENT"
        case .unknownRule: "CODE_UNKNOWN_RULE"
        case .unknownTenant: "CODE_UNKNOWN_TENANT"
        case .frameTooLarge: "CODE_FRAME_TOO_LARGE"
        case .malformedMessage: "CODE_MALFORMED_MESSAGE"
        case .overloaded: "CODE_OVERLOADED"
        case .internal: "CODE_INTERNAL"
        case .unsupported: "CODE_UNSUPPORTED"
        case .shuttingDown: "CODE_SHUTTING_DOWN"
        case .forbidden: "CODE_FORBIDDEN"
        case .invalidConfiguration: "CODE_INVALID_CONFIGURATION"
        case .unavailable: "CODE_UNAVAILABLE"
        case .unauthenticated: "CODE_UNAUTHENTICATED"
        case .quotaExceeded: "CODE_QUOTA_EXCEEDED"
        case .UNRECOGNIZED(let value): "CODE_\(value)"
        }
    }
}
