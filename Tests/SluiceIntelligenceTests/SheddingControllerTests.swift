import SluiceIntelligence
import SluiceTestKit
import Testing

@Suite(.computes) struct SheddingControllerTests {
    let ms: Int64 = 1_000_000
    var settings: SheddingController.Settings { SheddingController.Settings(targetLatency: 100 * ms) }

    /// A toy service: p99 grows with the traffic admitted beyond its capacity.
    func latency(offered: Double, factor: Double, capacity: Double) -> Int64 {
        let admitted = offered * factor
        return admitted <= capacity ? 50 * ms : Int64(50 * Double(ms) * (admitted / capacity) * (admitted / capacity))
    }

    @Test func recoveryProbesSlowlyNearTheLevelTheLastOverloadWasFoundAtThenAtFullPace() {
        var settings = settings
        settings.decrease = 0.5
        settings.increase = 0.1
        settings.cooldown = 0
        settings.smoothing = 1
        var controller = SheddingController(settings: settings)
        // Overload found at 1: cut to 0.5, then to 0.25 in the same descent.
        controller.tick(.init(p99: 500 * ms))
        controller.tick(.init(p99: 500 * ms))
        #expect(controller.factor == 0.25)
        var factors: [Double] = []
        for _ in 0..<10 { factors.append(controller.tick(.init(p99: 10 * ms))) }
        // Whole steps up to 90 % of 1, quarter steps from there to 1.
        let expected = [0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 0.975, 1, 1]
        #expect(zip(factors, expected).allSatisfy { abs($0 - $1) < 1e-9 }, "\(factors)")
        // Past it, a new overload and recovery start over from the new level.
        controller.tick(.init(p99: 500 * ms))
        #expect(controller.factor == 0.5)
        #expect(abs(controller.tick(.init(p99: 10 * ms)) - 0.6) < 1e-9)
    }

    @Test func afterAStepInLoadItConvergesInsideTheBandAndStaysThere() {
        var controller = SheddingController(settings: settings)
        var factors: [Double] = []
        // Twice the traffic the service handles from tick 0.
        for _ in 0..<200 {
            let p99 = latency(offered: 2, factor: controller.factor, capacity: 1)
            factors.append(controller.tick(.init(p99: p99)))
        }
        let settled = Array(factors.suffix(50))
        // The band (90 … 110 ms) is 1.34 … 1.48 times the capacity admitted: a factor of
        // 0.67 … 0.74 of the doubled traffic. It settles there, near enough ...
        #expect(settled.allSatisfy { $0 > 0.55 && $0 < 0.8 }, "\(settled)")
        // ... and does not oscillate: over the last 50 ticks it moves by less than 0.1.
        #expect((settled.max() ?? 0) - (settled.min() ?? 0) < 0.1, "\(settled)")
        // The service's latency ends near the target, not at the 800 ms of doubled traffic.
        let p99 = latency(offered: 2, factor: settled.last ?? 1, capacity: 1)
        #expect(p99 < 130 * ms, "\(p99 / ms) ms")
    }

    @Test func underSteadyTimeoutsItSettlesAtTheMinimumAndNeverGrows() {
        var controller = SheddingController(settings: settings)
        var seen: [Double] = []
        for _ in 0..<300 { seen.append(controller.tick(.init(p99: 10_000 * ms, errorRate: 0.5))) }
        #expect(controller.factor == settings.minimum)
        #expect(seen.max() ?? 2 <= 1)
        #expect(zip(seen, seen.dropFirst()).allSatisfy { $1 <= $0 }, "never grows while the service times out")
    }

    @Test func recoveryIsGradualAndBounded() {
        var controller = SheddingController(settings: settings)
        for _ in 0..<100 { controller.tick(.init(p99: 1_000 * ms)) }
        #expect(controller.factor == settings.minimum)
        var steps: [Double] = []
        for _ in 0..<100 {
            let before = controller.factor
            controller.tick(.init(p99: 20 * ms))
            steps.append(controller.factor - before)
        }
        #expect(steps.allSatisfy { $0 <= settings.increase + 1e-12 }, "at most one increase per tick")
        #expect(controller.factor == 1, "back to full capacity")
        for _ in 0..<100 { controller.tick(.init(p99: 20 * ms)) }
        #expect(controller.factor == 1, "never above 1")
    }

