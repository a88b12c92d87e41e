import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SluiceConfiguration
import SluiceCore
import SluiceProto
import SluiceWire
import SwiftProtobuf

/// The HTTP/JSON API (docs/PROTOCOL.md, "HTTP/JSON"; docs/openapi.yaml): the framed protocol's
/// requests with the protobuf messages' JSON mapping as bodies, for callers without a client.
///
/// - `POST /v1/check`: a `Check`, answered by its `Verdict` (with `RateLimit-Policy`,
///   `RateLimit` and, when denied, `Retry-After`); or a `CheckRequest` (`{"checks": […]}`),
///   answered by its `CheckResponse`.
/// - `POST /v1/release`: a `ReleaseRequest`.
/// - `POST /v1/report`: `{"events": […], "durable": …}` (`RecordEventsRequest`) and/or
///   `{"outcomes": […]}` (`ReportOutcomeRequest`).
/// - `GET /v1/reputation/{subject}?tenant=…&recent_events=…`.
///
/// Each request goes through a `ConnectionSession` of its own (``FrontCall``): a listener that
/// requires a token takes it from `Authorization: Bearer`. A decided check is 200 whether
/// allowed or not (the body says); errors are 4xx/5xx with `{"error": {"code", "message"}}`.
enum HTTPAPI {
    static let jsonOptions: JSONEncodingOptions = {
        var options = JSONEncodingOptions()
        options.alwaysPrintInt64sAsNumbers = true
        options.preserveProtoFieldNames = true
        return options
    }()

    static let decodingOptions: JSONDecodingOptions = {
        var options = JSONDecodingOptions()
        options.messageDepthLimit = 16
        return options
    }()

    /// Binds every listener of `settings` (Unix sockets first); the channels bound.
    static func bind(_ settings: Configuration.HTTPSettings, dispatcher: RequestDispatcher, group: MultiThreadedEventLoopGroup,
                     tls: [Configuration.TCPListener: ListenerTLS], logger: Logger) async throws -> [any Channel] {
        var bound: [any Channel] = []
        do {
            for listener in settings.unixListeners {
                try UnixSocketPath.prepare(listener.path)
                let channel = try await bootstrap(group, dispatcher: dispatcher, tls: nil, requiresToken: listener.auth == .token)
                    .bind(unixDomainSocketPath: listener.path).get()
                bound.append(channel)
                try UnixSocketPath.setMode(listener.path, listener.mode)
                logger.info("serving the HTTP/JSON API", metadata: ["http.listen.unix": "\(listener.path)", "listen.auth": "\(listener.auth)"])
            }
            for listener in settings.tcpListeners {
                let channel: any Channel
                do {
                    channel = try await bootstrap(group, dispatcher: dispatcher, tls: tls[listener], requiresToken: listener.auth == .token)
                        .bind(host: listener.host, port: listener.port).get()
                } catch {
                    throw SluiceError(.addressInUse, "cannot serve the HTTP/JSON API on \(listener): \(error)")
                }
                bound.append(channel)
                logger.info("serving the HTTP/JSON API", metadata: ["http.listen.tcp": "\(channel.localAddress?.description ?? listener.description)",
                                                                    "listen.tls": "\(listener.tls == nil ? "off" : "on")", "listen.auth": "\(listener.auth)"])
            }
        } catch {
            for channel in bound { try? await channel.close() }
            throw error
        }
        return bound
    }

    static func bootstrap(_ group: MultiThreadedEventLoopGroup, dispatcher: RequestDispatcher, tls: ListenerTLS?,
                          requiresToken: Bool) -> ServerBootstrap {
        MetricsEndpoint.bootstrap(group, backlog: 256, tls: tls) { channel in
            Handler(dispatcher: dispatcher, requiresToken: requiresToken, address: channel.remoteAddress?.ipAddress ?? "unix")
        }
    }

    /// An answer: status, JSON body, extra headers.
    struct Answer: Error {
        var status: HTTPResponseStatus
        var body: [UInt8]
        var headers: [(String, String)] = []

        static func error(_ status: HTTPResponseStatus, _ code: Sluice_V1_Error.Code, _ message: String,
                          headers: [(String, String)] = []) -> Answer {
            var error = Sluice_V1_Error()
            error.code = code
            error.message = message
            return Answer(status: status, body: Array("{\"error\":\((try? error.jsonString(options: jsonOptions)) ?? "{}")}".utf8), headers: headers)
        }

