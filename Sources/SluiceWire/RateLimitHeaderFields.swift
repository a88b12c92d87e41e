import RawStructuredFieldValues
import SluiceProto

/// The HTTP fields that tell a client its limits: the IETF draft's `RateLimit-Policy` and
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers, structured-field lists written by
/// swift-http-structured-headers), and the older `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
/// The daemon's Envoy and HTTP fronts write them; the Swift client offers them for a verdict.
public enum RateLimitHeaderFields {
    /// Which fields.
    public enum Style: String, Sendable, Hashable {
        case off, draft, legacy, both
    }

    /// One limit that applied: its name, quota and window, and where the request left it.
    public struct Policy: Equatable, Sendable {
        public var name: String
        /// Requests per window (0: none allowed).
        public var quota: UInt64
        /// The window in seconds (0: not a windowed limit).
        public var windowSeconds: Int64
        /// Requests left in the window.
        public var remaining: UInt64
        /// Seconds until the window (or the limit) resets.
        public var resetSeconds: Int64

        public init(name: String, quota: UInt64, windowSeconds: Int64, remaining: UInt64, resetSeconds: Int64) {
            self.name = name
            self.quota = quota
            self.windowSeconds = windowSeconds
            self.remaining = remaining
            self.resetSeconds = resetSeconds
        }

        /// A verdict's policy: named `name` (else its rule, else `inline`), its effective limit
        /// per `windowSeconds` (0: unsaid), what is left, and the seconds until it is recovered.
        public init(_ verdict: Sluice_V1_Verdict, name: String? = nil, windowSeconds: Int64 = 0) {
            self.init(name: name ?? (verdict.rule.isEmpty ? "inline" : verdict.rule), quota: verdict.limit, windowSeconds: windowSeconds,
                      remaining: verdict.remaining, resetSeconds: Int64(clamping: verdict.resetAfterMs / 1_000 + (verdict.resetAfterMs % 1_000 > 0 ? 1 : 0)))
        }
    }

    /// The fields for one verdict (see ``Policy/init(_:name:windowSeconds:)``), with
    /// `Retry-After` (whole seconds) when it was denied.
    public static func fields(for verdict: Sluice_V1_Verdict, name: String? = nil, windowSeconds: Int64 = 0,
                              style: Style = .draft) -> [(name: String, value: String)] {
        var all = fields([Policy(verdict, name: name, windowSeconds: windowSeconds)], style: style)
        if !verdict.allowed, verdict.retryAfterMs > 0 {
            all.append(("Retry-After", String(verdict.retryAfterMs / 1_000 + (verdict.retryAfterMs % 1_000 > 0 ? 1 : 0))))
        }
        return all
    }

    /// The fields for `policies` in `style`; the older trio describes the policy with the least
    /// room left (the first such), as envoy ratelimit's do.
    public static func fields(_ policies: [Policy], style: Style) -> [(name: String, value: String)] {
        guard style != .off, !policies.isEmpty else { return [] }
        var fields: [(String, String)] = []
        if style == .draft || style == .both {
            var policyList: [ItemOrInnerList] = []
            var stateList: [ItemOrInnerList] = []
            for policy in policies {
                var policyParameters = OrderedMap<String, RFC9651BareItem>()
                policyParameters["q"] = .integer(Int64(clamping: policy.quota))
                if policy.windowSeconds > 0 { policyParameters["w"] = .integer(policy.windowSeconds) }
                policyList.append(.item(Item(bareItem: .string(Self.printable(policy.name)), parameters: policyParameters)))
                var stateParameters = OrderedMap<String, RFC9651BareItem>()
                stateParameters["r"] = .integer(Int64(clamping: policy.remaining))
                stateParameters["t"] = .integer(max(0, policy.resetSeconds))
                stateList.append(.item(Item(bareItem: .string(Self.printable(policy.name)), parameters: stateParameters)))
            }
            var serializer = StructuredFieldValueSerializer()
            if let bytes = try? serializer.writeListFieldValue(policyList) { fields.append(("RateLimit-Policy", String(decoding: bytes, as: UTF8.self))) }
            var stateSerializer = StructuredFieldValueSerializer()
            if let bytes = try? stateSerializer.writeListFieldValue(stateList) { fields.append(("RateLimit", String(decoding: bytes, as: UTF8.self))) }
        }
        if style == .legacy || style == .both {
            let tightest = policies.min { $0.remaining < $1.remaining } ?? policies[0]
            fields.append(("X-RateLimit-Limit", String(tightest.quota)))
            fields.append(("X-RateLimit-Remaining", String(tightest.remaining)))
            fields.append(("X-RateLimit-Reset", String(max(0, tightest.resetSeconds))))
        }
        return fields
    }

    /// A structured-field string holds printable ASCII only: anything else becomes `?`.
    static func printable(_ name: String) -> String {
        String(String.UnicodeScalarView(name.unicodeScalars.map { $0.value >= 0x20 && $0.value < 0x7F ? $0 : "?" }))
    }
}
