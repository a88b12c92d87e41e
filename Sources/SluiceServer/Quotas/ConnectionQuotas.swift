import NIOConcurrencyHelpers
import SluiceConfiguration
import SluiceProto

/// Connections open per tenant (those acting as one tenant's identity), held to the tenants'
/// `max_connections`.
final class ConnectionQuotas: Sendable {
    struct Counts {
        var open: [String: Int] = [:]
        var refused: [String: UInt64] = [:]
    }

    let counts = NIOLockedValueBox(Counts())

    /// Takes a place for a connection of `tenant`; the refusal when its `limit` are open.
    func acquire(tenant: String, limit: Int?) -> WireError? {
        counts.withLockedValue { counts in
            let open = counts.open[tenant, default: 0]
            if let limit, open >= limit {
                counts.refused[tenant, default: 0] += 1
                return WireError(.quotaExceeded, "tenant '\(tenant)' has its \(limit) connections open (its max_connections); close one first")
            }
            counts.open[tenant] = open + 1
            return nil
        }
    }

    func release(tenant: String) {
        counts.withLockedValue { counts in
            let open = counts.open[tenant, default: 0] - 1
            counts.open[tenant] = open > 0 ? open : nil
        }
    }

    /// Open connections and refusals by tenant, for metrics.
    var snapshot: Counts { counts.withLockedValue { $0 } }
}
