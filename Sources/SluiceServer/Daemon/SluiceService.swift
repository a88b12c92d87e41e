import Dispatch
import Logging
import ServiceLifecycle
import SluiceCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One shutdown step of a running daemon as a service-lifecycle `Service`: it runs until
/// graceful shutdown reaches it, then carries out its step.
struct DaemonStepService: Service, CustomStringConvertible {
    let description: String
    let step: @Sendable () async -> Void

    func run() async throws {
        try? await gracefulShutdown()
        await step()
    }
}

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

extension SluiceDaemon {
    /// The daemon's parts as services, in start order; a `ServiceGroup` stops them in reverse:
    /// listeners (stop accepting, drain), then the SIGHUP reloader, then the metrics endpoint,
    /// then the snapshotter (last snapshot). Call ``close()`` after the group returns.
    public func services(reloadOnHangup: Bool) -> [any Service] {
        var services: [any Service] = [
            DaemonStepService(description: "snapshotter") { await self.writeFinalSnapshot() },
            DaemonStepService(description: "metrics-endpoint") { await self.stopMetrics() },
        ]
        if reloadOnHangup { services.append(HangupReloadService(daemon: self)) }
        services.append(DaemonStepService(description: "listeners") { await self.stopServing() })
        return services
    }
}
