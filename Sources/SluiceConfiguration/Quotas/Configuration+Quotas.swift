import SluiceCore

extension Configuration {
    /// What one tenant may consume, so that a noisy tenant cannot hurt the others
    /// (docs/SECURITY.md, "Quotas"). Each limit unset: none.
    public struct TenantQuotas: Sendable, Equatable {
        /// Checks per second the tenant's requests may carry, on this daemon; past it a request
        /// is refused `CODE_QUOTA_EXCEEDED` with `retry_after_ms`.
        public var checksPerSecond: UInt64?
        /// Checks it may send at once past the rate (default: one second's worth).
        public var burst: UInt64?
        /// Connections authenticated as the tenant's identities open at once, on this daemon.
        public var maxConnections: Int?
        /// Keys the tenant may hold: its keys live in a table of its own of this size, whose
        /// least recently used keys are evicted when it is full (never another tenant's).
        public var maxKeys: Int?
        /// Reputation records the tenant may hold: at each sweep (`reputation.sweep_interval`) its
        /// records nearest neutral beyond this are forgotten, before anyone else's.
        public var maxSubjects: Int?
        /// Anomaly detection records of its subjects at most; past it its new subjects are
        /// counted in detection's sketch (as past `anomaly.max_subjects`), no one else's room taken.
        public var maxAnomalyRecords: Int?

        public init(checksPerSecond: UInt64? = nil, burst: UInt64? = nil, maxConnections: Int? = nil, maxKeys: Int? = nil,
                    maxSubjects: Int? = nil, maxAnomalyRecords: Int? = nil) {
            self.maxAnomalyRecords = maxAnomalyRecords
            self.checksPerSecond = checksPerSecond
            self.burst = burst
            self.maxConnections = maxConnections
            self.maxKeys = maxKeys
            self.maxSubjects = maxSubjects
        }

        /// These quotas, each unset one taken from `defaults`.
        func over(_ defaults: TenantQuotas) -> TenantQuotas {
            TenantQuotas(checksPerSecond: checksPerSecond ?? defaults.checksPerSecond, burst: burst ?? defaults.burst,
                         maxConnections: maxConnections ?? defaults.maxConnections, maxKeys: maxKeys ?? defaults.maxKeys,
                         maxSubjects: maxSubjects ?? defaults.maxSubjects, maxAnomalyRecords: maxAnomalyRecords ?? defaults.maxAnomalyRecords)
        }

        /// Whether any limit is set.
        public var isEmpty: Bool {
            checksPerSecond == nil && maxConnections == nil && maxKeys == nil && maxSubjects == nil && maxAnomalyRecords == nil
        }
    }

    /// The quotas of the declared tenant `tenant`: its own over the top-level `quotas:`; nil for
    /// an undeclared tenant (or the default one) and for a tenant with none.
    public func quotas(for tenant: String) -> TenantQuotas? {
        guard let declared = tenants[tenant] else { return nil }
        let merged = (declared.quotas ?? TenantQuotas()).over(defaultQuotas ?? TenantQuotas())
        return merged.isEmpty ? nil : merged
    }
}
