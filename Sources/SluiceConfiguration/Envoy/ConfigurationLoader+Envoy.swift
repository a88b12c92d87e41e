import Foundation
import SluiceCore
import Yams

// `envoy:` and envoy ratelimit's own YAML files, read unchanged: `domain`, nested `descriptors`
// with `key`, `value` (wildcards such as `foo*`), `rate_limit {unit, requests_per_unit,
// unlimited, name, replaces}`, `shadow_mode`, `detailed_metric`, `value_to_metric`,
// `share_threshold`, `metadata`. Sluice's extensions sit in `rate_limit`: `algorithm`, `burst`
// and `limits` (more limits decided together). Every error names the file, the line and the key.

extension Reader {
    func readEnvoy(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = Configuration.EnvoySettings()
        var inline: [Node] = []
        for (key, value) in try mapping(node, "envoy", keys: ["listen", "config", "domains", "headers", "subject_key", "near_limit_ratio"]) {
            switch key {
            case "listen": (settings.tcpListeners, settings.unixListeners) = try readListeners(value, "envoy.listen")
            case "config":
                let items = value.sequence.map(Array.init) ?? [value]
                for (i, item) in items.enumerated() {
                    let path = try string(item, value.sequence == nil ? "envoy.config" : "envoy.config[\(i)]")
                    guard !path.isEmpty else { throw error(item, "envoy.config", "expected a file or a folder of envoy ratelimit YAML files") }
                    settings.configPaths.append(resolve(path))
                }
            case "domains": inline = try sequence(value, "envoy.domains")
            case "headers": settings.headers = try choice(value, "envoy.headers", expected: "off, draft, legacy or both")
            case "near_limit_ratio": settings.nearLimitRatio = try number(value, "envoy.near_limit_ratio", 0...1)
            default:
                settings.subjectKey = try string(value, "envoy.subject_key")
                guard !settings.subjectKey.isEmpty else { throw error(value, "envoy.subject_key", "expected a descriptor key such as remote_address") }
            }
        }
        var domains: [DescriptorDomain] = []
        for (i, item) in inline.enumerated() {
            domains.append(try readDomain(item, "envoy.domains[\(i)]", configuration))
        }
        for path in settings.configPaths {
            for file in try Self.envoyFiles(at: path, source: source) {
                domains.append(try Self.readEnvoyFile(file, configuration))
            }
        }
        for domain in domains {
            if let earlier = settings.domains[domain.name] {
                throw SluiceError(.invalidConfiguration, "\(domain.source): domain '\(domain.name)' is also declared in \(earlier.source); a domain is declared once")
            }
            settings.domains[domain.name] = domain
        }
        configuration.envoy = settings
    }

