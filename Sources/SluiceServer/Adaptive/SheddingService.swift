import Dispatch
import NIOConcurrencyHelpers
import SluiceCore
import SluiceIntelligence
import SluiceProto
import Synchronization

/// Load-aware scaling (the adaptive feature): one ``SheddingController`` per protected service,
/// stepped by the service's `ReportLoad` requests, one for the daemon itself (service
/// `sluiced`, stepped by its event-loop delay), and the demand each tier puts on each service.
///
/// The hot path only reads what ``publish(_:live:)`` stores in the configuration's
/// ``SheddingTable``. A background tick on a Dispatch queue (every `adaptive.interval`) measures the
/// demand and the daemon's own load, lets silent services recover, and republishes.
final class SheddingService: Sendable {
    /// The service name under which the daemon's own load (its event-loop delay) is controlled.
    static let daemonService = "sluiced"

    struct Service {
        var controller: SheddingController
        /// When it last reported (ns).
        var lastReport: Int64
    }

    struct State {
        var services: [String: Service] = [:]
        /// The daemon's own controller; nil until the first tick measured its event loops.
        var daemon: SheddingController?
        /// The longest event-loop delay of the last tick (ns).
        var loopDelay: Int64 = 0
        /// The table whose demand counters `counts` last read (a reload brings a new one).
        var table: ObjectIdentifier?
        var counts: [UInt64] = []
        /// Smoothed demand (hits per second) by `slot × classes + class` of that table.
        var rates: [Double] = []
        var lastTick: Int64?
    }

    let state = NIOLockedValueBox(State())
    /// Checks allowed that the feature, in shadow mode, would have shed or limited.
    let wouldDeny = Synchronization.Atomic<UInt64>(0)
    let live: LiveState
    let queue = DispatchQueue(label: "sluice.adaptive", qos: .utility)

    init(state: LiveState) {
        live = state
    }

    // MARK: Reports

    /// Applies one report and answers with the new load factor and the tiers' multipliers.
    func report(_ request: Sluice_V1_ReportLoadRequest, now: Int64) -> WireResponse {
        let current = live.current
        let configuration = current.configuration
        guard !request.service.isEmpty else { return .error(id: 0, .invalidArgument, "service must not be empty") }
        guard request.service.utf8.count <= configuration.maxKeyBytes else {
            return .error(id: 0, .invalidArgument, "service must be at most \(configuration.maxKeyBytes) bytes")
        }
        guard request.service != Self.daemonService else {
            return .error(id: 0, .invalidArgument, "service '\(Self.daemonService)' is the daemon's own load; it cannot be reported")
        }
        // Service names become metric labels and controllers: only those the configuration
        // names may report, so junk names can neither grow the label set nor use up max_services.
        guard configuration.protectedServices.contains(request.service) else {
            let known = configuration.protectedServices.sorted()
            return .error(id: 0, .invalidArgument, "service '\(request.service)' is not named by any rule's `service`"
                          + (known.isEmpty ? " (no rule names one)" : "; configured: \(known.joined(separator: ", "))"))
        }
        guard request.errorRate.isFinite, (0...1).contains(request.errorRate) else {
            return .error(id: 0, .invalidArgument, "error_rate \(request.errorRate) is outside 0…1")
        }
        let settings = configuration.adaptive
        let answer = state.withLockedValue { state -> WireResponse? in
            if state.services[request.service] == nil {
                guard state.services.count < settings.maxServices else { return nil }
                state.services[request.service] = Service(controller: SheddingController(settings: settings.controller), lastReport: now)
            }
            state.services[request.service]?.controller.settings = settings.controller
            state.services[request.service]?.controller.tick(.init(p99: Int64(clamping: request.latencyP99Us) &* 1_000,
                                                                   errorRate: request.errorRate, inFlight: Double(request.inFlight)))
            state.services[request.service]?.lastReport = now
            Self.publish(&state, live: current)
            return Self.describe(request.service, state: state, live: current)
        }
        return answer ?? .error(id: 0, .overloaded, "more than adaptive.max_services (\(settings.maxServices)) services report load")
    }

    /// The answer to a report: the service's factor, smoothed p99 and each tier's multiplier and demand.
    static func describe(_ service: String, state: State, live: LiveConfiguration) -> WireResponse {
        var response = WireResponse()
        let controller = service == daemonService ? state.daemon : state.services[service]?.controller
        response.reportLoad.loadFactor = controller?.factor ?? 1
        response.reportLoad.smoothedP99Us = UInt64(max(0, (controller?.smoothedLatency ?? 0) / 1_000))
        let names = (live.tiers?.names ?? []) + [""]
        let table = live.load
        if let table, let slot = table.services.firstIndex(of: service) {
            response.reportLoad.tiers = names.enumerated().map { tierClass, name in
                Sluice_V1_TierLoad.with {
                    $0.tier = name
                    $0.multiplier = table.multiplier(slot: slot, tierClass: tierClass)
                    let index = slot * table.classes + tierClass
                    $0.demand = state.table == ObjectIdentifier(table) && index < state.rates.count ? Self.rate(state.rates[index]) : 0
                }
            }
        } else {
            // No rule names the service: what its tiers would get, weighing the same.
            let multipliers = shedding(factor: response.reportLoad.loadFactor, live: live, shares: nil)
            response.reportLoad.tiers = zip(names, multipliers).map { name, multiplier in
                Sluice_V1_TierLoad.with {
                    $0.tier = name
                    $0.multiplier = multiplier
                }
            }
        }
        return response
    }

    // MARK: The background tick

