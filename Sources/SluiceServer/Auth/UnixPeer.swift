#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// The user id of the process at the other end of a Unix socket (SO_PEERCRED), which
/// `auth.unix_peers` maps to identities.
enum UnixPeer {
    /// Linux's `struct ucred` (Glibc shows it only with _GNU_SOURCE).
    struct Credentials: Sendable {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }

    /// Calls `body` with the peer's uid (on the channel's loop: at once when called there).
    static func uid(of channel: any Channel, _ body: @escaping @Sendable (UInt32) -> Void) {
        #if os(Linux)
        guard let provider = channel as? any SocketOptionProvider else { return }
        let future: EventLoopFuture<Credentials> = provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET),
                                                                                  name: SocketOptionName(SO_PEERCRED))
        future.whenSuccess { body($0.uid) }
        #endif
    }
}
