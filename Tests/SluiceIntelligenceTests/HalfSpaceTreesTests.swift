import SluiceTestKit
import Testing
@testable import SluiceIntelligence

/// The model finds what it was not shown: points far from where the window's mass went score
/// lower than the usual ones, and nothing scores before a full window.
@Suite(.computes) struct HalfSpaceTreesTests {
    @Test func pointsOutsideTheMassScoreLowerThanPointsInIt() throws {
        var model = HalfSpaceTrees(dimensions: 3, window: 512)
        var random = SeededGenerator(seed: 11)
        func usual() -> [Float] {
            (0..<3).map { _ in Float(0.2 + 0.1 * Double(random.next() % 1_000) / 1_000) }
        }
        #expect(model.score(usual()) == nil)
        for _ in 0..<512 { model.learn(usual()) }
        #expect(model.ready)
        let normal = try (0..<200).map { _ in try #require(model.score(usual())) }
        let outliers = try [[0.9, 0.9, 0.9], [0.25, 0.25, 0.95], [0.0, 0.8, 0.25]].map { try #require(model.score($0)) }
        let lowestNormal = try #require(normal.min())
        #expect(outliers.allSatisfy { $0 < lowestNormal }, "outliers \(outliers), lowest usual \(lowestNormal)")
        let outlierMean: Double = outliers.reduce(0, +) / 3
        let normalMean: Double = normal.reduce(0, +) / 200
        #expect(outlierMean < normalMean / 10, "\(outlierMean) against \(normalMean)")
    }

    @Test func theMinutesFeaturesStayInTheUnitCube() {
        let extremes = [0.0, 1, 1e9, -5, .infinity]
        for value in extremes {
            let features = MinuteFeatures.of(hits: value, distinct: value, sources: value, outcomes: value, failures: value,
                                             sequential: value, baselinePerMinute: value)
            #expect(features.count == MinuteFeatures.dimensions)
            #expect(features.allSatisfy { $0 >= 0 && $0 <= 1 }, "\(value): \(features)")
        }
    }
}
