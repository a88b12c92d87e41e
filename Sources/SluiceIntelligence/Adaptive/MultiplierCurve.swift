/// Maps a reputation score to a limit multiplier: points (score, multiplier) in increasing score
/// order, joined by straight lines (or steps), flat beyond the first and last point.
public struct MultiplierCurve: Sendable, Equatable {
    /// One point of the curve.
    public struct Point: Sendable, Equatable {
        /// A score, 0…100.
        public var score: Double
        /// The multiplier at that score, > 0.
        public var multiplier: Double

        /// Creates a point.
        public init(score: Double, multiplier: Double) {
            self.score = score
            self.multiplier = multiplier
        }
    }

    /// How the multiplier moves between two points.
    public enum Interpolation: String, Sendable, Equatable {
        /// Along the straight line between them.
        case linear
        /// It keeps the lower point's multiplier until the next point's score.
        case step
    }

    /// The points, sorted by score, at least one.
    public private(set) var points: [Point]
    /// How the multiplier moves between points.
    public var interpolation: Interpolation

    /// The default: 0.25× up to 20, rising to 1× at 50 (neutral), to 1.5× at 80 and above.
    public static let standard = MultiplierCurve(unchecked: [
        Point(score: 0, multiplier: 0.25), Point(score: 20, multiplier: 0.25), Point(score: 50, multiplier: 1),
        Point(score: 80, multiplier: 1.5),
    ], interpolation: .linear)

    /// A curve that is 1× everywhere.
    public static let flat = MultiplierCurve(unchecked: [Point(score: 0, multiplier: 1)], interpolation: .step)

    /// The problem with `points`, or nil when they make a curve.
    public static func problem(with points: [Point]) -> String? {
        guard !points.isEmpty else { return "needs at least one point" }
        for (index, point) in points.enumerated() {
            guard ReputationModel.range.contains(point.score) else { return "point \(index): score \(point.score) is outside 0…100" }
            guard point.multiplier.isFinite, point.multiplier > 0, point.multiplier <= 1_000 else {
                return "point \(index): multiplier \(point.multiplier) must be above 0 and at most 1000"
            }
            if index > 0, point.score < points[index - 1].score {
                return "point \(index): scores must be in increasing order (\(point.score) after \(points[index - 1].score))"
            }
        }
        return nil
    }

    /// A curve through `points`.
    ///
    /// - Throws: ``CurveError`` when they are empty, out of range or out of order.
    public init(points: [Point], interpolation: Interpolation = .linear) throws(CurveError) {
        if let problem = Self.problem(with: points) { throw CurveError(message: problem) }
        self.init(unchecked: points, interpolation: interpolation)
    }

    init(unchecked points: [Point], interpolation: Interpolation) {
        self.points = points
        self.interpolation = interpolation
    }

    /// The multiplier at `score`.
    ///
    /// - Complexity: O(points).
    // Inlinable: called across modules, each call retained and released the points.
    @inlinable
    public func multiplier(at score: Double) -> Double {
        guard let first = points.first, let last = points.last else { return 1 }
        if score <= first.score { return first.multiplier }
        if score >= last.score { return last.multiplier }
        var index = 1
        while points[index].score <= score { index += 1 }
        let low = points[index - 1], high = points[index]
        switch interpolation {
        case .step: return low.multiplier
        case .linear:
            let fraction = (score - low.score) / (high.score - low.score)
            return low.multiplier + (high.multiplier - low.multiplier) * fraction
        }
    }
}

/// Why a curve could not be made.
public struct CurveError: Error, Sendable {
    /// What is wrong.
    public var message: String
}
