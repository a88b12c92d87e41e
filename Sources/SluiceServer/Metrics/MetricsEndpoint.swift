import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SluiceConfiguration

/// The operator's HTTP listener: `GET /metrics` (Prometheus text format), `GET /healthz` (the
/// process answers) and `GET /readyz` (it serves checks: listeners bound, not shutting down).
/// Anything else is a 404 or 405. Requests have no body; one larger than a few kilobytes of
/// headers is refused by the HTTP parser. With `metrics.tls` it speaks TLS only; with
/// `metrics.bearer_token_file`, `/metrics` answers 401 without `Authorization: Bearer <token>`
/// (`/healthz` and `/readyz` stay open: load balancers probe them without credentials).
enum MetricsEndpoint {
    /// What `/readyz` reports.
    struct Readiness: Sendable {
        var ready: Bool
        var reason: String
    }

    static func bind(_ listener: Configuration.TCPListener, group: any EventLoopGroup, exporter: MetricsExporter,
                     tls: ListenerTLS? = nil, token: MetricsToken? = nil,
                     readiness: @escaping @Sendable () -> Readiness, logger: Logger) async throws -> any Channel {
        try await bootstrap(group, backlog: 64, tls: tls) { _ in HTTPHandler(exporter: exporter, readiness: readiness, token: token) }
            .bind(host: listener.host, port: listener.port).get()
    }

    /// An HTTP/1.1 server: TLS first when `tls` is given, NIO's HTTP pipeline (with its
    /// pipelining and error handling), then the handler `makeHandler` makes for each connection.
    static func bootstrap(_ group: any EventLoopGroup, backlog: Int32, tls: ListenerTLS?,
                          makeHandler: @escaping @Sendable (any Channel) -> any ChannelInboundHandler) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                do {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current)) }
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
                return channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(makeHandler(channel))
                }
            }
    }

    final class HTTPHandler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let exporter: MetricsExporter
        let readiness: @Sendable () -> Readiness
        let token: MetricsToken?
        var head: HTTPRequestHead?

        init(exporter: MetricsExporter, readiness: @escaping @Sendable () -> Readiness, token: MetricsToken?) {
            self.exporter = exporter
            self.readiness = readiness
            self.token = token
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): self.head = head
            case .body: break
            case .end:
                guard let head else { return }
                self.head = nil
                respond(to: head, context: context)
            }
        }

        func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let status: HTTPResponseStatus
            var contentType = "text/plain; charset=utf-8"
            var body: [UInt8]
            var headers = HTTPHeaders()
            // (A `where` on a case of two patterns would guard the last one only.)
            let refused = path == "/metrics" && token?.accepts(head.headers.first(name: "Authorization")) == false
            switch (head.method, path) {
            case (.GET, "/metrics") where refused, (.HEAD, "/metrics") where refused:
                status = .unauthorized
                headers.add(name: "WWW-Authenticate", value: "Bearer realm=\"sluice metrics\"")
                body = Array("a bearer token is required: Authorization: Bearer <metrics.bearer_token_file's token>\n".utf8)
            case (.GET, "/metrics"), (.HEAD, "/metrics"):
                status = .ok
                contentType = "text/plain; version=0.0.4; charset=utf-8"
                body = exporter.render()
            case (.GET, "/healthz"), (.HEAD, "/healthz"):
                status = .ok
                body = Array("ok\n".utf8)
            case (.GET, "/readyz"), (.HEAD, "/readyz"):
                let readiness = readiness()
                status = readiness.ready ? .ok : .serviceUnavailable
                body = Array("\(readiness.reason)\n".utf8)
            case (_, "/metrics"), (_, "/healthz"), (_, "/readyz"):
                status = .methodNotAllowed
                body = Array("use GET\n".utf8)
            default:
                status = .notFound
                body = Array("not found: try /metrics, /healthz or /readyz\n".utf8)
            }
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: "\(body.count)")
            if head.method == .HEAD { body = [] }
            let keepAlive = head.isKeepAlive
            headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if !body.isEmpty {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
            }
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive { done.whenComplete { _ in context.close(promise: nil) } }
        }
    }
}
