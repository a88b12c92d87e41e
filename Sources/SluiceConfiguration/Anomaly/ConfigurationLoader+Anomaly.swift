import Foundation
import SluiceCore
import SluiceIntelligence
import Yams

extension Reader {
    /// `anomaly:` the detection thresholds (docs/ANOMALY.md).
    func readAnomaly(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = configuration.anomaly
        let keys: Set = ["spike_factor", "spike_minimum_rate", "enumeration_distinct_ids", "failures_per_ip", "failed_subjects_per_ip",
                         "sources_per_subject", "failures_per_subject", "subjects_per_ip", "max_subjects", "max_sources", "traffic_factor",
                         "surge_factor", "surge_minimum", "warmup", "subject_warmup", "new_subject_factor", "cooldown", "idle_after",
                         "alert_log", "responses", "webhook", "spike_persistence", "new_subject_persistence", "peak_factor",
                         "peer_quantile", "peer_margin", "peer_minimum_minutes", "sequential_steps", "sustained_distinct",
                         "failure_surge_minimum", "failure_surge_factor", "surge_sources", "alert_budget_per_hour", "model"]
        for (key, value) in try mapping(node, "anomaly", keys: keys) {
            let path = "anomaly.\(key)"
            switch key {
            case "spike_factor": settings.spikeFactor = try number(value, path, 1.5...1_000)
            case "spike_minimum_rate": settings.spikeMinimumRate = try number(value, path, 0.01...1_000_000)
            case "enumeration_distinct_ids": settings.enumerationDistinctIds = try integer(value, path, 2...255)
            case "failures_per_ip": settings.failuresPerIP = try integer(value, path, 2...1_000_000)
            case "failed_subjects_per_ip": settings.failedSubjectsPerIP = try integer(value, path, 2...64)
            case "sources_per_subject": settings.sourcesPerSubject = try integer(value, path, 2...255)
            case "failures_per_subject": settings.failuresPerSubject = try integer(value, path, 2...60_000)
            case "subjects_per_ip": settings.subjectsPerIP = try integer(value, path, 2...255)
            case "max_subjects": settings.maxSubjects = try integer(value, path, 1_000...1_000_000_000)
            case "max_sources": settings.maxSources = try integer(value, path, 1_000...1_000_000_000)
            case "traffic_factor": settings.trafficFactor = try number(value, path, 1.5...1_000)
            case "surge_factor": settings.surgeFactor = try number(value, path, 1.5...1_000)
            case "surge_minimum": settings.surgeMinimum = try number(value, path, 1...100_000_000)
            case "warmup": settings.warmupMs = try duration(value, path, 0...86_400_000_000_000) / 1_000_000
            case "subject_warmup": settings.subjectWarmupMs = try duration(value, path, 1_000_000_000...86_400_000_000_000) / 1_000_000
            case "new_subject_factor": settings.newSubjectFactor = try number(value, path, 1...1_000)
            case "spike_persistence": settings.spikePersistenceMs = try duration(value, path, 0...3_600_000_000_000) / 1_000_000
            case "new_subject_persistence": settings.newSubjectPersistenceMs = try duration(value, path, 0...3_600_000_000_000) / 1_000_000
            case "peak_factor": settings.peakFactor = try number(value, path, 0...1_000)
            case "peer_quantile": settings.peerQuantile = try number(value, path, 0.5...0.99999)
            case "peer_margin": settings.peerMargin = try number(value, path, 1...1_000)
            case "peer_minimum_minutes": settings.peerMinimumSamples = try number(value, path, 1...1_000_000_000)
            case "sequential_steps": settings.sequentialSteps = try number(value, path, 2...1_000_000)
            case "sustained_distinct": settings.sustainedDistinct = try number(value, path, 1...1_000_000)
            case "failure_surge_minimum": settings.failureSurgeMinimum = try number(value, path, 1...100_000_000)
            case "failure_surge_factor": settings.failureSurgeFactor = try number(value, path, 1.5...1_000)
            case "surge_sources": settings.surgeSources = try number(value, path, 0...100_000_000)
            case "alert_budget_per_hour": settings.alertBudgetPerHour = try number(value, path, 0.1...1_000_000)
            case "model": settings.model = try bool(value, path)
            case "responses": configuration.anomalyResponses = try readAnomalyResponses(value, path)
            case "webhook": configuration.anomalyWebhook = try readWebhook(value, path)
            case "alert_log":
                let path = try string(value, path)
                configuration.anomalyLog = path.isEmpty ? nil : path
            case "cooldown": settings.cooldownMs = try duration(value, path, 1_000_000_000...86_400_000_000_000) / 1_000_000
            default: settings.idleMs = try duration(value, path, 60_000_000_000...30 * 86_400_000_000_000) / 1_000_000
            }
        }
        configuration.anomaly = settings
    }