    @Test func oneSlowReportDoesNotShedAndTheBandHolds() {
        var controller = SheddingController(settings: settings)
        for _ in 0..<10 { controller.tick(.init(p99: 100 * ms)) }
        controller.tick(.init(p99: 130 * ms))   // smoothed: 109 ms, inside the band
        #expect(controller.factor == 1)
        // Inside the band (90 … 110 ms) the factor holds, after a cut too (once the smoothed
        // latency has come back into the band).
        for _ in 0..<20 { controller.tick(.init(p99: 300 * ms)) }
        #expect(controller.factor < 1)
        for _ in 0..<10 { controller.tick(.init(p99: 100 * ms)) }
        let held = controller.factor
        for _ in 0..<30 { controller.tick(.init(p99: 100 * ms)) }
        #expect(controller.factor == held)
    }

    @Test func cutsWaitForTheCooldown() {
        var controller = SheddingController(settings: settings)
        var cuts = 0
        var previous = controller.factor
        for _ in 0..<12 {
            controller.tick(.init(p99: 1_000 * ms))
            if controller.factor < previous { cuts += 1 }
            previous = controller.factor
        }
        #expect(cuts == 4, "one cut per cooldown of 3 ticks over 12 ticks")
    }
}

@Suite(.computes) struct SheddingTests {
    let tiers = [
        Shedding.Tier(priority: 100, share: 0.2, floor: 0.8),   // vip: keeps 80 % at least
        Shedding.Tier(priority: 50, share: 0.3, floor: 0.2),    // standard
        Shedding.Tier(priority: 0, share: 0.5, floor: 0),       // best effort
    ]

    @Test func theLowestPriorityIsShedFirstAndVIPKeepsItsReserve() {
        #expect(Shedding.multipliers(factor: 1, tiers: tiers) == [1, 1, 1])
        // 30 % less traffic: all of it from best effort (0.5 → 0.2 of the total).
        let light = Shedding.multipliers(factor: 0.7, tiers: tiers)
        #expect(light[0] == 1 && light[1] == 1)
        #expect(abs(light[2] - 0.4) < 1e-9)
        // 70 % less: best effort gone, standard down to 1/3, VIP untouched.
        let heavy = Shedding.multipliers(factor: 0.3, tiers: tiers)
        #expect(heavy[0] == 1)
        #expect(abs(heavy[1] - 1.0 / 3) < 1e-9)
        #expect(heavy[2] == 0)
        // Everything shed that can be: VIP keeps its 80 %.
        let all = Shedding.multipliers(factor: 0, tiers: tiers)
        #expect(abs(all[0] - 0.8) < 1e-9)
        #expect(abs(all[1] - 0.2) < 1e-9)
        #expect(all[2] == 0)
    }

    @Test func aTierMeasuredIdleWhereTheCutStillGoesStandsAtItsFloor() {
        // Best effort sent nothing in the last measurement: it must not be admitted whole when it
        // starts again while standard, of higher priority, is being cut.
        var idle = tiers
        idle[2].share = 0
        let cut = Shedding.multipliers(factor: 0.6, tiers: idle)
        #expect(cut[2] == 0)
        #expect(cut[0] == 1)
        // 0.4 of the 0.5 sent is taken, all from standard's 0.3: a third of it left.
        #expect(abs(cut[1] - 1.0 / 3) < 1e-9)
        // Above the cut an idle tier is untouched, and with no cut at all nothing is.
        var idleVIP = tiers
        idleVIP[0].share = 0
        #expect(Shedding.multipliers(factor: 0.7, tiers: idleVIP)[0] == 1)
        #expect(Shedding.multipliers(factor: 1, tiers: idle) == [1, 1, 1])
        // An idle tier of the priority where the cut ends is cut with it, whatever the order.
        for order in [[0, 1], [1, 0]] {
            let pair = [Shedding.Tier(priority: 0, share: 1, floor: 0), Shedding.Tier(priority: 0, share: 0, floor: 0)]
            let multipliers = Shedding.multipliers(factor: 0.5, tiers: order.map { pair[$0] })
            #expect(order.map { multipliers[$0] }.elementsEqual([0.5, 0]), "\(order)")
        }
        // Cut through everything: an idle VIP stands at its reserve.
        #expect(abs(Shedding.multipliers(factor: 0, tiers: idleVIP)[0] - 0.8) < 1e-9)
    }

    @Test func theAdmittedTrafficIsTheFactorUntilTheReservesAreReached() {
        for step in 0...20 {
            let factor = Double(step) / 20
            let multipliers = Shedding.multipliers(factor: factor, tiers: tiers)
            let admitted = zip(tiers, multipliers).reduce(0) { $0 + $1.0.share * $1.1 }
            let reserves = tiers.reduce(0) { $0 + $1.share * $1.floor }
            #expect(abs(admitted - max(factor, reserves)) < 1e-9, "at \(factor)")
        }
    }
}
