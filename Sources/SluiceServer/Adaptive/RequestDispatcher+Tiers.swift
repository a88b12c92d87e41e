import NIOCore
import SluiceCore
import SluiceProto
import SluiceWire

extension RequestDispatcher {
    /// Answers a tier request (get, list, set, remove), or nil for any other. Each runs on the
    /// store's writer queue, off the event loop: a change is committed before it applies.
    func tierAnswer(to request: WireRequest, on connection: ConnectionKind, eventLoop: any EventLoop)
        -> EventLoopFuture<WireResponse>? {
        let configuration = state.current.configuration
        let id = request.id
        switch request.body {
        case .getTier(let get):
            return background(request, eventLoop: eventLoop) { service, _ in
                service.tierResponse(service.tiers.assignment(of: Fingerprint.of(tenant: get.tenant, key: get.subject)))
            }
        case .listTiers(let list):
            return background(request, eventLoop: eventLoop) { service, _ in service.listTiers(list, configuration: configuration) }
        case .setTier(let set):
            if let refusal = operatorRefusal(id: id, on: connection) {
                counters.requests.add(1, ordering: .relaxed)
                return answered(refusal, id: id, on: eventLoop)
            }
            return background(request, eventLoop: eventLoop) { service, now in
                service.changeTier(tenant: set.tenant, subject: set.subject, to: set.tier, configuration: configuration, now: now)
            }
        case .removeTier(let remove):
            if let refusal = operatorRefusal(id: id, on: connection) {
                counters.requests.add(1, ordering: .relaxed)
                return answered(refusal, id: id, on: eventLoop)
            }
            return background(request, eventLoop: eventLoop) { service, now in
                service.changeTier(tenant: remove.tenant, subject: remove.subject, to: nil, configuration: configuration, now: now)
            }
        default:
            return nil
        }
    }
}
