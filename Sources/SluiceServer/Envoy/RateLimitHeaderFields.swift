import RawStructuredFieldValues
import SluiceConfiguration

/// The HTTP fields that tell a client its limits: the IETF draft's `RateLimit-Policy` and
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers, structured-field lists written by
/// swift-http-structured-headers), and the older `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
enum RateLimitHeaderFields {
    /// One limit that applied: its name, quota and window, and where the request left it.
    struct Policy: Equatable {
        var name: String
        /// Requests per window (0: none allowed).
        var quota: UInt64
        /// The window in seconds (0: not a windowed limit).
        var windowSeconds: Int64
        /// Requests left in the window.
        var remaining: UInt64
        /// Seconds until the window (or the limit) resets.
        var resetSeconds: Int64
    }

    /// The fields for `policies` in `style`; the older trio describes the policy with the least
    /// room left (the first such), as envoy ratelimit's do.
    static func fields(_ policies: [Policy], style: Configuration.EnvoySettings.Headers) -> [(name: String, value: String)] {
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
