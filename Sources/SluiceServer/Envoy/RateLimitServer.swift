import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Logging
import NIOPosix
import SluiceConfiguration
import SluiceCore

/// `envoy.service.ratelimit.v3.RateLimitService`, registered by hand on grpc-swift-2 (one unary
/// method; no generated service code), answered by ``EnvoyFront``.
struct RateLimitService: RegistrableRPCService {
    static let method = MethodDescriptor(fullyQualifiedService: "envoy.service.ratelimit.v3.RateLimitService", method: "ShouldRateLimit")

    let front: EnvoyFront
    /// The listener requires a token (`authorization: Bearer sluice_…` in the call's metadata).
    let requiresToken: Bool

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let front = front, requiresToken = requiresToken
        router.registerHandler(forMethod: Self.method, deserializer: ProtobufDeserializer<EnvoyFront.Request>(),
                               serializer: ProtobufSerializer<EnvoyFront.Response>()) { request, context in
            let single = try await ServerRequest(stream: request)
            do throws(EnvoyFront.Failure) {
                let response = try await front.answer(single.message, token: Self.token(in: single.metadata),
                                                      address: Self.address(of: context.remotePeer), requiresToken: requiresToken)
                return StreamingServerResponse(single: ServerResponse(message: response))
            } catch {
                throw RPCError(code: Self.code(error.kind), message: error.message)
            }
        }
    }

    /// The token from `authorization: Bearer …` (or `x-sluice-token`), if any.
    static func token(in metadata: Metadata) -> String? {
        if let value = metadata[stringValues: "authorization"].first(where: { _ in true }) {
            let trimmed = value.trimmingPrefix("Bearer ").trimmingPrefix("bearer ")
            return String(trimmed)
        }
        return metadata[stringValues: "x-sluice-token"].first(where: { _ in true })
    }

    /// The caller's address from grpc's peer (`ipv4:203.0.113.7:5123`, `ipv6:[::1]:5123`,
    /// `unix:/path`): the address alone, for failure limits.
    static func address(of peer: String) -> String {
        if peer.hasPrefix("ipv4:") {
            let rest = peer.dropFirst(5)
            return String(rest.split(separator: ":").first ?? rest)
        }
        if peer.hasPrefix("ipv6:["), let end = peer.firstIndex(of: "]") {
            return String(peer[peer.index(peer.startIndex, offsetBy: 6)..<end])
        }
        return "unix"
    }

    static func code(_ kind: EnvoyFront.Failure.Kind) -> RPCError.Code {
        switch kind {
        case .invalidArgument: .invalidArgument
        case .unauthenticated: .unauthenticated
        case .permissionDenied: .permissionDenied
        case .resourceExhausted: .resourceExhausted
        case .unavailable: .unavailable
        case .internal: .internalError
        }
    }
}

/// The gRPC listeners of Envoy's service (`envoy.listen`): one grpc-swift-2 server per listener
/// on the daemon's own event loops, started with the daemon and drained with the other
/// listeners at shutdown.
final class RateLimitServers: Sendable {
    struct Running: Sendable {
        let server: GRPCServer<HTTP2ServerTransport.Posix>
        let task: Task<Void, any Error>
        let description: String
    }

    let running: [Running]
    /// The TCP addresses bound (with the ports actually bound, for port 0).
    let tcpPorts: [Int]

    init(running: [Running], tcpPorts: [Int]) {
        self.running = running
        self.tcpPorts = tcpPorts
    }

    /// Binds every listener of `settings`; throws naming the listener that could not be bound
    /// (after closing those that were).
    static func start(_ settings: Configuration.EnvoySettings, front: EnvoyFront, group: MultiThreadedEventLoopGroup,
                      maximumMessageBytes: Int, logger: Logger) async throws -> RateLimitServers {
        var running: [Running] = []
        var ports: [Int] = []
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.rpc.maxRequestPayloadSize = maximumMessageBytes
        do {
            for listener in settings.unixListeners {
                try UnixSocketPath.prepare(listener.path)
                let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: listener.path), transportSecurity: .plaintext,
                                                           config: config, eventLoopGroup: group)
                let server = try await serve(transport, RateLimitService(front: front, requiresToken: listener.auth == .token),
                                             description: "unix \(listener.path)", into: &running)
                _ = server
                try UnixSocketPath.setMode(listener.path, listener.mode)
                logger.info("serving envoy's rate limit service", metadata: ["envoy.listen.unix": "\(listener.path)", "listen.auth": "\(listener.auth)"])
            }
            for listener in settings.tcpListeners {
                let address: GRPCNIOTransportCore.SocketAddress = listener.host.contains(":")
                    ? .ipv6(host: listener.host, port: listener.port) : .ipv4(host: listener.host, port: listener.port)
                var security = HTTP2ServerTransport.Posix.TransportSecurity.plaintext
                if let tls = listener.tls {
                    let chain: [TLSConfig.CertificateSource] = [.file(path: tls.certificate, format: .pem)]
                    let key = TLSConfig.PrivateKeySource.file(path: tls.key, format: .pem)
                    if let ca = tls.clientCA {
                        security = .mTLS(certificateChain: chain, privateKey: key) { config in
                            config.trustRoots = .certificates([.file(path: ca, format: .pem)])
                        }
                    } else {
                        security = .tls(certificateChain: chain, privateKey: key)
                    }
                }
                let transport = HTTP2ServerTransport.Posix(address: address, transportSecurity: security, config: config, eventLoopGroup: group)
                _ = try await serve(transport, RateLimitService(front: front, requiresToken: listener.auth == .token),
                                    description: "\(listener)", into: &running)
                let bound = try await transport.listeningAddress
                if let port = bound.ipv4?.port ?? bound.ipv6?.port { ports.append(port) }
                logger.info("serving envoy's rate limit service", metadata: ["envoy.listen.tcp": "\(bound)", "listen.tls": "\(listener.tls == nil ? "off" : "on")",
                                                                             "listen.auth": "\(listener.auth)"])
            }
        } catch {
            let partial = RateLimitServers(running: running, tcpPorts: ports)
            await partial.stop()
            throw error
        }
        return RateLimitServers(running: running, tcpPorts: ports)
    }

    /// Starts `service` on `transport` and waits until it listens (or failed to).
    static func serve(_ transport: HTTP2ServerTransport.Posix, _ service: RateLimitService, description: String,
                      into running: inout [Running]) async throws -> GRPCServer<HTTP2ServerTransport.Posix> {
        let server = GRPCServer(transport: transport, services: [service])
        // Every call's task runs on the front's loop (LoopTaskExecutor), as its checks do.
        let executor = LoopTaskExecutor(service.front.loop)
        let task = Task(executorPreference: executor) { try await server.serve() }
        do {
            _ = try await transport.listeningAddress
        } catch {
            server.beginGracefulShutdown()
            _ = try? await task.value
            throw SluiceError(.addressInUse, "cannot serve envoy's rate limit service on \(description): \(error)")
        }
        running.append(Running(server: server, task: task, description: description))
        return server
    }

    /// Stops accepting calls, lets those in flight finish (at most `deadline`), then stops.
    func stop(deadline: Duration = .seconds(10)) async {
        for entry in running { entry.server.beginGracefulShutdown() }
        for entry in running {
            let task = entry.task
            let timer = Task {
                try await Task.sleep(for: deadline)
                task.cancel()
            }
            _ = try? await task.value
            timer.cancel()
        }
    }
}
