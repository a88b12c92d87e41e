import Foundation
import SluiceCore
import SluiceIntelligence
import SluiceTestKit
import Testing

/// Learned baselines, fed checks on a manual clock.
@Suite(.computes) struct BaselineBookTests {
    static let second: Int64 = 1_000_000_000
    static let hour: Int64 = 3_600 * second
    static let day: Int64 = 24 * hour
    /// 2026-01-05T00:00:00Z, a Monday.
    static let monday: Int64 = 1_767_571_200 * second

    var settings: BaselineSettings {
        var settings = BaselineSettings()
        settings.window = 60 * Self.second
        settings.buckets = 24
        settings.smoothing = 0.02
        settings.warmup = 5
        return settings
    }

    /// Sends `perMinute` hits of `subject`, one per check, spread over each minute of
    /// `from..<to`; returns the last normal rate the book reported.
    @discardableResult
    func feed(_ book: BaselineBook, _ subject: Fingerprint, perMinute: Int, from: Int64, to: Int64, clock: ManualClock) -> Double? {
        var last: Double?
        var minute = from
        while minute < to {
            for index in 0..<perMinute {
                clock.reset(to: minute + Int64(index) * 60 * Self.second / Int64(max(1, perMinute)))
                last = book.observe(subject, hits: 1, now: clock.now, settings: settings)
            }
            minute += 60 * Self.second
        }
        return last
    }

    @Test("a subject seen within one window has no buckets learned yet; saved and restored, it is the same baseline")
    func unsampledBaseline() {
        let book = BaselineBook()
        let alice = Fingerprint.of(tenant: "", key: "alice")
        #expect(book.observe(alice, hits: 3, now: Self.monday + 5 * Self.second, settings: settings) == nil)
        #expect(book.observe(alice, hits: 2, now: Self.monday + 9 * Self.second, settings: settings) == nil)
        let fresh = book.all()[0].1
        #expect(fresh.buckets == 24 && fresh.normal.count == 24 && fresh.normal.allSatisfy(\.isNaN))
        #expect(fresh.current == 5 && fresh.samples == 0)
        // What the store writes and reads back: every bucket NaN.
        let restored = Baseline(normal: fresh.normal, windowStart: fresh.windowStart, lastSeen: fresh.lastSeen, samples: 0)
        var withHits = restored
        withHits.current = fresh.current
        #expect(withHits == fresh, "a bucket never sampled equals one never sampled")
        let other = BaselineBook()
        other.restore([(alice, withHits)], settings: settings)
        #expect(other.count == 1)
        // The next window closes the first: one sample, in the 00:00 bucket, 5 hits over 60 s.
        _ = other.observe(alice, hits: 1, now: Self.monday + 61 * Self.second, settings: settings)
        let sampled = other.all()[0].1
        #expect(sampled.samples == 1 && abs(Double(sampled.normal[0]) - 5.0 / 60) < 1e-6 && sampled.normal[1].isNaN)
    }