    /// `webhook:` where alerts are POSTed (docs/ANOMALY.md, Webhook).
    func readWebhook(_ value: Node, _ path: String) throws(SluiceError) -> WebhookSettings {
        var webhook: WebhookSettings?
        var retries: Int?, backoff: Int64?, timeout: Int64?, caFile: String?, format: WebhookSettings.Format?
        var headers: [WebhookSettings.Header] = []
        for (key, node) in try mapping(value, path, keys: ["url", "retries", "backoff", "timeout", "ca_file", "headers", "format"]) {
            switch key {
            case "url":
                let url = try string(node, "\(path).url")
                guard let parsed = WebhookSettings(url: url) else {
                    throw error(node, "\(path).url", "expected http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH, got '\(url)'")
                }
                webhook = parsed
            case "retries": retries = try integer(node, "\(path).retries", 0...20)
            case "backoff": backoff = try duration(node, "\(path).backoff", 1_000_000...600_000_000_000)
            case "timeout": timeout = try duration(node, "\(path).timeout", 1_000_000...600_000_000_000)
            case "ca_file":
                let file = try string(node, "\(path).ca_file")
                guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                    throw error(node, "\(path).ca_file", "cannot read '\(file)'")
                }
                guard text.contains("-----BEGIN CERTIFICATE-----") else {
                    throw error(node, "\(path).ca_file", "'\(file)' holds no PEM certificate")
                }
                caFile = file
            case "format":
                let name = try string(node, "\(path).format")
                guard let parsed = WebhookSettings.Format(rawValue: name) else {
                    throw error(node, "\(path).format", "expected one of \(WebhookSettings.Format.allCases.map(\.rawValue).joined(separator: ", ")), got '\(name)'")
                }
                format = parsed
            default:
                for (name, headerNode) in try mapping(node, "\(path).headers", keys: nil) {
                    let text = try string(headerNode, "\(path).headers.\(name)")
                    let token = name.unicodeScalars.allSatisfy { $0.isASCII && $0.value > 32 && $0.value < 127 && !"()<>@,;:\\\"/[]?={}".unicodeScalars.contains($0) }
                    guard !name.isEmpty, token else { throw error(headerNode, "\(path).headers", "'\(name)' is not an HTTP header name") }
                    guard !text.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) else {
                        throw error(headerNode, "\(path).headers.\(name)", "a header value cannot hold a line break")
                    }
                    guard !["host", "content-length", "content-type", "transfer-encoding", "connection"].contains(name.lowercased()) else {
                        throw error(headerNode, "\(path).headers.\(name)", "set by the daemon itself")
                    }
                    headers.append(.init(name: name, value: text))
                }
            }
        }
        guard var settings = webhook else { throw error(value, "\(path).url", "required: where alerts are POSTed") }
        if let caFile {
            guard settings.secure else { throw error(value, "\(path).ca_file", "only for an https:// url") }
            settings.caFile = caFile
        }
        if let retries { settings.retries = retries }
        if let backoff { settings.backoff = backoff }
        if let timeout { settings.timeout = timeout }
        if let format { settings.format = format }
        settings.headers = headers
        return settings
    }

    /// `responses:` what each alert kind does (`anomaly.responses`, or a tenant's own).
    func readAnomalyResponses(_ value: Node, _ path: String) throws(SluiceError) -> [String: AnomalyResponse] {
        var responses: [String: AnomalyResponse] = [:]
        for (kind, responseNode) in try mapping(value, path, keys: nil) {
            let responsePath = "\(path).\(kind)"
            guard AnomalyResponseBook.kinds.contains(kind) else {
                throw error(responseNode, responsePath, "unknown alert kind; expected one of \(AnomalyResponseBook.kinds.sorted().joined(separator: ", "))")
            }
            var response = AnomalyResponse(action: .alert)
            let global = kind == "new_source_surge" || kind == "traffic_surge" || kind == "failure_surge"
            var keys: Set<String> = ["action", "ttl", "factor"]
            if global { keys.formUnion(["prefix_share", "spare_tiers"]) }
            for (key, node) in try mapping(responseNode, responsePath, keys: keys) {
                switch key {
                case "action":
                    let name = try string(node, "\(responsePath).action")
                    guard let action = AnomalyResponse.Action(rawValue: name) else {
                        throw error(node, "\(responsePath).action", "expected alert, penalty, block, tighten or shed, got '\(name)'")
                    }
                    if global, action == .penalty {
                        throw error(node, "\(responsePath).action",
                                    "a surge names no subject: expected alert, tighten (unknown sources), block (unknown sources in its prefixes) or shed (unknown sources)")
                    }
                    if !global, action == .shed {
                        throw error(node, "\(responsePath).action", "shed is for surges (new_source_surge, traffic_surge, failure_surge)")
                    }
                    response.action = action
                case "ttl": response.ttl = try duration(node, "\(responsePath).ttl", 1_000_000_000...30 * 86_400_000_000_000)
                case "prefix_share": response.prefixShare = try number(node, "\(responsePath).prefix_share", 0.001...1)
                case "spare_tiers":
                    response.spareTiers = try sequence(node, "\(responsePath).spare_tiers").enumerated().map { index, tier throws(SluiceError) in
                        try string(tier, "\(responsePath).spare_tiers[\(index)]")
                    }
                default: response.factor = try number(node, "\(responsePath).factor", 0.001...1)
                }
            }
            responses[kind] = response
        }
        return responses
    }
}
