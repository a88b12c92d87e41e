import Foundation
import SluiceCore
import Synchronization

/// How per-subject baselines are learned.
public struct BaselineSettings: Sendable, Equatable {
    /// The window a rate is measured over (ns): each closed window is one sample.
    public var window: Int64 = 60_000_000_000
    /// Time-of-day buckets (24: one per hour); each learns its own normal.
    public var buckets = 24
    /// Weight of a new sample in its bucket's average (0…1).
    public var smoothing = 0.1
    /// Samples a subject needs before its baseline is used (until then the rule's own limit applies).
    public var warmup = 10
    /// Subjects learned at most; new ones beyond it are not tracked until the sweep makes room.
    public var maxSubjects = 100_000
    /// A subject not seen for this long is forgotten (ns).
    public var idleAfter: Int64 = 7 * 86_400_000_000_000

    /// The defaults.
    public init() {}

    /// The length of one bucket (ns).
    public var bucketLength: Int64 { 86_400_000_000_000 / Int64(max(1, buckets)) }

    /// The bucket of the day `time` (ns since the epoch, UTC) falls in.
    public func bucket(at time: Int64) -> Int {
        let intoDay = ((time % 86_400_000_000_000) + 86_400_000_000_000) % 86_400_000_000_000
        return min(buckets - 1, Int(intoDay / bucketLength))
    }
}

/// One subject's learned baseline: an average rate per time-of-day bucket.
///
/// The buckets are allocated when the first window closes: a subject seen once (most of them,
/// under a scan or a crowd of one-off callers) costs no allocation on the check path.
public struct Baseline: Sendable, Equatable {
    /// Average hits per second, per bucket; NaN for a bucket never sampled.
    public var normal: [Float] {
        get { learned.isEmpty ? Array(repeating: .nan, count: Int(bucketCount)) : learned }
        set {
            learned = newValue
            bucketCount = UInt32(clamping: newValue.count)
        }
    }
    /// The buckets once one is sampled; empty before.
    private var learned: [Float]
    private var bucketCount: UInt32
    /// How many time-of-day buckets it learns.
    public var buckets: Int { Int(bucketCount) }
    /// Hits in the window being measured.
    public var current: UInt64 = 0
    /// Start of the window being measured (ns, a multiple of the window).
    public var windowStart: Int64
    /// When the subject was last seen (ns).
    public var lastSeen: Int64
    /// Windows sampled so far (capped).
    public var samples: UInt32 = 0

    /// A subject first seen at `now`.
    public init(buckets: Int, windowStart: Int64, lastSeen: Int64) {
        learned = []
        bucketCount = UInt32(clamping: max(0, buckets))
        self.windowStart = windowStart
        self.lastSeen = lastSeen
    }

    /// Restores a stored baseline.
    public init(normal: [Float], windowStart: Int64, lastSeen: Int64, samples: UInt32) {
        learned = normal
        bucketCount = UInt32(clamping: normal.count)
        self.windowStart = windowStart
        self.lastSeen = lastSeen
        self.samples = samples
    }

    /// Equal when every field is, a bucket never sampled (NaN) equal to another never sampled.
    public static func == (lhs: Baseline, rhs: Baseline) -> Bool {
        lhs.current == rhs.current && lhs.windowStart == rhs.windowStart && lhs.lastSeen == rhs.lastSeen && lhs.samples == rhs.samples
            && lhs.bucketCount == rhs.bucketCount && lhs.normal.map(\.bitPattern) == rhs.normal.map(\.bitPattern)
    }

    /// The normal rate (hits per second) at `time`'s bucket; the average of the sampled buckets
    /// when that one was never sampled; nil before `warmup` samples.
    public func normalRate(at time: Int64, settings: BaselineSettings) -> Double? {
        guard samples >= settings.warmup else { return nil }
        let bucket = settings.bucket(at: time)
        if bucket < learned.count, !learned[bucket].isNaN { return Double(learned[bucket]) }
        var sum: Float = 0, count = 0
        for value in learned where !value.isNaN {
            sum += value
            count += 1
        }
        return count == 0 ? nil : Double(sum) / Double(count)
    }

    /// Closes every window that ended by `now`: the measured one is one sample of its bucket,
    /// each quiet one after it a sample of 0 (folded in closed form, a bucket at a time).
    public mutating func advance(to now: Int64, settings: BaselineSettings) {
        let window = settings.window
        let nowWindow = now - ((now % window) + window) % window
        guard nowWindow > windowStart else { return }
        fold(bucket: settings.bucket(at: windowStart), rate: Double(current) * 1e9 / Double(window), count: 1, settings: settings)
        var start = windowStart + window
        // Quiet windows, grouped by bucket; a gap of more than a day folds whole days at once.
        let day: Int64 = 86_400_000_000_000
        if nowWindow - start > day {
            let days = (nowWindow - start) / day
            let perBucket = Int(settings.bucketLength / window)
            for bucket in 0..<Int(bucketCount) { fold(bucket: bucket, rate: 0, count: Int(days) * max(1, perBucket), settings: settings) }
            start += days * day
        }
        while start < nowWindow {
            let bucket = settings.bucket(at: start)
            let bucketEnd = start - ((start % settings.bucketLength) + settings.bucketLength) % settings.bucketLength + settings.bucketLength
            let end = min(bucketEnd, nowWindow)
            let count = Int((end - start + window - 1) / window)
            fold(bucket: bucket, rate: 0, count: count, settings: settings)
            start += Int64(count) * window
        }
        windowStart = nowWindow
        current = 0
    }

