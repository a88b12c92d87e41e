import Foundation
import SluiceCore

/// A fading histogram of non-negative values on a logarithmic scale, for the high quantiles of a
/// population (what most of a tenant's browsers do in a minute): 48 bins of a quarter octave
/// each (values 0 to about 4 million, each bin's upper edge within 19 % of its lower), with
/// every count halved each `halfLife` of samples' time, so that the quantile follows the
/// traffic of the last hours, not of the first. 196 bytes, no allocation.
struct FadingLogHistogram {
    static let bins = 48
    var counts = (SIMD16<Float>(), SIMD16<Float>(), SIMD16<Float>())
    /// Everything counted (faded the same way).
    var total: Float = 0
    /// The time (ms) of the last fading.
    var faded: Int64 = 0

    /// The bin of `value`: 0 for 0, then a quarter octave each.
    @inline(__always)
    static func bin(_ value: Double) -> Int {
        guard value > 0 else { return 0 }
        return min(bins - 1, 1 + Int((4 * log2(1 + value)).rounded(.down)))
    }

    /// The largest value of bin `index` (its upper edge).
    static func upperEdge(_ index: Int) -> Double {
        index == 0 ? 0 : pow(2, Double(index) / 4) - 1
    }

    subscript(index: Int) -> Float {
        get { index < 16 ? counts.0[index] : index < 32 ? counts.1[index - 16] : counts.2[index - 32] }
        set {
            if index < 16 { counts.0[index] = newValue } else if index < 32 { counts.1[index - 16] = newValue } else { counts.2[index - 32] = newValue }
        }
    }

    /// Counts `value`, observed at `now` (ms); halves everything first if `halfLife` (ms) passed.
    mutating func add(_ value: Double, at now: Int64, halfLife: Int64) {
        if now - faded >= halfLife {
            counts.0 *= 0.5
            counts.1 *= 0.5
            counts.2 *= 0.5
            total *= 0.5
            faded = now
        }
        self[Self.bin(value)] += 1
        total += 1
    }

    /// The smallest bin edge above which at most `limit` of the counts lie (0 if all do).
    func edge(leavingAtMost limit: Float) -> Double {
        var seen: Float = 0
        var index = Self.bins - 1
        while index > 0 {
            if seen + self[index] > limit { return Self.upperEdge(index) }
            seen += self[index]
            index -= 1
        }
        return 0
    }

    /// The smallest value at or under which a `quantile` share of the counts lie (the upper edge
    /// of its bin, so never an underestimate), or nil while fewer than `minimum` were counted.
    func quantile(_ quantile: Double, minimum: Float) -> Double? {
        guard total >= minimum else { return nil }
        let above = Float(1 - quantile) * total
        var seen: Float = 0
        var index = Self.bins - 1
        while index > 0 {
            seen += self[index]
            if seen > above { break }
            index -= 1
        }
        return Self.upperEdge(index)
    }
}

/// What the subjects of one peer group do in a minute: the same tenant, the same kind of client
/// (anonymous or identified) and the same kind of route (method and first path segment:
/// `GET /catalog`, `POST /session`). Three fading histograms of their minutes: hits, distinct
/// resources, and the sustained distinct resources (a 5-minute average).
struct PeerGroup {
    var hits = FadingLogHistogram()
    var distinct = FadingLogHistogram()
    var sustained = FadingLogHistogram()
}

/// The peer groups, at most `capacity`; past that, new kinds share group 0, whose quantiles
/// then describe a mixture (conservative: higher than most of its members').
public struct PeerGroups {
    static let capacity = 4_096
    var index: [UInt64: UInt16] = [0: 0]
    var groups: [PeerGroup] = [PeerGroup()]
    /// Each group's name: tenant, kind of client, kind of route.
    var names: [String] = ["(others)"]

    /// The group of a request of `tenant` by `subject` on `route`, made if new.
    mutating func group(tenant: String, subject: String, route: String) -> UInt16 {
        let client = subject.hasPrefix("ip:") ? "anonymous" : "identified"
        let kind = String(Self.routeKind(route))
        var hasher = StableHasher()
        hasher.combine(tenant)
        hasher.combine(client)
        hasher.combine(kind)
        let key = hasher.finalize().low | 1
        if let found = index[key] { return found }
        guard groups.count < Self.capacity else { return 0 }
        let made = UInt16(groups.count)
        groups.append(PeerGroup())
        names.append("\(tenant.isEmpty ? "-" : tenant) \(client) \(kind)")
        index[key] = made
        return made
    }

