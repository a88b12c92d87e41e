import Foundation
import SluiceCore
import Yams

/// Reads and validates YAML configuration. Every error names the file, the line and column, the
/// key path and what was expected; unknown keys are errors, so a typo never silently drops a limit.
public enum ConfigurationLoader {
    /// Loads the file at `path`.
    ///
    /// - Throws: ``SluiceError`` with code `invalid_configuration`.
    public static func load(file path: String) throws(SluiceError) -> Configuration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw SluiceError(.invalidConfiguration, "\(path): cannot read the file (\(error.localizedDescription))")
        }
        return try parse(text, source: path)
    }

    /// The embedded default configuration.
    public static func embeddedDefault() throws(SluiceError) -> Configuration {
        try parse(DefaultConfiguration.yaml, source: "embedded default")
    }

    /// Parses `yaml`, naming `source` in errors.
    ///
    /// - Throws: ``SluiceError`` with code `invalid_configuration`.
    public static func parse(_ yaml: String, source: String) throws(SluiceError) -> Configuration {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw SluiceError(.invalidConfiguration, "\(source): not valid YAML: \(error)")
        }
        var configuration = Configuration()
        configuration.source = source
        guard let root else { return configuration }
        let reader = Reader(source: source)
        try reader.read(root, into: &configuration)
        return configuration
    }
}

final class Reader {
    let source: String
    /// Where `tiers:` was, for errors found after every section is read.
    var tiersNode: Node?
    /// Where each `tenants.NAME.tiers:` was (its path and node), likewise.
    var tenantTierNodes: [(String, Node)] = []

    init(source: String) {
        self.source = source
    }

    func error(_ node: Node?, _ path: String, _ expected: String) -> SluiceError {
        let location = node?.mark.map { ":\($0.line):\($0.column)" } ?? ""
        return SluiceError(.invalidConfiguration, "\(source)\(location): \(path.isEmpty ? "(top level)" : path): \(expected)")
    }

