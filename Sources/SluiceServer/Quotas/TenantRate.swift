import SluiceConfiguration
import SluiceCore
import SluiceProto
import SluiceWire
import Synchronization

/// A tenant's checks-per-second quota on this daemon: GCRA over one atomic (the theoretical
/// arrival time), so that the tenant's many connections charge it without a lock.
final class TenantRate: Sendable {
    let tenant: String
    let perSecond: UInt64
    let burst: UInt64
    /// Nanoseconds one check costs.
    let interval: Int64
    /// How far ahead of now the arrival time may run: `burst` checks' worth.
    let tolerance: Int64
    let arrival = Atomic<Int64>(0)
    /// Requests refused since this quota was set.
    let refusals = Atomic<UInt64>(0)

    init(tenant: String, perSecond: UInt64, burst: UInt64) {
        self.tenant = tenant
        self.perSecond = perSecond
        self.burst = burst
        interval = max(1, 1_000_000_000 / Int64(perSecond))
        tolerance = interval.multipliedReportingOverflow(by: Int64(burst)).overflow ? .max / 4 : interval * Int64(burst)
    }

    /// Takes `count` checks at `now` (ns); nil when they fit, else how long until they would.
    func admit(_ count: Int, now: Int64) -> Int64? {
        let (cost, overflow) = interval.multipliedReportingOverflow(by: Int64(count))
        guard !overflow, cost <= tolerance else { return .max }
        var current = arrival.load(ordering: .relaxed)
        while true {
            let next = max(current, now) &+ cost
            if next &- now > tolerance { return next &- now &- tolerance }
            let (exchanged, original) = arrival.compareExchange(expected: current, desired: next, ordering: .relaxed)
            if exchanged { return nil }
            current = original
        }
    }

    /// The refusal of a request over this quota, saying when to retry.
    func refusal(count: Int, wait: Int64) -> WireError {
        refusals.add(1, ordering: .relaxed)
        if wait == .max {
            return WireError(.quotaExceeded, "a request of \(count) checks is more than tenant '\(tenant)' may send at once (burst \(burst))")
        }
        var error = WireError(.quotaExceeded, "tenant '\(tenant)' is over its quota of \(perSecond) checks per second")
        error.retryAfterMs = UInt64(max(1, (wait + 999_999) / 1_000_000))
        return error
    }
}

/// The checks-per-second quotas of a configuration, found from a check's tenant bytes.
final class QuotaTable: Sendable {
    struct Entry: Sendable {
        let name: [UInt8]
        let rate: TenantRate
    }

    let entries: [UInt64: Entry]
    var rates: [TenantRate] { entries.values.map(\.rate) }

    /// The quotas `configuration` sets; a tenant whose rate and burst are unchanged keeps its
    /// state from `previous` (a reload does not hand every tenant a fresh burst). Nil: none.
    init?(_ configuration: Configuration, previous: QuotaTable?) {
        var entries: [UInt64: Entry] = [:]
        for name in configuration.tenants.keys {
            guard let quotas = configuration.quotas(for: name), let perSecond = quotas.checksPerSecond else { continue }
            let burst = quotas.burst ?? perSecond
            let key = Self.key(Array(name.utf8))
            let kept = previous?.entries[key].flatMap { $0.rate.perSecond == perSecond && $0.rate.burst == burst ? $0.rate : nil }
            entries[key] = Entry(name: Array(name.utf8), rate: kept ?? TenantRate(tenant: name, perSecond: perSecond, burst: burst))
        }
        guard !entries.isEmpty else { return nil }
        self.entries = entries
    }

    static func key(_ tenant: [UInt8]) -> UInt64 {
        tenant.withUnsafeBytes { key($0) }
    }

    static func key(_ tenant: UnsafeRawBufferPointer) -> UInt64 {
        Fingerprint.of(tenant: tenant, key: UnsafeRawBufferPointer(start: nil, count: 0)).low
    }

    func rate(for tenant: UnsafeRawBufferPointer) -> TenantRate? {
        guard tenant.count > 0, let entry = entries[Self.key(tenant)], entry.name.elementsEqual(tenant) else { return nil }
        return entry.rate
    }

    /// Charges a frame's checks to their tenants' quotas, in runs of one tenant; the refusal of
    /// the first run that does not fit (the runs before it stay charged).
    func charge(_ views: UnsafeBufferPointer<CheckView>, now: Int64) -> WireError? {
        var start = 0
        while start < views.count {
            let tenant = views[start].tenant
            var end = start + 1
            while end < views.count, views[end].tenant.elementsEqual(tenant) { end += 1 }
            if let rate = rate(for: tenant), let wait = rate.admit(end - start, now: now) {
                return rate.refusal(count: end - start, wait: wait)
            }
            start = end
        }
        return nil
    }
}
