import SluiceCore

/// One of envoy ratelimit's domains: a tree of descriptors, each level keyed by an entry's
/// `key_value` (or its `key` alone, matching any value), with a limit where the tree says.
///
/// Loaded from envoy ratelimit's YAML unchanged (``ConfigurationLoader``), and matched the way
/// envoy ratelimit matches (its `config_impl.go`, `GetLimit`): at each of a request
/// descriptor's entries, `key_value` first, then the level's wildcard values in file order,
/// then `key` alone; a limit applies only when it sits at the request's last entry.
public struct DescriptorDomain: Sendable {
    /// The domain's name (the `domain:` of its file), also the tenant its checks count under.
    public var name: String
    /// The file it came from, for errors and `sluicectl`.
    public var source: String
    /// The top level.
    public var root: DescriptorNode

    public init(name: String, source: String, root: DescriptorNode) {
        self.name = name
        self.source = source
        self.root = root
    }

    /// What a request descriptor's entries match: its limit, and the counted key (the entries'
    /// keys and values, a value matched by a `share_threshold` wildcard replaced by the
    /// pattern, so every value it matches shares one count). Nil: no limit applies (envoy
    /// ratelimit answers OK without a limit).
    public func match<Entries: Collection>(_ entries: Entries) -> DescriptorMatch?
        where Entries.Element == (key: String, value: String) {
        var level = root
        var found: DescriptorRateLimit?
        var shared: [Int: String] = [:]
        let last = entries.count - 1
        for (index, entry) in entries.enumerated() {
            let exact = entry.key + "_" + entry.value
            var next = level.children[exact]
            if next == nil {
                for wildcard in level.wildcards where DescriptorNode.wildcardMatches(wildcard.parts, exact) {
                    next = level.children[wildcard.key]
                    if let next, next.shareThreshold {
                        // "key_files*" shares the count of every value as "files*".
                        shared[index] = String(wildcard.key.dropFirst(entry.key.utf8.count + 1))
                    }
                    break
                }
            }
            if next == nil { next = level.children[entry.key] }
            guard let next else { break }
            if index == last, let limit = next.limit { found = limit }
            guard !next.children.isEmpty else { break }
            level = next
        }
        guard let found else { return nil }
        return DescriptorMatch(limit: found, key: Self.key(of: entries, shared: shared))
    }

    /// The key a request descriptor counts under: `key1=value1|key2=value2`, the values at the
    /// positions `shared` names replaced by their wildcard pattern.
    public static func key<Entries: Collection>(of entries: Entries, shared: [Int: String] = [:]) -> String
        where Entries.Element == (key: String, value: String) {
        var key = ""
        for (index, entry) in entries.enumerated() {
            if index > 0 { key += "|" }
            key += entry.key
            key += "="
            key += shared[index] ?? entry.value
        }
        return key
    }
}

/// A request descriptor's limit, and the key its count is kept under.
public struct DescriptorMatch: Sendable {
    public var limit: DescriptorRateLimit
    /// `key1=value1|key2=value2`, within the domain's tenant.
    public var key: String
}

/// One level of a descriptor tree.
public final class DescriptorNode: Sendable {
    /// The level below, by `key_value` (or `key` alone, or a wildcard's `key_pattern*`).
    public let children: [String: DescriptorNode]
    /// The wildcard children (values with `*`), in file order, each split on `*` once.
    public let wildcards: [(key: String, parts: [String])]
    /// The limit at this level; nil: none (a level that only leads further down).
    public let limit: DescriptorRateLimit?
    /// A wildcard value of this node counts every value it matches as one (`share_threshold`).
    public let shareThreshold: Bool

    public init(children: [String: DescriptorNode], wildcards: [(key: String, parts: [String])], limit: DescriptorRateLimit?,
                shareThreshold: Bool) {
        self.children = children
        self.wildcards = wildcards
        self.limit = limit
        self.shareThreshold = shareThreshold
    }