    /// The YAML files `path` names: itself, or a folder's `*.yaml` and `*.yml` in name order.
    static func envoyFiles(at path: String, source: String) throws(SluiceError) -> [String] {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw SluiceError(.invalidConfiguration, "\(source): envoy.config: \(path) does not exist")
        }
        guard isFolder.boolValue else { return [path] }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            throw SluiceError(.invalidConfiguration, "\(source): envoy.config: cannot list \(path) (\(error.localizedDescription))")
        }
        return names.filter { ($0.hasSuffix(".yaml") || $0.hasSuffix(".yml")) && !$0.hasPrefix(".") }.sorted()
            .map { path.hasSuffix("/") ? path + $0 : path + "/" + $0 }
    }

    /// One envoy ratelimit file: `domain` and `descriptors`.
    static func readEnvoyFile(_ file: String, _ configuration: Configuration) throws(SluiceError) -> DescriptorDomain {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw SluiceError(.invalidConfiguration, "\(file): cannot read the file (\(error.localizedDescription))")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw SluiceError(.invalidConfiguration, "\(file): not valid YAML: \(error)")
        }
        guard let root else { throw SluiceError(.invalidConfiguration, "\(file): empty; expected domain and descriptors") }
        return try Reader(source: file).readDomain(root, "", configuration)
    }

    func readDomain(_ node: Node, _ path: String, _ configuration: Configuration) throws(SluiceError) -> DescriptorDomain {
        var name: String?
        var descriptors: [Node] = []
        for (key, value) in try mapping(node, path, keys: ["domain", "descriptors"]) {
            if key == "domain" {
                name = try string(value, join(path, "domain"))
            } else if case .scalar(let scalar) = value, scalar.string.isEmpty || scalar.string == "null" || scalar.string == "~" {
                descriptors = []
            } else {
                descriptors = try sequence(value, join(path, "descriptors"))
            }
        }
        guard let name, !name.isEmpty else { throw error(node, join(path, "domain"), "required: the domain's name, not empty") }
        guard name.utf8.count <= configuration.maxKeyBytes else {
            throw error(node, join(path, "domain"), "a domain name must be at most \(configuration.maxKeyBytes) bytes")
        }
        let root = try readDescriptors(descriptors, join(path, "descriptors"), parentKey: "", configuration)
        return DescriptorDomain(name: name, source: source, root: DescriptorNode(children: root.children, wildcards: root.wildcards,
                                                                                 limit: nil, shareThreshold: false))
    }

    func readDescriptors(_ items: [Node], _ path: String, parentKey: String,
                         _ configuration: Configuration) throws(SluiceError) -> (children: [String: DescriptorNode], wildcards: [(key: String, parts: [String])]) {
        var children: [String: DescriptorNode] = [:]
        var wildcards: [(key: String, parts: [String])] = []
        for (i, item) in items.enumerated() {
            let itemPath = "\(path)[\(i)]"
            let pairs = try mapping(item, itemPath, keys: ["key", "value", "rate_limit", "descriptors", "shadow_mode", "quota_mode",
                                                           "detailed_metric", "value_to_metric", "share_threshold", "metadata"])
            var key = "", value = "", shadow = false, quota = false, shareThreshold = false
            var limitNode: Node?, below: [Node] = []
            for (k, v) in pairs {
                switch k {
                case "key": key = try string(v, "\(itemPath).key")
                case "value": value = try string(v, "\(itemPath).value")
                case "rate_limit": limitNode = v
                case "descriptors": below = try sequence(v, "\(itemPath).descriptors")
                case "shadow_mode": shadow = try bool(v, "\(itemPath).shadow_mode")
                case "share_threshold": shareThreshold = try bool(v, "\(itemPath).share_threshold")
                case "quota_mode": quota = try bool(v, "\(itemPath).quota_mode")
                // Metrics naming and metadata for Envoy's dynamic metadata: read, not used
                // (Sluice's metrics count every rule; docs/MIGRATING.md).
                case "detailed_metric", "value_to_metric": _ = try bool(v, "\(itemPath).\(k)")
                default: break
                }
            }
            guard !key.isEmpty else { throw error(item, "\(itemPath).key", "required: the descriptor's key, not empty") }
            let finalKey = value.isEmpty ? key : key + "_" + value
            let fullKey = parentKey.isEmpty ? finalKey : parentKey + "." + finalKey
            guard children[finalKey] == nil else {
                throw error(item, "\(itemPath)", "duplicate descriptor '\(fullKey)': another descriptor at this level has the same key and value")
            }
            if shareThreshold, !finalKey.contains("*") {
                throw error(item, "\(itemPath).share_threshold", "share_threshold needs a wildcard value (one with '*'), found '\(finalKey)'")
            }
            var limit = try limitNode.map { node throws(SluiceError) in
                try readDescriptorLimit(node, "\(itemPath).rate_limit", path: fullKey, shadow: shadow, configuration)
            }
            limit?.quota = quota
            let nested = try readDescriptors(below, "\(itemPath).descriptors", parentKey: fullKey, configuration)
            if finalKey.contains("*") {
                wildcards.append((finalKey, finalKey.split(separator: "*", omittingEmptySubsequences: false).map(String.init)))
            }
            children[finalKey] = DescriptorNode(children: nested.children, wildcards: nested.wildcards, limit: limit, shareThreshold: shareThreshold)
        }
        return (children, wildcards)
    }

    func readDescriptorLimit(_ node: Node, _ path: String, path fullKey: String, shadow: Bool,
                             _ configuration: Configuration) throws(SluiceError) -> DescriptorRateLimit {
        let pairs = try mapping(node, path, keys: ["requests_per_unit", "unit", "unlimited", "name", "replaces", "algorithm", "burst", "limits"])
        var perUnit: UInt32 = 0, unit: DescriptorRateLimit.Unit?, unitNode: Node?, unlimited = false, name = ""
        var replaces: [String] = [], algorithm = Algorithm.fixedWindow, burst: UInt64 = 0, extra: [Node] = []
        for (key, value) in pairs {
            switch key {
            case "requests_per_unit": perUnit = UInt32(try integer(value, "\(path).requests_per_unit", 0...Int(UInt32.max)))
            case "unit":
                unitNode = value
                let text = try string(value, "\(path).unit")
                guard let parsed = DescriptorRateLimit.Unit(name: text) else {
                    throw error(value, "\(path).unit", "invalid rate limit unit '\(text)'; expected second, minute, hour, day, week, month or year")
                }
                unit = parsed
            case "unlimited": unlimited = try bool(value, "\(path).unlimited")
            case "name": name = try string(value, "\(path).name")
            case "replaces":
                for (i, entry) in try sequence(value, "\(path).replaces").enumerated() {
                    for (k, v) in try mapping(entry, "\(path).replaces[\(i)]", keys: ["name"]) where k == "name" {
                        let replaced = try string(v, "\(path).replaces[\(i)].name")
                        guard !replaced.isEmpty else { throw error(v, "\(path).replaces[\(i)].name", "should not be empty") }
                        replaces.append(replaced)
                    }
                }
            case "algorithm": algorithm = try self.algorithm(value, "\(path).algorithm")
            case "burst": burst = UInt64(try integer(value, "\(path).burst", 0...Int(LimitSpec.maximumLimit)))
            default: extra = try sequence(value, "\(path).limits")
            }
        }
        if !name.isEmpty, replaces.contains(name) {
            throw error(node, "\(path).replaces", "a limit cannot replace itself ('\(name)')")
        }
        if unlimited {
            if let unitNode { throw error(unitNode, "\(path).unit", "should not specify a rate limit unit when unlimited") }
            return DescriptorRateLimit(rule: nil, requestsPerUnit: 0, unit: nil, unlimited: true, name: name, replaces: replaces, shadow: shadow,
                                   algorithm: algorithm, path: fullKey)
        }
        guard let unit else { throw error(node, "\(path).unit", "required: second, minute, hour, day, week, month or year") }
        guard perUnit > 0 else {
            // 0 per unit: every request over the limit, nothing counted (as envoy ratelimit).
            return DescriptorRateLimit(rule: nil, requestsPerUnit: 0, unit: unit, unlimited: false, name: name, replaces: replaces, shadow: shadow,
                                   algorithm: algorithm, path: fullKey)
        }
        var specs: [LimitSpec] = []
        do {
            specs.append(try LimitSpec(limit: UInt64(perUnit), period: unit.seconds * 1_000_000_000, burst: burst, algorithm: algorithm))
        } catch {
            throw self.error(node, path, error.message)
        }
        guard extra.count <= 15 else { throw error(node, "\(path).limits", "expected at most 15 more limits") }
        for (i, item) in extra.enumerated() {
            specs.append(try readLimit(item, "\(path).limits[\(i)]", algorithm: algorithm))
        }
        guard fullKey.utf8.count <= configuration.maxKeyBytes else {
            throw error(node, path, "the descriptor's path is longer than \(configuration.maxKeyBytes) bytes")
        }
        return DescriptorRateLimit(rule: fullKey, requestsPerUnit: perUnit, unit: unit, unlimited: false, name: name, replaces: replaces, shadow: shadow,
                               algorithm: algorithm, path: fullKey)
            .with(specs: specs)
    }
}

