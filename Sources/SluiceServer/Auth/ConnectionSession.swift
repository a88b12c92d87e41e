import NIOCore
import SluiceConfiguration
import SluiceProto
import SluiceWire

/// One connection's side of the dispatcher: who it acts as, and what that identity may ask.
///
/// A connection on a listener that requires authentication starts with no identity: until an
/// `Authenticate` request presents a valid token (or a mapped client certificate is seen),
/// every request is answered `CODE_UNAUTHENTICATED`, and after `auth.max_failures` failures the
/// connection is closed. Once it has an identity, each request is held to its roles and tenant
/// (``AccessPolicy``); checks of an identity of every tenant go to the dispatcher untouched.
///
/// Touched only on its connection's event loop (the handler calls it there), hence unchecked.
final class ConnectionSession: RequestProcessor, @unchecked Sendable {
    let dispatcher: RequestDispatcher
    let gatekeeper: Gatekeeper
    /// The client's address, for failure limits ("unix" on a Unix socket).
    let address: String
    let kind: ConnectionKind
    /// Who the connection acts as; nil until it authenticates.
    var principal: Principal?
    /// Looks for an identity the connection proved without a token (a client certificate),
    /// once, at its first request; nil when there is none to look for.
    var identifyPeer: (() -> Configuration.Auth.Identity?)?
    /// The configuration generation the identity was last found standing under.
    var generation: UInt64
    /// The tenant whose connection quota this connection holds a place in.
    var slot: String?
    /// Why the identity its peer proved was not taken (its tenant's connections are all open).
    var peerRefusal: WireError?
    /// Failed authentications and requests refused for want of one, on this connection.
    var failures = 0
    var closeRequested = false

    init(dispatcher: RequestDispatcher, gatekeeper: Gatekeeper, address: String, kind: ConnectionKind, principal: Principal?,
         identifyPeer: (() -> Configuration.Auth.Identity?)? = nil) {
        self.dispatcher = dispatcher
        self.gatekeeper = gatekeeper
        self.address = address
        self.kind = kind
        self.principal = principal
        self.identifyPeer = identifyPeer
        generation = dispatcher.state.generation.load(ordering: .relaxed)
    }

    /// The identity, looking for the peer's own once when there is none yet, and dropping a
    /// token's identity after a reload that revoked or changed the token.
    var current: Principal? {
        if principal == nil, let identify = identifyPeer {
            identifyPeer = nil
            if let identity = identify() {
                peerRefusal = assume(Principal(identity))
                if peerRefusal != nil { closeRequested = true }
            }
        }
        let now = dispatcher.state.generation.load(ordering: .relaxed)
        if now != generation {
            generation = now
            if let principal, !principal.stands(under: dispatcher.configuration.auth) {
                self.principal = nil
                releaseSlot()
            }
        }
        return principal
    }

    /// Acts as `principal` from now on, taking a place in its tenant's connection quota; the
    /// refusal when its tenant has all its connections open (the identity is then not taken).
    func assume(_ principal: Principal) -> WireError? {
        let tenant = principal.identity.tenant
        if tenant != slot {
            let quotas = dispatcher.connectionQuotas
            if let tenant, let refusal = quotas.acquire(tenant: tenant, limit: dispatcher.configuration.quotas(for: tenant)?.maxConnections) {
                return refusal
            }
            releaseSlot()
            slot = tenant
        }
        self.principal = principal
        return nil
    }

    /// Gives back its place in its tenant's connection quota (when it closes, or loses its identity).
    func releaseSlot() {
        if let slot { dispatcher.connectionQuotas.release(tenant: slot) }
        slot = nil
    }

    /// Where an operator request is served as coming from: an authenticated identity's roles
    /// decide for it, so it is served as on the Unix socket; without authentication, the
    /// connection's own kind (admin.allow_tcp decides on TCP).
    func servedKind(_ principal: Principal) -> ConnectionKind { principal.unauthenticated ? kind : .unix }

    // MARK: Checks

    var answersCheckFramesTogether: Bool { dispatcher.answersCheckFramesTogether }

    func answerCheckFrame(_ frame: UnsafeRawBufferPointer, into out: inout ByteBuffer) -> Bool {
        guard let principal = current else { return false }
        if principal.checksUnscoped { return dispatcher.answerCheckFrame(frame, into: &out) }
        guard principal.identity.may(.check) else { return false }
        return dispatcher.answerCheckFrame(frame, scope: principal, into: &out)
    }

    func answerCheckFrames(_ frames: UnsafeBufferPointer<UnsafeRawBufferPointer>, into out: inout ByteBuffer) -> Int {
        guard let principal = current else { return 0 }
        if principal.checksUnscoped { return dispatcher.answerCheckFrames(frames, into: &out) }
        guard principal.identity.may(.check) else { return 0 }
        return dispatcher.answerCheckFrames(frames, scope: principal, into: &out)
    }