    func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func mapping(_ node: Node, _ path: String, keys allowed: Set<String>?) throws(SluiceError) -> [(key: String, value: Node)] {
        guard case .mapping(let mapping) = node else { throw error(node, path, "expected a mapping of keys to values") }
        var seen: Set<String> = []
        var pairs: [(key: String, value: Node)] = []
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else { throw error(keyNode, path, "expected string keys") }
            if let allowed, !allowed.contains(key) {
                throw error(keyNode, join(path, key), "unknown key; expected one of \(allowed.sorted().joined(separator: ", "))")
            }
            guard seen.insert(key).inserted else { throw error(keyNode, join(path, key), "key appears twice") }
            pairs.append((key, value))
        }
        return pairs
    }

    func sequence(_ node: Node, _ path: String) throws(SluiceError) -> [Node] {
        guard case .sequence(let sequence) = node else { throw error(node, path, "expected a list") }
        return Array(sequence)
    }

    func string(_ node: Node, _ path: String) throws(SluiceError) -> String {
        guard case .scalar(let scalar) = node else { throw error(node, path, "expected a string") }
        return scalar.string
    }

    func integer(_ node: Node, _ path: String, _ range: ClosedRange<Int>) throws(SluiceError) -> Int {
        guard case .scalar(let scalar) = node, let value = Int(scalar.string.replacingOccurrences(of: "_", with: "")) else {
            throw error(node, path, "expected a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        guard range.contains(value) else {
            throw error(node, path, "expected a whole number from \(range.lowerBound) to \(range.upperBound), got \(value)")
        }
        return value
    }

    func bool(_ node: Node, _ path: String) throws(SluiceError) -> Bool {
        guard let value = node.bool else { throw error(node, path, "expected true or false") }
        return value
    }

    /// A duration in nanoseconds: an integer of milliseconds, or an integer with ms, s, m, h or d.
    /// A duration within `range` (ns).
    func duration(_ node: Node, _ path: String, _ range: ClosedRange<Int64>) throws(SluiceError) -> Int64 {
        let value = try duration(node, path)
        guard range.contains(value) else {
            throw error(node, path, "expected a duration from \(Self.describe(range.lowerBound)) to \(Self.describe(range.upperBound))")
        }
        return value
    }

    /// A duration in the largest unit that divides it.
    static func describe(_ nanoseconds: Int64) -> String {
        for (suffix, unit) in [("d", Int64(86_400_000_000_000)), ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
                               ("ms", 1_000_000)] where nanoseconds % unit == 0 {
            return "\(nanoseconds / unit)\(suffix)"
        }
        return "\(nanoseconds)ns"
    }

    func duration(_ node: Node, _ path: String) throws(SluiceError) -> Int64 {
        let text = try string(node, path).trimmingCharacters(in: .whitespaces)
        // Envoy's unit names: one of each, `month` 30 days and `year` 365 as envoy ratelimit counts them.
        if let unit = DescriptorRateLimit.Unit(name: text) { return unit.seconds * 1_000_000_000 }
        let units: [(String, Int64)] = [("ms", 1_000_000), ("us", 1_000), ("s", 1_000_000_000), ("mo", 2_592_000_000_000_000), ("m", 60_000_000_000),
                                        ("h", 3_600_000_000_000), ("d", 86_400_000_000_000), ("w", 604_800_000_000_000), ("y", 31_536_000_000_000_000)]
        var number = Substring(text), scale: Int64 = 1_000_000
        for (suffix, unit) in units where text.hasSuffix(suffix) {
            let candidate = text.dropLast(suffix.count)
            if Int64(candidate) != nil { number = candidate; scale = unit; break }
        }
        guard let value = Int64(number), value > 0 else {
            throw error(node, path, "expected a duration like 500ms, 1s, 1m, 1h, 1d, 1w, 1mo (30 days) or 1y (365 days), or minute, hour, day, week, month (a bare number is milliseconds), got '\(text)'")
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: scale)
        guard !overflow else { throw error(node, path, "duration '\(text)' is too long") }
        return product
    }

    func algorithm(_ node: Node, _ path: String) throws(SluiceError) -> Algorithm {
        let name = try string(node, path)
        guard let algorithm = Algorithm(name: name) else {
            throw error(node, path, "expected one of \(Algorithm.allCases.map(\.description).joined(separator: ", ")), got '\(name)'")
        }
        return algorithm
    }

    func read(_ root: Node, into configuration: inout Configuration) throws(SluiceError) {
        let sections = try mapping(root, "", keys: ["listen", "server", "table", "snapshot", "metrics", "admin", "auth", "quotas", "log",
                                                       "defaults", "strict_tenants", "rules", "tenants", "reputation", "store", "features", "tiers", "adaptive", "baseline", "anomaly",
                                                       "backend", "redis", "envoy", "http"])
        // Defaults first: rules below depend on the default algorithm.
        for (key, value) in sections where key == "defaults" {
            for (k, v) in try mapping(value, "defaults", keys: ["algorithm"]) where k == "algorithm" {
                configuration.defaultAlgorithm = try algorithm(v, "defaults.algorithm")
            }
        }
        for (key, value) in sections {
            switch key {
            case "listen": try readListen(value, &configuration)
            case "server": try readServer(value, &configuration)
            case "table":
                for (k, v) in try mapping(value, "table", keys: ["shards", "max_entries"]) {
                    switch k {
                    case "shards": configuration.shards = try integer(v, "table.shards", 0...65_536)
                    default: configuration.maxEntries = try integer(v, "table.max_entries", 1...1_000_000_000)
                    }
                }
            case "snapshot":
                for (k, v) in try mapping(value, "snapshot", keys: ["path", "interval"]) {
                    if k == "path" {
                        let path = try string(v, "snapshot.path")
                        configuration.snapshotPath = path.isEmpty ? nil : path
                    } else {
                        let interval = try duration(v, "snapshot.interval")
                        guard interval >= 1_000_000_000 else { throw error(v, "snapshot.interval", "expected at least 1s") }
                        configuration.snapshotIntervalMs = interval / 1_000_000
                    }
                }
            case "metrics":
                var tls: Configuration.TLSFiles?
                for (k, v) in try mapping(value, "metrics", keys: ["listen", "tls", "bearer_token_file"]) {
                    switch k {
                    case "listen":
                        let text = try string(v, "metrics.listen")
                        if text.isEmpty || text == "off" {
                            configuration.metricsListener = nil
                        } else {
                            guard let listener = Self.parseHostPort(text) else {
                                throw error(v, "metrics.listen", "expected HOST:PORT such as 127.0.0.1:7421, or \"off\", got '\(text)'")
                            }
                            configuration.metricsListener = listener
                        }
                    case "tls": tls = try readTLS(v, "metrics.tls")
                    default:
                        let file = try string(v, "metrics.bearer_token_file")
                        guard !file.isEmpty else { throw error(v, "metrics.bearer_token_file", "expected a file's path") }
                        configuration.metricsBearerTokenFile = resolve(file)
                    }
                }
                if let tls { configuration.metricsListener?.tls = tls }
            case "auth": try readAuth(value, &configuration)
            case "quotas": configuration.defaultQuotas = try readQuotas(value, "quotas")
            case "admin":
                for (k, v) in try mapping(value, "admin", keys: ["allow_tcp"]) where k == "allow_tcp" {
                    configuration.adminOverTCP = try bool(v, "admin.allow_tcp")
                }
            case "log":
                for (k, v) in try mapping(value, "log", keys: ["level", "format"]) {
                    let text = try string(v, "log.\(k)")
                    if k == "level" {
                        guard Configuration.logLevels.contains(text) else {
                            throw error(v, "log.level", "expected one of \(Configuration.logLevels.joined(separator: ", ")), got '\(text)'")
                        }
                        configuration.logLevel = text
                    } else {
                        guard let format = Configuration.LogFormat(rawValue: text) else {
                            throw error(v, "log.format", "expected text or json, got '\(text)'")
                        }
                        configuration.logFormat = format
                    }
                }
            case "reputation": try readReputation(value, &configuration)
            case "store": try readStore(value, &configuration)
            case "features": try readFeatures(value, &configuration)
            case "tiers": try readTiers(value, &configuration)
            case "adaptive": try readAdaptive(value, &configuration)
            case "baseline": try readBaselineSettings(value, &configuration)
            case "anomaly": try readAnomaly(value, &configuration)
            case "strict_tenants": configuration.strictTenants = try bool(value, "strict_tenants")
            case "backend": configuration.backend = try readBackend(value, "backend")
            case "redis": try readRedis(value, &configuration)
            case "envoy": try readEnvoy(value, &configuration)
            case "http": try readHTTP(value, &configuration)
            case "rules":
                configuration.rules = try readRules(value, "rules", configuration)
                configuration.declaresRules = true
            case "tenants":
                for (name, tenantNode) in try mapping(value, "tenants", keys: nil) {
                    let path = "tenants.\(name)"
                    guard !name.isEmpty, name.utf8.count <= configuration.maxKeyBytes else {
                        throw error(tenantNode, path, "a tenant name must be 1 to \(configuration.maxKeyBytes) bytes")
                    }
                    var tenant = Configuration.Tenant(name: name, rules: [:])
                    for (k, v) in try mapping(tenantNode, path, keys: ["rules", "quotas", "features", "reputation", "anomaly", "tiers"]) {
                        switch k {
                        case "tiers": tenant.tierOverrides = try readTierOverrides(v, "\(path).tiers", configuration)
                        case "anomaly":
                            let thresholds = Configuration.tenantAnomalyThresholds
                            for (key, node) in try mapping(v, "\(path).anomaly", keys: Set(thresholds.map(\.key) + ["responses"])) {
                                if key == "responses" {
                                    tenant.anomalyResponses = try readAnomalyResponses(node, "\(path).anomaly.responses")
                                } else if let threshold = thresholds.first(where: { $0.key == key }) {
                                    let keyPath = "\(path).anomaly.\(key)"
                                    tenant.anomalyThresholds[key] = threshold.whole
                                        ? Double(try integer(node, keyPath, Int(threshold.range.lowerBound)...Int(threshold.range.upperBound)))
                                        : try number(node, keyPath, threshold.range)
                                }
                            }
                        case "rules": tenant.rules = try readRules(v, "\(path).rules", configuration)
                        case "quotas": tenant.quotas = try readQuotas(v, "\(path).quotas")
                        case "features": tenant.featureOverrides = try readFeatureOverrides(v, "\(path).features")
                        default: tenant.reputationWeights = try readTenantReputation(v, "\(path).reputation")
                        }
                    }
                    configuration.tenants[name] = tenant
                }
            default: break
            }
        }
        try checkTierRules(configuration)
        try configuration.compileDescriptorRules()
    }

    func readListen(_ node: Node, _ configuration: inout Configuration, _ prefix: String = "listen") throws(SluiceError) {
        for (key, value) in try mapping(node, prefix, keys: ["unix", "tcp"]) {
            if key == "unix" {
                configuration.unixListeners = []
                for (i, item) in try sequence(value, "\(prefix).unix").enumerated() {
                    let path = "\(prefix).unix[\(i)]"
                    if case .scalar = item {
                        configuration.unixListeners.append(.init(path: try string(item, path)))
                        continue
                    }
                    var listener = Configuration.UnixListener(path: "")
                    for (k, v) in try mapping(item, path, keys: ["path", "mode", "auth"]) {
                        if k == "path" {
                            listener.path = try string(v, "\(path).path")
                        } else if k == "auth" {
                            listener.auth = try listenerAuth(v, "\(path).auth")
                        } else {
                            let text = try string(v, "\(path).mode")
                            guard let mode = UInt16(text, radix: 8), mode <= 0o777 else {
                                throw error(v, "\(path).mode", "expected an octal file mode such as \"0660\", got '\(text)'")
                            }
                            listener.mode = mode
                        }
                    }
                    guard !listener.path.isEmpty else { throw error(item, "\(path).path", "expected a socket path") }
                    guard listener.path.utf8.count < 108 else {
                        throw error(item, "\(path).path", "a Unix socket path must be shorter than 108 bytes")
                    }
                    configuration.unixListeners.append(listener)
                }
            } else {
                configuration.tcpListeners = []
                for (i, item) in try sequence(value, "\(prefix).tcp").enumerated() {
                    let path = "\(prefix).tcp[\(i)]"
                    // HOST:PORT, or {address: HOST:PORT, tls: {certificate, key, client_ca}}.
                    var address = item, tls: Configuration.TLSFiles?, auth = Configuration.ListenerAuth.token
                    if case .mapping = item {
                        let entries = try mapping(item, path, keys: ["address", "tls", "auth"])
                        if let node = entries.first(where: { $0.0 == "auth" })?.1 { auth = try listenerAuth(node, "\(path).auth") }
                        guard let given = entries.first(where: { $0.0 == "address" })?.1 else {
                            throw error(item, "\(path).address", "expected the listener's address, HOST:PORT")
                        }
                        address = given
                        if let node = entries.first(where: { $0.0 == "tls" })?.1 { tls = try readTLS(node, "\(path).tls") }
                    }
                    let text = try string(address, path)
                    guard var listener = Self.parseHostPort(text) else {
                        throw error(address, path, "expected HOST:PORT such as 127.0.0.1:7420 or [::1]:7420, got '\(text)'")
                    }
                    listener.tls = tls
                    listener.auth = auth
                    if auth == .none, !Configuration.isLoopback(listener.host) {
                        throw error(item, "\(path).auth", "auth: none is allowed only on a loopback address (127.0.0.1, ::1): anyone who can reach \(listener.host) could act for every tenant")
                    }
                    configuration.tcpListeners.append(listener)
                }
            }
        }
    }

    /// `tls: {certificate, key, client_ca}`: the files are only named here; the daemon reads
    /// them (at start, and at each reload) and refuses what it cannot read, in words.
    func readTLS(_ node: Node, _ path: String) throws(SluiceError) -> Configuration.TLSFiles {
        var certificate: String?, key: String?, clientCA: String?
        for (name, value) in try mapping(node, path, keys: ["certificate", "key", "client_ca"]) {
            let text = try string(value, "\(path).\(name)")
            guard !text.isEmpty else { throw error(value, "\(path).\(name)", "expected a file's path") }
            switch name {
            case "certificate": certificate = text
            case "key": key = text
            default: clientCA = text
            }
        }
        guard let certificate else { throw error(node, "\(path).certificate", "TLS needs the server's certificate chain (a PEM file)") }
        guard let key else { throw error(node, "\(path).key", "TLS needs the certificate's private key (a PEM file)") }
        return Configuration.TLSFiles(certificate: certificate, key: key, clientCA: clientCA)
    }

    static func parseHostPort(_ text: String) -> Configuration.TCPListener? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else { return nil }
        return Configuration.TCPListener(host: host, port: port)
    }

    func readServer(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        let keys: Set = ["max_frame_bytes", "max_connections", "max_batch", "max_key_bytes", "max_queued_bytes", "threads", "clock",
                         "idle_timeout", "read_timeout", "write_timeout", "unix_reserve", "evict_idle_after", "max_queue_delay", "frames_per_turn"]
        for (key, value) in try mapping(node, "server", keys: keys) {
            let path = "server.\(key)"
            switch key {
            case "max_frame_bytes": configuration.maxFrameBytes = try integer(value, path, 64...(64 << 20))
            case "max_connections": configuration.maxConnections = try integer(value, path, 1...1_000_000)
            case "max_batch": configuration.maxBatch = try integer(value, path, 1...100_000)
            case "max_key_bytes": configuration.maxKeyBytes = try integer(value, path, 1...65_536)
            case "max_queued_bytes": configuration.maxQueuedBytes = try integer(value, path, (64 << 10)...(1 << 30))
            case "threads": configuration.threads = try integer(value, path, 0...1_024)
            case "idle_timeout": configuration.idleTimeoutMs = try milliseconds(value, path, allowingZero: true)
            case "read_timeout": configuration.readTimeoutMs = try milliseconds(value, path, allowingZero: true)
            case "write_timeout": configuration.writeTimeoutMs = try milliseconds(value, path, allowingZero: true)
            case "evict_idle_after": configuration.evictIdleAfterMs = try milliseconds(value, path, allowingZero: true)
            case "max_queue_delay": configuration.maxQueueDelayMs = try milliseconds(value, path, allowingZero: true)
            case "unix_reserve": configuration.unixReserve = try integer(value, path, 0...100_000)
            case "frames_per_turn": configuration.framesPerTurn = try integer(value, path, 0...1_000_000)
            default:
                let text = try string(value, path)
                guard let clock = Configuration.ClockMode(rawValue: text) else {
                    throw error(value, path, "expected monotonic or request, got '\(text)'")
                }
                configuration.clock = clock
            }
        }
    }

    /// A duration of 1 ms to 30 days (or 0, meaning never, when allowed), in milliseconds.
    func milliseconds(_ node: Node, _ path: String, allowingZero: Bool) throws(SluiceError) -> Int64 {
        if allowingZero, let text = node.string?.trimmingCharacters(in: .whitespaces), text == "0" || text == "off" { return 0 }
        let nanoseconds = try duration(node, path)
        guard nanoseconds >= 1_000_000, nanoseconds <= 30 * 86_400 * 1_000_000_000 else {
            throw error(node, path, "expected a duration of 1ms to 30d\(allowingZero ? ", or 0 (or off) for never" : "")")
        }
        return nanoseconds / 1_000_000
    }

    func readRules(_ node: Node, _ path: String, _ configuration: Configuration) throws(SluiceError) -> [String: Configuration.Rule] {
        var rules: [String: Configuration.Rule] = [:]
        for (name, ruleNode) in try mapping(node, path, keys: nil) {
            let rulePath = "\(path).\(name)"
            guard !name.isEmpty, name.utf8.count <= configuration.maxKeyBytes else {
                throw error(ruleNode, rulePath, "a rule name must be 1 to \(configuration.maxKeyBytes) bytes")
            }
            let all = try mapping(ruleNode, rulePath, keys: ["algorithm", "limit", "period", "burst", "limits", "service", "baseline", "backend",
                                                             "mode", "shadow", "unlimited", "replaces"])
            let modeKeys = ["service", "baseline", "backend", "mode", "shadow", "unlimited", "replaces"]
            let pairs = all.filter { !modeKeys.contains($0.key) }
            var ruleAlgorithm = configuration.defaultAlgorithm
            for (k, v) in pairs where k == "algorithm" { ruleAlgorithm = try algorithm(v, "\(rulePath).algorithm") }
            var specs: [LimitSpec] = []
            let unlimited = try all.first(where: { $0.key == "unlimited" }).map { pair throws(SluiceError) in try bool(pair.value, "\(rulePath).unlimited") } ?? false
            if unlimited {
                if let limitKey = pairs.first(where: { ["limit", "period", "burst", "limits", "algorithm"].contains($0.key) }) {
                    throw error(limitKey.value, "\(rulePath).\(limitKey.key)", "an unlimited rule has no limits; remove \(limitKey.key) or unlimited")
                }
                // A stand-in, never consulted: an unlimited rule's checks skip the table.
                specs.append(try readLimit(pairs: [], node: ruleNode, rulePath, limit: LimitSpec.maximumLimit, period: 1_000_000_000))
            } else if let limitsNode = pairs.first(where: { $0.key == "limits" })?.value {
                if pairs.contains(where: { ["limit", "period", "burst"].contains($0.key) }) {
                    throw error(ruleNode, rulePath, "give either limit/period/burst or a list under limits, not both")
                }
                let items = try sequence(limitsNode, "\(rulePath).limits")
                guard !items.isEmpty, items.count <= 16 else {
                    throw error(limitsNode, "\(rulePath).limits", "expected 1 to 16 limits")
                }
                for (i, item) in items.enumerated() {
                    specs.append(try readLimit(item, "\(rulePath).limits[\(i)]", algorithm: ruleAlgorithm))
                }
            } else {
                specs.append(try readLimit(pairs: pairs, node: ruleNode, rulePath, algorithm: ruleAlgorithm))
            }
            let bound = specs.enumerated().map { BoundLimit.rule(name, index: $0.offset, spec: $0.element) }
            var rule = Configuration.Rule(name: name, limits: bound)
            for (key, value) in all {
                switch key {
                case "service":
                    let service = try string(value, "\(rulePath).service")
                    guard !service.isEmpty, service.utf8.count <= configuration.maxKeyBytes else {
                        throw error(value, "\(rulePath).service", "a service name must be 1 to \(configuration.maxKeyBytes) bytes")
                    }
                    rule.service = service
                case "baseline": rule.baseline = try readBaseline(value, "\(rulePath).baseline")
                case "backend": rule.backend = try readBackend(value, "\(rulePath).backend")
                case "mode": rule.mode = try choice(value, "\(rulePath).mode", expected: "exact or fast")
                case "shadow": rule.shadow = try bool(value, "\(rulePath).shadow")
                case "unlimited": rule.unlimited = try bool(value, "\(rulePath).unlimited")
                case "replaces":
                    for (i, item) in try sequence(value, "\(rulePath).replaces").enumerated() {
                        let replaced = try string(item, "\(rulePath).replaces[\(i)]")
                        guard !replaced.isEmpty, replaced != name else {
                            throw error(item, "\(rulePath).replaces[\(i)]", "expected the name of another rule")
                        }
                        rule.replaces.append(replaced)
                    }
                default: break
                }
            }
            if rule.unlimited, rule.shadow { throw error(ruleNode, "\(rulePath).shadow", "an unlimited rule denies nothing to shadow") }
            rules[name] = rule
        }
        return rules
    }

    /// `baseline: {factor, floor, ceiling}`: a limit relative to the subject's learned rate.
    func readBaseline(_ node: Node, _ path: String) throws(SluiceError) -> Configuration.BaselineLimit {
        var factor: Double?, floor: UInt64?, ceiling: UInt64?
        for (key, value) in try mapping(node, path, keys: ["factor", "floor", "ceiling"]) {
            switch key {
            case "factor": factor = try number(value, "\(path).factor", 0.01...1_000)
            case "floor": floor = UInt64(try integer(value, "\(path).floor", 1...Int(LimitSpec.maximumLimit)))
            default: ceiling = UInt64(try integer(value, "\(path).ceiling", 1...Int(LimitSpec.maximumLimit)))
            }
        }
        guard let factor else { throw error(node, "\(path).factor", "required: how many times the subject's normal rate") }
        guard let floor else { throw error(node, "\(path).floor", "required: the least limit, per the rule's period") }
        guard let ceiling else { throw error(node, "\(path).ceiling", "required: the greatest limit, per the rule's period") }
        guard ceiling >= floor else { throw error(node, "\(path).ceiling", "must be at least the floor (\(floor))") }
        return Configuration.BaselineLimit(factor: factor, floor: floor, ceiling: ceiling)
    }

    func readLimit(_ node: Node, _ path: String, algorithm defaultAlgorithm: Algorithm) throws(SluiceError) -> LimitSpec {
        let pairs = try mapping(node, path, keys: ["limit", "period", "burst", "algorithm"])
        return try readLimit(pairs: pairs, node: node, path, algorithm: defaultAlgorithm)
    }

    func readLimit(pairs: [(key: String, value: Node)], node: Node, _ path: String, algorithm defaultAlgorithm: Algorithm = .gcra,
                   limit presetLimit: UInt64? = nil, period presetPeriod: Int64? = nil) throws(SluiceError) -> LimitSpec {
        var limit: UInt64? = presetLimit, period: Int64? = presetPeriod, burst: UInt64 = 0, limitAlgorithm = defaultAlgorithm
        for (key, value) in pairs {
            switch key {
            case "limit": limit = UInt64(try integer(value, "\(path).limit", 1...Int(LimitSpec.maximumLimit)))
            case "period": period = try duration(value, "\(path).period")
            case "burst": burst = UInt64(try integer(value, "\(path).burst", 0...Int(LimitSpec.maximumLimit)))
            default: limitAlgorithm = try algorithm(value, "\(path).algorithm")
            }
        }
        guard let limit else { throw error(node, "\(path).limit", "required: how many per period") }
        guard let period else { throw error(node, "\(path).period", "required: a duration such as 1s or 1m") }
        do {
            return try LimitSpec(limit: limit, period: period, burst: burst, algorithm: limitAlgorithm)
        } catch {
            throw self.error(node, path, error.message)
        }
    }
}

extension ConfigurationLoader {
    /// Parses `HOST:PORT` or `[IPv6]:PORT`.
    public static func parseHostPort(_ text: String) -> Configuration.TCPListener? { Reader.parseHostPort(text) }
}