extension DescriptorRateLimit {
    /// Carries the limits its rule is compiled from until ``Configuration/compileDescriptorRules()``.
    func with(specs: [LimitSpec]) -> DescriptorRateLimit {
        var copy = self
        copy.specs = specs
        return copy
    }
}

extension Configuration {
    /// Adds each domain's counted descriptors as rules of the tenant named like the domain
    /// (declared under `tenants:` or not), so they are decided, routed, scaled and counted as
    /// any rule. A descriptor whose path is also a rule's name there is refused.
    mutating func compileDescriptorRules() throws(SluiceError) {
        for (name, domain) in envoy.domains.sorted(by: { $0.key < $1.key }) {
            var tenant = tenants[name] ?? Tenant(name: name, rules: [:])
            var rules: [String: Rule] = [:]
            func walk(_ node: DescriptorNode) {
                if let limit = node.limit, let rule = limit.rule, !limit.specs.isEmpty {
                    rules[rule] = Rule(name: rule, limits: limit.specs.enumerated().map { BoundLimit.rule(rule, index: $0.offset, spec: $0.element) })
                }
                for child in node.children.values { walk(child) }
            }
            walk(domain.root)
            for (rule, compiled) in rules {
                guard tenant.rules[rule] == nil else {
                    throw SluiceError(.invalidConfiguration, "\(domain.source): descriptor '\(rule)' of domain '\(name)' has the name of a rule of tenant '\(name)'")
                }
                tenant.rules[rule] = compiled
            }
            tenants[name] = tenant
        }
    }
}