    func answerCheckFrameLater(_ frame: UnsafeRawBufferPointer, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer>? {
        guard let principal = current else { return nil }
        if principal.checksUnscoped { return dispatcher.answerCheckFrameLater(frame, eventLoop: eventLoop) }
        guard principal.identity.may(.check) else { return nil }
        return dispatcher.answerCheckFrameLater(frame, scope: principal, eventLoop: eventLoop)
    }

    func answerChecks(_ request: WireRequest, into out: inout ByteBuffer, eventLoop: (any EventLoop)?) -> EventLoopFuture<ByteBuffer>? {
        var request = request
        if let refusal = admit(&request) {
            out.writeResponseFrame(refusal)
            return nil
        }
        return dispatcher.answerChecks(request, into: &out, eventLoop: eventLoop)
    }

    // MARK: Other requests

    func process(_ request: WireRequest) -> WireResponse {
        if case .authenticate(let authenticate) = request.body { return self.authenticate(authenticate, id: request.id) }
        var request = request
        if let refusal = admit(&request) { return refusal }
        if case .stats = request.body, let principal, principal.identity.tenant != nil {
            dispatcher.counters.requests.add(1, ordering: .relaxed)
            return tenantStats(id: request.id)
        }
        return dispatcher.process(request)
    }

    func deferredAnswer(to request: WireRequest, on connection: ConnectionKind, eventLoop: any EventLoop) -> EventLoopFuture<WireResponse>? {
        var request = request
        // A refusal is answered at once, by process(_:).
        guard let principal = current, AccessPolicy.refusal(of: &request, by: principal, configuration: dispatcher.configuration) == nil else {
            return nil
        }
        return dispatcher.deferredAnswer(to: request, on: servedKind(principal), eventLoop: eventLoop)
    }

    func openStream(_ request: WireRequest, on connection: ConnectionKind, stream: ResponseStream) -> WireResponse {
        var request = request
        if let refusal = admit(&request) { return refusal }
        return dispatcher.openStream(request, on: connection, stream: stream, tenantOnly: principal?.identity.tenant != nil)
    }

    func recordFailedFrame(_ code: WireError.Code) { dispatcher.recordFailedFrame(code) }

    func connectionEnded(_ reason: ConnectionEnd) { dispatcher.connectionEnded(reason) }

    /// The refusal of `request` (counted), or nil with its tenant fields set for the identity.
    func admit(_ request: inout WireRequest) -> WireResponse? {
        guard let principal = current else {
            if let peerRefusal { return refuse(peerRefusal, id: request.id) }
            gatekeeper.unauthenticatedRequests.add(1, ordering: .relaxed)
            fail()
            return refuse(WireError(.unauthenticated, "this listener requires authentication: send an Authenticate request with a token first"),
                          id: request.id)
        }
        guard let error = AccessPolicy.refusal(of: &request, by: principal, configuration: dispatcher.configuration) else { return nil }
        gatekeeper.forbiddenRequests.add(1, ordering: .relaxed)
        return refuse(error, id: request.id)
    }

    func refuse(_ error: WireError, id: UInt64) -> WireResponse {
        dispatcher.counters.requests.add(1, ordering: .relaxed)
        dispatcher.counters.recordError(error.code)
        var response = WireResponse()
        response.id = id
        response.error = error
        return response
    }

    /// One more failure; past `auth.max_failures` the connection is closed after its answers.
    func fail() {
        failures += 1
        if failures >= dispatcher.configuration.auth.maxFailures { closeRequested = true }
    }

    // MARK: Authenticate

    func authenticate(_ request: Sluice_V1_AuthenticateRequest, id: UInt64) -> WireResponse {
        let auth = dispatcher.configuration.auth
        switch gatekeeper.authenticate(token: request.token, address: address, auth: auth) {
        case .failure(let error):
            fail()
            // A throttled address gets no more tries on this connection.
            if error.retryAfterMs > 0 { closeRequested = true }
            return refuse(error, id: id)
        case .success(let token):
            let identity = token.identity
            if let known = current, !known.unauthenticated, known.identity != identity {
                gatekeeper.forbiddenRequests.add(1, ordering: .relaxed)
                return refuse(WireError(.forbidden, "this connection is authenticated as '\(known.identity.name)' already; open another to act as '\(identity.name)'"),
                              id: id)
            }
            if principal?.identity != identity || principal?.tokenID != token.id,
               let refusal = assume(Principal(identity, tokenID: token.id)) {
                closeRequested = true
                return refuse(refusal, id: id)
            }
            failures = 0
            dispatcher.counters.requests.add(1, ordering: .relaxed)
            var response = WireResponse()
            response.id = id
            response.authenticate.identity = identity.name
            response.authenticate.tenant = identity.tenant ?? ""
            response.authenticate.allTenants = identity.tenant == nil
            response.authenticate.roles = identity.roles.sorted().map(\.rawValue)
            return response
        }
    }

    /// Statistics for an identity of one tenant: what the daemon is, not what every tenant did.
    func tenantStats(id: UInt64) -> WireResponse {
        var response = dispatcher.statsResponse()
        let whole = response.stats
        var stats = Sluice_V1_StatsResponse()
        stats.version = whole.version
        stats.uptimeMs = whole.uptimeMs
        stats.clock = whole.clock
        stats.configGeneration = whole.configGeneration
        // Its own table, when it has one (quotas.max_keys): its keys, its evictions.
        let live = dispatcher.state.current
        if let tenant = principal?.identity.tenant, let partitions = live.partitions {
            let number = partitions.partition(for: tenant)
            if number != 0 {
                let own = partitions.table(number).statistics()
                stats.entries = UInt64(own.entries)
                stats.maxEntries = UInt64(own.maxEntries)
                stats.evictions = own.evictions
            }
        }
        response.stats = stats
        response.id = id
        return response
    }
}
