import NIOSSL

/// How a client speaks TLS to a daemon's TLS listener: whom to trust, and optionally the
/// client's own certificate (for a listener that requires one).
public struct ClientTLS: Sendable {
    /// Certificate authorities (a PEM file) the daemon's certificate must chain to; nil: the
    /// system's trusted roots.
    public var authority: String?
    /// The client's certificate chain and key (PEM files), for mutual TLS.
    public var certificate: String?
    public var key: String?
    /// The name the daemon's certificate must carry; nil: the endpoint's host (an IP address is
    /// checked against the certificate's IP addresses).
    public var serverName: String?

    public init(authority: String? = nil, certificate: String? = nil, key: String? = nil, serverName: String? = nil) {
        self.authority = authority
        self.certificate = certificate
        self.key = key
        self.serverName = serverName
    }

    /// The context a connection uses: the daemon's certificate is always verified.
    func makeContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let authority { configuration.trustRoots = .file(authority) }
        if let certificate {
            configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
            guard let key else { throw ClientTLSError("a client certificate needs its key") }
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
        }
        return try NIOSSLContext(configuration: configuration)
    }

    /// Whether `host` is an IP address (TLS's server name must be a DNS name).
    static func isAddress(_ host: String) -> Bool {
        host.contains(":") || host.split(separator: ".").count == 4 && host.allSatisfy { $0.isNumber || $0 == "." }
    }
}

/// A TLS setting that cannot work, in words.
public struct ClientTLSError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
