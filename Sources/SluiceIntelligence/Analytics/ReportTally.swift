import SluiceCore

/// What the report counts while the trace goes by: per minute, per tenant and per outcome
/// class; the heaviest keys in space-saving sketches.
public struct ReportTally {
    /// Outcome classes, in the order they are drawn.
    public static let classes = ["2xx/3xx", "401/403", "429", "other 4xx", "5xx"]
    /// Tenants drawn one by one; the rest are summed as "(others)".
    static let maxTenants = 12

    public private(set) var rows = 0
    public private(set) var first: Int64 = .max
    public private(set) var last: Int64 = .min
    /// Denials by reason (a daemon's own verdicts; none in a trace).
    var denials: [String: Int] = [:]
    var tenantMinutes: [String: [Int64: Int]] = [:]
    var classMinutes: [[Int64: Int]] = Array(repeating: [:], count: classes.count)
    var subjects: SpaceSaving<String>
    var addresses: SpaceSaving<String>
    var routes: SpaceSaving<String>
    var failingSubjects: SpaceSaving<String>
    var failingAddresses: SpaceSaving<String>
    var tenants: [String: Int] = [:]
    var alerted: [String: Int] = [:]
    /// The minute the top-K tables started counting (`max`: not yet).
    var listsSince: Int64 = .max

    public init(capacity: Int) {
        subjects = SpaceSaving(capacity: capacity)
        addresses = SpaceSaving(capacity: capacity)
        routes = SpaceSaving(capacity: capacity)
        failingSubjects = SpaceSaving(capacity: capacity)
        failingAddresses = SpaceSaving(capacity: capacity)
    }

    static func outcomeClass(_ status: Int) -> Int {
        switch status {
        case 401, 403: 1
        case 429: 2
        case 400..<500: 3
        case 500...: 4
        default: 0
        }
    }

    public mutating func count(_ row: CheckEvent) {
        rows += 1
        first = min(first, row.timestampMs)
        last = max(last, row.timestampMs)
        let minute = row.timestampMs / 60_000
        let tenant = tenantMinutes[row.tenant] != nil || tenantMinutes.count < Self.maxTenants ? row.tenant : "(others)"
        tenantMinutes[tenant, default: [:]][minute, default: 0] += 1
        let outcome = Self.outcomeClass(row.status)
        classMinutes[outcome][minute, default: 0] += 1
        subjects.add(row.subject)
        addresses.add(row.ip)
        routes.add(String(PeerGroups.routeKind(row.route)))
        tenants[row.tenant, default: 0] += 1
        if outcome == 1 {
            failingSubjects.add(row.subject)
            failingAddresses.add(row.ip)
        }
    }

    public mutating func count(_ alert: AnomalyAlert) {
        let name = switch alert.scope {
        case .subject: "subject \(alert.subject ?? "?")"
        case .ip: "address \(alert.ip ?? "?")"
        case .global: "global"
        }
        alerted[name, default: 0] += 1
    }
}

extension ReportTally {
    /// A daemon's check (its verdict is its outcome class: a denial is a 429, with its reason).
    public mutating func countCheck(_ event: CheckEvent) {
        var row = event
        row.status = event.allowed ? 200 : 429
        count(row)
        if !event.allowed { denials[event.reason.name, default: 0] += 1 }
    }

    /// An outcome a service reported for a check already counted: its failures only.
    public mutating func countOutcome(_ event: CheckEvent) {
        let outcome = Self.outcomeClass(event.status)
        guard outcome == 1 else { return }
        classMinutes[outcome][event.timestampMs / 60_000, default: 0] += 1
        failingSubjects.add(event.subject)
        failingAddresses.add(event.ip)
    }

