import ArgumentParser
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import SluiceConfiguration
import SluiceCore
import SluiceServer

@main
struct Sluiced: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluiced",
        abstract: "The Sluice rate-limiting daemon.",
        discussion: """
        With no --config, runs the embedded default configuration (see --print-default-config):
        a Unix socket at /tmp/sluice.sock (mode 0660) and TCP on 127.0.0.1:7420.
        --unix and --tcp replace the configured listeners; give either or both, as often as needed.
        SIGINT or SIGTERM: stop accepting, answer what is in flight, write the snapshot, exit 0.
        SIGHUP (or `sluicectl reload`): re-read --config and apply it if valid; an invalid file is
        logged and the configuration in force stays.
        """,
        version: SluiceVersion.current
    )

    @Option(name: .long, help: "A YAML configuration file.")
    var config: String?

    @Option(name: .customLong("unix"), help: "Listen on this Unix socket path (repeatable; replaces configured listeners).")
    var unixPaths: [String] = []

    @Option(name: .customLong("tcp"), help: "Listen on HOST:PORT (repeatable; replaces configured listeners).")
    var tcpAddresses: [String] = []

    @Option(name: .customLong("tcp-auth"), help: "token (default: every --tcp client authenticates first) or none (loopback addresses only).")
    var tcpAuth: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (replaces log.level).")
    var logLevel: Logger.Level?

    @Option(name: .long, help: "text or json (replaces log.format).")
    var logFormat: String?

    @Option(name: .long, help: "Serve /metrics, /healthz and /readyz on HOST:PORT (replaces metrics.listen; \"off\" serves none).")
    var metrics: String?

    @Option(name: .long, help: "monotonic (default) or request (time from each check's now_ms).")
    var clock: String?

    @Option(name: .long, help: "Keep the limiter table in this file across restarts (replaces snapshot.path; \"off\" keeps nothing).")
    var snapshot: String?

    @Option(name: .long, help: "Keep reputation, tiers and baselines in this SQLite file, or in PostgreSQL at a postgres:// URL (replaces the store's path or url; \"off\" keeps them in memory only).")
    var store: String?

    @Flag(name: .long, help: "Print the embedded default configuration and exit.")
    var printDefaultConfig = false

    @Flag(name: .long, help: "Validate the configuration and exit.")
    var checkConfig = false

    func run() async throws {
        if printDefaultConfig {
            FileHandle.standardOutput.write(Data((DefaultConfiguration.yaml + "\n").utf8))
            return
        }
        let configuration: Configuration
        do {
            configuration = try resolvedConfiguration()
        } catch {
            FileHandle.standardError.write(Data("sluiced: \(error.message)\n".utf8))
            throw ExitCode(2)
        }
        if checkConfig {
            FileHandle.standardOutput.write(Data("\(configuration.source): ok (\(configuration.rules.count) rules, \(configuration.tenants.count) tenants)\n".utf8))
            return
        }
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        let json = configuration.logFormat == .json
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let metricsRegistry = SluiceMetrics()
        MetricsSystem.bootstrap(metricsRegistry.factory)
        let logger = Logger(label: "sluiced")
        // SIGTERM and SIGINT are caught from here on, before any socket is bound: one that
        // arrives while the daemon starts (a supervisor that gives up) shuts it down gracefully
        // once it runs, instead of killing it with the signal's default action.
        let signals = ShutdownSignals()
        let daemon: SluiceDaemon
        do {
            let reload: @Sendable () throws -> Configuration = { [self] in try resolvedConfiguration() }
            daemon = try await SluiceDaemon.start(configuration: configuration, logger: logger, metrics: metricsRegistry,
                                                  reloadFrom: reload, reloadOnHangup: true)
        } catch let error as SluiceError {
            logger.critical("cannot start", metadata: ["error.code": "\(error.code)", "error.message": "\(error.message)"])
            throw ExitCode(1)
        }
        signals.forward(to: daemon)
        // Under systemd (Type=notify): ready now that every listener is bound; the watchdog
        // is petted while the event loops run tasks; stopping once shutdown begins.
        let systemd = SystemdNotifier(environment: ProcessInfo.processInfo.environment)
        if let systemd {
            systemd.notify("READY=1\nSTATUS=serving\nMAINPID=\(getpid())")
            systemd.startWatchdog { pet in daemon.whenEventLoopsAnswer(pet) }
            signals.onShutdown {
                systemd.stopWatchdog()
                systemd.notify("STOPPING=1\nSTATUS=stopping: answering what is in flight")
            }
        }
        await daemon.run()
        signals.cancel()
        await daemon.close()
    }

    func resolvedConfiguration() throws(SluiceError) -> Configuration {
        var configuration: Configuration
        if let config {
            configuration = try ConfigurationLoader.load(file: config)
        } else {
            configuration = try ConfigurationLoader.embeddedDefault()
        }
        if !unixPaths.isEmpty || !tcpAddresses.isEmpty {
            configuration.unixListeners = unixPaths.map { .init(path: $0) }
            configuration.tcpListeners = []
            for text in tcpAddresses {
                guard var listener = ConfigurationLoader.parseHostPort(text) else {
                    throw SluiceError(.invalidArgument, "--tcp expects HOST:PORT such as 127.0.0.1:7420, got '\(text)'")
                }
                if let tcpAuth {
                    guard let auth = Configuration.ListenerAuth(rawValue: tcpAuth) else {
                        throw SluiceError(.invalidArgument, "--tcp-auth expects token or none, got '\(tcpAuth)'")
                    }
                    listener.auth = auth
                }
                configuration.tcpListeners.append(listener)
            }
        }
        if let clock {
            guard let mode = Configuration.ClockMode(rawValue: clock) else {
                throw SluiceError(.invalidArgument, "--clock expects monotonic or request, got '\(clock)'")
            }
            configuration.clock = mode
        }
        if let snapshot { configuration.snapshotPath = snapshot == "off" || snapshot.isEmpty ? nil : snapshot }
        if let store {
            configuration.store.path = nil
            configuration.store.url = nil
            if store.hasPrefix("postgres://") || store.hasPrefix("postgresql://") {
                configuration.store.backend = .postgres
                configuration.store.url = store
            } else {
                configuration.store.backend = .sqlite
                configuration.store.path = store == "off" || store.isEmpty ? nil : store
            }
        }
        if let metrics {
            if metrics == "off" || metrics.isEmpty {
                configuration.metricsListener = nil
            } else {
                guard var listener = ConfigurationLoader.parseHostPort(metrics) else {
                    throw SluiceError(.invalidArgument, "--metrics expects HOST:PORT such as 127.0.0.1:7421, or off, got '\(metrics)'")
                }
                // The file's metrics.tls still applies to the address given here.
                listener.tls = configuration.metricsListener?.tls
                configuration.metricsListener = listener
            }
        }
        if let logLevel { configuration.logLevel = logLevel.rawValue }
        if let logFormat {
            guard let format = Configuration.LogFormat(rawValue: logFormat) else {
                throw SluiceError(.invalidArgument, "--log-format expects text or json, got '\(logFormat)'")
            }
            configuration.logFormat = format
        }
        return configuration
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Catches SIGTERM and SIGINT from the start of the process, and begins the daemon's graceful
/// shutdown once it runs (at once if one came while it started).
final class ShutdownSignals {
    let sources: [any DispatchSourceSignal]
    let state = NIOLockedValueBox<(requested: Bool, daemon: SluiceDaemon?, onShutdown: (@Sendable () -> Void)?)>((false, nil, nil))

    init() {
        let queue = DispatchQueue(label: "sluiced.signals")
        var sources: [any DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            sources.append(source)
        }
        self.sources = sources
        for source in sources {
            source.setEventHandler { [state] in
                let (daemon, onShutdown) = state.withLockedValue { state in
                    state.requested = true
                    return (state.daemon, state.onShutdown)
                }
                onShutdown?()
                daemon?.beginShutdown()
            }
            source.resume()
        }
    }

    /// From now on signals go to `daemon`; one that came before shuts it down at once.
    func forward(to daemon: SluiceDaemon) {
        let requested = state.withLockedValue { state -> Bool in
            state.daemon = daemon
            return state.requested
        }
        if requested { daemon.beginShutdown() }
    }

    /// Runs `body` when a signal asks for shutdown, before the shutdown begins.
    func onShutdown(_ body: @escaping @Sendable () -> Void) {
        state.withLockedValue { $0.onShutdown = body }
    }

    func cancel() {
        for source in sources { source.cancel() }
    }
}
