import Foundation
import SluiceLoad

/// Real X.509 files made by the `openssl` command for a test: a certificate authority, and a
/// server certificate it signed for `localhost` and 127.0.0.1 (what a client connecting to a
/// test server verifies).
public struct TestCertificates: Sendable {
    /// The folder holding them.
    public let directory: String
    /// The authority's certificate (PEM): the root a verifying client trusts.
    public var authority: String { directory + "/ca.pem" }
    /// The server's certificate (PEM) and its private key.
    public var certificate: String { directory + "/server.pem" }
    public var key: String { directory + "/server.key" }

    /// Whether `openssl` is installed.
    public static var installed: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") }

    /// Makes a new authority and a server certificate it signed, valid for a day, in a new folder.
    public static func make() throws -> TestCertificates {
        let directory = NSTemporaryDirectory() + "sluice-tls-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory + "/issued", withIntermediateDirectories: true)
        let certificates = TestCertificates(directory: directory)
        // `openssl ca`: the one of openssl's commands that dates a certificate as asked (an
        // expired one included).
        try "".write(toFile: directory + "/index.txt", atomically: true, encoding: .utf8)
        try "1000\n".write(toFile: directory + "/serial", atomically: true, encoding: .utf8)
        try """
            [ ca ]
            default_ca = test
            [ test ]
            database = \(directory)/index.txt
            serial = \(directory)/serial
            new_certs_dir = \(directory)/issued
            default_md = sha256
            policy = any
            unique_subject = no
            [ any ]
            commonName = supplied
            """.write(toFile: directory + "/ca.cnf", atomically: true, encoding: .utf8)
        try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory + "/ca.key", "-out", certificates.authority,
                     "-days", "1", "-subj", "/CN=Sluice test authority \(UUID().uuidString.prefix(8))"])
        let server = try certificates.issue("server", commonName: "localhost")
        precondition(server.certificate == certificates.certificate && server.key == certificates.key)
        return certificates
    }

    /// A certificate this authority signed, and its key, as `NAME.pem` and `NAME.key`: for the
    /// server (`localhost` and 127.0.0.1) or, with `client`, for a client named `commonName`;
    /// with `expired`, valid only for a day in 2020.
    @discardableResult
    public func issue(_ name: String, commonName: String, client: Bool = false, expired: Bool = false) throws -> (certificate: String, key: String) {
        let certificate = directory + "/\(name).pem", key = directory + "/\(name).key"
        try (client ? "extendedKeyUsage = clientAuth\n" : "subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n")
            .write(toFile: directory + "/\(name).ext", atomically: true, encoding: .utf8)
        try Self.openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", directory + "/\(name).csr", "-subj", "/CN=\(commonName)"])
        var dates = ["-days", "1"]
        if expired { dates = ["-startdate", "20200101000000Z", "-enddate", "20200102000000Z"] }
        try Self.openssl(["ca", "-batch", "-config", directory + "/ca.cnf", "-cert", authority, "-keyfile", directory + "/ca.key",
                          "-in", directory + "/\(name).csr", "-out", certificate, "-extfile", directory + "/\(name).ext", "-notext"] + dates)
        return (certificate, key)
    }

    static func openssl(_ arguments: [String]) throws {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        let (status, output) = try ChildProcess.output(of: process)
        guard status == 0 else {
            throw NSError(domain: "TestCertificates", code: Int(status), userInfo: [NSLocalizedDescriptionKey: "openssl \(arguments.first ?? "") failed: \(output)"])
        }
    }

    /// Deletes the folder.
    public func remove() { try? FileManager.default.removeItem(atPath: directory) }
}