    /// Forgets the minutes before `minute` (a daemon's rolling window); the top-K tables, which
    /// cannot forget part of what they counted, start over once they are `maxAgeMinutes` old.
    public mutating func prune(before minute: Int64, maxAgeMinutes: Int64) {
        for tenant in tenantMinutes.keys {
            tenantMinutes[tenant] = tenantMinutes[tenant]?.filter { $0.key >= minute }
            if tenantMinutes[tenant]?.isEmpty == true { tenantMinutes[tenant] = nil }
        }
        for index in classMinutes.indices { classMinutes[index] = classMinutes[index].filter { $0.key >= minute } }
        first = max(first, minute * 60_000)
        if listsSince == .max { listsSince = minute }
        if minute - listsSince >= maxAgeMinutes {
            self = ReportTally(capacity: subjects.capacity, keeping: self)
            listsSince = minute
        }
    }

    /// The same minutes, with empty top-K tables.
    init(capacity: Int, keeping other: ReportTally) {
        self.init(capacity: capacity)
        rows = other.rows
        first = other.first
        last = other.last
        tenantMinutes = other.tenantMinutes
        classMinutes = other.classMinutes
        listsSince = other.listsSince
    }

    /// What a page is drawn from, `top` entries a table.
    public func data(top: Int) -> ReportData {
        func list(_ sketch: SpaceSaving<String>) -> [ReportData.Item] {
            sketch.top(top).map { ReportData.Item(key: $0.key, count: $0.count, error: $0.error) }
        }
        func ranked(_ counts: [String: Int]) -> [ReportData.Item] {
            counts.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.prefix(top)
                .map { ReportData.Item(key: $0.key, count: UInt64($0.value), error: 0) }
        }
        return ReportData(rows: rows, first: first, last: last, tenantCount: tenants.count,
                          tenantMinutes: tenantMinutes.mapValues { $0.map { [$0.key, Int64($0.value)] } },
                          classMinutes: classMinutes.map { $0.map { [$0.key, Int64($0.value)] } },
                          lists: ["subjects": list(subjects), "addresses": list(addresses), "routes": list(routes),
                                  "tenants": ranked(tenants), "failing_subjects": list(failingSubjects),
                                  "failing_addresses": list(failingAddresses), "alerted": ranked(alerted), "denials": ranked(denials)])
    }
}

/// A report's figures, as ``ReportTally`` made them: what `sluicectl report` draws, from a trace
/// or from a daemon (`Report` request, as JSON).
public struct ReportData: Codable, Sendable {
    public struct Item: Codable, Sendable {
        public var key: String
        public var count: UInt64
        public var error: UInt64
    }

    public struct Bin: Codable, Sendable {
        public var score: Double
        public var minutes: Double
        public init(score: Double, minutes: Double) {
            self.score = score
            self.minutes = minutes
        }
    }

    public var rows: Int
    public var first: Int64
    public var last: Int64
    public var tenantCount: Int
    /// Per tenant, and per outcome class (``ReportTally/classes``), [minute, count] pairs.
    public var tenantMinutes: [String: [[Int64]]]
    public var classMinutes: [[[Int64]]]
    /// The top-K tables by name: subjects, addresses, routes, tenants, failing_subjects,
    /// failing_addresses, alerted, denials (by reason).
    public var lists: [String: [Item]]

    /// A series as a map of minute to count.
    public static func series(_ pairs: [[Int64]]) -> [Int64: Int] {
        var series: [Int64: Int] = [:]
        for pair in pairs where pair.count == 2 { series[pair[0], default: 0] += Int(clamping: pair[1]) }
        return series
    }
}

/// A daemon's report of its recent window (the `Report` request's JSON): the figures, the alerts
/// raised in it and the alert budget's score distribution.
public struct ReportSnapshot: Codable, Sendable {
    public var title: String
    public var data: ReportData
    public var alerts: [AnomalyAlert]
    public var bins: [ReportData.Bin]
    public var threshold: Double

    public init(title: String, data: ReportData, alerts: [AnomalyAlert], bins: [ReportData.Bin], threshold: Double) {
        self.title = title
        self.data = data
        self.alerts = alerts
        self.bins = bins
        self.threshold = threshold
    }
}
