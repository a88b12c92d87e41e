import Foundation
import SluiceCore
import SluiceIntelligence
import SluiceTestKit
import Testing

@Suite(.computes) struct ReputationModelTests {
    let hour: Int64 = 3_600_000_000_000

    @Test func decayHalvesTheDistanceFromNeutralEveryHalfLife() {
        let model = ReputationModel(neutral: 50, halfLife: hour)
        #expect(model.decayed(10, from: 0, to: hour) == 30)
        #expect(model.decayed(10, from: 0, to: 2 * hour) == 40)
        #expect(model.decayed(90, from: 0, to: hour) == 70)
        #expect(model.decayed(10, from: 5 * hour, to: 5 * hour) == 10)
        // Time running backwards changes nothing.
        #expect(model.decayed(10, from: hour, to: 0) == 10)
    }

    @Test func decayMatchesTheClosedFormAtArbitraryTimes() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<1_000 {
            let halfLife = Int64.random(in: 1_000_000...(30 * 86_400_000_000_000), using: &generator)
            let neutral = Double.random(in: 10...90, using: &generator)
            let model = ReputationModel(neutral: neutral, halfLife: halfLife)
            let score = Double.random(in: 0...100, using: &generator)
            let elapsed = Int64.random(in: 0...(10 * halfLife), using: &generator)
            let expected = neutral + (score - neutral) * pow(0.5, Double(elapsed) / Double(halfLife))
            #expect(abs(model.decayed(score, from: 1_000, to: 1_000 + elapsed) - expected) < 1e-9)
            // Decaying in two steps is decaying once: the sweep and lazy reads agree.
            let middle = Int64.random(in: 0...elapsed, using: &generator)
            let twoSteps = model.decayed(model.decayed(score, from: 0, to: middle), from: middle, to: elapsed)
            #expect(abs(twoSteps - model.decayed(score, from: 0, to: elapsed)) < 1e-9)
        }
    }

    @Test func eventsMoveTheDecayedScoreByTheirWeightWithinBounds() {
        let model = ReputationModel(neutral: 50, halfLife: hour)
        // 20 points below neutral, one half-life later, is 10 below; an auth failure (-5) makes it 35.
        #expect(model.applying(-5, to: 30, at: 0, now: hour) == 35)
        #expect(model.applying(-30, to: 10, at: 0, now: 0) == 0)
        #expect(model.applying(+30, to: 90, at: 0, now: 0) == 100)
        #expect(model.weight(of: EventKind.authFailure) == -5)
        #expect(model.weight(of: "no_such_kind") == nil)
        #expect(ReputationModel.clamp(.nan) == 0)
    }

    @Test func timeUntilInvertsTheDecay() throws {
        let model = ReputationModel(neutral: 50, halfLife: hour, blockBelow: 5)
        #expect(model.timeUntil(10, reaches: 30) == hour)
        #expect(model.timeUntil(10, reaches: 40) == 2 * hour)
        #expect(model.timeUntil(45, reaches: 40) == 0)
        #expect(model.timeUntil(10, reaches: 60) == nil)
        // A blocked score is unblocked exactly when the decay brings it back over the threshold.
        let wait = try #require(model.timeUntilUnblocked(2))
        #expect(!model.blocks(model.decayed(2, from: 0, to: wait)))
        #expect(model.blocks(model.decayed(2, from: 0, to: wait - 1_000)))
        #expect(model.timeUntilUnblocked(6) == nil)
        // Back within half a point of neutral.
        let neutralAt = model.timeUntilNeutral(0)
        #expect(abs(model.decayed(0, from: 0, to: neutralAt) - 49.5) < 1e-6)
    }

    @Test func theCurveInterpolatesBetweenItsPoints() throws {
        let curve = MultiplierCurve.standard
        #expect(curve.multiplier(at: 0) == 0.25)
        #expect(curve.multiplier(at: 19) == 0.25)
        #expect(curve.multiplier(at: 35) == 0.625)
        #expect(curve.multiplier(at: 50) == 1)
        #expect(curve.multiplier(at: 65) == 1.25)
        #expect(curve.multiplier(at: 80) == 1.5)
        #expect(curve.multiplier(at: 100) == 1.5)
        let steps = try MultiplierCurve(points: [.init(score: 0, multiplier: 0.25), .init(score: 20, multiplier: 1),
                                                 .init(score: 80, multiplier: 1.5)], interpolation: .step)
        #expect(steps.multiplier(at: 19.99) == 0.25)
        #expect(steps.multiplier(at: 20) == 1)
        #expect(steps.multiplier(at: 79) == 1)
        #expect(steps.multiplier(at: 80) == 1.5)
        // A vertical jump: two points at one score.
        let jump = try MultiplierCurve(points: [.init(score: 20, multiplier: 0.5), .init(score: 20, multiplier: 1)])
        #expect(jump.multiplier(at: 19) == 0.5)
        #expect(jump.multiplier(at: 21) == 1)
    }

    @Test func badCurvesAreRefusedWithAReason() {
        #expect(throws: CurveError.self) { try MultiplierCurve(points: []) }
        #expect(MultiplierCurve.problem(with: [.init(score: 50, multiplier: 1), .init(score: 20, multiplier: 1)])?
            .contains("increasing order") == true)
        #expect(MultiplierCurve.problem(with: [.init(score: 120, multiplier: 1)])?.contains("outside 0…100") == true)
        #expect(MultiplierCurve.problem(with: [.init(score: 10, multiplier: 0)])?.contains("above 0") == true)
    }
}