    /// A route's kind: its method and first path segment (`GET /catalog/items/7` → `GET /catalog`).
    public static func routeKind(_ route: String) -> Substring {
        let utf8 = route.utf8
        guard let space = utf8.firstIndex(of: UInt8(ascii: " ")) else { return Substring(route) }
        var end = utf8.index(after: space)
        if end < utf8.endIndex, utf8[end] == UInt8(ascii: "/") { end = utf8.index(after: end) }
        while end < utf8.endIndex, utf8[end] != UInt8(ascii: "/"), utf8[end] != UInt8(ascii: "?") { end = utf8.index(after: end) }
        return Substring(route.utf8[utf8.startIndex..<end])
    }
}

/// What one peer group has learned, for `sluicectl replay --peers` and the report.
public struct PeerGroupSummary: Sendable {
    /// Tenant, kind of client and kind of route (`shop identified GET /catalog`).
    public var name: String
    /// Minutes counted (fading).
    public var minutes: Double
    /// The quantile the detector compares with (`peerQuantile`) of hits, distinct resources
    /// and sustained distinct resources per minute; nil while too few minutes were counted.
    public var hits: Double?
    public var distinct: Double?
    public var sustained: Double?
}

extension AnomalyDetector {
    /// The subjects' minutes' scores the alert budget keeps (fading, about the last hour): each
    /// bin's upper score and its minutes, with the budget's factor (the alert threshold is the
    /// larger of it and 1).
    public var scoreDistribution: (bins: [(score: Double, minutes: Double)], threshold: Double) {
        ((1..<FadingLogHistogram.bins).map { (FadingLogHistogram.upperEdge($0) / 100, Double(scores[$0])) }, budget)
    }

    /// The peer groups, busiest first.
    public var peerGroups: [PeerGroupSummary] {
        let minimum = Float(settings.peerMinimumSamples)
        return peers.groups.indices.map { index in
            let group = peers.groups[index]
            return PeerGroupSummary(name: index < peers.names.count ? peers.names[index] : "?", minutes: Double(group.hits.total),
                                    hits: group.hits.quantile(settings.peerQuantile, minimum: minimum),
                                    distinct: group.distinct.quantile(settings.peerQuantile, minimum: minimum),
                                    sustained: group.sustained.quantile(settings.peerQuantile, minimum: minimum))
        }.sorted { $0.minutes > $1.minutes }
    }
}

/// The shape of the requests from new sources over the last minute or so: their address prefixes
/// (IPv4 /24, IPv6 /48) and routes (method and first path segment), in two small space-saving
/// sketches started afresh every minute (the last full minute is kept beside the current one).
/// A surge from a few prefixes can be blocked by prefix; one spread over thousands cannot, and
/// the routes it hits say what it is after. One request in `sampling` is counted: a botnet's
/// flood is most of the rows, and the shares need no more.
struct SurgeShape {
    static let capacity = 32
    static let sampling: UInt32 = 8
    var seen: UInt32 = 0
    var minute: Int64 = -1
    var prefixes = SpaceSaving<String>(capacity: capacity)
    var routes = SpaceSaving<String>(capacity: capacity)
    var last: (prefixes: SpaceSaving<String>, routes: SpaceSaving<String>)?

    mutating func count(_ observation: CheckEvent, at now: Int64) {
        seen &+= 1
        guard seen % Self.sampling == 1 else { return }
        if now / 60_000 != minute {
            last = minute == now / 60_000 - 1 ? (prefixes, routes) : nil
            minute = now / 60_000
            prefixes = SpaceSaving(capacity: Self.capacity)
            routes = SpaceSaving(capacity: Self.capacity)
        }
        prefixes.add(Self.prefix(observation.ip))
        routes.add(String(PeerGroups.routeKind(observation.route)))
    }

    /// An address's /24 (IPv4) or /48 (IPv6), as text; the address itself if it is neither.
    static func prefix(_ ip: String) -> String {
        if ip.contains(":") {
            var groups = ip.split(separator: ":", omittingEmptySubsequences: false).prefix(3).map(String.init)
            if let gap = groups.firstIndex(of: "") { groups = Array(groups[..<gap]) }
            while groups.count < 3 { groups.append("0") }
            return groups.joined(separator: ":") + "::/48"
        }
        let octets = ip.split(separator: ".")
        guard octets.count == 4 else { return ip }
        return octets.prefix(3).joined(separator: ".") + ".0/24"
    }

    /// The busiest prefixes and routes with their shares, in words.
    var summary: String {
        func shares(_ sketch: SpaceSaving<String>, _ other: SpaceSaving<String>?) -> String {
            Self.shares(sketch, other).prefix(3).map { "\($0.name) \(Int(($0.share * 100).rounded())) %" }.joined(separator: ", ")
        }
        return "busiest prefixes: \(shares(prefixes, last?.prefixes)); routes: \(shares(routes, last?.routes))"
    }
}
