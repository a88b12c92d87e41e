import NIOCore
import SluiceProto
import SluiceWire

/// One call through a front that is not the framed protocol (Envoy's gRPC service, HTTP/JSON):
/// its native requests go through a `ConnectionSession` of their own, on one of the daemon's
/// event loops, so they are authenticated, held to their identity's tenant and roles, charged to
/// quotas, decided (locally or in Redis) and counted exactly as a framed connection's.
///
/// The session lives for the call: a token, when the listener requires one, is presented once
/// per call (failures count against the caller's address as on TCP).
struct FrontCall {
    let dispatcher: RequestDispatcher
    let loop: any EventLoop
    let session: ConnectionSession

    /// A call from `address`, on one of `group`'s loops.
    init(dispatcher: RequestDispatcher, group: any EventLoopGroup, address: String, requiresToken: Bool) {
        self.init(dispatcher: dispatcher, loop: group.next(), address: address, requiresToken: requiresToken)
    }

    /// A call from `address`, on `loop` (a connection's own).
    init(dispatcher: RequestDispatcher, loop: any EventLoop, address: String, requiresToken: Bool) {
        self.dispatcher = dispatcher
        self.loop = loop
        session = ConnectionSession(dispatcher: dispatcher, gatekeeper: dispatcher.gatekeeper, address: address, kind: .tcp,
                                    principal: requiresToken ? nil : .open)
    }

    /// Runs `requests` in order on the call's event loop, after presenting `token` (when the
    /// listener requires one): each one's answer, or the refusal of the token in place of them all.
    func run(_ requests: [WireRequest], token: String?) async -> [WireResponse] {
        let future = loop.flatSubmit { self.answers(requests, token: token) }
        do {
            return try await future.get()
        } catch {
            return [Self.failure(error)]
        }
    }

    /// ``run(_:token:)`` on the call's loop, from that loop: the answers' future. The session
    /// gives back its place in its tenant's connection quota when they are all answered.
    func answers(_ requests: [WireRequest], token: String?) -> EventLoopFuture<[WireResponse]> {
        loop.preconditionInEventLoop()
        let session = session, loop = loop
        if session.principal == nil {
            var authenticate = WireRequest()
            authenticate.authenticate.token = token ?? ""
            let answer = session.process(authenticate)
            if case .error = answer.body {
                session.releaseSlot()
                return loop.makeSucceededFuture([answer])
            }
        }
        var answers: [EventLoopFuture<WireResponse>] = []
        for request in requests { answers.append(Self.answer(request, session: session, loop: loop)) }
        let all = EventLoopFuture.whenAllSucceed(answers, on: loop).flatMapErrorThrowing { [Self.failure($0)] }
        all.whenComplete { _ in session.releaseSlot() }
        return all
    }

    static func failure(_ error: any Error) -> WireResponse {
        var response = WireResponse()
        response.error.code = .internal
        response.error.message = "the request could not be answered: \(error)"
        return response
    }

    /// One request's answer: checks through the check path (at once, or when the backend
    /// answers), requests that touch files through their deferred path, the rest at once.
    static func answer(_ request: WireRequest, session: ConnectionSession, loop: any EventLoop) -> EventLoopFuture<WireResponse> {
        if case .check = request.body {
            var out = ByteBufferAllocator().buffer(capacity: 256)
            if let later = session.answerChecks(request, into: &out, eventLoop: loop) {
                return later.map { decodeFrame($0) }
            }
            return loop.makeSucceededFuture(decodeFrame(out))
        }
        if let later = session.deferredAnswer(to: request, on: .tcp, eventLoop: loop) { return later }
        return loop.makeSucceededFuture(session.process(request))
    }

    /// The response in one answer frame (4 bytes of length, then the message).
    static func decodeFrame(_ frame: ByteBuffer) -> WireResponse {
        var frame = frame
        guard let length = frame.readInteger(endianness: .big, as: UInt32.self), let body = frame.readBytes(length: Int(length)),
              let response = try? WireResponse(serializedBytes: body) else {
            var response = WireResponse()
            response.error.code = .internal
            response.error.message = "the check path wrote an answer that does not decode"
            return response
        }
        return response
    }
}
