import Logging
import ServiceLifecycle
import SluiceCore

/// `sluiced` as a service-lifecycle `Service`: serves until graceful shutdown (SIGTERM/SIGINT),
/// then drains and returns.
public struct SluiceService: Service {
    let configuration: Configuration
    let logger: Logger

    /// A service that will serve `configuration`.
    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Starts the listeners, waits for the shutdown signal, then drains.
    public func run() async throws {
        let server = try await SluiceDaemon.start(configuration: configuration, logger: logger)
        // Returns when graceful shutdown is triggered (or the task is cancelled).
        try? await gracefulShutdown()
        await server.shutdown()
    }
}
