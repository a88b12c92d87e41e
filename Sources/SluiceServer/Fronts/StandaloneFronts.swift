import NIOCore
import SluiceProto

/// The fronts over an embedded dispatcher: for fuzzing and tests, what a gRPC call or an HTTP
/// connection would get, without their listeners.
extension StandaloneDispatcher {
    /// What Envoy's `ShouldRateLimit` made of a request's bytes.
    public enum EnvoyOutcome: Sendable {
        /// The bytes are not a `RateLimitRequest` (grpc's deserializer refuses them first).
        case undecodable
        /// Answered: the descriptors sent, and the answer.
        case answered(descriptors: Int, response: Envoy_Service_Ratelimit_V3_RateLimitResponse)
        /// Refused with a gRPC status: its message.
        case refused(String)
        /// Not answered yet (a backend that answers later).
        case pending
    }

    /// `ShouldRateLimit` on a request's bytes, decided on `loop` (an embedded loop answers at
    /// once), as a listener without tokens would.
    public func shouldRateLimit(_ bytes: [UInt8], on loop: any EventLoop) -> EnvoyOutcome {
        guard let request = try? Envoy_Service_Ratelimit_V3_RateLimitRequest(serializedBytes: bytes) else { return .undecodable }
        let front = EnvoyFront(dispatcher: dispatcher, counters: EnvoyCounters(), now: { 1_767_225_600_000_000_000 })
        var outcome = EnvoyOutcome.pending
        front.answer(request, token: nil, address: "embedded", requiresToken: false, on: loop).whenSuccess { result in
            switch result {
            case .success(let response): outcome = .answered(descriptors: request.descriptors.count, response: response)
            case .failure(let failure): outcome = .refused(failure.message)
            }
        }
        return outcome
    }

    /// The HTTP/JSON API's handler for one connection (after NIO's HTTP server pipeline), as a
    /// listener without tokens would serve it.
    public func httpHandler() -> any ChannelHandler {
        HTTPAPI.Handler(dispatcher: dispatcher, requiresToken: false, address: "embedded")
    }
}