        /// A native error response as HTTP.
        static func native(_ error: Sluice_V1_Error) -> Answer {
            var headers: [(String, String)] = []
            let status: HTTPResponseStatus
            switch error.code {
            case .unauthenticated:
                status = .unauthorized
                headers.append(("WWW-Authenticate", "Bearer realm=\"sluice\""))
            case .forbidden: status = .forbidden
            case .quotaExceeded:
                status = .tooManyRequests
                headers.append(("Retry-After", "\(max(1, (error.retryAfterMs + 999) / 1_000))"))
            case .overloaded, .shuttingDown, .unavailable: status = .serviceUnavailable
            case .internal: status = .internalServerError
            case .unsupported: status = .notImplemented
            default: status = .badRequest
            }
            return Answer.error(status, error.code, error.message, headers: headers)
        }
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let dispatcher: RequestDispatcher
        let requiresToken: Bool
        let address: String
        var head: HTTPRequestHead?
        var body: ByteBuffer?
        /// The body grew past `server.max_frame_bytes`: answered 413, the rest ignored.
        var tooLarge = false
        /// Requests read and not yet answered (NIO's pipelining handler passes one at a time).
        var pending = 0
        /// The client closed its side: the connection closes once every request is answered.
        var inputClosed = false

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, event == .inputClosed {
                inputClosed = true
                if pending == 0 { context.close(promise: nil) }
            }
            context.fireUserInboundEventTriggered(event)
        }

