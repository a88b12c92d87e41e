/// One limit: `limit` units per `period`, with a bucket of `burst` units.
///
/// Times are nanoseconds. For ``Algorithm/concurrency`` `limit` is the number of leases held at
/// once and `period` is a lease's time-to-live. Window algorithms use `limit` and ignore `burst`.
public struct LimitSpec: Sendable, Hashable, CustomStringConvertible {
    /// Units allowed per period (leases, for concurrency).
    public var limit: UInt64
    /// The period in nanoseconds (lease TTL, for concurrency).
    public var period: Int64
    /// Bucket size for GCRA and the token bucket; equals `limit` unless configured otherwise.
    public var burst: UInt64
    /// The algorithm that enforces this limit.
    public var algorithm: Algorithm
    /// GCRA's emission interval `period / limit` in nanoseconds, rounded down, at least 1.
    /// Stored because a 64-bit division per decision is measurable on the hot path.
    public private(set) var emissionInterval: Int64
    /// GCRA's tolerance `emissionInterval × burst`, saturated at ``maximumTolerance``.
    public private(set) var tolerance: Int64

    /// The largest period accepted: about 10 years, far from any overflow in the arithmetic.
    public static let maximumPeriod: Int64 = 10 * 366 * 86_400 * 1_000_000_000
    /// The largest limit or burst accepted.
    public static let maximumLimit: UInt64 = 1 << 40

    /// Creates a limit after checking its ranges.
    ///
    /// - Parameters:
    ///   - limit: units per period, 1 ... 2^40.
    ///   - period: nanoseconds, 1 ms ... about 10 years.
    ///   - burst: 0 means `limit`; otherwise 1 ... 2^40.
    ///   - algorithm: the algorithm.
    /// - Throws: ``SluiceError`` with code ``SluiceError/Code/invalidLimit`` naming the bad field.
    public init(limit: UInt64, period: Int64, burst: UInt64 = 0, algorithm: Algorithm = .gcra) throws(SluiceError) {
        guard limit >= 1, limit <= Self.maximumLimit else {
            throw SluiceError(.invalidLimit, "limit must be between 1 and \(Self.maximumLimit), got \(limit)")
        }
        guard period >= 1_000_000, period <= Self.maximumPeriod else {
            throw SluiceError(.invalidLimit, "period must be between 1 ms and 10 years, got \(period / 1_000_000) ms")
        }
        guard burst <= Self.maximumLimit else {
            throw SluiceError(.invalidLimit, "burst must be at most \(Self.maximumLimit), got \(burst)")
        }
        self.limit = limit
        self.period = period
        self.burst = burst == 0 ? limit : burst
        self.algorithm = algorithm
        (emissionInterval, tolerance) = Self.gcraTerms(limit: limit, period: period, burst: self.burst)
        guard tolerance < Self.maximumTolerance else {
            throw SluiceError(.invalidLimit, "burst \(self.burst) spans more than 36 years of the limit's rate")
        }
    }

    /// The largest GCRA tolerance kept exact; larger ones (only reachable through a multiplier) are clamped.
    public static let maximumTolerance: Int64 = 1 << 60

    @usableFromInline
    static func gcraTerms(limit: UInt64, period: Int64, burst: UInt64) -> (interval: Int64, tolerance: Int64) {
        let interval = max(1, period / Int64(limit))
        let (product, overflow) = interval.multipliedReportingOverflow(by: Int64(burst))
        return (interval, overflow || product > maximumTolerance ? maximumTolerance : product)
    }

    /// This limit with `limit` and `burst` scaled by `multiplier` (rounded down, at least 1).
    ///
    /// Concurrency limits scale their lease count; the period never changes.
    @inline(__always)
    public func scaled(by multiplier: Double) -> LimitSpec {
        multiplier == 1 ? self : rescaled(by: multiplier)
    }

    func rescaled(by multiplier: Double) -> LimitSpec {
        guard multiplier.isFinite, multiplier > 0 else { return self }
        var copy = self
        copy.limit = Self.scale(limit, multiplier)
        copy.burst = Self.scale(burst, multiplier)
        (copy.emissionInterval, copy.tolerance) = Self.gcraTerms(limit: copy.limit, period: period, burst: copy.burst)
        return copy
    }

    static func scale(_ value: UInt64, _ multiplier: Double) -> UInt64 {
        let scaled = (Double(value) * multiplier).rounded(.down)
        if scaled < 1 { return 1 }
        if scaled >= Double(maximumLimit) { return maximumLimit }
        return UInt64(scaled)
    }

    /// `limit/period_ms/burst/algorithm`, as logged and shown by `sluicectl`.
    public var description: String {
        "\(limit)/\(period / 1_000_000)ms burst \(burst) \(algorithm)"
    }
}
