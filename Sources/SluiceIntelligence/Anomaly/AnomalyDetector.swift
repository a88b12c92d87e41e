import Foundation
import SluiceCore

/// What an alert is about.
public enum AnomalyScope: String, Sendable, Codable {
    case subject, ip, global
}

/// One alert, in the alert format of `shared/traces/FORMAT.md` (plus `tenant` and `detail`).
public struct AnomalyAlert: Sendable, Equatable, Codable {
    public var timestampMs: Int64
    public var scope: AnomalyScope
    public var subject: String?
    public var ip: String?
    public var tenant: String?
    /// `rate_spike`, `enumeration`, `many_sources`, `brute_force`, `credential_stuffing`,
    /// `many_subjects`, `new_source_surge`.
    public var kind: String
    /// The detector's severity: how many times the threshold the signal stood at.
    public var score: Double
    public var detail: String

    public init(timestampMs: Int64, scope: AnomalyScope, subject: String?, ip: String?, tenant: String?, kind: String, score: Double,
                detail: String) {
        self.timestampMs = timestampMs
        self.scope = scope
        self.subject = subject
        self.ip = ip
        self.tenant = tenant
        self.kind = kind
        self.score = score
        self.detail = detail
    }
}

extension AnomalyAlert {
    /// The alert as one line of JSON (the alert log, `sluicectl replay`): the keys of
    /// `shared/traces/FORMAT.md` plus `tenant` and `detail`.
    public var jsonLine: String {
        var object: [String: Any] = ["ts_ms": timestampMs, "scope": scope.rawValue, "kind": kind, "score": score, "detail": detail]
        if let subject { object["subject"] = subject }
        if let ip { object["ip"] = ip }
        if let tenant { object["tenant"] = tenant }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

/// The detection thresholds (`anomaly:` in the configuration). Each signal compares a short
/// window with either the entity's own learned baseline or the population's, and must also
/// clear an absolute floor, so a quiet subject's first requests are not an anomaly.
public struct AnomalySettings: Sendable, Equatable {
    /// Rate spike: a subject's hits in the last 30 s against its own baseline.
    public var spikeFactor = 8.0
    /// ... and at least this many hits per second over the 30 s.
    public var spikeMinimumRate = 1.5
    /// Enumeration: distinct ids a subject requested within one minute.
    public var enumerationDistinctIds = 20
    /// Credential stuffing: failed requests (401, 403) from one IP within one minute...
    public var failuresPerIP = 12
    /// ... naming at least this many distinct subjects.
    public var failedSubjectsPerIP = 8
    /// Many sources: distinct IPs one subject was seen from within a minute (and 4× its own normal).
    public var sourcesPerSubject = 10
    /// Brute force: failed requests (401, 403) for one subject within a minute, at least half of
    /// its outcomes then.
    public var failuresPerSubject = 10
    /// Many subjects: distinct subjects one IP named within a minute (and 4× its own normal).
    public var subjectsPerIP = 30
    /// Surge of new sources: requests from IPs first seen in the last 5 minutes, over 30 s,
    /// against their learned baseline...
    public var surgeFactor = 8.0
    /// ... and at least this many.
    public var surgeMinimum = 300.0
    /// ... coming from at least this many addresses first seen in the last 30 s: a surge from a
    /// few new addresses (a new internal service's first run) is not a crowd of new sources.
    public var surgeSources = 20.0
    /// Traffic surge: all requests over 30 s against their learned normal (and `surgeMinimum`).
    public var trafficFactor = 6.0
    /// A rate spike (or a minute of many distinct resources) must hold this long (ms) before it
    /// is one: a burst that ends sooner is the subject's own spread (a batch job, a cron run),
    /// and is learned as its peak. A new subject, of which nothing is known, must hold it for
    /// `newSubjectPersistenceMs`.
    public var spikePersistenceMs: Int64 = 15_000
    public var newSubjectPersistenceMs: Int64 = 45_000
    /// A settled subject's rate must also be this many times the peak of its past bursts.
    public var peakFactor = 2.0
    /// Peers: a subject is compared with the `peerQuantile` of its peer group's minutes (same
    /// tenant, kind of client and kind of route) times `peerMargin`, once the group has
    /// `peerMinimumSamples` minutes (fading: the last few hours weigh most).
    public var peerQuantile = 0.999
    public var peerMargin = 1.5
    public var peerMinimumSamples = 50.0
    /// Enumeration in order: steps of +1 or +2 from one numeric id (100 or more) to the next,
    /// halved each minute.
    public var sequentialSteps = 20.0
    /// Sustained scraping: distinct resources per minute averaged over about 5 minutes.
    public var sustainedDistinct = 16.0
    /// Diffuse failures: addresses failing for the first time in 5 to 10 minutes, for subjects
    /// not seen before, over the last 6 minutes (credential stuffing spread over hundreds of
    /// addresses): at least this many and `failureSurgeFactor` times their normal.
    public var failureSurgeMinimum = 20.0
    public var failureSurgeFactor = 8.0
    /// The alert budget: subject alerts an hour that ordinary traffic may raise. Every subject's
    /// minute has a score (its highest signal against its threshold); the scores of the last
    /// hour or so are kept in a fading histogram, and the thresholds are raised by the factor
    /// above which at most this many minutes an hour scored. Where the thresholds suit the
    /// traffic the factor is 1; where they do not, the alerts stay within the budget.
    public var alertBudgetPerHour = 10.0
    /// The model (``HalfSpaceTrees``) over each subject's minutes: off, or on (alerts of kind
    /// `outlier`, held to their own budget of `alertBudgetPerHour`).
    public var model = false
    /// A subject's own baseline is trusted after this long (ms); before, it learns from all it sends.
    public var subjectWarmupMs: Int64 = 10 * 60_000
    /// Until then, a rate spike needs this many times `spikeMinimumRate`.
    public var newSubjectFactor = 4.0
    /// No alert before this much trace time was learned (ms).
    public var warmupMs: Int64 = 20 * 60_000
    /// The same entity is not alerted on again within this (ms).
    public var cooldownMs: Int64 = 5 * 60_000
    /// State of a subject or IP not seen for this long is forgotten (ms).
    public var idleMs: Int64 = 60 * 60_000
    /// Subjects with state at most; beyond, new subjects are counted in a count-min sketch.
    public var maxSubjects = 1_000_000
    /// IPs with state at most; beyond, a new IP counts as a new source.
    public var maxSources = 1_000_000
    /// Tenants' own thresholds (`tenants.NAME.anomaly`): whole settings, of which the subject
    /// signals' thresholds (rate spike, enumeration, many sources, brute force) are read for
    /// that tenant's subjects. Address and global signals see every tenant's traffic: theirs
    /// stay these.
    public var tenants: [String: AnomalySettings] = [:]
    /// Subject records a tenant may hold at most (its `max_anomaly_records` quota); past it,
    /// its new subjects are counted in the sketch like those past `maxSubjects`, and no other
    /// tenant's room is taken.
    public var tenantRecordLimits: [String: Int] = [:]

    public init() {}

    /// The settings whose subject thresholds apply to `tenant`'s subjects.
    @inline(__always)
    public func forSubjects(of tenant: String) -> AnomalySettings {
        tenants.isEmpty ? self : (tenants[tenant] ?? self)
    }
}

/// The detection engine: fed observations in time order, it keeps bounded state per subject,
/// per IP and globally, and returns the alerts each observation tips. It reads no clock: the
/// daemon feeds it live on a background queue, `sluicectl replay` feeds it a trace in simulated
/// time, and the two raise the same alerts.
///
/// Memory: a fixed-size record per subject and per IP seen within `idleMs` (no allocation per
/// record beyond the map's slot, except the failure log of an IP that has failed), up to
/// `maxSubjects` and `maxSources`. Beyond those, new subjects are counted in a count-min sketch
/// (a rate spike is still caught, against the absolute floor), and new IPs count as new sources.
public final class AnomalyDetector {
    /// Buckets of 5 s; a 30 s window is 6 of them.
    static let bucketMs: Int64 = 5_000
    static let windowBuckets = 6

    /// Counts in the last 6 buckets of 5 s, as a ring.
    struct Window {
        var counts = (UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0))
        /// The bucket number (timestamp / 5 s, or a minute for the failure surge) of the newest
        /// count; 32 bits hold buckets of 5 s until the year 2310.
        var packedNewest: Int32 = 0
        var newest: Int64 {
            get { Int64(packedNewest) }
            set { packedNewest = Int32(clamping: newValue) }
        }

        mutating func add(_ value: UInt32, bucket: Int64) {
            advance(to: bucket)
            withUnsafeMutableBytes(of: &counts) { raw in
                let slots = raw.bindMemory(to: UInt32.self)
                let slot = Int(bucket % Int64(AnomalyDetector.windowBuckets))
                slots[slot] &+= value
            }
        }

        mutating func advance(to bucket: Int64) {
            let newest = self.newest
            guard bucket > newest else { return }
            withUnsafeMutableBytes(of: &counts) { raw in
                let slots = raw.bindMemory(to: UInt32.self)
                let gap = min(Int64(AnomalyDetector.windowBuckets), bucket - newest)
                for step in 1...gap { slots[Int((newest + step) % Int64(AnomalyDetector.windowBuckets))] = 0 }
            }
            self.newest = bucket
        }

        /// The total of the newest `count` buckets ending at `bucket` (the current one included).
        mutating func latest(_ count: Int, at bucket: Int64) -> UInt32 {
            advance(to: bucket)
            return withUnsafeBytes(of: counts) { raw in
                let slots = raw.bindMemory(to: UInt32.self)
                var sum: UInt32 = 0
                // Never before bucket 0 (times start at 0): the slots past it are empty anyway.
                for back in 0..<min(count, AnomalyDetector.windowBuckets, Int(bucket) + 1) {
                    sum &+= slots[Int((bucket - Int64(back)) % Int64(AnomalyDetector.windowBuckets))]
                }
                return sum
            }
        }

        /// The total over the window ending at `bucket`.
        mutating func total(at bucket: Int64) -> UInt32 {
            advance(to: bucket)
            return withUnsafeBytes(of: counts) { raw in raw.bindMemory(to: UInt32.self).reduce(0, &+) }
        }
    }

    /// Distinct values an entity named in the current minute (16 bytes, no allocation), against
    /// its own normal: the distinct count of its active minutes, smoothed over about 30 of them
    /// (kept in half precision: a step too small to register leaves it within 1.5 % of the
    /// true average). 20 bytes.
    struct DistinctPerMinute {
        var counter = LinearCounter()
        @Half var normal: Float = 0
        /// Minutes learned.
        @Saturating var samples: UInt32 = 0

        /// What the current minute must reach: `floor`, and `factor` times the normal.
        func threshold(floor: Double, factor: Double) -> Double { max(floor, factor * Double(normal)) }

        /// Ends the minute. It is a sample of the normal if anything was counted, unless it was
        /// an anomaly (while the entity is new, every minute is a sample).
        mutating func close(floor: Double, factor: Double, settled: Bool, learn: Bool = true) {
            let closed = counter.estimate
            if learn, closed > 0, closed < threshold(floor: floor, factor: factor) || !settled {
                normal += (Float(closed) - normal) / (samples == 0 ? 1 : 30)
                samples &+= 1
            }
            counter = LinearCounter()
        }
    }

    /// A global count over the last 30 s, against its normal: the mean of the 30 s totals (one
    /// sample per 5 s bucket) while it has fewer than 360, then smoothed over about 30 minutes.
    /// After warm-up, above twice the normal it learns ten times slower (a benign crowd must not
    /// teach it that a surge is normal), and not at all past half the alert threshold.
    struct GlobalRate {
        var window = Window()
        var normal: Double = 0
        var samples: Double = 0
        var bucket: Int64 = -1

        /// Counts `value` at `bucket` and returns the 30 s total.
        mutating func add(_ value: UInt32, bucket: Int64, learning: Bool, factor: Double) -> Double {
            if value > 0 { window.add(value, bucket: bucket) }
            let total = Double(window.total(at: bucket))
            if bucket != self.bucket {
                let high = total > 2 * normal
                let surging = total > factor / 2 * normal
                if learning || samples == 0 || !surging {
                    samples = min(samples + 1, 360)
                    normal += (total - normal) / (high && !learning ? 3_600 : samples)
                }
                self.bucket = bucket
            }
            return total
        }
    }

    /// A subject's record: 120 bytes (and 8 of key and about 8 of index in ``RecordTable``).
    /// Its per-minute counts are of the minute of `lastSeen`. Times are kept in whole seconds
    /// (``Seconds``), rates and scores that tolerate it in half precision (``Half``); the
    /// baseline, which learns in steps of 1/1,800, keeps single precision.
    struct Subject {
        /// Distinct ids requested (enumeration) and distinct IPs seen from (many sources).
        var ids = DistinctPerMinute()
        @Seconds var lastSeen: Int64
        var sources = DistinctPerMinute()
        var window = Window()
        @Seconds var lastBaselineUpdate: Int64
        @Seconds var firstSeen: Int64
        @Seconds var lastAlert = AnomalyDetector.never
        /// When the rate went over its threshold, and when its distinct resources of the minute
        /// did (`never`: not over).
        @Seconds var spikeSince = AnomalyDetector.never
        @Seconds var enumerationSince = AnomalyDetector.never
        /// Outcomes reported this minute, and failures among them.
        @Saturating var outcomes: UInt32 = 0
        @Saturating var failures: UInt32 = 0
        /// Smoothed hits per second over about 30 minutes: the subject's own normal.
        var baseline: Float = 0
        /// The 30 s rate (hits/s) its bursts reach: a running average of the highest rates of the
        /// bursts that ended on their own, quicker to rise than to fall. Its own spread, so a
        /// partner's batch job is its normal. Fades by half every 6 hours.
        @Half var peak: Float = 0
        /// The highest rate of the burst under way.
        @Half var burstMax: Float = 0
        /// Hits in the minute of `lastSeen`.
        var minuteHits: UInt32 = 0
        /// The last numeric id it requested (its low 32 bits), and its steps of +1 or +2 from one
        /// id to the next, halved each minute: a walk through ids in order.
        var lastID: UInt32 = 0
        @Half var sequential: Float = 0
        /// Distinct resources per minute, averaged over about 5 minutes (closed minutes only).
        @Half var sustained: Float = 0
        /// The peer group (low 15 bits) and whether the last alert was a re-alert (the top bit).
        var packedGroup: UInt16 = 0
        /// Its highest score of the minute: a signal's value against its threshold.
        @Half var minuteScore: Float = 0

        init(lastBaselineUpdate: Int64, firstSeen: Int64, lastSeen: Int64) {
            self.lastSeen = lastSeen
            self.lastBaselineUpdate = lastBaselineUpdate
            self.firstSeen = firstSeen
        }

        /// Its peer group (``PeerGroups``), set at the first request of each minute.
        var group: UInt16 {
            get { packedGroup & 0x7FFF }
            set { packedGroup = (packedGroup & 0x8000) | (newValue & 0x7FFF) }
        }
        /// Whether its last alert came within an hour of the one before: the same incident, not
        /// counted in the alert budget again.
        var realerted: Bool {
            get { packedGroup & 0x8000 != 0 }
            set { packedGroup = (packedGroup & 0x7FFF) | (newValue ? 0x8000 : 0) }
        }
    }

    /// An address's record: 40 bytes. Its per-minute counts are of the minute of `lastSeen`.
    struct Source {
        /// Distinct subjects named by its requests.
        var subjects = DistinctPerMinute()
        @Seconds var firstSeen: Int64
        @Seconds var lastSeen: Int64
        @Seconds var lastAlert = AnomalyDetector.never
        /// Its hits in the current 30 s (of `hitsWindow`, timestamp / 30 s; 32 bits hold it for
        /// 2,000 years), of which at most `youngShare` count towards a surge of new sources: a
        /// crowd is many sources.
        var packedHitsWindow: Int32 = 0
        @Saturating var hits: UInt32 = 0
        /// Whether it has failed: its ``FailureLog`` is in `failureLogs` (most addresses never fail).
        var failing = false

        init(firstSeen: Int64, lastSeen: Int64) {
            self.firstSeen = firstSeen
            self.lastSeen = lastSeen
        }

        var hitsWindow: Int64 {
            get { Int64(packedHitsWindow) }
            set { packedHitsWindow = Int32(clamping: newValue) }
        }
    }

    /// The failures of an address that has failed: in the current minute, and in the current
    /// 5 minutes with the outcomes they were among (a slower attacker's window). Subjects are
    /// kept exactly, at most 64 per window.
    final class FailureLog {
        var minuteFailures: UInt32 = 0
        var minuteSubjects: Set<UInt64> = []
        /// The 5-minute window (timestamp / 5 min) of the counts below.
        var window: Int64
        var windowOutcomes: UInt32 = 0
        var windowFailures: UInt32 = 0
        var windowSubjects: Set<UInt64> = []
        /// Failures in the 5 minutes before the current ones (0 if those were further back).
        var previousFailures: UInt32 = 0

        init(window: Int64) { self.window = window }

        /// Counts an outcome (and the subject, if it failed), starting a new window when due.
        func count(failed: Bool, subject: UInt64, at now: Int64) {
            if now / 300_000 > window {
                previousFailures = now / 300_000 == window + 1 ? windowFailures : 0
                window = now / 300_000
                windowOutcomes = 0
                windowFailures = 0
                windowSubjects = []
            }
            windowOutcomes &+= 1
            guard failed else { return }
            windowFailures &+= 1
            minuteFailures &+= 1
            if windowSubjects.count < 64 { windowSubjects.insert(subject) }
            if minuteSubjects.count < 64 { minuteSubjects.insert(subject) }
        }
    }

    public let settings: AnomalySettings
    var subjects: RecordTable<Subject>
    /// For tenants with a record quota: which tenant each of their records is, and how many
    /// each holds (counted from this detector's start: records restored from a saved state are
    /// not counted until they are forgotten).
    var recordTenants: [UInt64: String] = [:]
    var recordCounts: [String: Int] = [:]
    var sources: RecordTable<Source>
    /// The failure logs of the addresses that have failed (those marked `failing`).
    var failureLogs: [UInt64: FailureLog] = [:]
    /// The peer groups and their minutes.
    var peers = PeerGroups()
    /// The subjects' minutes' scores, and the factor (at least 1) the alert budget puts on
    /// every subject threshold, updated once a minute (``updateBudget(now:)``).
    var scores = FadingLogHistogram()
    /// The model, and its minutes' outlier values (for its own budget).
    lazy var model = HalfSpaceTrees(dimensions: MinuteFeatures.dimensions, window: 4_096)
    var modelScores = FadingLogHistogram()
    /// The model's last alert per subject it alerted on (at most 10,000, its cooldown).
    var modelAlerted: [UInt64: Int64] = [:]
    public internal(set) var budget: Double = 1
    var budgetMinute: Int64 = -1
    var start: Int64?
    /// Requests from young sources, per 5 s, and its smoothed normal (per 30 s).
    var youngRequests = GlobalRate()
    /// All requests, the same way.
    var allRequests = GlobalRate()
    /// Failures from addresses that failed at most twice in their 5 minutes, the same way, and
    /// those counted since it was last brought up to date.
    var diffuseFailures = GlobalRate()
    /// Addresses first seen, per 5 s over the last 30 s.
    var newSources = Window()
    /// Where the requests of new sources come from and go (prefixes, routes): the surge's shape.
    var surgeShape = SurgeShape()
    var diffusePending: UInt32 = 0
    var lastGlobalAlert: Int64 = AnomalyDetector.never
    /// The failure surge's own cooldown: a stuffing under way does not hide a botnet's surge.
    var lastFailureSurge: Int64 = AnomalyDetector.never
    var lastSweep: Int64 = 0
    /// Hits of subjects without a record (over `maxSubjects`) in the current 30 s, and the
    /// window's number: a sketch of 64 Ki × 4 counters (1 MiB).
    var overflow = CountMinSketch(width: 1 << 16, depth: 4)
    var overflowWindow: Int64 = -1
    /// Untracked subjects alerted on since the last sweep (their cooldown), at most 10,000.
    var overflowAlerted: Set<UInt64> = []
    var overflowAlertedSince: Int64 = 0
    /// Requests of subjects and IPs that found the detector full.
    public private(set) var untracked: (subjects: UInt64, sources: UInt64) = (0, 0)
    var untrackedAtSweep: UInt64 = 0

    public init(settings: AnomalySettings = AnomalySettings()) {
        self.settings = settings
        subjects = RecordTable(maxCount: settings.maxSubjects)
        sources = RecordTable(maxCount: settings.maxSources)
    }

    /// The times detection works with, in milliseconds since the epoch (0 to about the year
    /// 144,000). Every time is brought into it on the way in (``observe(_:)``, a restored state),
    /// and "never" is -2^60, so no difference of two times can overflow, whatever a client or a
    /// trace says.
    public static let timeRange: ClosedRange<Int64> = 0...(1 << 52)

    /// The time "never" stands for (of a last alert).
    static let never: Int64 = -(1 << 60)

    /// `observation` with its time in ``timeRange``.
    @inline(__always)
    static func inRange(_ observation: CheckEvent) -> CheckEvent {
        guard !timeRange.contains(observation.timestampMs) else { return observation }
        var clamped = observation
        clamped.timestampMs = min(max(observation.timestampMs, timeRange.lowerBound), timeRange.upperBound)
        return clamped
    }

    /// Whether it has seen anything yet (its warm-up runs from the first event).
    public var hasLearned: Bool { start != nil }

    /// Subjects and sources with state now.
    public var tracked: (subjects: Int, sources: Int) { (subjects.count, sources.count) }

    /// A subject's record key: its tenant's name and its own, so that two tenants' subjects of
    /// one name are two records that cannot raise or hide each other's alerts. The default
    /// tenant's keys are the subject's hash alone, as they were before tenants were counted in.
    static func subjectKey(_ observation: CheckEvent) -> UInt64 {
        guard !observation.tenant.isEmpty else { return hash(observation.subject) }
        var hasher = StableHasher()
        hasher.combine(observation.tenant)
        hasher.combine(observation.subject)
        return hasher.finalize().low
    }

    static func hash(_ text: String) -> UInt64 {
        var hasher = StableHasher()
        hasher.combine(text)
        return hasher.finalize().low
    }

    /// The id a route names: its last path segment made only of digits (`GET /api/items/48213/reviews`
    /// → 48213), or else its last segment that looks like a generated id (8 or more hex digits and
    /// dashes, with at least one digit and one letter: a UUID, a hash), hashed. Nil when there is
    /// none (`/api/v1/orders` has none: `v1` is not an id).
    public static func resourceID(_ route: String) -> UInt64? {
        var route = route
        return route.withUTF8 { resourceID(bytes: $0) }
    }

    /// ``resourceID(_:)`` over the route's bytes: segments are walked from the end, so the usual
    /// route (`…/items/48213`) is settled by its last few bytes, and a generated id is hashed
    /// only once it is known to be one.
    static func resourceID(bytes: UnsafeBufferPointer<UInt8>) -> UInt64? {
        resourceParts(bytes: bytes).map(\.id)
    }

    /// ``resourceID(bytes:)``, saying whether the id is a number (not a hashed token).
    static func resourceParts(bytes: UnsafeBufferPointer<UInt8>) -> (id: UInt64, numeric: Bool)? {
        var token: UInt64?
        var end = bytes.count
        while end > 0 {
            var start = end
            while start > 0 {
                let byte = bytes[start - 1]
                if byte == UInt8(ascii: "/") || byte == UInt8(ascii: " ") || byte == UInt8(ascii: "?") { break }
                start -= 1
            }
            if start < end {
                var digits = true, hex = true, digit = false, letter = false
                for byte in bytes[start..<end] {
                    switch byte {
                    case 48...57: digit = true
                    case 97...102, 65...70: letter = true; digits = false
                    case UInt8(ascii: "-"): digits = false
                    default: digits = false; hex = false
                    }
                }
                if digits, end - start <= 19 {
                    var id: UInt64 = 0
                    for byte in bytes[start..<end] { id = id &* 10 &+ UInt64(byte - 48) }
                    return (id, true)
                }
                if token == nil, hex, digit, letter, end - start >= 8 { token = fnv1a(bytes[start..<end]) }
            }
            end = start - 1
        }
        return token.map { ($0, false) }
    }

    /// The resource a request names, for enumeration: its route's id (``resourceID(_:)``), or,
    /// for a route without one, the route itself (method and path, the query left out), hashed.
    /// So a crawl of pages named by words (`/products/blue-widget`) counts as one of ids.
    static func resource(_ route: String) -> UInt64 {
        resourceAndNumber(route).resource
    }

    /// ``resource(_:)``, and the route's id when it is a number.
    static func resourceAndNumber(_ route: String) -> (resource: UInt64, number: UInt64?) {
        var route = route
        return route.withUTF8 { bytes in
            if let parts = resourceParts(bytes: bytes) { return (parts.id, parts.numeric ? parts.id : nil) }
            return (fnv1a(bytes[..<(bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.endIndex)]), nil)
        }
    }

    /// FNV-1a of `bytes`: cheap, and enough to tell routes and generated ids apart.
    static func fnv1a(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash
    }

    /// Takes one request with its outcome (a trace row), in time order, and returns the alerts
    /// it tipped: ``observeRequest(_:)`` then ``observeOutcome(_:)``.
    public func observe(_ observation: CheckEvent) -> [AnomalyAlert] {
        observe(observation, outcome: true)
    }

    /// Starts a new minute of a subject's counts when `minute` is past the one they are of (that
    /// of its latest event), closing the last one into its normals. Called before `lastSeen`
    /// moves. An event older than the latest (live, a late outcome) counts in the current minute.
    ///
    /// The closed minute is a sample of its peer group's minutes (unless it was alerted on),
    /// and its distinct resources enter the subject's 5-minute average, which is compared with
    /// its normal and its peers' here: a sustained scrape is an `enumeration` alert.
    func roll(_ subject: inout Subject, to minute: Int64, settled: Bool, observation: CheckEvent) -> AnomalyAlert? {
        let last = subject.lastSeen / 60_000
        guard minute > last else { return nil }
        let now = observation.timestampMs
        let own = settings.forSubjects(of: observation.tenant)
        let closedDistinct = subject.ids.counter.estimate
        let gap = Double(minute - last)
        // About 5 minutes: the closed minute weighs 1 - d, then each silent minute fades it. A
        // minute counts for at most twice the floor, so that one burst is not a sustained pace.
        let fade = 0.8187307530779818  // exp(-1/5)
        let capped = min(closedDistinct, 2 * max(own.sustainedDistinct,
                                                  peerThreshold(\.sustained, of: Int(subject.group)) ?? 0))
        subject.sustained = Float((Double(subject.sustained) * fade + capped * (1 - fade)) * pow(fade, gap - 1))
        subject.sequential *= Float(pow(0.5, gap))
        subject.peak *= Float(pow(0.5, gap / 360))
        let alerted = subject.lastAlert >= last * 60_000
        // The budget counts new incidents: not the minutes of a subject alerted on within the
        // hour before (a scraper at work for hours), nor a second alert within an hour.
        // Nor the warm-up's minutes, when nothing alerts and every subject is new.
        if last * 60_000 - (start ?? 0) >= settings.warmupMs,
           alerted ? !subject.realerted : subject.lastAlert < last * 60_000 - Self.incidentMs {
            scores.add(Double(subject.minuteScore) * 100, at: now, halfLife: Self.budgetHalfLifeMs)
        }
        subject.minuteScore = 0
        updateBudget(now: now)
        // Whether it was settled in the minute closed (not now: it may have been away an hour).
        let settledThen = subject.lastSeen - subject.firstSeen >= settings.subjectWarmupMs
        if !alerted {
            let group = Int(subject.group)
            peers.groups[group].hits.add(Double(subject.minuteHits), at: now, halfLife: Self.peerHalfLifeMs)
            peers.groups[group].distinct.add(closedDistinct, at: now, halfLife: Self.peerHalfLifeMs)
            peers.groups[group].sustained.add(Double(subject.sustained), at: now, halfLife: Self.peerHalfLifeMs)
        }
        let outlier = settings.model ? modelMinute(&subject, distinct: closedDistinct, gap: gap, observation: observation) : nil
        let normalDistinct = Double(subject.ids.normal)
        let over = closedDistinct >= max(subject.ids.threshold(floor: Double(own.enumerationDistinctIds),
                                                               factor: settings.spikeFactor / 2),
                                         peerThreshold(\.distinct, of: Int(subject.group)) ?? 0)
        if !over || gap > 1 { subject.enumerationSince = Self.never }
        subject.ids.close(floor: Double(settings.enumerationDistinctIds), factor: settings.spikeFactor / 2, settled: settledThen)
        // A new subject's addresses are not learned past their threshold either: a key leaked
        // on its first day must not teach itself that a hundred places are its normal.
        // Nor is its first minute, seen only in part: a key leaked to a hundred places would
        // learn a few dozen as its normal, and four times that is more than a full minute reaches.
        subject.sources.close(floor: Double(settings.sourcesPerSubject) * (settledThen ? 1 : settings.newSubjectFactor),
                              factor: settings.spikeFactor / 2, settled: true, learn: last * 60_000 > subject.firstSeen)
        subject.outcomes = 0
        subject.failures = 0
        subject.minuteHits = 0
        // The largest group the subject has been part of: the one that knows most about its kind.
        let current = peers.group(tenant: observation.tenant, subject: observation.subject, route: observation.route)
        if peers.groups[Int(current)].hits.total > peers.groups[Int(subject.group)].hits.total { subject.group = current }
        guard gap == 1, now - (start ?? now) >= settings.warmupMs, now - subject.lastAlert >= settings.cooldownMs else { return outlier }
        let peer = peerThreshold(\.sustained, of: Int(subject.group))
        let threshold = max(own.sustainedDistinct, settled ? own.spikeFactor / 2 * normalDistinct : 0, peer ?? 0)
        let sustained = Double(subject.sustained)
        guard gate(&subject, sustained / threshold) else { return outlier }
        markAlerted(&subject, now)
        return AnomalyAlert(timestampMs: now, scope: .subject, subject: observation.subject, ip: nil, tenant: observation.tenant,
                            kind: "enumeration", score: sustained / threshold,
                            detail: String(format: "%.1f distinct resources a minute, sustained over about 5 minutes, against a threshold of %.1f (%@)",
                                           sustained, threshold,
                                           Self.because(floor: own.sustainedDistinct, own: settled ? normalDistinct : nil, ownFactor: own.spikeFactor / 2,
                                                        peers: peer, unit: "a minute")))
    }

    /// The most one new source adds to the requests of new sources in 30 s (a request a second).
    static let youngShare: UInt32 = 30

    /// How long the scores take to weigh half (ms) for the alert budget.
    static let budgetHalfLifeMs: Int64 = 3_600_000

    /// Brings the budget's factor up to date, once a minute: the score (at least 1) above which
    /// at most `alertBudgetPerHour` of the subjects' minutes lie. With a half-life of an hour,
    /// the faded counts hold about 1/ln 2 hours of minutes.
    func updateBudget(now: Int64) {
        guard now / 60_000 != budgetMinute else { return }
        budgetMinute = now / 60_000
        let limit = Float(settings.alertBudgetPerHour / log(2))
        budget = max(1, scores.edge(leavingAtMost: limit) / 100)
    }

    /// An alert on the same subject within this (ms) of its last is the same incident.
    static let incidentMs: Int64 = 3_600_000

    /// Notes an alert on `subject` at `now`.
    @inline(__always)
    func markAlerted(_ subject: inout Subject, _ now: Int64) {
        subject.realerted = now - subject.lastAlert < Self.incidentMs
        subject.lastAlert = now
    }

    /// Records `score` as one of the subject's this minute, and says whether it is over: at
    /// least 1, and at least the budget's factor. A score that has not `held` (a spike younger
    /// than its persistence) is recorded as under 1: the budget counts what would alert.
    @inline(__always)
    func gate(_ subject: inout Subject, _ score: Double, held: Bool = true) -> Bool {
        subject.minuteScore = max(subject.minuteScore, Float(min(held ? score : min(score, 0.99), 1e6)))
        return score >= budget
    }

    /// A burst that ended within this (ms), alerted on or not, is learned as the subject's peak.
    static let learnableBurstMs: Int64 = 3 * 60_000

    /// How long a peer group's samples take to weigh half (ms): the last few hours count.
    static let peerHalfLifeMs: Int64 = 2 * 3_600_000

    /// A peer group's threshold for a feature: its `peerQuantile` times `peerMargin`, or nil
    /// while the group has too few minutes.
    func peerThreshold(_ feature: KeyPath<PeerGroup, FadingLogHistogram>, of group: Int) -> Double? {
        peers.groups[group][keyPath: feature].quantile(settings.peerQuantile, minimum: Float(settings.peerMinimumSamples))
            .map { $0 * settings.peerMargin }
    }

    /// The sentence that says what a threshold was made of: the floor, the entity's own normal
    /// (times its factor), its peers' quantile.
    static func because(floor: Double, own: Double?, ownFactor: Double, peers: Double?, unit: String) -> String {
        var parts = [String(format: "floor %.1f", floor)]
        if let own { parts.append(String(format: "%.0f× its normal of %.1f %@", ownFactor, own, unit)) }
        if let peers { parts.append(String(format: "its peers' busiest 0.1%% reach %.1f, with margin", peers)) }
        return parts.joined(separator: "; ")
    }

    func roll(_ source: inout Source, key: UInt64, to minute: Int64) {
        guard minute > source.lastSeen / 60_000 else { return }
        source.subjects.close(floor: Double(settings.subjectsPerIP), factor: settings.spikeFactor / 2,
                              settled: settled(source.firstSeen, source.lastSeen))
        if source.failing, let failures = failureLogs[key] {
            failures.minuteFailures = 0
            failures.minuteSubjects = []
        }
    }

    /// Whether an entity first seen at `firstSeen` has a normal of its own by `now`.
    func settled(_ firstSeen: Int64, _ now: Int64) -> Bool { now - firstSeen >= settings.subjectWarmupMs }

    /// Takes the outcome of a request (its `status`; live, from `ReportOutcome`): the failure
    /// signals. In time order with the requests.
    public func observeOutcome(_ observation: CheckEvent) -> [AnomalyAlert] {
        let observation = Self.inRange(observation)
        let failed = observation.status == 401 || observation.status == 403
        let now = observation.timestampMs
        if start == nil { start = now }
        let learning = now - (start ?? now) < settings.warmupMs
        let minute = now / 60_000
        var alerts: [AnomalyAlert] = []
        let subjectKey = Self.subjectKey(observation)
        let known = subjects[subjectKey]
        let knownSubject = known.map { now - $0.firstSeen > 5 * 60_000 } ?? false
        if var subject = known ?? (failed && mayTrack(subjectKey, of: observation.tenant) ? newSubject(observation) : nil) {
            if let alert = roll(&subject, to: minute, settled: settled(subject.firstSeen, now), observation: observation) { alerts.append(alert) }
            subject.lastSeen = max(subject.lastSeen, now)
            if let alert = outcome(of: observation, failed: failed, subject: &subject, learning: learning) { alerts.append(alert) }
            subjects[subjectKey] = subject
        }
        // The address: a success is counted only where a failure was before.
        let ipKey = Self.hash(observation.ip)
        guard var source = sources[ipKey] ?? (failed && sources.count < settings.maxSources ? Source(firstSeen: now, lastSeen: now) : nil) else {
            if failed { untracked.sources &+= 1 }
            return alerts
        }
        roll(&source, key: ipKey, to: minute)
        source.lastSeen = max(source.lastSeen, now)
        if let alert = outcome(of: observation, failed: failed, subjectKey: subjectKey, knownSubject: knownSubject, source: &source,
                               sourceKey: ipKey, learning: learning) {
            alerts.append(alert)
        }
        sources[ipKey] = source
        if let alert = failureSurge(now: now, learning: learning) { alerts.append(alert) }
        return alerts
    }

    /// Brute force: many failures for one subject, most of what it got this minute.
    func outcome(of observation: CheckEvent, failed: Bool, subject: inout Subject, learning: Bool) -> AnomalyAlert? {
        let now = observation.timestampMs
        subject.outcomes &+= 1
        guard failed else { return nil }
        subject.failures &+= 1
        let failures = Int(subject.failures)
        let own = settings.forSubjects(of: observation.tenant)
        guard 2 * failures >= Int(subject.outcomes), gate(&subject, Double(failures) / Double(own.failuresPerSubject)), !learning,
              now - subject.lastAlert >= settings.cooldownMs else { return nil }
        markAlerted(&subject, now)
        return AnomalyAlert(timestampMs: now, scope: .subject, subject: observation.subject, ip: nil, tenant: observation.tenant,
                            kind: "brute_force", score: Double(failures) / Double(own.failuresPerSubject),
                            detail: "\(failures) failures of \(subject.outcomes) outcomes for this subject in a minute")
    }

    /// Credential stuffing: many failures from one IP, naming many subjects: within a minute,
    /// or, slower, twice as many subjects within 5 minutes while most of its outcomes fail.
    func outcome(of observation: CheckEvent, failed: Bool, subjectKey: UInt64, knownSubject: Bool, source: inout Source,
                 sourceKey: UInt64, learning: Bool) -> AnomalyAlert? {
        let now = observation.timestampMs
        guard let log = source.failing ? failureLogs[sourceKey] : (failed ? FailureLog(window: now / 300_000) : nil) else { return nil }
        if !source.failing {
            source.failing = true
            failureLogs[sourceKey] = log
        }
        log.count(failed: failed, subject: subjectKey, at: now)
        // This address's first failure in 5 to 10 minutes, for a subject not seen before (a name
        // from a list, not one of the service's users mistyping): if many addresses fail that
        // way at once, it is a stuffing spread thin (``failureSurge(now:learning:)``).
        if failed, !knownSubject, log.windowFailures &+ log.previousFailures == 1 { diffusePending &+= 1 }
        guard failed, !learning, now - source.lastAlert >= settings.cooldownMs else { return nil }
        let fast = Int(log.minuteFailures) >= settings.failuresPerIP && log.minuteSubjects.count >= settings.failedSubjectsPerIP
        let slow = log.windowSubjects.count >= settings.failedSubjectsPerIP && 2 * log.windowFailures >= log.windowOutcomes
        guard fast || slow else { return nil }
        source.lastAlert = now
        return AnomalyAlert(timestampMs: now, scope: .ip, subject: nil, ip: observation.ip, tenant: observation.tenant,
                            kind: "credential_stuffing",
                            score: fast ? Double(log.minuteFailures) / Double(settings.failuresPerIP)
                                : Double(log.windowSubjects.count) / Double(settings.failedSubjectsPerIP),
                            detail: fast ? "\(log.minuteFailures) failures naming \(log.minuteSubjects.count) subjects in a minute"
                                : "\(log.windowFailures) failures of \(log.windowOutcomes) outcomes naming \(log.windowSubjects.count) subjects in 5 minutes")
    }

    /// The diffuse failures counted since the last call enter the global 30 s count, which is
    /// compared with its normal: a `failure_surge` when many addresses fail a little each.
    func failureSurge(now: Int64, learning: Bool) -> AnomalyAlert? {
        let value = diffusePending
        diffusePending = 0
        // Buckets of a minute: the window is 6 minutes.
        let total = diffuseFailures.add(value, bucket: now / 60_000, learning: learning, factor: settings.failureSurgeFactor)
        // Under way: the last minute or two hold their share too (not a surge that has ended
        // and lingers in the window).
        let recent = Double(diffuseFailures.window.latest(2, at: now / 60_000))
        guard !learning, now - lastFailureSurge >= 2 * settings.cooldownMs, total >= settings.failureSurgeMinimum,
              recent >= settings.failureSurgeMinimum / 3,
              total >= settings.failureSurgeFactor * max(1, diffuseFailures.normal) else { return nil }
        lastFailureSurge = now
        return AnomalyAlert(timestampMs: now, scope: .global, subject: nil, ip: nil, tenant: nil, kind: "failure_surge",
                            score: total / max(1, diffuseFailures.normal),
                            detail: String(format: "%.0f addresses in 6 minutes each failing for the first time in 5 to 10 minutes, for subjects not seen before, against a normal of %.1f (threshold %.0f× and at least %.0f): credential stuffing spread thin",
                                           total, diffuseFailures.normal, settings.failureSurgeFactor, settings.failureSurgeMinimum))
    }

    /// Takes one request (live, a check; its status is not read), in time order: the rate,
    /// distinct-count and new-source signals.
    public func observeRequest(_ observation: CheckEvent) -> [AnomalyAlert] {
        observe(observation, outcome: false)
    }

    /// A request, and with `outcome` its status too (a trace row: one lookup of each record).
    func observe(_ observation: CheckEvent, outcome withOutcome: Bool) -> [AnomalyAlert] {
        let observation = Self.inRange(observation)
        let failed = withOutcome && (observation.status == 401 || observation.status == 403)
        let now = observation.timestampMs
        if start == nil { start = now }
        let learning = now - (start ?? now) < settings.warmupMs
        let bucket = now / Self.bucketMs
        let minute = now / 60_000
        var alerts: [AnomalyAlert] = []
        let subjectKey = Self.subjectKey(observation)
        let ipKey = Self.hash(observation.ip)

        // The subject's record, looked up before the address's (which does not touch `subjects`,
        // so the index stays valid): a known subject on a new address is a user who moved (a
        // phone, a trip, a crowd reading one story), not a new source.
        let subjectIndex = subjects.position(of: subjectKey)
        let knownSubject = subjectIndex.map { now - subjects[position: $0].firstSeen > 5 * 60_000 } ?? false

        // The IP: how many subjects it names against its own normal; whether it is new.
        let young: Bool
        // What this request adds to the requests of new sources (within one source's share).
        var youngShare: UInt32 = 0
        // Looked up once: the record is written back through its index (no second hash).
        let sourceIndex = sources.position(of: ipKey)
        if var source = sourceIndex.map({ sources[position: $0] })
            ?? (sources.count < settings.maxSources ? Source(firstSeen: now, lastSeen: now) : nil) {
            let settled = settled(source.firstSeen, now)
            roll(&source, key: ipKey, to: minute)
            source.lastSeen = max(source.lastSeen, now)
            // New: first seen in the last 5 minutes, but not in the detector's first 5 minutes,
            // when every address is one it had not seen yet (at start, after a restart).
            young = !knownSubject && now - source.firstSeen <= 5 * 60_000 && source.firstSeen - (start ?? now) >= 5 * 60_000
            if sourceIndex == nil { newSources.add(1, bucket: bucket) }
            if now / 30_000 != source.hitsWindow {
                source.hitsWindow = now / 30_000
                source.hits = 0
            }
            let before = source.hits
            source.hits &+= UInt32(clamping: observation.cost)
            youngShare = young ? min(source.hits, Self.youngShare) - min(before, Self.youngShare) : 0
            // Its estimate changes only when a new bit is set: only then is it compared.
            if source.subjects.counter.add(subjectKey), !learning {
                // A new IP has no normal yet: only twice the floor counts.
                let threshold = source.subjects.threshold(floor: Double(settings.subjectsPerIP) * (settled ? 1 : 2),
                                                          factor: settings.spikeFactor / 2)
                let named = source.subjects.counter.estimate
                if named >= threshold, now - source.lastAlert >= settings.cooldownMs {
                source.lastAlert = now
                alerts.append(AnomalyAlert(timestampMs: now, scope: .ip, subject: nil, ip: observation.ip, tenant: observation.tenant,
                                           kind: "many_subjects", score: named / threshold,
                                           detail: String(format: "%.0f distinct subjects within a minute, normal %.1f", named,
                                                          source.subjects.normal)))
                }
            }
            if withOutcome, let alert = outcome(of: observation, failed: failed, subjectKey: subjectKey, knownSubject: knownSubject,
                                                source: &source, sourceKey: ipKey, learning: learning) {
                alerts.append(alert)
            }
            if let sourceIndex { sources[position: sourceIndex] = source } else { sources.insertOrReplace(source, for: ipKey) }
        } else {
            // The detector is full: an IP it cannot remember is one it does not know.
            young = true
            youngShare = min(UInt32(clamping: observation.cost), Self.youngShare)
            newSources.add(1, bucket: bucket)
            untracked.sources &+= 1
        }
        if withOutcome, let alert = failureSurge(now: now, learning: learning) { alerts.append(alert) }

        // Global: requests from young sources, and all requests, each against its normal.
        let cost = UInt32(clamping: observation.cost)
        if youngShare > 0 { surgeShape.count(observation, at: now) }
        let youngTotal = youngRequests.add(youngShare, bucket: bucket, learning: learning, factor: settings.surgeFactor)
        let allTotal = allRequests.add(cost, bucket: bucket, learning: learning, factor: settings.trafficFactor)
        if !learning, now - lastGlobalAlert >= 2 * settings.cooldownMs {
            if youngTotal >= settings.surgeMinimum, youngTotal >= settings.surgeFactor * max(1, youngRequests.normal),
               Double(newSources.total(at: bucket)) >= settings.surgeSources {
                lastGlobalAlert = now
                alerts.append(AnomalyAlert(timestampMs: now, scope: .global, subject: nil, ip: nil, tenant: nil, kind: "new_source_surge",
                                           score: youngTotal / max(1, youngRequests.normal),
                                           detail: "\(Int(youngTotal)) requests in 30 s from addresses first seen in the last 5 minutes, by subjects as new as they are (normal \(Int(youngRequests.normal)), threshold \(Int(settings.surgeFactor))× and at least \(Int(settings.surgeMinimum))), \(newSources.total(at: bucket)) of the addresses new in those 30 s; " + surgeShape.summary))
            } else if allTotal >= settings.surgeMinimum, allTotal >= settings.trafficFactor * max(1, allRequests.normal) {
                lastGlobalAlert = now
                alerts.append(AnomalyAlert(timestampMs: now, scope: .global, subject: nil, ip: nil, tenant: nil, kind: "traffic_surge",
                                           score: allTotal / max(1, allRequests.normal),
                                           detail: "\(Int(allTotal)) requests in 30 s (normal \(Int(allRequests.normal)))"))
            }
        }

        // The subject: rate against its own baseline, distinct ids, distinct IPs.
        guard var subject = subjectIndex.map({ subjects[position: $0] }) ?? (mayTrack(subjectKey, of: observation.tenant)
                                                     ? newSubject(observation) : nil) else {
            if let alert = observeUntracked(observation, key: subjectKey, learning: learning) { alerts.append(alert) }
            sweepIfDue(now: now)
            return alerts
        }
        let settled = settled(subject.firstSeen, now)
        if let alert = roll(&subject, to: minute, settled: settled, observation: observation) { alerts.append(alert) }
        subject.lastSeen = max(subject.lastSeen, now)
        subject.minuteHits &+= UInt32(clamping: observation.cost)
        subject.window.add(UInt32(clamping: observation.cost), bucket: bucket)
        let own = settings.forSubjects(of: observation.tenant)
        if let alert = rateSpike(&subject, observation: observation, own: own, settled: settled, learning: learning) { alerts.append(alert) }
        let (resource, number) = Self.resourceAndNumber(observation.route)
        if let number, number >= 100 {
            // A walk through ids in order: the next id, or the one after.
            let step = UInt32(truncatingIfNeeded: number) &- subject.lastID
            if step == 1 || step == 2 { subject.sequential += 1 }
            subject.lastID = UInt32(truncatingIfNeeded: number)
            if gate(&subject, Double(subject.sequential) / own.sequentialSteps), !learning, now - subject.lastAlert >= settings.cooldownMs {
                markAlerted(&subject, now)
                alerts.append(AnomalyAlert(timestampMs: now, scope: .subject, subject: observation.subject, ip: nil, tenant: observation.tenant,
                                           kind: "enumeration", score: Double(subject.sequential) / own.sequentialSteps,
                                           detail: String(format: "walking ids in order: %.0f steps to the next id or the one after within the last minutes (threshold %.0f), now at %llu",
                                                          subject.sequential, own.sequentialSteps, number)))
            }
        }
        // Many distinct resources within a minute, for `spikePersistenceMs` (into the next minute
        // if the last one was over too): a burst that ends sooner is a batch job's.
        if subject.ids.counter.add(resource), !learning,
           case let peer = peerThreshold(\.distinct, of: Int(subject.group)),
           case let idThreshold = max(subject.ids.threshold(floor: Double(own.enumerationDistinctIds), factor: own.spikeFactor / 2), peer ?? 0),
           case let distinct = subject.ids.counter.estimate,
           case let persistence = settled ? own.spikePersistenceMs : own.newSubjectPersistenceMs,
           gate(&subject, distinct / idThreshold,
                held: subject.enumerationSince != Self.never && now - subject.enumerationSince >= persistence) {
            if subject.enumerationSince == Self.never { subject.enumerationSince = now }
            if now - subject.enumerationSince >= persistence, now - subject.lastAlert >= settings.cooldownMs {
            markAlerted(&subject, now)
            alerts.append(AnomalyAlert(timestampMs: now, scope: .subject, subject: observation.subject, ip: nil, tenant: observation.tenant,
                                       kind: "enumeration", score: distinct / idThreshold,
                                       detail: String(format: "%.0f distinct resources (ids or routes) within a minute, over for %.0f s, against a threshold of %.1f (%@)",
                                                      distinct, Double(now - subject.enumerationSince) / 1_000, idThreshold,
                                                      Self.because(floor: Double(own.enumerationDistinctIds), own: Double(subject.ids.normal),
                                                                   ownFactor: own.spikeFactor / 2, peers: peer, unit: "a minute"))))
            }
        }
        // A new subject has no normal yet: only `newSubjectFactor` times the floor counts.
        if subject.sources.counter.add(ipKey), !learning,
           case let sourceThreshold = subject.sources.threshold(
            floor: Double(own.sourcesPerSubject) * (settled ? 1 : own.newSubjectFactor), factor: own.spikeFactor / 2),
           case let seenFrom = subject.sources.counter.estimate, gate(&subject, seenFrom / sourceThreshold), now - subject.lastAlert >= settings.cooldownMs {
            markAlerted(&subject, now)
            alerts.append(AnomalyAlert(timestampMs: now, scope: .subject, subject: observation.subject, ip: nil, tenant: observation.tenant,
                                       kind: "many_sources", score: seenFrom / sourceThreshold,
                                       detail: String(format: "seen from %.0f distinct IPs within a minute, normal %.1f", seenFrom,
                                                      subject.sources.normal)))
        }
        if withOutcome, let alert = outcome(of: observation, failed: failed, subject: &subject, learning: learning) { alerts.append(alert) }
        if let subjectIndex { subjects[position: subjectIndex] = subject } else { subjects.insertOrReplace(subject, for: subjectKey) }
        sweepIfDue(now: now)
        return alerts
    }

    /// A new subject's record, in the peer group of its first request.
    func newSubject(_ observation: CheckEvent) -> Subject {
        let now = observation.timestampMs
        var subject = Subject(lastBaselineUpdate: now, firstSeen: now, lastSeen: now)
        subject.group = peers.group(tenant: observation.tenant, subject: observation.subject, route: observation.route)
        return subject
    }

    /// The rate spike: the subject's hits over 30 s, and over its last 5 to 10 s, both at or
    /// above its threshold for `spikePersistenceMs`. A settled subject's threshold is its own:
    /// `spike_factor` times its normal and `peakFactor` times the peak of its past bursts, over
    /// the minimum rate. A new one's is its peers': their busiest minutes, with margin, over
    /// `new_subject_factor` times the minimum. A burst that ends sooner, or while detection
    /// still learns, is the subject's own spread: its peak.
    func rateSpike(_ subject: inout Subject, observation: CheckEvent, own: AnomalySettings, settled: Bool, learning: Bool) -> AnomalyAlert? {
        let now = observation.timestampMs
        let bucket = now / Self.bucketMs
        let rate = Double(subject.window.total(at: bucket)) / 30
        let current = Double(subject.window.latest(2, at: bucket)) / (5 + Double(now % Self.bucketMs) / 1_000)
        let baseline = Double(subject.baseline)
        let peer = peerThreshold(\.hits, of: Int(subject.group)).map { $0 / 60 }
        let threshold = settled ? max(own.spikeMinimumRate, own.spikeFactor * baseline, own.peakFactor * Double(subject.peak))
            : max(own.spikeMinimumRate * own.newSubjectFactor, peer ?? 0)
        let persistence = settled ? own.spikePersistenceMs : own.newSubjectPersistenceMs
        let spiking = gate(&subject, min(rate, current) / threshold,
                           held: subject.spikeSince != Self.never && now - subject.spikeSince >= persistence)
        if spiking {
            if subject.spikeSince == Self.never {
                subject.spikeSince = now
                subject.burstMax = 0
            }
            subject.burstMax = max(subject.burstMax, Float(rate))
        } else {
            let quietBefore = subject.lastAlert < subject.spikeSince - settings.cooldownMs
            let firstAndShort = subject.lastAlert >= subject.spikeSince && !subject.realerted && now - subject.spikeSince <= Self.learnableBurstMs
            if subject.spikeSince != Self.never, quietBefore || firstAndShort {
                // Over before it held (or while learning), with no alert near it; or a first
                // alert's burst that ended within a few minutes: the subject's own spread, as a
                // batch job's run. Not the lulls of a flood under way (alerted on, or near an
                // alert). Half way towards a higher burst, an eighth towards a lower one: one
                // lucky burst does not double the threshold for hours.
                let burst = subject.burstMax
                subject.peak += (burst - subject.peak) * (burst > subject.peak ? 0.5 : 0.125)
            }
            subject.spikeSince = Self.never
        }
        if !spiking || !settled, now / 1_000 > subject.lastBaselineUpdate / 1_000 {
            // The baseline learns from what is not an anomaly (and a subject without a normal
            // from everything it sends): hits per second, smoothed over ~30 min, at most once a
            // second (its time is kept in whole seconds).
            let elapsed = Double(now / 1_000 - subject.lastBaselineUpdate / 1_000)
            subject.baseline = Float(baseline + min(1, elapsed / 1_800) * (rate - baseline))
            subject.lastBaselineUpdate = now
        }
        guard !learning, spiking, now - subject.spikeSince >= persistence, now - subject.lastAlert >= settings.cooldownMs else { return nil }
        markAlerted(&subject, now)
        let held = Double(now - subject.spikeSince) / 1_000
        let why = settled
            ? String(format: "its normal %.2f/s × %.0f, its bursts' peak %.2f/s × %.1f, floor %.1f/s", baseline, own.spikeFactor,
                     Double(subject.peak), own.peakFactor, own.spikeMinimumRate)
            : String(format: "a new subject: floor %.1f/s%@", own.spikeMinimumRate * own.newSubjectFactor,
                     peer.map { String(format: ", its peers' busiest 0.1%% of minutes %.2f/s with margin", $0) } ?? "")
        return AnomalyAlert(timestampMs: now, scope: .subject, subject: observation.subject, ip: nil, tenant: observation.tenant,
                            kind: "rate_spike", score: rate / threshold,
                            detail: String(format: "%.1f requests/s over 30 s, held for %.0f s, against a threshold of %.2f/s (%@)",
                                           rate, held, threshold, why))
    }

    /// A request of a subject the full detector has no record for: its hits in the current 30 s
    /// are counted in the count-min sketch (which never undercounts), and it is a rate spike at
    /// the new-subject threshold, once per cooldown.
    func observeUntracked(_ observation: CheckEvent, key: UInt64, learning: Bool) -> AnomalyAlert? {
        untracked.subjects &+= 1
        let now = observation.timestampMs
        let window = now / (Self.bucketMs * Int64(Self.windowBuckets))
        if window != overflowWindow {
            overflow = CountMinSketch(width: overflow.width, depth: overflow.depth)
            overflowWindow = window
        }
        let fingerprint = Fingerprint(high: key, low: key &* 0x9E37_79B9_7F4A_7C15)
        overflow.add(fingerprint, count: UInt32(clamping: observation.cost))
        let own = settings.forSubjects(of: observation.tenant)
        let threshold = own.spikeMinimumRate * own.newSubjectFactor
        let rate = Double(overflow.estimate(fingerprint)) / 30
        guard !learning, rate >= threshold, !overflowAlerted.contains(key), overflowAlerted.count < 10_000 else { return nil }
        overflowAlerted.insert(key)
        return AnomalyAlert(timestampMs: now, scope: .subject, subject: observation.subject, ip: nil, tenant: observation.tenant,
                            kind: "rate_spike", score: rate / threshold,
                            detail: String(format: "about %.1f requests/s over 30 s from a subject without a record (the detector holds max_subjects)", rate))
    }

    /// Whether a record may be made for a new subject of `tenant`: room under `maxSubjects`, and
    /// under the tenant's own record quota if it has one (then the record is counted as its).
    @inline(__always)
    func mayTrack(_ key: UInt64, of tenant: String) -> Bool {
        guard subjects.count < settings.maxSubjects else { return false }
        guard !settings.tenantRecordLimits.isEmpty, let limit = settings.tenantRecordLimits[tenant] else { return true }
        let held = recordCounts[tenant, default: 0]
        guard held < limit else { return false }
        recordCounts[tenant] = held + 1
        recordTenants[key] = tenant
        return true
    }

    /// Sweeps every quarter of the idle time (each sweep walks every entry), and three times as
    /// often while the detector turns new subjects or addresses away.
    func sweepIfDue(now: Int64) {
        let now = min(max(now, Self.timeRange.lowerBound), Self.timeRange.upperBound)
        let refusing = untracked.subjects &+ untracked.sources != untrackedAtSweep
        if now - lastSweep >= max(60_000, settings.idleMs / (refusing ? 12 : 4)) { sweep(now: now) }
    }

    /// Forgets subjects and sources idle for `idleMs` (in place: no second map while it runs),
    /// and which untracked subjects were alerted on once their cooldown has passed.
    func sweep(now: Int64) {
        if now - overflowAlertedSince >= settings.cooldownMs {
            overflowAlerted = []
            overflowAlertedSince = now
        }
        lastSweep = now
        untrackedAtSweep = untracked.subjects &+ untracked.sources
        let idle = settings.idleMs
        let recordTenants = !self.recordTenants.isEmpty
        subjects.removeAll(where: { now - $0.lastSeen >= idle }) { key in
            if recordTenants, let tenant = self.recordTenants.removeValue(forKey: key) { recordCounts[tenant, default: 1] -= 1 }
        }
        let failureLogs = !self.failureLogs.isEmpty
        sources.removeAll(where: { now - $0.lastSeen >= idle }) { key in
            if failureLogs { self.failureLogs.removeValue(forKey: key) }
        }
    }
}

/// Distinct values in a 128-bit bitmap (linear counting, Whang et al.): within a few percent up
/// to about 150 distinct values, saturating at about 620, in 16 bytes and no allocation, which
/// is what a per-subject, per-minute count needs for millions of subjects.
public struct LinearCounter: Sendable, Equatable {
    var low: UInt64 = 0
    var high: UInt64 = 0