    /// Whether `value` matches a pattern split on `*` (each `*` matches zero or more bytes).
    public static func wildcardMatches(_ parts: [String], _ value: String) -> Bool {
        guard parts.count > 1 else { return parts.first == value }
        let bytes = Array(value.utf8)
        let first = Array(parts[0].utf8), final = Array(parts[parts.count - 1].utf8)
        guard bytes.count >= first.count + final.count, bytes.starts(with: first), bytes.suffix(final.count).elementsEqual(final) else {
            return false
        }
        var position = first.count
        let end = bytes.count - final.count
        for part in parts[1..<(parts.count - 1)] {
            let needle = Array(part.utf8)
            guard !needle.isEmpty else { continue }
            var found = -1
            var start = position
            while start + needle.count <= end {
                if bytes[start..<(start + needle.count)].elementsEqual(needle) { found = start; break }
                start += 1
            }
            guard found >= 0 else { return false }
            position = found + needle.count
        }
        return true
    }
}

/// A descriptor's `rate_limit`.
public struct DescriptorRateLimit: Sendable, Hashable {
    /// Envoy's time units; `month` is 30 days and `year` 365, as envoy ratelimit counts them,
    /// and windows start at multiples of the unit since the Unix epoch.
    public enum Unit: Int, Sendable, Hashable, CaseIterable {
        case second = 1, minute = 2, hour = 3, day = 4, month = 5, year = 6, week = 7

        public init?(name: String) {
            switch name.lowercased() {
            case "second": self = .second
            case "minute": self = .minute
            case "hour": self = .hour
            case "day": self = .day
            case "week": self = .week
            case "month": self = .month
            case "year": self = .year
            default: return nil
            }
        }

        public var seconds: Int64 {
            switch self {
            case .second: 1
            case .minute: 60
            case .hour: 3_600
            case .day: 86_400
            case .week: 604_800
            case .month: 2_592_000
            case .year: 31_536_000
            }
        }

        public var name: String {
            switch self {
            case .second: "second"
            case .minute: "minute"
            case .hour: "hour"
            case .day: "day"
            case .week: "week"
            case .month: "month"
            case .year: "year"
            }
        }
    }

    /// The rule its checks are decided by, in the domain's tenant (the descriptor's path,
    /// `key1_value1.key2`); nil when nothing is counted (unlimited, or 0 per unit).
    public var rule: String?
    /// `requests_per_unit`, as reported back (`current_limit`).
    public var requestsPerUnit: UInt32
    /// Nil when unlimited.
    public var unit: Unit?
    /// `unlimited: true`: always OK, nothing counted.
    public var unlimited: Bool
    /// `name`: what `replaces` refers to, and the policy's name in RateLimit headers.
    public var name: String
    /// The names of limits this one replaces when both apply to one request.
    public var replaces: [String]
    /// `shadow_mode`: decided and counted, reported OK.
    public var shadow: Bool
    /// `quota_mode`: over its limit, it makes the overall answer OVER_LIMIT only when every
    /// quota-mode descriptor of the request is over its limit (its own status still says so).
    public var quota = false
    /// The algorithm deciding it (envoy ratelimit's fixed window unless the file says).
    public var algorithm: Algorithm
    /// The descriptor's path, for metrics and errors (`key1_value1.key2`).
    public var path: String
    /// The limits its rule is made of (the first is `requests_per_unit` per `unit`).
    public var specs: [LimitSpec] = []

    public init(rule: String?, requestsPerUnit: UInt32, unit: Unit?, unlimited: Bool, name: String, replaces: [String], shadow: Bool,
                algorithm: Algorithm, path: String) {
        self.rule = rule
        self.requestsPerUnit = requestsPerUnit
        self.unit = unit
        self.unlimited = unlimited
        self.name = name
        self.replaces = replaces
        self.shadow = shadow
        self.algorithm = algorithm
        self.path = path
    }
}