@Suite(.computes) struct FeatureFlagTests {
    func subjects(_ count: Int) -> [Fingerprint] {
        (0..<count).map { Fingerprint.of(tenant: "acme", key: "user-\($0)") }
    }

    @Test func rolloutOnlyEverAddsSubjectsAsItGrows() {
        let all = subjects(20_000)
        var previous: Set<Int> = []
        for percent in [0.0, 1, 5, 25, 50, 99.5, 100] {
            let flag = FeatureFlag(name: "reputation", rolloutPercent: percent)
            let chosen = Set(all.indices.filter { flag.includes(all[$0]) })
            #expect(chosen.isSuperset(of: previous), "subjects in at a lower percentage are in at \(percent)%")
            // The share chosen is the percentage, within sampling error (3 standard deviations).
            let share = Double(chosen.count) / Double(all.count) * 100
            let sigma = (percent * (100 - percent) / Double(all.count)).squareRoot()
            #expect(abs(share - percent) <= 3 * sigma + 0.01, "\(share)% chosen at \(percent)%")
            previous = chosen
        }
        #expect(previous.count == all.count)
    }

    @Test func theChoiceIsStableAndDiffersBetweenFeatures() {
        let all = subjects(10_000)
        let a = FeatureFlag(name: "reputation", rolloutPercent: 10), b = FeatureFlag(name: "adaptive", rolloutPercent: 10)
        let chosenA = all.filter { a.includes($0) }, chosenB = all.filter { b.includes($0) }
        // The same on every call and in every process: the hash is stable, not Swift's seeded Hasher.
        #expect(chosenA == all.filter { FeatureFlag(name: "reputation", rolloutPercent: 10).includes($0) })
        // Pinned: a change to the hash would move subjects between cohorts at an upgrade.
        #expect(FeatureFlag.bucket(of: Fingerprint.of(tenant: "", key: "alice"), salt: a.salt) == 1_202)
        // Independent features pick different tenths.
        #expect(Set(chosenA.map(\.description)).intersection(chosenB.map(\.description)).count < chosenA.count / 2)
        #expect(CompiledFlag(a).includes(chosenA[0]))
    }

    @Test func disabledOrZeroIncludesNobody() {
        let all = subjects(1_000)
        #expect(all.allSatisfy { !FeatureFlag(name: "reputation", enabled: false, rolloutPercent: 100).includes($0) })
        #expect(all.allSatisfy { !CompiledFlag(FeatureFlag(name: "reputation", rolloutPercent: 0)).includes($0) })
        #expect(FeatureFlag(name: "x", rolloutPercent: 250).rolloutPercent == 100)
        #expect(FeatureFlag(name: "x", rolloutPercent: .nan).rolloutPercent == 0)
    }
}
