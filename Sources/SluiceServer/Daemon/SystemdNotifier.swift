import Dispatch
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// systemd's readiness protocol (`sd_notify(3)`), for a unit with `Type=notify`: one datagram to
/// the socket `$NOTIFY_SOCKET` names per state change. `READY=1` once every listener is bound,
/// `STOPPING=1` when shutdown begins, and with `WatchdogSec=` (`$WATCHDOG_USEC`) `WATCHDOG=1`
/// every half period, sent only after every event loop has run a task: a daemon whose loops are
/// stuck stops petting the watchdog, and systemd restarts it. libsystemd is not linked for this:
/// the protocol is a datagram of text.
public final class SystemdNotifier: @unchecked Sendable {
    /// The socket's address: a path, or an abstract name (`@` first).
    let path: String
    /// Half the watchdog's period, when the watchdog is on for this process.
    public let watchdogInterval: Duration?
    let queue = DispatchQueue(label: "sluiced.systemd")
    /// The watchdog's timer, once started (only touched on `queue`).
    var timer: (any DispatchSourceTimer)?

    /// The notifier `environment` asks for; nil when the daemon was not started by systemd
    /// with `Type=notify` (no `NOTIFY_SOCKET`).
    public init?(environment: [String: String], pid: Int32 = getpid()) {
        guard let path = environment["NOTIFY_SOCKET"], path.hasPrefix("/") || path.hasPrefix("@"), path.utf8.count < 108 else { return nil }
        self.path = path
        // WATCHDOG_PID, when set, names the process the watchdog is for.
        let forUs = environment["WATCHDOG_PID"].map { Int32($0) == pid } ?? true
        if forUs, let text = environment["WATCHDOG_USEC"], let microseconds = Int64(text), microseconds > 0 {
            watchdogInterval = .microseconds(microseconds / 2)
        } else {
            watchdogInterval = nil
        }
    }

    /// Sends `state` (`KEY=VALUE` lines); returns whether the datagram went. The send never
    /// blocks: while systemd's queue is full it is tried again for at most `patience`, then
    /// given up. A daemon must not stall its shutdown or its event loops on a busy systemd (a
    /// blocking send did: a reader that stopped reading held SIGTERM's handler forever).
    @discardableResult
    public func notify(_ state: String, patience: Duration = .seconds(1)) -> Bool {
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() where index < raw.count { raw[index] = byte }
        }
        // An abstract name's length is exact (no terminating zero); a path's includes its zero.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let message = Array(state.utf8)
        let deadline = ContinuousClock.now + patience
        while true {
            let sent = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    message.withUnsafeBytes {
                        sendto(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT), socketAddress, length)
                    }
                }
            }
            if sent == message.count { return true }
            guard sent < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR, ContinuousClock.now < deadline else { return false }
            usleep(10_000)
        }
    }

    /// Pets the watchdog every half period while `alive` says the daemon serves (it is asked
    /// on the notifier's queue and answers through its callback; no answer, no pet).
    public func startWatchdog(alive: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void) {
        guard let watchdogInterval else { return }
        let nanoseconds = Int(clamping: watchdogInterval.components.seconds * 1_000_000_000 + watchdogInterval.components.attoseconds / 1_000_000_000)
        queue.sync {
            guard timer == nil else { return }
            let timer = DispatchSource.makeTimerSource(queue: queue)
            timer.schedule(deadline: .now(), repeating: .nanoseconds(max(1_000_000, nanoseconds)))
            // The pet is sent from the notifier's queue, never from the event loop that answered
            // last, and is dropped when systemd's queue is full: the next comes half a period on.
            timer.setEventHandler { [self] in alive { [self] in queue.async { [self] in notify("WATCHDOG=1", patience: .zero) } } }
            timer.resume()
            self.timer = timer
        }
    }

    /// Stops the watchdog (shutdown: systemd's stop timeout takes over).
    public func stopWatchdog() {
        queue.sync {
            timer?.cancel()
            timer = nil
        }
    }
}
