import Foundation
import SluiceCore

/// One request as detection sees it: a check with its outcome (a trace row, or a check joined
/// with its `ReportOutcome`).
public struct AnomalyObservation: Sendable {
    /// Milliseconds since the epoch.
    public var timestampMs: Int64
    public var tenant: String
    public var subject: String
    public var ip: String
    /// `METHOD path`, the path concrete (`GET /api/items/48213`).
    public var route: String
    /// The upstream's HTTP status.
    public var status: Int
    public var cost: UInt64

    public init(timestampMs: Int64, tenant: String, subject: String, ip: String, route: String, status: Int, cost: UInt64 = 1) {
        self.timestampMs = timestampMs
        self.tenant = tenant
        self.subject = subject
        self.ip = ip
        self.route = route
        self.status = status
        self.cost = cost
    }
}

/// What an alert is about.
public enum AnomalyScope: String, Sendable {
    case subject, ip, global
}

/// One alert, in the alert format of `shared/traces/FORMAT.md` (plus `tenant` and `detail`).
public struct AnomalyAlert: Sendable, Equatable {
    public var timestampMs: Int64
    public var scope: AnomalyScope
    public var subject: String?
    public var ip: String?
    public var tenant: String?
    /// `rate_spike`, `enumeration`, `credential_stuffing`, `new_source_surge`.
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
    /// Surge of new sources: requests from IPs first seen in the last 5 minutes, over 30 s,
    /// against their learned baseline...
    public var surgeFactor = 8.0
    /// ... and at least this many.
    public var surgeMinimum = 600.0
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

    public init() {}
}

/// The detection engine: fed observations in time order, it keeps bounded state per subject,
/// per IP and globally, and returns the alerts each observation tips. It reads no clock: the
/// daemon feeds it live on a background queue, `sluicectl replay` feeds it a trace in simulated
/// time, and the two raise the same alerts.
public final class AnomalyDetector {
    /// Buckets of 5 s; a 30 s window is 6 of them.
    static let bucketMs: Int64 = 5_000
    static let windowBuckets = 6

    /// Counts in the last 6 buckets of 5 s, as a ring.
    struct Window {
        var counts = (UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0))
        /// The bucket number (timestamp / 5 s) of the newest count.
        var newest: Int64 = 0

        mutating func add(_ value: UInt32, bucket: Int64) {
            advance(to: bucket)
            withUnsafeMutableBytes(of: &counts) { raw in
                let slots = raw.bindMemory(to: UInt32.self)
                let slot = Int(bucket % Int64(AnomalyDetector.windowBuckets))
                slots[slot] &+= value
            }
        }

        mutating func advance(to bucket: Int64) {
            guard bucket > newest else { return }
            withUnsafeMutableBytes(of: &counts) { raw in
                let slots = raw.bindMemory(to: UInt32.self)
                let gap = min(Int64(AnomalyDetector.windowBuckets), bucket - newest)
                for step in 1...gap { slots[Int((newest + step) % Int64(AnomalyDetector.windowBuckets))] = 0 }
            }
            newest = bucket
        }

