import SluiceCore
import SluiceTestKit
import Testing
@testable import SluiceIntelligence

/// `sluicectl top`'s lists: the current and the previous minute, merged; older minutes gone.
@Suite(.computes) struct TopSketchesTests {
    static func event(_ subject: String, at timeMs: Int64, allowed: Bool = true, cost: UInt64 = 1) -> CheckEvent {
        var event = CheckEvent(timestampMs: timeMs, tenant: "", subject: subject, ip: "192.0.2.1", route: "GET /x", status: 0, cost: cost)
        event.allowed = allowed
        return event
    }

    @Test func theListsCoverTheCurrentAndThePreviousMinute() {
        var top = TopSketches(capacity: 8)
        for second in 0..<60 { top.add(Self.event("early", at: Int64(second) * 1_000)) }
        // The next minute: "early" is still counted (the previous minute), "late" is added.
        for second in 60..<90 { top.add(Self.event("late", at: Int64(second) * 1_000, allowed: second % 2 == 0, cost: 3)) }
        #expect(top.windowMs == 89_000)
        #expect(top.totals.requests == 60 + 90 && top.totals.denied == 45)
        let subjects = top.top(.subjects, by: .requests, count: 5)
        #expect(subjects.map(\.key) == ["late", "early"] && subjects[0].count == 90 && subjects[1].count == 60)
        #expect(abs(subjects[0].rate - 90 / 89.0) < 1e-9)
        #expect(top.top(.subjects, by: .denials, count: 5).map(\.key) == ["late"])
        #expect(top.top(.tenants, by: .requests, count: 5).first?.key == "(default)")
        // Two minutes later: both earlier minutes are gone.
        top.add(Self.event("now", at: 200_000))
        #expect(top.top(.subjects, by: .requests, count: 5).map(\.key) == ["now"])
        #expect(top.totals.requests == 1 && top.windowMs == 1_000)
    }

    @Test func aKeyBeyondCapacityIsBoundedAndItsErrorSaid() {
        var top = TopSketches(capacity: 4)
        for index in 0..<100 { top.add(Self.event("s\(index)", at: 1_000)) }
        for _ in 0..<50 { top.add(Self.event("heavy", at: 2_000)) }
        let first = top.top(.subjects, by: .requests, count: 1)[0]
        #expect(first.key == "heavy" && first.count >= 50 && first.count - first.error <= 50)
    }
}
