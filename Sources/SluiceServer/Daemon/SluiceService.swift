import Dispatch
import Logging
import ServiceLifecycle
import SluiceCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reloads the configuration on SIGHUP, on a background queue, until graceful shutdown.
struct HangupReloadService: Service, CustomStringConvertible {
    let daemon: SluiceDaemon
    var description: String { "reload-on-SIGHUP" }

    func run() async throws {
        let queue = DispatchQueue(label: "sluice.reload")
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: queue)
        let daemon = daemon
        source.setEventHandler {
            daemon.logger.notice("SIGHUP: reloading the configuration")
            _ = daemon.reload()
        }
        source.resume()
        try? await gracefulShutdown()
        source.cancel()
    }
}
