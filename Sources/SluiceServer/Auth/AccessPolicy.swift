import SluiceConfiguration
import SluiceProto

/// What an identity may ask, request kind by request kind (docs/SECURITY.md, "Isolation").
///
/// Each request needs a role; a request naming tenants is held to the identity's tenant: an
/// empty tenant field becomes its tenant, another tenant is refused `CODE_FORBIDDEN`. Requests
/// about the whole daemon (reload, snapshot, flags) need an operator of every tenant.
enum AccessPolicy {
    typealias Role = Configuration.Auth.Role

    /// The role a request needs; nil for requests any identity may make (ping).
    static func role(for body: WireRequest.OneOf_Body?) -> Role? {
        switch body {
        case .check, .release: .check
        case .recordEvents, .reportLoad, .reportOutcome: .report
        case .stats, .getReputation, .listReputations, .getTier, .listTiers, .watchAlerts, .top, .report: .read
        case .setReputation, .setTier, .removeTier, .reload, .snapshot, .flags: .operator
        case .ping, .authenticate, nil: nil
        }
    }

    /// The refusal of `request` for `principal` (nil: allowed, with its tenant fields set to
    /// the principal's where they were empty).
    static func refusal(of request: inout WireRequest, by principal: Principal, configuration: Configuration) -> WireError? {
        let identity = principal.identity
        if let role = role(for: request.body), !identity.may(role) {
            return WireError(.forbidden, "identity '\(identity.name)' may not make this request: it needs the \(role.rawValue) role (it has \(identity.roles.sorted().map(\.rawValue).joined(separator: ", ")))")
        }
        guard identity.tenant != nil else { return nil }
        func scoped(_ tenant: inout String, index: Int = -1) -> WireError? {
            principal.scope(&tenant).map { WireError(.forbidden, $0, checkIndex: Int32(index)) }
        }
        switch request.body {
        case .check:
            for index in request.check.checks.indices {
                if let refusal = scoped(&request.check.checks[index].tenant, index: index) { return refusal }
            }
        case .release: return scoped(&request.release.tenant)
        case .recordEvents:
            for index in request.recordEvents.events.indices {
                if let refusal = scoped(&request.recordEvents.events[index].tenant, index: index) { return refusal }
            }
        case .reportOutcome:
            for index in request.reportOutcome.outcomes.indices {
                if let refusal = scoped(&request.reportOutcome.outcomes[index].tenant, index: index) { return refusal }
            }
        case .reportLoad:
            return ownsService(request.reportLoad.service, principal: principal, configuration: configuration)
        case .getReputation: return scoped(&request.getReputation.tenant)
        case .setReputation: return scoped(&request.setReputation.tenant)
        case .listReputations:
            if request.listReputations.allTenants { return everyTenant(principal, "list every tenant's subjects") }
            return scoped(&request.listReputations.tenant)
        case .setTier: return scoped(&request.setTier.tenant)
        case .getTier: return scoped(&request.getTier.tenant)
        case .removeTier: return scoped(&request.removeTier.tenant)
        case .listTiers:
            if request.listTiers.allTenants { return everyTenant(principal, "list every tenant's tier assignments") }
            return scoped(&request.listTiers.tenant)
        case .watchAlerts: return scoped(&request.watchAlerts.tenant)
        case .reload: return everyTenant(principal, "reload the daemon's configuration")
        case .snapshot: return everyTenant(principal, "snapshot the whole table")
        case .flags: return everyTenant(principal, "change feature flags")
        case .top: return everyTenant(principal, "see every tenant's heaviest subjects and addresses")
        case .report: return everyTenant(principal, "see every tenant's traffic and alerts")
        case .stats, .ping, .authenticate, nil: return nil
        }
        return nil
    }

    static func everyTenant(_ principal: Principal, _ what: String) -> WireError {
        WireError(.forbidden, "identity '\(principal.identity.name)' acts for tenant '\(principal.identity.tenant ?? "")' only: only an identity of every tenant may \(what)")
    }

    /// A tenant's identity reports load only for a service its own rules name and no rule of
    /// anyone else's does: shedding a service others share would shed their traffic too.
    static func ownsService(_ service: String, principal: Principal, configuration: Configuration) -> WireError? {
        let tenant = principal.identity.tenant ?? ""
        let own = configuration.tenants[tenant]?.rules.values.contains { $0.service == service } ?? false
        let shared = configuration.rules.values.contains { $0.service == service }
            || configuration.tenants.contains { $0.key != tenant && $0.value.rules.values.contains { $0.service == service } }
        guard own, !shared else {
            return WireError(.forbidden, shared
                ? "service '\(service)' is named by rules outside tenant '\(tenant)': only an identity of every tenant may report its load"
                : "service '\(service)' is not named by any rule of tenant '\(tenant)'")
        }
        return nil
    }
}