    @Test func aBaselineIsLearnedPerHourOfDayAndFollowsAChangingPattern() throws {
        let book = BaselineBook()
        let clock = ManualClock(start: Self.monday)
        let alice = Fingerprint.of(tenant: "", key: "alice")
        // Warm-up: nothing is reported until five windows were sampled.
        #expect(feed(book, alice, perMinute: 60, from: Self.monday + 9 * Self.hour, to: Self.monday + 9 * Self.hour + 5 * 60 * Self.second,
                     clock: clock) == nil)
        // Three days of 1 hit/s from 09:00 to 10:00 and 10 hits/s from 14:00 to 15:00.
        for day in 0..<3 {
            let start = Self.monday + Int64(day) * Self.day
            feed(book, alice, perMinute: 60, from: start + 9 * Self.hour, to: start + 10 * Self.hour, clock: clock)
            feed(book, alice, perMinute: 600, from: start + 14 * Self.hour, to: start + 15 * Self.hour, clock: clock)
        }
        clock.reset(to: Self.monday + 3 * Self.day)
        let learned = try #require(book.baseline(of: alice, now: clock.now, settings: settings))
        #expect(abs(Double(learned.normal[9]) - 1) < 0.01, "\(learned.normal[9])")
        #expect(abs(Double(learned.normal[14]) - 10) < 0.1, "\(learned.normal[14])")
        // Quiet hours are learned as quiet: 03:00 saw nothing, every day.
        #expect(learned.normal[3] == 0)
        // The normal reported is the one of the hour the check falls in.
        clock.reset(to: Self.monday + 3 * Self.day + 9 * Self.hour)
        #expect(abs((book.observe(alice, hits: 1, now: clock.now, settings: settings) ?? 0) - 1) < 0.01)
        clock.reset(to: Self.monday + 3 * Self.day + 14 * Self.hour + 30 * Self.second)
        #expect(abs((book.observe(alice, hits: 1, now: clock.now, settings: settings) ?? 0) - 10) < 0.1)

        // The pattern changes: from now on 5 hits/s at 09:00. The baseline follows it: after a
        // day it is between (60 samples at smoothing 0.02 close 70 % of the gap), after a week
        // it is 5.
        var afterDays: [Double] = []
        for day in 4..<11 {
            let start = Self.monday + Int64(day) * Self.day
            feed(book, alice, perMinute: 300, from: start + 9 * Self.hour, to: start + 10 * Self.hour, clock: clock)
            clock.reset(to: start + 10 * Self.hour + 60 * Self.second)
            afterDays.append(Double(try #require(book.baseline(of: alice, now: clock.now, settings: settings)).normal[9]))
        }
        #expect(afterDays.first! > 3.6 && afterDays.first! < 4, "\(afterDays)")
        #expect(abs(afterDays.last! - 5) < 0.01, "\(afterDays)")
        #expect(zip(afterDays, afterDays.dropFirst()).allSatisfy { $0 <= $1 + 1e-6 }, "monotone toward the new normal: \(afterDays)")
    }

    @Test func quietWindowsCountAsZeroAndAHourNeverSampledFallsBackToTheDayAverage() throws {
        let book = BaselineBook()
        let clock = ManualClock(start: Self.monday)
        let bob = Fingerprint.of(tenant: "", key: "bob")
        // Ten busy minutes at 08:00, then silence until 08:30: 20 quiet windows pull the hour down.
        feed(book, bob, perMinute: 120, from: Self.monday + 8 * Self.hour, to: Self.monday + 8 * Self.hour + 600 * Self.second, clock: clock)
        clock.reset(to: Self.monday + 8 * Self.hour + 1_800 * Self.second)
        let baseline = try #require(book.baseline(of: bob, now: clock.now, settings: settings))
        let expected = 2 * pow(0.98, 20.0)
        #expect(abs(Double(baseline.normal[8]) - expected) < 1e-3, "\(baseline.normal[8]) vs \(expected)")
        // At 20:00, never sampled: the average of the hours that were.
        clock.reset(to: Self.monday + 20 * Self.hour)
        let rate = try #require(baseline.normalRate(at: clock.now, settings: settings))
        #expect(abs(rate - Double(baseline.normal[8])) < 1e-6)
    }

    @Test func theBookIsBoundedAndForgetsIdleSubjects() {
        var settings = settings
        settings.maxSubjects = 3
        settings.idleAfter = Self.day
        let book = BaselineBook()
        for (index, name) in ["a", "b", "c", "d"].enumerated() {
            _ = book.observe(.of(tenant: "", key: name), hits: 1, now: Self.monday + Int64(index) * Self.hour, settings: settings)
        }
        // Full at three: "d" is not tracked until the sweep makes room.
        #expect(book.count == 3)
        #expect(book.baseline(of: .of(tenant: "", key: "d"), now: Self.monday + 4 * Self.hour, settings: settings) == nil)
        // Idleness is counted from the latest time a check carried, not the sweep's clock: with
        // checks from the start of the day only, a sweep a year later forgets nobody (a replay,
        // a request clock).
        #expect(book.sweep(now: Self.monday + 365 * Self.day, settings: settings) == 0)
        // A day after "a" was last seen (by the checks' time), it is forgotten; the others stay.
        let later = Self.monday + Self.day + 30 * 60 * Self.second
        _ = book.observe(.of(tenant: "", key: "b"), hits: 1, now: later, settings: settings)
        #expect(book.sweep(now: later, settings: settings) == 1)
        #expect(book.count == 2)
        #expect(book.baseline(of: .of(tenant: "", key: "a"), now: Self.monday + Self.day, settings: settings) == nil)
        #expect(book.baseline(of: .of(tenant: "", key: "b"), now: Self.monday + Self.day, settings: settings) != nil)
    }
}
