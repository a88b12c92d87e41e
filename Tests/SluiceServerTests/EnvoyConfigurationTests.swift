import Foundation
@testable import SluiceConfiguration
import SluiceCore
import Testing

/// envoy ratelimit's YAML, read unchanged, and matched as envoy ratelimit matches it.
@Suite("Envoy descriptor configuration")
struct EnvoyConfigurationTests {
    /// A folder with `files` (name → text) and a Sluice configuration naming it.
    func load(_ files: [String: String], extra: String = "") throws(SluiceError) -> Configuration {
        let folder = TestDaemon.temporaryDirectory()
        try? FileManager.default.createDirectory(atPath: folder + "/descriptors", withIntermediateDirectories: true)
        for (name, text) in files { FileManager.default.createFile(atPath: folder + "/descriptors/" + name, contents: Data(text.utf8)) }
        let yaml = "envoy:\n  config: descriptors\n" + extra
        FileManager.default.createFile(atPath: folder + "/sluice.yaml", contents: Data(yaml.utf8))
        return try ConfigurationLoader.load(file: folder + "/sluice.yaml")
    }

    func failure(_ files: [String: String]) -> String {
        do {
            _ = try load(files)
            return "no error"
        } catch {
            #expect(error.code == .invalidConfiguration)
            return error.message
        }
    }

    static let tree = """
        ---
        domain: edge
        descriptors:
          - key: remote_address
            rate_limit: {unit: second, requests_per_unit: 10}
          - key: path
            value: /login
            rate_limit: {unit: minute, requests_per_unit: 5, name: login}
          - key: path
            value: /api/*
            share_threshold: true
            rate_limit: {unit: hour, requests_per_unit: 100}
          - key: path
            value: /files/*/raw
            rate_limit: {unit: day, requests_per_unit: 7}
          - key: path
            rate_limit: {unit: minute, requests_per_unit: 50}
          - key: source_cluster
            value: proxy
            descriptors:
              - key: destination_cluster
                value: mock
                rate_limit: {unit: week, requests_per_unit: 1}
                shadow_mode: true
              - key: destination_cluster
                rate_limit:
                  unit: month
                  requests_per_unit: 3
                  algorithm: sliding_window
                  limits:
                    - {limit: 1, period: 1s}
          - key: internal
            rate_limit: {unlimited: true, name: free, replaces: [{name: login}]}
          - key: banned
            rate_limit: {unit: second, requests_per_unit: 0}
            quota_mode: true
            detailed_metric: true
            metadata: {anything: {goes: [1, 2]}}
        """

    func entries(_ pairs: (String, String)...) -> [(key: String, value: String)] { pairs.map { (key: $0.0, value: $0.1) } }

    @Test("a tree matches as envoy ratelimit: key_value first, then wildcards, then the key alone; a limit only at the request's last entry")
    func matching() throws {
        let configuration = try load(["edge.yaml": Self.tree])
        let domain = try #require(configuration.envoy.domains["edge"])
        #expect(domain.match(entries(("remote_address", "10.0.0.1")))?.limit.requestsPerUnit == 10)
        #expect(domain.match(entries(("remote_address", "10.0.0.1")))?.key == "remote_address=10.0.0.1")
        #expect(domain.match(entries(("path", "/login")))?.limit.name == "login")
        #expect(domain.match(entries(("path", "/other")))?.limit.requestsPerUnit == 50)
        // A trailing wildcard with share_threshold counts every value it matches as one.
        let api = try #require(domain.match(entries(("path", "/api/v1/items"))))
        #expect(api.limit.requestsPerUnit == 100)
        #expect(api.key == "path=/api/*")
        // A wildcard in the middle: without share_threshold each value counts on its own.
        let raw = try #require(domain.match(entries(("path", "/files/7/raw"))))
        #expect(raw.limit.requestsPerUnit == 7)
        #expect(raw.key == "path=/files/7/raw")
        #expect(domain.match(entries(("path", "/files/7/cooked")))?.limit.requestsPerUnit == 50)
        // Nested: the limit applies at the second entry only.
        #expect(domain.match(entries(("source_cluster", "proxy"))) == nil)
        let mock = try #require(domain.match(entries(("source_cluster", "proxy"), ("destination_cluster", "mock"))))
        #expect(mock.limit.shadow && mock.limit.unit == .week)
        #expect(domain.match(entries(("source_cluster", "proxy"), ("destination_cluster", "other")))?.limit.unit == .month)
        // More entries than the tree has levels: no limit.
        #expect(domain.match(entries(("remote_address", "10.0.0.1"), ("path", "/login"))) == nil)
        // Unknown keys, and a value a key-with-value level does not name.
        #expect(domain.match(entries(("nothing", "here"))) == nil)
        #expect(domain.match(entries(("source_cluster", "other"), ("destination_cluster", "mock"))) == nil)
        let free = try #require(domain.match(entries(("internal", "yes"))))
        #expect(free.limit.unlimited && free.limit.rule == nil && free.limit.replaces == ["login"])
        let banned = try #require(domain.match(entries(("banned", "x"))))
        #expect(banned.limit.rule == nil && banned.limit.requestsPerUnit == 0 && banned.limit.quota)
    }

