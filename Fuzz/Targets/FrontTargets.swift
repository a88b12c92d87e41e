import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import SluiceConfiguration
import SluiceProto
import SluiceServer

/// Envoy's `ShouldRateLimit` over a dispatcher whose domains use every kind of descriptor
/// (nested, wildcards shared and not, unlimited, 0 per unit, shadow, quota mode, replaces,
/// Sluice's algorithms): a request's bytes either do not decode, or are answered with one
/// status per descriptor and an overall code envoy ratelimit would give, or are refused with a
/// sentence.
///
/// Input: a `RateLimitRequest`'s bytes.
final class EnvoyTarget: @unchecked Sendable {
    static let shared = EnvoyTarget()

    static let yaml = DispatcherTarget.base + """
    features:
      reputation: { enabled: true }
    envoy:
      headers: both
      domains:
        - domain: edge
          descriptors:
            - key: remote_address
              rate_limit: { unit: second, requests_per_unit: 3, algorithm: gcra, burst: 2, limits: [{ limit: 10, period: 1m }] }
            - key: path
              value: /api/*
              share_threshold: true
              rate_limit: { unit: minute, requests_per_unit: 2, name: api }
            - key: path
              value: /a*b*c
              rate_limit: { unit: hour, requests_per_unit: 1 }
            - key: source
              value: proxy
              descriptors:
                - key: destination
                  rate_limit: { unit: week, requests_per_unit: 2, replaces: [{ name: api }] }
                - key: destination
                  value: free
                  rate_limit: { unlimited: true }
                - key: destination
                  value: banned
                  rate_limit: { unit: second, requests_per_unit: 0 }
            - key: service
              quota_mode: true
              rate_limit: { unit: month, requests_per_unit: 1 }
            - key: trial
              shadow_mode: true
              rate_limit: { unit: year, requests_per_unit: 1, algorithm: sliding_window }
    """

    let standalone: StandaloneDispatcher
    let loop = EmbeddedEventLoop()

    init() {
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        do {
            standalone = StandaloneDispatcher(configuration: try ConfigurationLoader.parse(Self.yaml, source: "fuzz-envoy.yaml"), logger: logger,
                                              withBackground: false)
        } catch {
            fatalError("the envoy target's configuration is invalid: \(error)")
        }
    }

    func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        switch standalone.shouldRateLimit(Array(bytes), on: loop) {
        case .undecodable: return nil
        case .pending: return "a request decided on the local table was not answered at once"
        case .refused(let message): return message.isEmpty ? "a refusal without a sentence" : nil
        case .answered(let descriptors, let response):
            guard response.statuses.count == descriptors else {
                return "\(descriptors) descriptors but \(response.statuses.count) statuses"
            }
            let over = response.statuses.contains { $0.code == .overLimit }
            if response.overallCode == .overLimit, !over { return "OVER_LIMIT overall with no descriptor over its limit" }
            if response.overallCode == .unknown { return "an overall code of UNKNOWN" }
            if response.statuses.contains(where: { $0.code == .unknown }) { return "a descriptor status of UNKNOWN" }
            return nil
        }
    }
}

/// The HTTP/JSON API as a connection meets it: the bytes go through NIO's HTTP server pipeline
/// (the parser, pipelining, its error handling) into the API's handler over a dispatcher with
/// rules of every kind; every answer the connection writes is an HTTP/1.1 response whose body is
/// a JSON object.
///
/// Input: the bytes a client sends.
enum HTTPTarget {
    static let standalone: StandaloneDispatcher = {
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        do {
            return StandaloneDispatcher(configuration: try ConfigurationLoader.parse(DispatcherTarget.yaml, source: "fuzz.yaml"), logger: logger,
                                        withBackground: false)
        } catch {
            fatalError("the dispatcher target's configuration is invalid: \(error)")
        }
    }()

    static func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        // A real connection on the daemon's kind of event loop (answers that take a background
        // queue complete from another thread, which an embedded loop does not allow): one end of
        // a socket pair served by the API, the other written and read here.
        var ends: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0 else { return nil }
        let ours = ends[1]
        defer { close(ours) }
        let served: any Channel
        do {
            served = try ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(standalone.httpHandler())
                    }
                }
                .withConnectedSocket(ends[0]).wait()
        } catch {
            close(ends[0])
            return nil
        }
        // Closed and released before the next input: libFuzzer counts memory still held when an
        // input returns as leaked, and a channel closing on its loop is still held for a moment.
        defer {
            try? served.close().wait()
            try? served.closeFuture.wait()
            try? served.eventLoop.submit {}.wait()
        }
        var offset = 0
        while offset < bytes.count {
            let sent = send(ours, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if sent <= 0 { break }
            offset += sent
        }
        shutdown(ours, Int32(SHUT_WR))
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(ours, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var written: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(ours, &chunk, chunk.count, 0)
            if count <= 0 {
                if count < 0, errno == EAGAIN || errno == EWOULDBLOCK { return "the connection was not closed within 10 s of the client's end" }
                break
            }
            written += chunk[0..<count]
        }
        return check(written)
    }

    /// Every response in `bytes`: a status line, headers with Content-Length, and that many
    /// bytes of a JSON object (NIO's own 400 for unparsable requests has no body).
    static func check(_ bytes: [UInt8]) -> String? {
        var rest = bytes[...]
        let separator: [UInt8] = [13, 10, 13, 10]
        while !rest.isEmpty {
            guard let end = rest.firstRange(of: separator) else { return "a response head without its end" }
            let head = String(decoding: rest[..<end.lowerBound], as: UTF8.self)
            guard head.hasPrefix("HTTP/1.") else { return "a response that does not start with a status line: \(head.prefix(40))" }
            let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
            let bodyStart = end.upperBound
            guard rest.distance(from: bodyStart, to: rest.endIndex) >= length else { return "a body shorter than its Content-Length" }
            let body = rest[bodyStart..<rest.index(bodyStart, offsetBy: length)]
            if length > 0 {
                guard (try? JSONSerialization.jsonObject(with: Data(body))) is [String: Any] else {
                    return "a body that is not a JSON object: \(String(decoding: body.prefix(80), as: UTF8.self))"
                }
            }
            rest = rest[rest.index(bodyStart, offsetBy: length)...]
        }
        return nil
    }
}