        init(dispatcher: RequestDispatcher, requiresToken: Bool, address: String) {
            self.dispatcher = dispatcher
            self.requiresToken = requiresToken
            self.address = address
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = nil
                tooLarge = false
                if let length = head.headers.first(name: "Content-Length").flatMap(Int.init), length > dispatcher.configuration.maxFrameBytes {
                    tooLarge = true
                }
            case .body(var part):
                guard !tooLarge else { return }
                if (body?.readableBytes ?? 0) + part.readableBytes > dispatcher.configuration.maxFrameBytes {
                    tooLarge = true
                    body = nil
                } else if body == nil {
                    body = part
                } else {
                    body!.writeBuffer(&part)
                }
            case .end:
                guard let head else { return }
                self.head = nil
                let bytes = body.map { Array($0.readableBytesView) } ?? []
                body = nil
                if tooLarge {
                    write(.error(.payloadTooLarge, .invalidArgument, "the body is larger than server.max_frame_bytes (\(dispatcher.configuration.maxFrameBytes) bytes)"),
                          head: head, context: context, close: true)
                    return
                }
                pending += 1
                let future = answer(head, bytes, loop: context.eventLoop)
                future.whenComplete { result in
                    let answer = (try? result.get()) ?? .error(.internalServerError, .internal, "the request could not be answered")
                    self.write(answer, head: head, context: context, close: false)
                }
            }
        }

        func write(_ answer: Answer, head: HTTPRequestHead, context: ChannelHandlerContext, close: Bool) {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: "\(answer.body.count + 1)")
            for (name, value) in answer.headers { headers.add(name: name, value: value) }
            let keepAlive = head.isKeepAlive && !close
            headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: answer.status, headers: headers))), promise: nil)
            var buffer = context.channel.allocator.buffer(capacity: answer.body.count + 1)
            buffer.writeBytes(answer.body)
            buffer.writeInteger(UInt8(ascii: "\n"))
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            pending = max(0, pending - 1)
            if !keepAlive || (inputClosed && pending == 0) { done.whenComplete { _ in context.close(promise: nil) } }
        }

        func answer(_ head: HTTPRequestHead, _ body: [UInt8], loop: any EventLoop) -> EventLoopFuture<Answer> {
            let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
            let path = String(parts.first ?? "")
            let query = parts.count > 1 ? String(parts[1]) : ""
            var route: Route
            switch Route.find(method: head.method, path: path) {
            case .success(let found): route = found
            case .failure(let answer): return loop.makeSucceededFuture(answer)
            }
            if head.method == .POST {
                let type = head.headers.first(name: "Content-Type")?.lowercased() ?? ""
                guard type.hasPrefix("application/json") else {
                    return loop.makeSucceededFuture(.error(.unsupportedMediaType, .invalidArgument,
                                                           "the body must be JSON: Content-Type: application/json, got '\(type)'"))
                }
            }
            let requests: [WireRequest]
            do {
                requests = try route.requests(body: body, query: query)
            } catch {
                return loop.makeSucceededFuture(.error(.badRequest, .invalidArgument, error.message))
            }
            let token = head.headers.first(name: "Authorization").map { String($0.trimmingPrefix("Bearer ").trimmingPrefix("bearer ")) }
            let call = FrontCall(dispatcher: dispatcher, loop: loop, address: address, requiresToken: requiresToken)
            let answering = route
            return call.answers(requests, token: token).map { responses in answering.answer(responses) }
        }
    }

    /// A request body that cannot be read, in words.
    struct BadRequest: Error {
        var message: String
    }

    /// What a path asks for.
    enum Route {
        case check(single: Bool)
        case release
        case report
        case reputation(subject: String)

        static func find(method: HTTPMethod, path: String) -> Result<Route, Answer> {
            let route: Route
            let wanted: HTTPMethod
            switch path {
            case "/v1/check": (route, wanted) = (.check(single: true), .POST)
            case "/v1/release": (route, wanted) = (.release, .POST)
            case "/v1/report": (route, wanted) = (.report, .POST)
            default:
                guard path.hasPrefix("/v1/reputation/"), path.count > "/v1/reputation/".count else {
                    return .failure(.error(.notFound, .unsupported, "no such path: try POST /v1/check, /v1/release, /v1/report or GET /v1/reputation/{subject}"))
                }
                let encoded = String(path.dropFirst("/v1/reputation/".count))
                guard let subject = encoded.removingPercentEncoding else {
                    return .failure(.error(.badRequest, .invalidArgument, "the subject in the path is not valid percent-encoding"))
                }
                (route, wanted) = (.reputation(subject: subject), .GET)
            }
            guard method == wanted else {
                return .failure(.error(.methodNotAllowed, .unsupported, "use \(wanted) for \(path)", headers: [("Allow", "\(wanted)")]))
            }
            return .success(route)
        }

        /// The native requests the body (or the query) makes.
        /// (A `CheckRequest` body makes this route a batch's.)
        mutating func requests(body: [UInt8], query: String) throws(BadRequest) -> [WireRequest] {
            var request = WireRequest()
            switch self {
            case .check:
                let object = try Self.object(body)
                if object["checks"] != nil {
                    self = .check(single: false)
                    request.check = try Self.decode(Sluice_V1_CheckRequest.self, body)
                } else {
                    request.check.checks = [try Self.decode(Sluice_V1_Check.self, body)]
                }
                return [request]
            case .release:
                request.release = try Self.decode(Sluice_V1_ReleaseRequest.self, body)
                return [request]
            case .report:
                let object = try Self.object(body)
                let unknown = Set(object.keys).subtracting(["events", "durable", "outcomes"])
                guard unknown.isEmpty else { throw BadRequest(message: "unknown field \(unknown.sorted().joined(separator: ", ")); expected events, durable, outcomes") }
                var requests: [WireRequest] = []
                if object["events"] != nil {
                    let events = object.filter { $0.key != "outcomes" }
                    request.recordEvents = try Self.decode(Sluice_V1_RecordEventsRequest.self, Self.serialize(events))
                    requests.append(request)
                }
                if let outcomes = object["outcomes"] {
                    var report = WireRequest()
                    report.reportOutcome = try Self.decode(Sluice_V1_ReportOutcomeRequest.self, Self.serialize(["outcomes": outcomes]))
                    requests.append(report)
                }
                guard !requests.isEmpty else { throw BadRequest(message: "nothing to report: give events, outcomes or both") }
                return requests
            case .reputation(let subject):
                var get = Sluice_V1_GetReputationRequest()
                get.subject = subject
                for pair in query.split(separator: "&") {
                    let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    let key = String(kv[0]), value = kv.count > 1 ? (String(kv[1]).removingPercentEncoding ?? "") : ""
                    switch key {
                    case "tenant": get.tenant = value
                    case "recent_events":
                        guard let count = UInt32(value) else { throw BadRequest(message: "recent_events must be a whole number, got '\(value)'") }
                        get.recentEvents = count
                    default: throw BadRequest(message: "unknown query parameter '\(key)'; expected tenant, recent_events")
                    }
                }
                request.getReputation = get
                return [request]
            }
        }

        /// The answer to the native responses.
        func answer(_ responses: [WireResponse]) -> Answer {
            if let failed = responses.first(where: { if case .error = $0.body { true } else { false } }), case .error(let error) = failed.body {
                return .native(error)
            }
            func json(_ message: some SwiftProtobuf.Message) -> [UInt8] {
                Array(((try? message.jsonString(options: HTTPAPI.jsonOptions)) ?? "{}").utf8)
            }
            switch (self, responses.first?.body) {
            case (.check(let single), .check(let response)):
                guard single, response.verdicts.count == 1, let verdict = response.verdicts.first else {
                    let verdicts = response.verdicts.map { String(decoding: Self.verdictJSON($0), as: UTF8.self) }
                    return Answer(status: .ok, body: Array("{\"verdicts\":[\(verdicts.joined(separator: ","))]}".utf8))
                }
                return Answer(status: .ok, body: Self.verdictJSON(verdict), headers: Self.headers(verdict))
            case (.release, .release(let response)): return Answer(status: .ok, body: json(response))
            case (.reputation, .getReputation(let response)): return Answer(status: .ok, body: json(response))
            case (.report, _):
                var parts: [String] = []
                for response in responses {
                    switch response.body {
                    case .recordEvents(let events): parts.append("\"events\":" + String(decoding: json(events), as: UTF8.self))
                    case .reportOutcome(let outcomes): parts.append("\"outcomes\":" + String(decoding: json(outcomes), as: UTF8.self))
                    default: break
                    }
                }
                return Answer(status: .ok, body: Array("{\(parts.joined(separator: ","))}".utf8))
            default:
                return .error(.internalServerError, .internal, "the daemon answered something unexpected")
            }
        }

        /// A verdict's JSON with its five first fields always there (`allowed`, `limit`,
        /// `remaining`, `reset_after_ms`, `retry_after_ms`): proto3's JSON leaves out a field at
        /// its default, and a caller reading `allowed` should not have to know that. The rest is
        /// swift-protobuf's mapping of the fields after them.
        static func verdictJSON(_ verdict: Sluice_V1_Verdict) -> [UInt8] {
            var rest = verdict
            rest.allowed = false
            rest.limit = 0
            rest.remaining = 0
            rest.resetAfterMs = 0
            rest.retryAfterMs = 0
            let tail = (try? rest.jsonString(options: HTTPAPI.jsonOptions)) ?? "{}"
            var text = "{\"allowed\":\(verdict.allowed),\"limit\":\(verdict.limit),\"remaining\":\(verdict.remaining),"
                + "\"reset_after_ms\":\(verdict.resetAfterMs),\"retry_after_ms\":\(verdict.retryAfterMs)"
            text += tail == "{}" ? "}" : "," + tail.dropFirst()
            return Array(text.utf8)
        }

        /// RateLimit headers for one verdict, and `Retry-After` when it was denied.
        static func headers(_ verdict: Sluice_V1_Verdict) -> [(String, String)] {
            RateLimitHeaderFields.fields(for: verdict).map { ($0.name, $0.value) }
        }

        static func object(_ body: [UInt8]) throws(BadRequest) -> [String: Any] {
            guard !body.isEmpty else { throw BadRequest(message: "the body is empty; expected a JSON object") }
            let parsed: Any
            do {
                parsed = try JSONSerialization.jsonObject(with: Data(body))
            } catch {
                throw BadRequest(message: "the body is not valid JSON: \(error.localizedDescription)")
            }
            guard let object = parsed as? [String: Any] else { throw BadRequest(message: "the body must be a JSON object") }
            return object
        }

        static func serialize(_ object: [String: Any]) throws(BadRequest) -> [UInt8] {
            do {
                return Array(try JSONSerialization.data(withJSONObject: object))
            } catch {
                throw BadRequest(message: "the body could not be read: \(error.localizedDescription)")
            }
        }

        static func decode<Message: SwiftProtobuf.Message>(_ type: Message.Type, _ body: [UInt8]) throws(BadRequest) -> Message {
            guard !body.isEmpty else { throw BadRequest(message: "the body is empty; expected a JSON object") }
            let name = Message.protoMessageName.split(separator: ".").last.map(String.init) ?? "message"
            do {
                return try Message(jsonUTF8Bytes: body, options: HTTPAPI.decodingOptions)
            } catch let error as JSONDecodingError {
                throw BadRequest(message: "the body is not a valid \(name): \(Self.sentence(error))")
            } catch {
                throw BadRequest(message: "the body is not a valid \(name): \(error)")
            }
        }

        /// swift-protobuf's JSON error, in words (it names no field, except an unknown one).
        static func sentence(_ error: JSONDecodingError) -> String {
            switch error {
            case .unknownField(let field): "unknown field '\(field)'"
            case .numberRange: "a number is out of range for its field (hits, limit, period_ms, now_ms … are unsigned 64-bit)"
            case .malformedNumber, .leadingZero: "a number is malformed"
            case .malformedBool: "a field that takes true or false has something else"
            case .malformedString, .invalidUTF8: "a string is malformed"
            case .unrecognizedEnumValue: "an enum field has a value it does not know (e.g. algorithm: ALGORITHM_GCRA)"
            case .illegalNull: "null where a value is needed"
            case .truncated: "the JSON ends early"
            case .trailingGarbage: "there is something after the JSON object"
            case .conflictingOneOf: "both rule and limit are given; a check names one"
            case .messageDepthLimit: "objects are nested too deep"
            case .schemaMismatch: "a field has a value of the wrong type"
            default: "\(error)"
            }
        }
    }
}
