import NIOConcurrencyHelpers
import SluiceCore
import SluiceIntelligence
import SluiceProto

/// One load controller per protected service, stepped by each of its `ReportLoad` requests (a
/// service reports on its own cadence, so the controller needs no timer and tests need no clock).
final class LoadService: Sendable {
    struct State {
        var controllers: [String: LoadController] = [:]
    }

    let state = NIOLockedValueBox(State())

    /// Applies one report and answers with the new load factor and the tiers' multipliers.
    func report(_ request: Sluice_V1_ReportLoadRequest, configuration: Configuration) -> WireResponse {
        guard !request.service.isEmpty else { return .error(id: 0, .invalidArgument, "service must not be empty") }
        guard request.service.utf8.count <= configuration.maxKeyBytes else {
            return .error(id: 0, .invalidArgument, "service must be at most \(configuration.maxKeyBytes) bytes")
        }
        guard request.errorRate.isFinite, (0...1).contains(request.errorRate) else {
            return .error(id: 0, .invalidArgument, "error_rate \(request.errorRate) is outside 0…1")
        }
        let settings = configuration.adaptive
        let stepped = state.withLockedValue { state -> LoadController? in
            if state.controllers[request.service] == nil {
                guard state.controllers.count < settings.maxServices else { return nil }
                state.controllers[request.service] = LoadController(settings: settings.controller)
            }
            state.controllers[request.service]?.tick(.init(p99: Int64(clamping: request.latencyP99Us) &* 1_000,
                                                           errorRate: request.errorRate))
            return state.controllers[request.service]
        }
        guard let controller = stepped else {
            return .error(id: 0, .overloaded, "more than adaptive.max_services (\(settings.maxServices)) services report load")
        }
        var response = WireResponse()
        response.reportLoad.loadFactor = controller.factor
        response.reportLoad.smoothedP99Us = UInt64(max(0, (controller.smoothedLatency ?? 0) / 1_000))
        let tiers = configuration.tiers.values.sorted { ($0.priority, $0.name) > ($1.priority, $1.name) }
        // Each tier weighs the same until the daemon measures their traffic.
        let multipliers = LoadShedding.multipliers(factor: controller.factor,
                                                   tiers: tiers.map { .init(priority: $0.priority, share: 1, floor: $0.reserve) })
        response.reportLoad.tiers = zip(tiers, multipliers).map { tier, multiplier in
            Sluice_V1_TierLoad.with {
                $0.tier = tier.name
                $0.multiplier = multiplier
            }
        }
        return response
    }

    /// Every service's load factor now, for metrics.
    var factors: [(service: String, factor: Double)] {
        state.withLockedValue { $0.controllers.map { ($0.key, $0.value.factor) }.sorted { $0.service < $1.service } }
    }
}
