import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Logging
import Glibc
import NIOCore
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

/// The gRPC listeners of Envoy's service (`envoy.listen`), on event loops of their own: one
/// lane (a one-thread event loop group) per daemon thread. Each TCP listener is a listening
/// socket per lane on one port (`SO_REUSEPORT`: the kernel spreads connections over them), each
/// served by a grpc-swift-2 server whose calls run on that lane's loop (``LoopTaskExecutor``) and
/// decide their checks there: a call never changes threads. Unix socket listeners take the first
/// lane. Started with the daemon, drained with the other listeners at shutdown.
final class RateLimitServers: Sendable {
    struct Running: Sendable {
        let server: GRPCServer<HTTP2ServerTransport.Posix>
        let task: Task<Void, any Error>
        let description: String
    }

    let running: [Running]
    /// The TCP ports bound (the ports actually bound, for port 0), in listener order.
    let tcpPorts: [Int]
    let lanes: [MultiThreadedEventLoopGroup]

    init(running: [Running], tcpPorts: [Int], lanes: [MultiThreadedEventLoopGroup]) {
        self.running = running
        self.tcpPorts = tcpPorts
        self.lanes = lanes
    }

    /// Binds every listener of `settings` on `threads` lanes, each with the front `makeFront`
    /// makes for its loop; throws naming the listener that could not be bound (after closing
    /// those that were).
    static func start(_ settings: Configuration.EnvoySettings, threads: Int, makeFront: (any EventLoop) -> EnvoyFront,
                      maximumMessageBytes: Int, logger: Logger) async throws -> RateLimitServers {
        let lanes = (0..<max(1, threads)).map { _ in MultiThreadedEventLoopGroup(numberOfThreads: 1) }
        let fronts = lanes.map { makeFront($0.next()) }
        var running: [Running] = []
        var ports: [Int] = []
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.rpc.maxRequestPayloadSize = maximumMessageBytes
        do {
            for listener in settings.unixListeners {
                try UnixSocketPath.prepare(listener.path)
                let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: listener.path), transportSecurity: .plaintext,
                                                           config: config, eventLoopGroup: lanes[0])
                try await serve(transport, RateLimitService(front: fronts[0], requiresToken: listener.auth == .token),
                                description: "unix \(listener.path)", into: &running)
                try UnixSocketPath.setMode(listener.path, listener.mode)
                logger.info("serving envoy's rate limit service", metadata: ["envoy.listen.unix": "\(listener.path)", "listen.auth": "\(listener.auth)"])
            }
            for listener in settings.tcpListeners {
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
                var port = listener.port
                for (lane, front) in zip(lanes, fronts) {
                    let socket = try ReusePortSocket.listen(host: listener.host, port: port, description: "\(listener)")
                    port = socket.port
                    let transport = HTTP2ServerTransport.Posix(listeningSocketDescriptor: Int(socket.descriptor), transportSecurity: security,
                                                               config: config, eventLoopGroup: lane)
                    try await serve(transport, RateLimitService(front: front, requiresToken: listener.auth == .token),
                                    description: "\(listener)", into: &running)
                }
                ports.append(port)
                logger.info("serving envoy's rate limit service", metadata: ["envoy.listen.tcp": "\(listener.host):\(port)",
                                                                             "listen.tls": "\(listener.tls == nil ? "off" : "on")",
                                                                             "listen.auth": "\(listener.auth)", "envoy.lanes": "\(lanes.count)"])
            }
        } catch {
            await RateLimitServers(running: running, tcpPorts: ports, lanes: lanes).stop()
            throw error
        }
        return RateLimitServers(running: running, tcpPorts: ports, lanes: lanes)
    }

    /// Starts `service` on `transport` and waits until it listens (or failed to).
    static func serve(_ transport: HTTP2ServerTransport.Posix, _ service: RateLimitService, description: String,
                      into running: inout [Running]) async throws {
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
    }

    /// Stops accepting calls, lets those in flight finish (at most `deadline`), then stops the lanes.
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
        for lane in lanes { try? await lane.shutdownGracefully() }
    }
}

/// A listening TCP socket that others may share its port with (`SO_REUSEPORT`), for a server per
/// event loop on one port.
enum ReusePortSocket {
    static func listen(host: String, port: Int, description: String) throws(SluiceError) -> (descriptor: Int32, port: Int) {
        let address: NIOCore.SocketAddress
        do {
            address = try NIOCore.SocketAddress.makeAddressResolvingHost(host, port: port)
        } catch {
            throw SluiceError(.addressInUse, "cannot serve envoy's rate limit service on \(description): \(error)")
        }
        let family = address.protocol.rawValue
        let descriptor = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw failure(description, "socket") }
        var one: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = address.withSockAddr { pointer, size in bind(descriptor, pointer, socklen_t(size)) }
        guard bound == 0, Glibc.listen(descriptor, 256) == 0 else {
            let error = failure(description, "bind")
            close(descriptor)
            throw error
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else {
            let error = failure(description, "getsockname")
            close(descriptor)
            throw error
        }
        let actual = withUnsafePointer(to: &storage) { pointer -> Int in
            pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
        return (descriptor, actual)
    }

    static func failure(_ description: String, _ call: String) -> SluiceError {
        SluiceError(.addressInUse, "cannot serve envoy's rate limit service on \(description): \(call): \(String(cString: strerror(errno)))")
    }
}
