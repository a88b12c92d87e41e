import SluiceConfiguration
import SluiceProto
import SluiceWire

/// The identity a connection acts as, once it is known: from a token, a client certificate, a
/// Unix peer, or a listener that asks for none.
///
/// Its tenant's bytes are allocated once and kept for its life: a check that leaves its tenant
/// empty is pointed at them, on the fast path, without a copy.
final class Principal: @unchecked Sendable {
    let identity: Configuration.Auth.Identity
    /// True for a listener without authentication (`auth: none`, or a Unix socket's mode as the
    /// gate): everything is allowed, except operator requests on TCP without admin.allow_tcp.
    let unauthenticated: Bool
    /// The token it authenticated with: at a reload the connection keeps its identity only if
    /// the token is still configured for the same identity (a revoked token stops serving).
    let tokenID: String?
    /// The bound tenant's bytes; nil for an identity of every tenant. Immutable after init.
    private let storage: UnsafeMutableRawBufferPointer?

    init(_ identity: Configuration.Auth.Identity, unauthenticated: Bool = false, tokenID: String? = nil) {
        self.identity = identity
        self.unauthenticated = unauthenticated
        self.tokenID = tokenID
        if let tenant = identity.tenant {
            let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, tenant.utf8.count), alignment: 1)
            bytes.copyBytes(from: tenant.utf8)
            storage = UnsafeMutableRawBufferPointer(rebasing: bytes[0..<tenant.utf8.count])
        } else {
            storage = nil
        }
    }

    deinit { storage.map { UnsafeMutableRawBufferPointer(start: $0.baseAddress, count: max(1, $0.count)).deallocate() } }

    /// What a connection on a listener without authentication acts as.
    static let open = Principal(.everything, unauthenticated: true)

    /// Whether it still stands under `auth` (after a reload): a token's identity only while the
    /// token is configured for that identity.
    func stands(under auth: Configuration.Auth) -> Bool {
        guard let tokenID else { return true }
        return auth.token(id: Substring(tokenID))?.identity == identity
    }

    /// Whether its checks go straight to the dispatcher: every tenant, and checks allowed.
    var checksUnscoped: Bool { storage == nil && identity.may(.check) }

    /// Applies its tenant to a batch of checks read in place: a check that names no tenant acts
    /// for it; one naming another is refused (its index in the error). An identity of every
    /// tenant changes nothing.
    func admit(_ views: UnsafeMutableBufferPointer<CheckView>) -> WireError? {
        guard let storage else { return nil }
        let tenant = UnsafeRawBufferPointer(storage)
        for index in views.indices {
            if views[index].tenant.count == 0 {
                views[index].tenant = tenant
            } else if !views[index].tenant.elementsEqual(tenant) {
                return WireError(.forbidden, forbiddenTenant(String(decoding: views[index].tenant, as: UTF8.self)), checkIndex: Int32(index))
            }
        }
        return nil
    }

    /// The sentence refusing a request naming `tenant`.
    func forbiddenTenant(_ tenant: String) -> String {
        "identity '\(identity.name)' acts for tenant '\(identity.tenant ?? "")' only, not '\(tenant)'"
    }

    /// Applies its tenant to a request's tenant field: empty becomes its tenant; another
    /// tenant is refused. Nil: allowed (and `tenant` set).
    func scope(_ tenant: inout String) -> String? {
        guard let own = identity.tenant else { return nil }
        if tenant.isEmpty { tenant = own; return nil }
        return tenant == own ? nil : forbiddenTenant(tenant)
    }
}
