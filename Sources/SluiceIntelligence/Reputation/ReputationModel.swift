#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How reputation scores move: the neutral start, the weight of each event kind, the half-life of
/// the decay toward neutral, the score→multiplier curve and the block threshold.
///
/// Pure functions of their inputs: time is always a parameter (nanoseconds since the epoch).
public struct ReputationModel: Sendable, Equatable {
    /// The lowest and highest scores.
    public static let range: ClosedRange<Double> = 0...100
    /// A score within this distance of neutral counts as back at neutral (its record may go).
    public static let neutralBand = 0.5

    /// Where a new subject starts and where every score decays to.
    public var neutral: Double
    /// Nanoseconds for a score's distance from neutral to halve.
    public var halfLife: Int64
    /// Score points per event, by kind (negative lowers the score).
    public var weights: [String: Double]
    /// Maps a score to a limit multiplier.
    public var curve: MultiplierCurve
    /// Checks of subjects scoring below this are denied (reason `reputation`); nil: never.
    public var blockBelow: Double?

    /// The kinds every configuration knows, with their default weights.
    public static let builtInWeights: [String: Double] = [
        EventKind.rateLimited: -1,
        EventKind.authFailure: -5,
        EventKind.badRequest: -2,
        EventKind.success: 0.2,
        EventKind.captchaPassed: 20,
        EventKind.anomaly: -20,
    ]

    /// Creates a model.
    public init(neutral: Double = 50, halfLife: Int64 = 3_600_000_000_000, weights: [String: Double] = Self.builtInWeights,
                curve: MultiplierCurve = .standard, blockBelow: Double? = 5) {
        self.neutral = neutral
        self.halfLife = max(1, halfLife)
        self.weights = weights
        self.curve = curve
        self.blockBelow = blockBelow
    }

    /// `score` measured at `from`, decayed to `to`: the distance from neutral halves every
    /// half-life, exactly (`neutral + (score - neutral) · 2^(-(to - from) / halfLife)`).
    @inlinable
    public func decayed(_ score: Double, from: Int64, to: Int64) -> Double {
        guard to > from else { return score }
        let halves = Double(to &- from) / Double(halfLife)
        return neutral + (score - neutral) * exp2(-halves)
    }

    /// The score after an event of `weight` at `now`, given `score` measured at `at`: decayed to
    /// `now`, moved by `weight`, kept within 0…100.
    public func applying(_ weight: Double, to score: Double, at: Int64, now: Int64) -> Double {
        Self.clamp(decayed(score, from: at, to: now) + weight)
    }

    /// The weight of `kind`, nil when the configuration does not know it.
    public func weight(of kind: String) -> Double? { weights[kind] }

    /// Whether a check by a subject with `score` is denied outright.
    @inlinable
    public func blocks(_ score: Double) -> Bool {
        if let blockBelow { return score < blockBelow }
        return false
    }

    /// Nanoseconds from when `score` was measured until its decay reaches `target`, which must lie
    /// between the score and neutral; 0 when it is there already, nil when it never gets there.
    public func timeUntil(_ score: Double, reaches target: Double) -> Int64? {
        let distance = abs(score - neutral), targetDistance = abs(target - neutral)
        if distance <= targetDistance { return 0 }
        guard targetDistance > 0, (score - neutral) * (target - neutral) > 0 else { return nil }
        let halves = log2(distance / targetDistance)
        let nanoseconds = (halves * Double(halfLife)).rounded(.up)
        return nanoseconds >= Double(Int64.max) ? Int64.max : Int64(nanoseconds)
    }

    /// Nanoseconds until a blocked `score` decays back up to the block threshold (the
    /// retry-after of a reputation denial); nil when the score is not blocked.
    public func timeUntilUnblocked(_ score: Double) -> Int64? {
        guard let blockBelow, score < blockBelow else { return nil }
        // Slightly above the threshold so the check at that time passes.
        return timeUntil(score, reaches: min(neutral, blockBelow + 1e-9)) ?? Int64.max
    }

    /// Nanoseconds until `score` is back within ``neutralBand`` of neutral.
    public func timeUntilNeutral(_ score: Double) -> Int64 {
        let target = score < neutral ? neutral - Self.neutralBand : neutral + Self.neutralBand
        return timeUntil(score, reaches: target) ?? 0
    }

    /// `value` kept within 0…100 (NaN becomes neutral's floor, 0).
    @inlinable
    public static func clamp(_ value: Double) -> Double {
        guard value.isFinite else { return value > 0 ? range.upperBound : range.lowerBound }
        return Swift.min(Swift.max(value, range.lowerBound), range.upperBound)
    }
}

/// The names of the event kinds every configuration knows.
public enum EventKind {
    /// Recorded by the daemon itself when a check of the subject is denied by a limit.
    public static let rateLimited = "rate_limited"
    /// A failed login or a bad credential.
    public static let authFailure = "auth_failure"
    /// A malformed or refused request.
    public static let badRequest = "bad_request"
    /// A request served normally.
    public static let success = "success"
    /// The subject proved it is a person.
    public static let captchaPassed = "captcha_passed"
    /// Raised by anomaly detection.
    public static let anomaly = "anomaly"
}