        /// The total over the window ending at `bucket`.
        mutating func total(at bucket: Int64) -> UInt32 {
            advance(to: bucket)
            return withUnsafeBytes(of: counts) { raw in raw.bindMemory(to: UInt32.self).reduce(0, &+) }
        }
    }

    struct Subject {
        var window = Window()
        /// Smoothed hits per second over about 30 minutes: the subject's own normal.
        var baseline: Double = 0
        var lastBaselineUpdate: Int64
        var firstSeen: Int64
        var lastSeen: Int64
        var lastAlert: Int64 = -(1 << 60)
        /// Distinct ids requested in the current minute, counted in 16 bytes (no allocation).
        var idMinute: Int64 = -1
        var ids = LinearCounter()
        /// Distinct ids in an active minute, smoothed: the subject's own normal.
        var idsBaseline: Double = 0
        var idsSamples = 0
    }

    struct Source {
        var firstSeen: Int64
        var lastSeen: Int64
        var lastAlert: Int64 = -(1 << 60)
        /// Failures in the current minute, and the distinct subjects they named.
        var failureMinute: Int64 = -1
        var failures = 0
        var failedSubjects: Set<UInt64> = []
    }

    public let settings: AnomalySettings
    var subjects: [UInt64: Subject] = [:]
    var sources: [UInt64: Source] = [:]
    var start: Int64?
    /// Requests from young sources, per 5 s, and its smoothed normal (per 30 s).
    var youngRequests = Window()
    var youngBaseline: Double = 0
    var youngBaselineBucket: Int64 = -1
    var lastGlobalAlert: Int64 = -(1 << 60)
    var lastSweep: Int64 = 0

    public init(settings: AnomalySettings = AnomalySettings()) {
        self.settings = settings
    }

    /// Subjects and sources with state now.
    public var tracked: (subjects: Int, sources: Int) { (subjects.count, sources.count) }

    static func hash(_ text: String) -> UInt64 {
        var hasher = StableHasher()
        hasher.combine(text)
        return hasher.finalize().low
    }

    /// The last path segment made only of digits (`GET /api/items/48213/reviews` → 48213), nil
    /// when there is none (`/api/v1/orders` has none: `v1` is not an id).
    public static func resourceID(_ route: String) -> UInt64? {
        var id: UInt64 = 0
        var digits = 0
        var clean = true
        var found: UInt64?
        for byte in route.utf8 {
            if byte == UInt8(ascii: "/") || byte == UInt8(ascii: " ") || byte == UInt8(ascii: "?") {
                if digits > 0, clean { found = id }
                id = 0
                digits = 0
                clean = true
            } else if byte >= 48, byte <= 57, digits < 19 {
                id = id &* 10 &+ UInt64(byte - 48)
                digits += 1
            } else {
                clean = false
            }
        }
        if digits > 0, clean { found = id }
        return found
    }

    /// Takes one request with its outcome (a trace row), in time order, and returns the alerts
    /// it tipped: ``observeRequest(_:)`` then ``observeOutcome(_:)``.
    public func observe(_ observation: AnomalyObservation) -> [AnomalyAlert] {
        observeRequest(observation) + observeOutcome(observation)
    }

    /// Takes the outcome of a request (its `status`; live, from `ReportOutcome`): the failure
    /// signals. In time order with the requests.
    public func observeOutcome(_ observation: AnomalyObservation) -> [AnomalyAlert] {
        guard observation.status == 401 || observation.status == 403 else { return [] }
        let now = observation.timestampMs
        if start == nil { start = now }
        let learning = now - (start ?? now) < settings.warmupMs
        var alerts: [AnomalyAlert] = []
        let ipKey = Self.hash(observation.ip)
        var source = sources[ipKey] ?? Source(firstSeen: now, lastSeen: now)
        source.lastSeen = max(source.lastSeen, now)
        do {
            let minute = now / 60_000
            if source.failureMinute != minute {
                source.failureMinute = minute
                source.failures = 0
                source.failedSubjects = []
            }
            source.failures += 1
            if source.failedSubjects.count < 64 { source.failedSubjects.insert(Self.hash(observation.subject)) }
            if !learning, source.failures >= settings.failuresPerIP, source.failedSubjects.count >= settings.failedSubjectsPerIP,
               now - source.lastAlert >= settings.cooldownMs {
                source.lastAlert = now
                alerts.append(AnomalyAlert(timestampMs: now, scope: .ip, subject: nil, ip: observation.ip, tenant: observation.tenant,
                                           kind: "credential_stuffing",
                                           score: Double(source.failures) / Double(settings.failuresPerIP),
                                           detail: "\(source.failures) failures naming \(source.failedSubjects.count) subjects in a minute"))
            }
        }
        sources[ipKey] = source
        return alerts
    }

    /// Takes one request (live, a check; its status is not read), in time order: the rate,
    /// enumeration and new-source signals.
    public func observeRequest(_ observation: AnomalyObservation) -> [AnomalyAlert] {
        let now = observation.timestampMs
        if start == nil { start = now }
        let learning = now - (start ?? now) < settings.warmupMs
        let bucket = now / Self.bucketMs
        var alerts: [AnomalyAlert] = []
        let ipKey = Self.hash(observation.ip)
        var source = sources[ipKey] ?? Source(firstSeen: now, lastSeen: now)
        source.lastSeen = max(source.lastSeen, now)
        let young = now - source.firstSeen <= 5 * 60_000
        sources[ipKey] = source

        // Global: requests from young sources against their normal.
        if young { youngRequests.add(UInt32(clamping: observation.cost), bucket: bucket) }
        let youngTotal = Double(youngRequests.total(at: bucket))
        if bucket != youngBaselineBucket {
            // One sample per 5 s of the 30 s total, about 30 minutes of memory. Above twice the
            // normal it learns ten times slower (a benign crowd must not teach it that a surge is
            // normal), and not at all past half the alert threshold; during warm-up, from all.
            let high = youngBaseline > 0 && youngTotal > 2 * youngBaseline
            let surging = youngBaseline > 0 && youngTotal > settings.surgeFactor / 2 * youngBaseline
            if youngBaseline == 0 {
                youngBaseline = youngTotal
            } else if learning || !surging {
                youngBaseline += (youngTotal - youngBaseline) / (high && !learning ? 3_600 : 360)
            }
            youngBaselineBucket = bucket
        }
        if !learning, youngTotal >= settings.surgeMinimum, youngTotal >= settings.surgeFactor * max(1, youngBaseline),
           now - lastGlobalAlert >= 2 * settings.cooldownMs {
            lastGlobalAlert = now
            alerts.append(AnomalyAlert(timestampMs: now, scope: .global, subject: nil, ip: nil, tenant: nil, kind: "new_source_surge",
                                       score: youngTotal / max(1, youngBaseline),
                                       detail: "\(Int(youngTotal)) requests in 30 s from sources first seen in the last 5 minutes (normal \(Int(youngBaseline)))"))
        }

        // Subjects: rate against their own baseline, distinct ids.
        let subjectKey = Self.hash(observation.subject)
        var subject = subjects[subjectKey] ?? Subject(lastBaselineUpdate: now, firstSeen: now, lastSeen: now)
        subject.lastSeen = now
        subject.window.add(UInt32(clamping: observation.cost), bucket: bucket)
        let recent = Double(subject.window.total(at: bucket))
        let rate = recent / 30
        // A subject seen for less than `subjectWarmupMs` has no baseline yet: it learns from
        // everything, and only a rate far above any normal one counts.
        let settled = now - subject.firstSeen >= settings.subjectWarmupMs
        let threshold = settled ? max(settings.spikeMinimumRate, settings.spikeFactor * subject.baseline)
            : settings.spikeMinimumRate * settings.newSubjectFactor
        let spiking = rate >= threshold
        if !spiking || !settled {
            // The baseline learns from what is not an anomaly: hits per second, smoothed over ~30 min.
            let elapsed = Double(now - subject.lastBaselineUpdate) / 1_000
            let weight = min(1, elapsed / 1_800)
            subject.baseline += weight * (rate - subject.baseline)
            subject.lastBaselineUpdate = now
        }
        if !learning, spiking, now - subject.lastAlert >= settings.cooldownMs {
            subject.lastAlert = now
            alerts.append(AnomalyAlert(timestampMs: now, scope: .subject, subject: observation.subject, ip: nil, tenant: observation.tenant,
                                       kind: "rate_spike", score: rate / threshold,
                                       detail: String(format: "%.1f requests/s over 30 s, normal %.3f", rate, subject.baseline)))
        }
        if let id = Self.resourceID(observation.route) {
            let minute = now / 60_000
            var idThreshold = max(Double(settings.enumerationDistinctIds), settings.spikeFactor / 2 * subject.idsBaseline)
            if subject.idMinute != minute {
                // The minute that ended is one sample of the subject's normal, unless it was an
                // anomaly (while the subject is new, every minute is).
                let closed = subject.ids.estimate
                if subject.idMinute >= 0, closed < idThreshold || !settled {
                    subject.idsBaseline += (closed - subject.idsBaseline) / (subject.idsSamples == 0 ? 1 : 30)
                    subject.idsSamples += 1
                }
                subject.idMinute = minute
                subject.ids = LinearCounter()
                idThreshold = max(Double(settings.enumerationDistinctIds), settings.spikeFactor / 2 * subject.idsBaseline)
            }
            subject.ids.add(id)
            if !learning, subject.ids.estimate >= idThreshold, now - subject.lastAlert >= settings.cooldownMs {
                subject.lastAlert = now
                alerts.append(AnomalyAlert(timestampMs: now, scope: .subject, subject: observation.subject, ip: nil, tenant: observation.tenant,
                                           kind: "enumeration", score: subject.ids.estimate / idThreshold,
                                           detail: String(format: "%.0f distinct ids within a minute, normal %.1f", subject.ids.estimate,
                                                          subject.idsBaseline)))
            }
        }
        subjects[subjectKey] = subject

        // A quarter of the idle time between sweeps: each one walks every entry.
        if now - lastSweep >= max(60_000, settings.idleMs / 4) { sweep(now: now) }
        return alerts
    }

    /// Forgets subjects and sources idle for `idleMs`.
    func sweep(now: Int64) {
        lastSweep = now
        subjects = subjects.filter { now - $0.value.lastSeen < settings.idleMs }
        sources = sources.filter { now - $0.value.lastSeen < settings.idleMs }
    }
}

/// Distinct values in a 128-bit bitmap (linear counting, Whang et al.): within a few percent up
/// to about 150 distinct values, saturating at about 620, in 16 bytes and no allocation, which
/// is what a per-subject, per-minute count needs for millions of subjects.
public struct LinearCounter: Sendable, Equatable {
    var low: UInt64 = 0
    var high: UInt64 = 0

    public init() {}

    /// Counts `value` (any 64-bit value; it is mixed before use).
    @inline(__always)
    public mutating func add(_ value: UInt64) {
        var mixed = value &* 0x9E37_79B9_7F4A_7C15
        mixed ^= mixed >> 29
        mixed = mixed &* 0xBF58_476D_1CE4_E5B9
        let bit = Int(truncatingIfNeeded: mixed >> 57)
        if bit < 64 { low |= 1 << UInt64(bit) } else { high |= 1 << UInt64(bit - 64) }
    }

    /// The estimated number of distinct values added.
    public var estimate: Double {
        let zeros = 128 - low.nonzeroBitCount - high.nonzeroBitCount
        return zeros == 0 ? 128 * log(128.0) : -128 * log(Double(zeros) / 128)
    }
}
