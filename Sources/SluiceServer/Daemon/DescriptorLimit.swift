#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import SluiceConfiguration

/// The process's file-descriptor limit against `max_connections`: each connection is a
/// descriptor, and the daemon needs some for itself (listeners, the store, snapshots, metrics
/// scrapes, event loops). Below what the configuration asks for, the soft limit is raised as far
/// as the hard limit allows; if that is not enough, a warning says how many connections will fit.
/// Accepting past the limit backs off and recovers (``AcceptBackoff``) rather than spinning.
public enum DescriptorLimit {
    /// Descriptors kept for the daemon's own files and sockets.
    public static let ownUse: UInt64 = 256

    /// Descriptors `configuration` needs: every connection it may serve, and the daemon's own.
    public static func needed(for configuration: Configuration) -> UInt64 {
        UInt64(configuration.maxConnections) + UInt64(configuration.unixReserve) + ownUse
    }

    /// Raises the soft limit to what `configuration` needs (up to the hard limit); returns the
    /// limit in force after, or nil if it cannot be read.
    @discardableResult
    public static func ensure(for configuration: Configuration, logger: Logger) -> UInt64? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        let needed = needed(for: configuration)
        let before = UInt64(limit.rlim_cur)
        guard before < needed else { return before }
        var raised = limit
        raised.rlim_cur = rlim_t(min(needed, UInt64(limit.rlim_max)))
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 {
            limit = raised
        }
        let now = UInt64(limit.rlim_cur)
        if now < needed {
            logger.warning("the descriptor limit is below what max_connections needs: connections past it wait until others close", metadata: [
                "limit.nofile": "\(now)", "limit.nofile_hard": "\(UInt64(limit.rlim_max))", "limit.needed": "\(needed)",
                "server.max_connections": "\(configuration.maxConnections)",
                "connections.fit": "\(now > ownUse ? now - ownUse : 0)",
                "hint": "raise LimitNOFILE (systemd) or ulimit -n, or lower server.max_connections",
            ])
        } else if now > before {
            logger.info("raised the descriptor limit for max_connections", metadata: ["limit.nofile": "\(now)", "limit.was": "\(before)"])
        }
        return now
    }
}
