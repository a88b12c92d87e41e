import SluiceProto
import SluiceWire

extension Sluice_V1_Verdict {
    /// The HTTP fields that tell your caller its limit, for this verdict: the IETF draft's
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers), with
    /// `.legacy` or `.both` the older `X-RateLimit-Limit`/`-Remaining`/`-Reset`, and
    /// `Retry-After` when it was denied.
    ///
    /// - Parameters:
    ///   - policy: the policy's name (default: the verdict's rule, else `inline`).
    ///   - windowSeconds: the limit's period, when it should be said (`w`); 0: not said.
    public func rateLimitHeaders(policy: String? = nil, windowSeconds: Int64 = 0,
                                 style: RateLimitHeaderFields.Style = .draft) -> [(name: String, value: String)] {
        RateLimitHeaderFields.fields(for: self, name: policy, windowSeconds: windowSeconds, style: style)
    }
}
