import Foundation
import NIOCore
import NIOPosix
import SluiceClient

/// Why a connection to the daemon failed, in words a person acts on: the system's reason and,
/// where it is the likely cause, that the daemon is not running (NIO's own text names syscalls
/// and descriptors).
enum ConnectFailure {
    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as IOError:
            return reason(errno: error.errnoCode) ?? "\(error)"
        case let error as NIOConnectionError:
            // Every address tried failed: the first failure says why (they fail alike).
            if let first = error.connectionErrors.first { return describe(first.error) }
            if error.dnsAError != nil || error.dnsAAAAError != nil { return "cannot resolve \(error.host)" }
            return "no address for \(error.host)"
        case ChannelError.connectTimeout(let amount):
            return "no answer within \(Double(amount.nanoseconds) / 1e9) s (is the address right, and reachable?)"
        case ClientError.connectionClosed:
            return "the daemon closed the connection (at its connection limit, or a TLS listener spoken to in plain text?)"
        default:
            return "\(error)"
        }
    }

    static func reason(errno code: CInt) -> String? {
        switch code {
        case ENOENT: "no such socket (is sluiced running?)"
        case ECONNREFUSED: "connection refused (is sluiced running, and listening there?)"
        case EACCES, EPERM: "permission denied (the socket's mode and group decide who may connect)"
        case ENETUNREACH, EHOSTUNREACH: "no route to that host"
        case ETIMEDOUT: "timed out (is the address right, and reachable?)"
        default: nil
        }
    }
}