    @Test("counted descriptors become rules of the domain's tenant: envoy's fixed windows, or the algorithm and extra limits the file asks for")
    func compiledRules() throws {
        let configuration = try load(["edge.yaml": Self.tree])
        let rules = try #require(configuration.tenants["edge"]?.rules)
        let login = try #require(rules["path_/login"])
        #expect(login.limits.map(\.spec) == [try LimitSpec(limit: 5, period: 60_000_000_000, algorithm: .fixedWindow)])
        let month = try #require(rules["source_cluster_proxy.destination_cluster"])
        #expect(month.limits.map(\.spec) == [try LimitSpec(limit: 3, period: 2_592_000 * 1_000_000_000, algorithm: .slidingWindow),
                                             try LimitSpec(limit: 1, period: 1_000_000_000, algorithm: .slidingWindow)])
        #expect(rules["source_cluster_proxy.destination_cluster_mock"]?.limits.first?.spec.period == 604_800_000_000_000)
        // Unlimited and 0-per-unit descriptors count nothing, so have no rule.
        #expect(rules["internal"] == nil && rules["banned"] == nil)
        #expect(rules.count == 7)
    }

    @Test("a folder's files are read in name order; a domain declared twice, and a descriptor that is a rule's name, are refused naming the files")
    func folders() throws {
        let second = "domain: other\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
        let configuration = try load(["a.yaml": Self.tree, "b.yml": second, "notes.txt": "not yaml: [", ".hidden.yaml": "x: ["])
        #expect(configuration.envoy.domains.keys.sorted() == ["edge", "other"])
        let twice = failure(["a.yaml": second, "b.yaml": second])
        #expect(twice.contains("b.yaml") && twice.contains("a.yaml") && twice.contains("domain 'other'"), "\(twice)")
        do {
            _ = try load(["b.yaml": second], extra: "tenants:\n  other:\n    rules:\n      a: {limit: 1, period: 1s}\n")
            Issue.record("a descriptor with a rule's name was taken")
        } catch {
            #expect(error.message.contains("descriptor 'a' of domain 'other'"), "\(error.message)")
        }
    }

    @Test("mistakes are refused with the file, the line and the key, as envoy ratelimit refuses them")
    func mistakes() {
        func refused(_ body: String, _ expected: String, line: Int? = nil) {
            let message = failure(["bad.yaml": body])
            #expect(message.contains("bad.yaml") && message.contains(expected), "\(message)")
            if let line { #expect(message.contains("bad.yaml:\(line):"), "\(message)") }
        }
        refused("descriptors: []\n", "domain")
        refused("domain: \"\"\ndescriptors: []\n", "domain")
        refused("domain: d\ndescriptors:\n  - value: v\n", "key", line: 3)
        refused("domain: d\ndescriptors:\n  - key: k\n    ratelimit: {unit: second}\n", "unknown key", line: 4)
        refused("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n", "invalid rate limit unit 'fortnight'")
        refused("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {requests_per_unit: 1}\n", "unit")
        refused("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, unit: second}\n", "should not specify a rate limit unit when unlimited")
        refused("domain: d\ndescriptors:\n  - key: k\n  - key: k\n", "duplicate descriptor 'k'", line: 4)
        refused("domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n", "share_threshold needs a wildcard")
        refused("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, name: n, replaces: [{name: n}]}\n",
                "cannot replace itself")
        refused("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, replaces: [{name: \"\"}]}\n",
                "should not be empty")
        refused("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: -1}\n", "requests_per_unit")
        refused("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 4294967296}\n", "requests_per_unit")
        refused("domain: d\ndescriptors: [\n", "not valid YAML")
        refused("domain: d\ndescriptors:\n  - just a string\n", "expected a mapping")
        let missing = ConfigurationTests.failure("envoy:\n  config: /nonexistent/sluice-descriptors\n")
        #expect(missing.contains("/nonexistent/sluice-descriptors does not exist"), "\(missing)")
        let headers = ConfigurationTests.failure("envoy:\n  headers: loud\n")
        #expect(headers.contains("envoy.headers"), "\(headers)")
        #expect((try? ConfigurationLoader.parse("envoy:\n  near_limit_ratio: 0.9\n", source: "sluice.yaml"))?.envoy.nearLimitRatio == 0.9)
        #expect((try? ConfigurationLoader.parse("envoy:\n  headers: off\n", source: "sluice.yaml"))?.envoy.nearLimitRatio == 0.8,
                "envoy ratelimit's NEAR_LIMIT_RATIO by default")
        for ratio in ["1.5", "-0.1", "most"] {
            let near = ConfigurationTests.failure("envoy:\n  near_limit_ratio: \(ratio)\n")
            #expect(near.contains("envoy.near_limit_ratio") && near.contains("from 0.0 to 1.0"), "\(near)")
        }
        let open = ConfigurationTests.failure("envoy:\n  listen:\n    tcp: [{address: \"0.0.0.0:8081\", auth: none}]\n")
        #expect(open.contains("envoy.listen.tcp[0].auth"), "\(open)")
    }

    @Test("wildcards: each * matches any run of bytes, in order")
    func wildcards() {
        func matches(_ pattern: String, _ value: String) -> Bool {
            DescriptorNode.wildcardMatches(pattern.split(separator: "*", omittingEmptySubsequences: false).map(String.init), value)
        }
        #expect(matches("k_foo*", "k_foo") && matches("k_foo*", "k_foobar") && !matches("k_foo*", "k_fo"))
        #expect(matches("k_a*b*c", "k_abc") && matches("k_a*b*c", "k_aXXbYYc") && !matches("k_a*b*c", "k_acb"))
        #expect(!matches("k_ab*ba", "k_aba"), "the prefix and suffix may not overlap")
        #expect(matches("k_*", "k_") && matches("k_é*", "k_été"))
    }
}