    public init() {}

    /// Counts `value` (any 64-bit value; it is mixed before use). Returns whether it set a new
    /// bit: only then does the estimate change.
    @inline(__always) @discardableResult
    public mutating func add(_ value: UInt64) -> Bool {
        var mixed = value &* 0x9E37_79B9_7F4A_7C15
        mixed ^= mixed >> 29
        mixed = mixed &* 0xBF58_476D_1CE4_E5B9
        let bit = UInt64(truncatingIfNeeded: mixed >> 57)
        if bit < 64 {
            defer { low |= 1 << bit }
            return low & (1 << bit) == 0
        }
        defer { high |= 1 << (bit - 64) }
        return high & (1 << (bit - 64)) == 0
    }

    /// The estimated number of distinct values added.
    public var estimate: Double {
        let zeros = 128 - low.nonzeroBitCount - high.nonzeroBitCount
        return zeros == 0 ? 128 * log(128.0) : -128 * log(Double(zeros) / 128)
    }
}

/// A subject's closed minute as the model sees it: each feature on a log scale in [0, 1].
struct MinuteFeatures {
    static let dimensions = 6
    static let names = ["requests", "distinct resources", "addresses", "failure share", "steps in order", "requests against its normal"]

    /// `log(1 + value)` against `log(1 + top)`, within [0, 1].
    static func unit(_ value: Double, _ top: Double) -> Float { Float(min(1, max(0, log1p(max(0, value)) / log1p(top)))) }

