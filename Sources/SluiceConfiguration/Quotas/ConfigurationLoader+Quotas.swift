import SluiceCore
import Yams

extension Reader {
    /// `quotas:` (top level: every declared tenant's defaults) or `tenants.NAME.quotas:`.
    func readQuotas(_ node: Node, _ path: String) throws(SluiceError) -> Configuration.TenantQuotas {
        var quotas = Configuration.TenantQuotas()
        for (key, value) in try mapping(node, path, keys: ["checks_per_second", "burst", "max_connections", "max_keys", "max_subjects", "max_anomaly_records"]) {
            let keyPath = "\(path).\(key)"
            switch key {
            case "checks_per_second": quotas.checksPerSecond = UInt64(try integer(value, keyPath, 1...1_000_000_000))
            case "burst": quotas.burst = UInt64(try integer(value, keyPath, 1...1_000_000_000))
            case "max_keys": quotas.maxKeys = try integer(value, keyPath, 64...100_000_000)
            case "max_subjects": quotas.maxSubjects = try integer(value, keyPath, 1...100_000_000)
            case "max_anomaly_records": quotas.maxAnomalyRecords = try integer(value, keyPath, 1...100_000_000)
            default: quotas.maxConnections = try integer(value, keyPath, 1...1_000_000)
            }
        }
        if quotas.burst != nil, quotas.checksPerSecond == nil {
            throw error(node, "\(path).burst", "is for checks_per_second: set it too")
        }
        return quotas
    }
}
