import NIOCore
import SluiceCore
import SluiceIntelligence
import SluiceProto
import SluiceWire

extension RequestDispatcher {
    /// The answer to a reputation request when the daemon keeps no reputation.
    static func noReputation(id: UInt64) -> WireResponse {
        .error(id: id, .unavailable, "this daemon keeps no reputation")
    }

    /// Answers a reputation request, or nil for any other: fire-and-forget events at once,
    /// the rest (durable events, reads of the store, operator overrides) once done, off the event loop.
    func reputationAnswer(to request: WireRequest, on connection: ConnectionKind, eventLoop: any EventLoop)
        -> EventLoopFuture<WireResponse>? {
        let configuration = state.current.configuration
        let id = request.id
        func answer(_ response: WireResponse) -> EventLoopFuture<WireResponse> { answered(response, id: id, on: eventLoop) }
        switch request.body {
        case .recordEvents(let events) where events.durable:
            counters.requests.add(1, ordering: .relaxed)
            guard let service = reputation else { return answer(Self.noReputation(id: id)) }
            let promise = eventLoop.makePromise(of: WireResponse.self)
            let counters = counters
            let result = service.record(events, configuration: configuration, now: time.now()) { outcome in
                var response = WireResponse()
                response.id = id
                switch outcome {
                case .success:
                    response.recordEvents = Sluice_V1_RecordEventsResponse.with {
                        $0.recorded = UInt32(events.events.count)
                        $0.committed = true
                    }
                case .failure(let error):
                    counters.recordError(.unavailable)
                    response = .error(id: id, .unavailable,
                                      "the events were applied but not committed (they will be when the store recovers; a retry may count them twice): \(error.message)")
                }
                promise.succeed(response)
            }
            if case .failure(let error) = result {
                counters.recordError(error.code)
                promise.succeed(.error(id: id, error.code, error.message, checkIndex: error.checkIndex))
            }
            return promise.futureResult
        case .getReputation(let get):
            return background(request, eventLoop: eventLoop) { service, now in service.get(get, configuration: configuration, now: now) }
        case .listReputations(let list):
            return background(request, eventLoop: eventLoop) { service, now in service.list(list, configuration: configuration, now: now) }
        case .setReputation(let set):
            counters.requests.add(1, ordering: .relaxed)
            if let refusal = operatorRefusal(id: id, on: connection) { return answer(refusal) }
            guard let service = reputation else { return answer(Self.noReputation(id: id)) }
            let promise = eventLoop.makePromise(of: WireResponse.self)
            let counters = counters
            service.set(set, configuration: configuration, now: time.now()) { response in
                var response = response
                response.id = id
                if case .error(let error) = response.body { counters.recordError(error.code) }
                promise.succeed(response)
            }
            return promise.futureResult
        default:
            return nil
        }
    }

    /// Fire-and-forget events: applied and queued for the next commit, answered at once.
    func recordNow(_ events: Sluice_V1_RecordEventsRequest, id: UInt64) -> WireResponse {
        guard let service = reputation else { return Self.noReputation(id: id) }
        switch service.record(events, configuration: state.current.configuration, now: time.now(), completion: nil) {
        case .success(let recorded):
            var response = WireResponse()
            response.recordEvents.recorded = UInt32(recorded)
            return response
        case .failure(let error):
            return .error(id: id, error.code, error.message, checkIndex: error.checkIndex)
        }
    }

    /// `response` as the answer to request `id` (its error counted), at once.
    func answered(_ response: WireResponse, id: UInt64, on eventLoop: any EventLoop) -> EventLoopFuture<WireResponse> {
        var response = response
        response.id = id
        if case .error(let error) = response.body { counters.recordError(error.code) }
        return eventLoop.makeSucceededFuture(response)
    }

    /// Runs `work` on the store's queue and answers with what it returns.
    func background(_ request: WireRequest, eventLoop: any EventLoop,
                    _ work: @escaping @Sendable (ReputationService, Int64) -> WireResponse) -> EventLoopFuture<WireResponse> {
        counters.requests.add(1, ordering: .relaxed)
        let id = request.id
        guard let service = reputation else {
            counters.recordError(.unavailable)
            return eventLoop.makeSucceededFuture(Self.noReputation(id: id))
        }
        let promise = eventLoop.makePromise(of: WireResponse.self)
        let counters = counters, time = time
        service.writer.queue.async {
            var response = work(service, time.now())
            response.id = id
            if case .error(let error) = response.body { counters.recordError(error.code) }
            promise.succeed(response)
        }
        return promise.futureResult
    }
}