    mutating func fold(bucket: Int, rate: Double, count: Int, settings: BaselineSettings) {
        guard count > 0, bucket < Int(bucketCount) else { return }
        if learned.isEmpty { learned = Array(repeating: .nan, count: Int(bucketCount)) }
        let alpha = settings.smoothing
        var value = learned[bucket].isNaN ? rate : Double(learned[bucket])
        // The first sample is taken whole; `count` equal samples fold in closed form.
        let remaining = learned[bucket].isNaN ? count - 1 : count
        if remaining > 0 { value = rate + (value - rate) * pow(1 - alpha, Double(remaining)) }
        learned[bucket] = Float(value)
        samples = UInt32(min(UInt64(UInt32.max), UInt64(samples) + UInt64(count)))
    }
}

/// Every active subject's baseline, in memory: lock-striped, bounded, read and fed by checks on
/// rules whose limit is relative to the baseline.
public final class BaselineBook: Sendable {
    /// Shifted past the bits other books stripe by: a check of a subject reads several books.
    let map = StripedMap<Baseline>(stripeBits: 6, shift: 7)
    /// The latest time a check carried (ns): idleness is measured from it, so checks that carry
    /// their own time (a request clock, a replay) are not all idle by the wall clock.
    let latest = Synchronization.Atomic<Int64>(.min)

    /// An empty book.
    public init() {}

    /// Counts `hits` of `subject` at `now` and returns its normal rate (hits per second) for
    /// now's bucket, nil while it is still learning (or untracked because the book is full).
    ///
    /// - Complexity: O(1) under one stripe lock, plus the windows closed since its last check
    ///   (a bucket at a time).
    public func observe(_ subject: Fingerprint, hits: UInt64, now: Int64, settings: BaselineSettings) -> Double? {
        let full = map.count >= settings.maxSubjects
        let rate = map.update(subject) { slot -> Double? in
            // Changed in place: one lookup.
            if slot != nil { return slot!.observe(hits: hits, now: now, settings: settings) }
            guard !full else { return nil }
            let window = settings.window
            var baseline = Baseline(buckets: settings.buckets, windowStart: now - ((now % window) + window) % window, lastSeen: now)
            baseline.current = hits
            slot = baseline
            return nil
        }
        if now > latest.load(ordering: .relaxed) { latest.store(now, ordering: .relaxed) }
        return rate
    }

    /// The subject's baseline, brought up to `now`.
    public func baseline(of subject: Fingerprint, now: Int64, settings: BaselineSettings) -> Baseline? {
        guard var baseline = map.value(for: subject) else { return nil }
        baseline.advance(to: now, settings: settings)
        return baseline
    }

    /// Forgets subjects idle for `idleAfter` (counted back from the latest time a check carried,
    /// never later than `now`), then the least recently seen beyond `maxSubjects`; returns how
    /// many were forgotten.
    @discardableResult
    public func sweep(now: Int64, settings: BaselineSettings) -> Int {
        let now = min(now, latest.load(ordering: .relaxed))
        var forgotten = map.removeAll { _, baseline in now - baseline.lastSeen >= settings.idleAfter }.count
        let excess = map.count - settings.maxSubjects
        if excess > 0 {
            let oldest = map.entries().map { ($0.value.lastSeen, $0.key) }.sorted { $0.0 < $1.0 }.prefix(excess)
            for (_, subject) in oldest where map.removeValue(for: subject) != nil { forgotten += 1 }
        }
        return forgotten
    }

    /// Every baseline as it is (for saving: the window being measured is kept, and closed by
    /// the subject's next check, whatever clock its checks carry).
    public func all() -> [(Fingerprint, Baseline)] { map.entries().map { ($0.key, $0.value) } }

    /// Replaces the book's contents with stored baselines (at start); those whose bucket count no
    /// longer matches the settings are dropped (the buckets changed meaning).
    public func restore(_ baselines: [(Fingerprint, Baseline)], settings: BaselineSettings) {
        for (subject, baseline) in baselines where baseline.buckets == settings.buckets && map.count < settings.maxSubjects {
            map.set(baseline, for: subject)
            if baseline.lastSeen > latest.load(ordering: .relaxed) { latest.store(baseline.lastSeen, ordering: .relaxed) }
        }
    }

    /// Subjects tracked.
    public var count: Int { map.count }
}

extension Baseline {
    /// Counts `hits` at `now`; returns the normal rate for now, nil while learning.
    mutating func observe(hits: UInt64, now: Int64, settings: BaselineSettings) -> Double? {
        advance(to: now, settings: settings)
        // The normal before this window's hits count: a burst does not raise its own allowance.
        let rate = normalRate(at: now, settings: settings)
        current &+= hits
        lastSeen = max(lastSeen, now)
        return rate
    }
}