    static func of(hits: Double, distinct: Double, sources: Double, outcomes: Double, failures: Double, sequential: Double,
                   baselinePerMinute: Double) -> [Float] {
        // Counts are finite and not negative; anything else is taken as 0 or as very large.
        func finite(_ value: Double) -> Double { value.isNaN ? 0 : min(max(value, 0), 1e12) }
        let (hits, distinct, sources, outcomes, failures, sequential, baselinePerMinute) = (finite(hits), finite(distinct), finite(sources),
            finite(outcomes), finite(min(failures, outcomes)), finite(sequential), finite(baselinePerMinute))
        return [unit(hits, 100_000), unit(distinct, 620), unit(sources, 620), outcomes > 0 ? Float(failures / outcomes) : 0,
         unit(sequential, 1_000), Float(min(1, max(0, (log2((hits + 1) / (baselinePerMinute + 1)) + 8) / 16)))]
    }
}

extension AnomalyDetector {
    /// The model's turn at a subject's closed minute (``roll(_:to:settled:observation:)``, before
    /// its counts are reset): the minute is scored against the model's last window, then
    /// learned. Its outlier value (log2 of the model's ceiling over its score: 0 for the most
    /// usual minute, up to about 23 where no minute went) enters the model's own budget, and
    /// alerts as `outlier` above the value at most `alertBudgetPerHour` minutes an hour reach.
    func modelMinute(_ subject: inout Subject, distinct: Double, gap: Double, observation: CheckEvent) -> AnomalyAlert? {
        let now = observation.timestampMs
        let hits = Double(subject.minuteHits), sources = subject.sources.counter.estimate
        let features = MinuteFeatures.of(hits: hits, distinct: distinct, sources: sources, outcomes: Double(subject.outcomes),
                                         failures: Double(subject.failures), sequential: Double(subject.sequential),
                                         baselinePerMinute: Double(subject.baseline) * 60)
        let score = model.score(features)
        model.learn(features)
        guard let score else { return nil }
        let value = log2(model.ceiling / (score + 1))
        let warm = now - (start ?? now) >= settings.warmupMs
        // The budget: the value above which at most `alertBudgetPerHour` minutes an hour lie
        // (counts fade by half an hour: they hold 1/ln 2 hours), and at least 10 (a region a
        // thousand times emptier than the usual minute's).
        let threshold = max(3, modelScores.edge(leavingAtMost: Float(settings.alertBudgetPerHour / log(2))))
        if warm { modelScores.add(value, at: now, halfLife: Self.budgetHalfLifeMs) }
        // Its own cooldown (the rules' is theirs): the two are compared, kind by kind.
        guard warm, gap == 1, value > threshold else { return nil }
        let key = Self.subjectKey(observation)
        guard now - (modelAlerted[key] ?? Self.never) >= settings.cooldownMs else { return nil }
        if modelAlerted.count >= 10_000 { modelAlerted = modelAlerted.filter { now - $0.value < settings.cooldownMs } }
        guard modelAlerted.count < 10_000 else { return nil }
        modelAlerted[key] = now
        let described = zip(MinuteFeatures.names, [hits, distinct, sources, Double(subject.failures), Double(subject.sequential),
                                                   Double(subject.baseline) * 60])
            .map { String(format: "%@ %.0f", $0.0, $0.1) }.joined(separator: ", ")
        return AnomalyAlert(timestampMs: now, scope: .subject, subject: observation.subject, ip: nil, tenant: observation.tenant,
                            kind: "outlier", score: value / threshold,
                            detail: String(format: "a minute unlike the others (%@): the model's outlier value %.1f against a threshold of %.1f (at most %.0f minutes an hour beyond it)",
                                           described, value, threshold, settings.alertBudgetPerHour))
    }
}
