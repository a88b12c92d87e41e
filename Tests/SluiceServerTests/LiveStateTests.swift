import Foundation
@testable import SluiceConfiguration
import SluiceCore
@testable import SluiceServer
import Testing

/// The configuration in force and the per-thread check counters behind `sluice_checks_total`.
@Suite("Live state")
struct LiveStateTests {
    static func configuration(_ yaml: String) throws -> Configuration {
        try ConfigurationLoader.parse(yaml, source: "live.yaml")
    }

    static func series(_ rule: String, in live: LiveConfiguration, tenant: String = "") -> Int {
        let base = tenant.isEmpty ? live.series.defaultBase : (live.configuration.tenants[tenant]?.seriesBase ?? live.series.otherBase)
        let slot = live.configuration.tenants[tenant]?.rules[rule]?.seriesSlot ?? live.configuration.rules[rule]?.seriesSlot ?? 0
        return base + slot
    }

    static func total(_ state: LiveState, tenant: String = "_default", rule: String, decision: String = "allowed") -> UInt64 {
        state.checkTotals()[LiveState.SeriesKey(tenant: tenant, rule: rule, decision: decision)] ?? 0
    }

    @Test("the rule index finds what the configuration finds, by bytes, and places nothing it does not know",
          arguments: [false, true])
    func ruleIndex(strict: Bool) throws {
        let live = LiveConfiguration(try Self.configuration("""
        rules: { a: { limit: 1, period: 1s }, b: { limit: 5, period: 1m }, "login:v2": { limit: 3, period: 1s, burst: 6 } }
        tenants:
          acme: { rules: { own: { limit: 7, period: 1s }, a: { limit: 2, period: 1s } } }
          "ümlaut-co": { rules: { b: { limit: 9, period: 1s } } }
        strict_tenants: \(strict)
        """), generation: 1)
        func bytes(_ string: String, _ body: (UnsafeRawBufferPointer) -> Void) {
            var string = string
            string.withUTF8 { body(UnsafeRawBufferPointer($0)) }
        }
        for tenant in ["", "acme", "ümlaut-co", "stranger", "acm", "acmee"] {
            for rule in ["a", "b", "own", "login:v2", "login:v", "", "A", "ownn"] {
                let expected = live.configuration.rule(rule, tenant: tenant)
                let known = live.configuration.knows(tenant: tenant)
                bytes(tenant) { tenantBytes in
                    bytes(rule) { ruleBytes in
                        let found = live.rules.resolve(tenant: tenantBytes, rule: ruleBytes)
                        guard let expected, known else {
                            #expect(found == nil, "tenant '\(tenant)', rule '\(rule)': not placed")
                            return
                        }
                        guard let found else {
                            Issue.record("tenant '\(tenant)', rule '\(rule)': not found")
                            return
                        }
                        #expect(found.series == Self.series(rule, in: live, tenant: tenant), "tenant '\(tenant)', rule '\(rule)'")
                        switch found.limits {
                        case .single(let limit): #expect([limit] == expected.limits)
                        case .rule(let limits): #expect(limits == expected.limits)
                        }
                    }
                }
            }
        }
    }

    @Test("every (tenant, rule) pair has its own series, labelled by configured names only")
    func seriesLabels() throws {
        let live = LiveConfiguration(try Self.configuration("""
        rules: { a: { limit: 1, period: 1s }, b: { limit: 1, period: 1s } }
        tenants: { acme: { rules: { own: { limit: 1, period: 1s }, a: { limit: 2, period: 1s } } } }
        """), generation: 1)
        var seen = Set<String>()
        for tenant in ["", "acme", "stranger"] {
            for rule in ["a", "b", "own", "_inline"] where !(rule == "own" && tenant != "acme") {
                let index = Self.series(rule == "_inline" ? "" : rule, in: live, tenant: tenant)
                let labels = live.series.labels[index]
                let expectedTenant = tenant.isEmpty ? "_default" : tenant == "stranger" ? "_other" : tenant
                #expect(labels.tenant == expectedTenant)
                #expect(labels.rule == rule)
                #expect(seen.insert("\(labels.tenant)/\(labels.rule)").inserted, "series are distinct")
            }
        }
        #expect(live.series.labels.count == 3 + 3 + 5, "default and other: inline + 2 globals; acme: inline + 2 globals + 2 own")
    }

    @Test("counts survive a reload that renumbers the series, and each thread's counts add up exactly")
    func countsAcrossReload() async throws {
        let state = LiveState(configuration: try Self.configuration("rules: { b: { limit: 1, period: 1s } }"))
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    Thread.detachNewThreadAndWait {
                        let context = state.context()
                        let index = Self.series("b", in: context.live)
                        for _ in 0..<10_000 { context.count(series: index, reason: .withinLimit) }
                        context.count(series: index, reason: .overLimit)
                    }
                }
            }
        }
        #expect(Self.total(state, rule: "b") == 40_000)
        #expect(Self.total(state, rule: "b", decision: "over_limit") == 4)

        let context = state.context()
        let before = Self.series("b", in: context.live)
        context.count(series: before, reason: .exceedsCapacity)
        state.apply(try Self.configuration("rules: { a: { limit: 1, period: 1s }, b: { limit: 1, period: 1s } }"))
        let renewed = state.context()
        #expect(renewed.live.generation == 2)
        #expect(Self.series("b", in: renewed.live) != before, "\"a\" sorts first: b moved")
        renewed.count(series: Self.series("b", in: renewed.live), reason: .exceedsCapacity)
        renewed.count(series: Self.series("a", in: renewed.live), reason: .blocked)
        #expect(Self.total(state, rule: "b", decision: "exceeds_capacity") == 2)
        #expect(Self.total(state, rule: "a", decision: "blocked") == 1)
        #expect(Self.total(state, rule: "b") == 40_000)
    }

    @Test("two states never share a thread's context")
    func statesAreSeparate() throws {
        let first = LiveState(configuration: try Self.configuration("rules: { a: { limit: 1, period: 1s } }"))
        let second = LiveState(configuration: try Self.configuration("rules: { z: { limit: 1, period: 1s } }"))
        let one = first.context()
        let two = second.context()
        #expect(one !== two)
        #expect(two.live.configuration.rules["z"] != nil)
        #expect(first.context() === one && second.context() === two)
    }

    @Test("latency buckets: powers of two from 256 ns; longer than 8.4 ms goes to +Inf")
    func latencyBuckets() {
        #expect(LatencyBuckets.index(nanoseconds: 0) == 0)
        #expect(LatencyBuckets.index(nanoseconds: 256) == 0)
        #expect(LatencyBuckets.index(nanoseconds: 257) == 1)
        #expect(LatencyBuckets.index(nanoseconds: 512) == 1)
        #expect(LatencyBuckets.index(nanoseconds: 513) == 2)
        #expect(LatencyBuckets.index(nanoseconds: LatencyBuckets.bound(15)) == 15)
        #expect(LatencyBuckets.index(nanoseconds: LatencyBuckets.bound(15) + 1) == LatencyBuckets.bounded)
        #expect(LatencyBuckets.index(nanoseconds: .max) == LatencyBuckets.bounded)
        for index in 0..<LatencyBuckets.bounded {
            #expect(LatencyBuckets.index(nanoseconds: LatencyBuckets.bound(index)) == index)
        }
    }
}

extension Thread {
    /// Runs `body` on a new thread and waits for it (a fresh thread: a fresh thread-specific slot).
    static func detachNewThreadAndWait(_ body: @escaping @Sendable () -> Void) {
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            body()
            done.signal()
        }
        done.wait()
    }
}
