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
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let certificates = TestCertificates(directory: directory)
        try """
            subjectAltName = DNS:localhost, IP:127.0.0.1
            extendedKeyUsage = serverAuth
            """.write(toFile: directory + "/server.ext", atomically: true, encoding: .utf8)
        try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory + "/ca.key", "-out", certificates.authority,
                     "-days", "1", "-subj", "/CN=Sluice test authority"])
        try openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", certificates.key, "-out", directory + "/server.csr",
                     "-subj", "/CN=localhost"])
        try openssl(["x509", "-req", "-in", directory + "/server.csr", "-CA", certificates.authority, "-CAkey", directory + "/ca.key",
                     "-CAcreateserial", "-out", certificates.certificate, "-days", "1", "-extfile", directory + "/server.ext"])
        return certificates
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