    /// One step of the background controller at `now`: measures each service's demand per tier,
    /// steps the daemon's own controller with `loopDelay` (the longest event-loop delay since the
    /// last tick, ns; nil when not measured), lets services silent for `adaptive.stale_after`
    /// recover by one healthy step, and republishes every multiplier.
    func tick(now: Int64, loopDelay: Int64?) {
        let current = live.current
        let settings = current.configuration.adaptive
        state.withLockedValue { state in
            if let loopDelay {
                state.loopDelay = loopDelay
                var controller = state.daemon ?? SheddingController(settings: settings.controller)
                controller.settings = settings.controller
                controller.settings.targetLatency = settings.maxLoopDelay
                controller.tick(.init(p99: loopDelay))
                state.daemon = controller
            }
            for (name, service) in state.services where now - service.lastReport >= settings.staleAfter {
                var controller = service.controller
                controller.settings = settings.controller
                controller.tick(.init(p99: 0))
                state.services[name]?.controller = controller
            }
            Self.measure(&state, table: current.load, now: now)
            Self.publish(&state, live: current)
        }
    }

    /// Folds the demand counted since the last tick into the smoothed rates.
    static func measure(_ state: inout State, table: SheddingTable?, now: Int64) {
        guard let table else {
            state.table = nil
            return
        }
        let counts = table.demandCounts()
        guard state.table == ObjectIdentifier(table), let last = state.lastTick, counts.count == state.counts.count else {
            state.table = ObjectIdentifier(table)
            state.counts = counts
            state.rates = Array(repeating: .nan, count: counts.count)
            state.lastTick = now
            return
        }
        // A tick at the same instant (or earlier) has nothing to measure.
        guard now > last else { return }
        state.lastTick = now
        let seconds = Double(now - last) / 1e9
        for index in counts.indices {
            let rate = Double(counts[index] &- state.counts[index]) / seconds
            // Smoothed over about two ticks: quick to follow, but one quiet tick does not erase a
            // tier. The first measurement is taken whole (NaN: none yet).
            state.rates[index] = state.rates[index].isNaN ? rate : state.rates[index] + 0.5 * (rate - state.rates[index])
        }
        state.counts = counts
    }

    /// A smoothed rate, 0 before the first measurement.
    static func rate(_ value: Double) -> Double { value.isNaN ? 0 : value }

    /// Stores every service's multipliers, per tier, into the configuration's table.
    static func publish(_ state: inout State, live: LiveConfiguration) {
        guard let table = live.load else { return }
        let measured = state.table == ObjectIdentifier(table) && state.rates.count == table.services.count * table.classes
        for (slot, service) in table.services.enumerated() {
            let controller = service == daemonService ? state.daemon : state.services[service]?.controller
            let shares = measured ? state.rates[(slot * table.classes)..<((slot + 1) * table.classes)].map(rate) : nil
            table.publish(slot: slot, shedding(factor: controller?.factor ?? 1, live: live, shares: shares))
        }
    }

    /// Each tier class's multiplier at `factor`: the tiers in the tier table's order, then
    /// subjects without a tier. `shares`: each class's demand; nil or all zero weighs them the same.
    static func shedding(factor: Double, live: LiveConfiguration, shares: [Double]?) -> [Double] {
        let configuration = live.configuration
        let names = live.tiers?.names ?? []
        var classes = names.map { name -> Shedding.Tier in
            let tier = configuration.tiers[name]
            return .init(priority: tier?.priority ?? 0, share: 1, floor: tier?.reserve ?? 0)
        }
        classes.append(.init(priority: configuration.adaptive.untieredPriority, share: 1, floor: 0))
        guard factor < 1 else { return classes.map { _ in 1 } }
        if let shares, shares.count == classes.count, shares.contains(where: { $0 > 0 }) {
            for index in classes.indices { classes[index].share = max(0, shares[index]) }
        }
        return Shedding.multipliers(factor: factor, tiers: classes)
    }

    // MARK: Running

    /// The background tick as a service (`adaptive.interval`, read anew each turn so a reload
    /// applies). `probe` returns the longest event-loop delay since its last call (ns) and starts
    /// the next measurement; `now` is the daemon's clock.
    func service<C: Clock>(clock: C, now: @escaping @Sendable () -> Int64, probe: @escaping @Sendable () -> Int64?) -> PeriodicService<C>
    where C.Duration == Duration {
        PeriodicService("shedding", every: { [live] in .nanoseconds(live.current.configuration.adaptive.interval) }, on: queue,
                        clock: clock, tick: { [self] in tick(now: now(), loopDelay: probe()) })
    }

    // MARK: Reading

    /// Every controlled service's load factor now (the daemon's own as `sluiced`), for metrics.
    var factors: [(service: String, factor: Double)] {
        state.withLockedValue { state in
            var factors = state.services.map { ($0.key, $0.value.controller.factor) }
            if let daemon = state.daemon { factors.append((Self.daemonService, daemon.factor)) }
            return factors.sorted { $0.0 < $1.0 }
        }
    }

    /// The longest event-loop delay the last tick measured (ns).
    var loopDelay: Int64 { state.withLockedValue { $0.loopDelay } }

    /// Each (service, tier) pair's multiplier and smoothed demand, for metrics; tier "" is
    /// subjects without one.
    func tierLoads() -> [(service: String, tier: String, multiplier: Double, demand: Double)] {
        let current = live.current
        guard let table = current.load else { return [] }
        let names = (current.tiers?.names ?? []) + [""]
        let rates = state.withLockedValue { state in state.table == ObjectIdentifier(table) ? state.rates : [] }
        var result: [(service: String, tier: String, multiplier: Double, demand: Double)] = []
        for (slot, service) in table.services.enumerated() {
            for (tierClass, name) in names.enumerated() {
                let index = slot * table.classes + tierClass
                result.append((service, name, table.multiplier(slot: slot, tierClass: tierClass), index < rates.count ? Self.rate(rates[index]) : 0))
            }
        }
        return result
    }
}
