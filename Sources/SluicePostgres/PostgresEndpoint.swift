import Foundation
import SluiceStore

/// Where a PostgreSQL store is, read from a libpq-style URL:
/// - `postgres://USER:PASSWORD@HOST:PORT/DATABASE` over TCP (`postgresql://` too; the port
///   defaults to 5432, the user to `postgres`, the database to the user's name);
/// - `postgres://USER@/DATABASE?host=/run/postgresql` over the Unix socket in that folder
///   (`.s.PGSQL.PORT` in it), as libpq reads a `host` that starts with `/`;
/// - `sslmode=disable|prefer|require|verify-full` for TCP, `prefer` by default (TLS when the
///   server offers it, as libpq does); `verify-full` checks the server's certificate and name
///   against `sslrootcert=PATH` (PEM), or the system's trusted roots without it.
/// User and password are percent-decoded. Any other parameter is refused: a misspelt
/// `sslmode` must not silently fall back to plain text.
public struct PostgresEndpoint: Sendable, Equatable, CustomStringConvertible {
    public enum Address: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public enum TLSMode: String, Sendable, Equatable {
        case disable
        case prefer
        case require
        case verifyFull = "verify-full"
    }

    public var address: Address
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    /// PEM file of the certificate authorities for `verify-full`; nil: the system's.
    public var rootCertificate: String?

    public init(address: Address, user: String, password: String? = nil, database: String, tls: TLSMode = .prefer, rootCertificate: String? = nil) {
        self.address = address
        self.user = user
        self.password = password
        self.database = database
        self.tls = tls
        self.rootCertificate = rootCertificate
    }

    /// Reads `url`; a ``StoreError`` says what is wrong with it (never echoing a password).
    public init(url text: String) throws(StoreError) {
        func fail(_ why: String) -> StoreError { StoreError("store.url: \(why) (expected postgres://user:password@host:port/database)") }
        guard let components = URLComponents(string: text) else { throw fail("not a URL") }
        guard let scheme = components.scheme, ["postgres", "postgresql"].contains(scheme.lowercased()) else {
            throw fail("the scheme must be postgres:// or postgresql://")
        }
        let user = components.percentEncodedUser.flatMap { $0.removingPercentEncoding } ?? "postgres"
        guard !user.isEmpty else { throw fail("the user is empty") }
        let password = components.percentEncodedPassword.flatMap { $0.removingPercentEncoding }
        var path = components.path
        if path.hasPrefix("/") { path.removeFirst() }
        guard !path.contains("/") else { throw fail("the database name cannot contain '/'") }
        let database = path.isEmpty ? user : (path.removingPercentEncoding ?? path)
        var socketFolder: String?
        var port = components.port
        var tls = TLSMode.prefer
        var root: String?
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "host":
                guard value.hasPrefix("/") else { throw fail("host= is for a Unix socket's folder (starting with /); put a TCP host before the path") }
                socketFolder = value
            case "port":
                guard let number = Int(value), (1...65_535).contains(number) else { throw fail("port= must be 1 to 65535") }
                port = number
            case "sslmode":
                guard let mode = TLSMode(rawValue: value) else { throw fail("sslmode= must be disable, prefer, require or verify-full, not '\(value)'") }
                tls = mode
            case "sslrootcert":
                root = value
            default:
                throw fail("unknown parameter '\(item.name)'")
            }
        }
        if let number = port, !(1...65_535).contains(number) { throw fail("the port must be 1 to 65535") }
        let address: Address
        if let host = components.host, !host.isEmpty {
            guard socketFolder == nil else { throw fail("give either a host or host=/socket/folder, not both") }
            address = .tcp(host: host, port: port ?? 5432)
        } else if let socketFolder {
            address = .unix(path: socketFolder + "/.s.PGSQL.\(port ?? 5432)")
        } else {
            throw fail("no host: give host:port, or ?host=/socket/folder for a Unix socket")
        }
        if tls == .verifyFull, case .unix = address { throw fail("sslmode=verify-full needs a TCP host") }
        self.init(address: address, user: user, password: password, database: database, tls: tls, rootCertificate: root)
    }

    /// The endpoint without its password, for logs and errors.
    public var description: String {
        switch address {
        case .tcp(let host, let port): return "postgres://\(user)@\(host):\(port)/\(database)"
        case .unix(let path): return "postgres://\(user)@\(path)/\(database)"
        }
    }
}
