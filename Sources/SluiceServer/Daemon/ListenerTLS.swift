import NIOConcurrencyHelpers
import NIOSSL
import SluiceConfiguration
import SluiceCore

/// A TLS listener's server context, read from its files at start and read again at each reload:
/// new connections get the newest; those open keep theirs (nothing is dropped by a rotation).
final class ListenerTLS: Sendable {
    let files: Configuration.TLSFiles
    /// Offered by ALPN (`h2` for gRPC); none for the framed protocol.
    let applicationProtocols: [String]
    let context: NIOLockedValueBox<NIOSSLContext>

    /// Reads `files`; throws, in words, when a file cannot be read or does not hold what it should.
    init(_ files: Configuration.TLSFiles, applicationProtocols: [String] = []) throws(SluiceError) {
        self.files = files
        self.applicationProtocols = applicationProtocols
        context = NIOLockedValueBox(try Self.makeContext(files, applicationProtocols: applicationProtocols))
    }

    /// The context for a new connection.
    var current: NIOSSLContext { context.withLockedValue { $0 } }

    /// Reads the files again (a rotated certificate); on failure the context in force stays and
    /// the error says why.
    func reload() throws(SluiceError) {
        let fresh = try Self.makeContext(files, applicationProtocols: applicationProtocols)
        context.withLockedValue { $0 = fresh }
    }

    static func makeContext(_ files: Configuration.TLSFiles, applicationProtocols: [String] = []) throws(SluiceError) -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(files.certificate)
        } catch {
            throw SluiceError(.invalidConfiguration, "TLS certificate \(files.certificate): cannot read a PEM certificate chain: \(error)")
        }
        guard !chain.isEmpty else { throw SluiceError(.invalidConfiguration, "TLS certificate \(files.certificate): no certificate in the file") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: files.key, format: .pem)
        } catch {
            throw SluiceError(.invalidConfiguration, "TLS key \(files.key): cannot read a PEM private key: \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = applicationProtocols
        if let authority = files.clientCA {
            do {
                let roots = try NIOSSLCertificate.fromPEMFile(authority)
                guard !roots.isEmpty else { throw SluiceError(.invalidConfiguration, "TLS client_ca \(authority): no certificate in the file") }
                configuration.trustRoots = .certificates(roots)
            } catch let error as SluiceError {
                throw error
            } catch {
                throw SluiceError(.invalidConfiguration, "TLS client_ca \(authority): cannot read PEM certificates: \(error)")
            }
            // Mutual TLS: a client without a certificate that chains to these is refused.
            configuration.certificateVerification = .noHostnameVerification
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw SluiceError(.invalidConfiguration, "TLS \(files.certificate) and \(files.key): \(error) (does the key match the certificate?)")
        }
    }
}
