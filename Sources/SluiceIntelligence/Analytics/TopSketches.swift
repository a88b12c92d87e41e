import SluiceCore

/// The heaviest subjects, addresses, routes and tenants of the recent checks (`sluicectl top`),
/// by requests and by denials, in bounded memory: a space-saving sketch of `capacity` keys per
/// list, started afresh every minute, with the last full minute kept beside the current one.
/// Fed the checks anomaly detection drains (their time, not a clock's), so a replay and a live
/// daemon count the same.
public struct TopSketches {
    public enum Dimension: String, CaseIterable, Sendable {
        case subjects, addresses, routes, tenants
    }

    public enum Measure: String, CaseIterable, Sendable {
        case requests, denials
    }

    /// One minute's lists, dimension by dimension.
    struct Minute {
        var number: Int64
        var first: Int64
        var last: Int64
        var requests: UInt64 = 0
        var denied: UInt64 = 0
        var lists: [SpaceSaving<String>]

        init(number: Int64, at now: Int64, capacity: Int) {
            self.number = number
            first = now
            last = now
            lists = Array(repeating: SpaceSaving(capacity: capacity), count: Dimension.allCases.count * Measure.allCases.count)
        }
    }

    public let capacity: Int
    var current: Minute?
    var previous: Minute?

    public init(capacity: Int = 256) {
        self.capacity = max(1, capacity)
    }

    static func slot(_ dimension: Dimension, _ measure: Measure) -> Int {
        let row = switch dimension {
        case .subjects: 0
        case .addresses: 1
        case .routes: 2
        case .tenants: 3
        }
        return row * 2 + (measure == .requests ? 0 : 1)
    }

    /// Counts a check (its `cost` in requests; a denial when it was not allowed).
    public mutating func add(_ event: CheckEvent) {
        let now = event.timestampMs
        let number = now / 60_000
        var minute: Minute
        if let current, number <= current.number {
            minute = current
            self.current = nil  // uniquely held while it is counted into
        } else {
            previous = current.flatMap { $0.number == number - 1 ? $0 : nil }
            minute = Minute(number: number, at: now, capacity: capacity)
        }
        // A late check counts in the current minute.
        minute.first = min(minute.first, now)
        minute.last = max(minute.last, now)
        let cost = max(1, event.cost)
        minute.requests &+= cost
        if !event.allowed { minute.denied &+= cost }
        let keys = [event.subject.isEmpty ? event.key : event.subject, event.ip, event.route, event.tenant.isEmpty ? "(default)" : event.tenant]
        for (index, key) in keys.enumerated() where !key.isEmpty {
            minute.lists[index * 2].add(key, count: cost)
            if !event.allowed { minute.lists[index * 2 + 1].add(key, count: cost) }
        }
        current = minute
    }

    /// Time the lists cover (ms): from the oldest counted check to the newest, at least a second.
    public var windowMs: Int64 {
        guard let current else { return 0 }
        return max(1_000, current.last - (previous?.first ?? current.first))
    }

    /// Checks and denials counted over the window.
    public var totals: (requests: UInt64, denied: UInt64) {
        ((current?.requests ?? 0) &+ (previous?.requests ?? 0), (current?.denied ?? 0) &+ (previous?.denied ?? 0))
    }

    /// The `count` heaviest keys of a list over the window, merged from both minutes: each with
    /// its count, its rate per second, and the most its count may overstate.
    public func top(_ dimension: Dimension, by measure: Measure, count: Int) -> [(key: String, count: UInt64, rate: Double, error: UInt64)] {
        let slot = Self.slot(dimension, measure)
        var merged: [String: (count: UInt64, error: UInt64)] = [:]
        for minute in [current, previous].compactMap({ $0 }) {
            for entry in minute.lists[slot].top(capacity) {
                let sum = merged[entry.key, default: (0, 0)]
                merged[entry.key] = (sum.count &+ entry.count, sum.error &+ entry.error)
            }
        }
        let seconds = Double(windowMs) / 1_000
        return merged.sorted { $0.value.count > $1.value.count || ($0.value.count == $1.value.count && $0.key < $1.key) }
            .prefix(max(0, count))
            .map { ($0.key, $0.value.count, Double($0.value.count) / seconds, $0.value.error) }
    }
}
