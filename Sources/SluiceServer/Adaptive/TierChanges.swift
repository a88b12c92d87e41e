import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceProto
import SluiceStore

extension ReputationService {
    func tierResponse(_ assignment: TierAssignment?) -> WireResponse {
        var response = WireResponse()
        response.tier.assigned = assignment != nil
        if let assignment {
            response.tier.assignment = Sluice_V1_TierAssignment.with {
                $0.tenant = assignment.tenant
                $0.subject = assignment.subject
                $0.tier = assignment.tier
                $0.assignedMs = UInt64(max(0, assignment.assignedAt / 1_000_000))
            }
        }
        return response
    }

    /// SetTier and RemoveTier: committed to the store (when there is one) before they apply and
    /// are answered. Runs on the writer's queue.
    func changeTier(tenant: String, subject: String, to tier: String?, configuration: Configuration, now: Int64) -> WireResponse {
        guard !subject.isEmpty else { return .error(id: 0, .invalidArgument, "subject must not be empty") }
        guard subject.utf8.count <= configuration.maxKeyBytes, tenant.utf8.count <= configuration.maxKeyBytes else {
            return .error(id: 0, .invalidArgument, "tenant and subject must be at most \(configuration.maxKeyBytes) bytes")
        }
        if let tier, configuration.tiers[tier] == nil {
            let known = configuration.tiers.keys.sorted()
            return .error(id: 0, .invalidArgument,
                          "no tier named '\(tier)'; configured tiers: \(known.isEmpty ? "none (add them under tiers:)" : known.joined(separator: ", "))")
        }
        let store = status.withLockedValue { $0.store }
        if settings.isPersistent, store == nil {
            return .error(id: 0, .unavailable, "the store is not open, so the tier cannot be committed: \(storeError ?? "unknown error")")
        }
        do {
            if let tier {
                let assignment = TierAssignment(tenant: tenant, subject: subject, tier: tier, assignedAt: now)
                try store?.saveTier(assignment)
                tiers.assign(assignment)
                return tierResponse(assignment)
            }
            try store?.removeTier(tenant: tenant, subject: subject)
            return tierResponse(tiers.remove(Fingerprint.of(tenant: tenant, key: subject)))
        } catch {
            return .error(id: 0, .unavailable, "the tier was not changed: \(error.message)")
        }
    }

    /// ListTiers: the configured tiers and the assignments, a page at a time.
    func listTiers(_ request: Sluice_V1_ListTiersRequest, configuration: Configuration) -> WireResponse {
        let offset: Int, size: Int
        switch Self.page(size: request.pageSize, token: request.pageToken) {
        case .success(let page): (offset, size) = page
        case .failure(let refusal): return refusal.response
        }
        let assignments = tiers.assignments(tenant: request.allTenants ? nil : request.tenant, tier: request.tier.isEmpty ? nil : request.tier)
            .sorted { ($0.tier, $0.tenant, $0.subject) < ($1.tier, $1.tenant, $1.subject) }
        var counts: [String: UInt64] = [:]
        for assignment in tiers.assignments() { counts[assignment.tier, default: 0] += 1 }
        var answer = Sluice_V1_ListTiersResponse()
        answer.tiers = configuration.tiers.values.sorted { ($0.priority, $0.name) > ($1.priority, $1.name) }.map { tier in
            Sluice_V1_TierDefinition.with {
                $0.name = tier.name
                $0.multiplier = tier.multiplier
                $0.priority = Int32(tier.priority)
                $0.subjects = counts[tier.name] ?? 0
            }
        }
        answer.total = UInt64(assignments.count)
        let page = assignments.dropFirst(offset).prefix(size)
        answer.assignments = page.map { tierResponse($0).tier.assignment }
        if offset + page.count < assignments.count { answer.nextPageToken = String(offset + page.count) }
        var response = WireResponse()
        response.listTiers = answer
        return response
    }
}
