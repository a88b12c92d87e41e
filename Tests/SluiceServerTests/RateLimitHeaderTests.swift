import SluiceClient
import SluiceProto
import SluiceWire
import Testing

/// The RateLimit header fields, as the Envoy and HTTP fronts write them and the Swift client
/// offers them for a verdict.
@Suite("RateLimit header fields")
struct RateLimitHeaderTests {
    @Test("draft fields are structured-field lists (names escaped), legacy the tightest policy's numbers")
    func formatting() {
        let policies = [RateLimitHeaderFields.Policy(name: "per \"user\"", quota: 10, windowSeconds: 60, remaining: 7, resetSeconds: 42),
                        RateLimitHeaderFields.Policy(name: "daily", quota: 1_000, windowSeconds: 86_400, remaining: 3, resetSeconds: 999),
                        RateLimitHeaderFields.Policy(name: "naïve", quota: 0, windowSeconds: 0, remaining: 0, resetSeconds: -5)]
        let fields = Dictionary(uniqueKeysWithValues: RateLimitHeaderFields.fields(policies, style: .both).map { ($0.name, $0.value) })
        #expect(fields["RateLimit-Policy"] == #""per \"user\"";q=10;w=60, "daily";q=1000;w=86400, "na?ve";q=0"#)
        #expect(fields["RateLimit"] == #""per \"user\"";r=7;t=42, "daily";r=3;t=999, "na?ve";r=0;t=0"#)
        #expect(fields["X-RateLimit-Limit"] == "0" && fields["X-RateLimit-Remaining"] == "0" && fields["X-RateLimit-Reset"] == "0")
        #expect(RateLimitHeaderFields.fields(policies, style: .off).isEmpty)
        #expect(RateLimitHeaderFields.fields([], style: .both).isEmpty)
    }

    @Test("the Swift client's helper for a real verdict: the rule's name, the seconds rounded up, Retry-After when denied")
    func clientHelper() async throws {
        try await TestDaemon.with(yaml: "rules: { login: { limit: 2, period: 1m } }") { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let allowed = try await client.verdict(Make.check("k", rule: "login"))
            let fields = allowed.rateLimitHeaders(windowSeconds: 60)
            #expect(fields.map(\.name) == ["RateLimit-Policy", "RateLimit"])
            #expect(fields.map(\.value) == [#""login";q=2;w=60"#, #""login";r=1;t=30"#])
            _ = try await client.verdict(Make.check("k", rule: "login"))
            let denied = try await client.verdict(Make.check("k", rule: "login"))
            let deniedFields = Dictionary(uniqueKeysWithValues: denied.rateLimitHeaders(policy: "api", style: .legacy).map { ($0.name, $0.value) })
            #expect(deniedFields == ["X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "60", "Retry-After": "30"])
            await client.close()
        }
    }
}
