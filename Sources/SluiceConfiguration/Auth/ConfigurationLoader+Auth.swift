import Foundation
import SluiceCore
import Yams

extension Reader {
    /// `auth:` tokens (inline and from `tokens_file`), client certificates, Unix peers, and the
    /// failure limits.
    func readAuth(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var auth = Configuration.Auth()
        let keys: Set = ["tokens", "tokens_file", "certificates", "unix_peers", "max_failures", "failures_per_minute"]
        for (key, value) in try mapping(node, "auth", keys: keys) {
            let path = "auth.\(key)"
            switch key {
            case "tokens":
                for (i, item) in try sequence(value, path).enumerated() { try add(readToken(item, "\(path)[\(i)]"), to: &auth, item) }
            case "tokens_file":
                let file = try string(value, path)
                guard !file.isEmpty else { throw error(value, path, "expected a file's path") }
                auth.tokensFile = resolve(file)
            case "certificates":
                for (i, item) in try sequence(value, path).enumerated() {
                    let itemPath = "\(path)[\(i)]"
                    let entries = try mapping(item, itemPath, keys: ["subject", "name", "tenant", "roles"])
                    guard let subjectNode = entries.first(where: { $0.0 == "subject" })?.1 else {
                        throw error(item, "\(itemPath).subject", "expected the client certificate's subject common name (CN)")
                    }
                    let subject = try string(subjectNode, "\(itemPath).subject")
                    guard !subject.isEmpty, auth.certificates[subject] == nil else {
                        throw error(subjectNode, "\(itemPath).subject", subject.isEmpty ? "must not be empty" : "'\(subject)' is mapped twice")
                    }
                    auth.certificates[subject] = try readIdentity(entries, item, itemPath, defaultName: "cert:\(subject)")
                }
            case "unix_peers":
                for (i, item) in try sequence(value, path).enumerated() {
                    let itemPath = "\(path)[\(i)]"
                    let entries = try mapping(item, itemPath, keys: ["uid", "name", "tenant", "roles"])
                    guard let uidNode = entries.first(where: { $0.0 == "uid" })?.1 else {
                        throw error(item, "\(itemPath).uid", "expected the connecting user's id")
                    }
                    let uid = UInt32(try integer(uidNode, "\(itemPath).uid", 0...Int(Int32.max)))
                    guard auth.unixPeers[uid] == nil else { throw error(uidNode, "\(itemPath).uid", "uid \(uid) is mapped twice") }
                    auth.unixPeers[uid] = try readIdentity(entries, item, itemPath, defaultName: "uid:\(uid)")
                }
            case "max_failures": auth.maxFailures = try integer(value, path, 1...1_000)
            default: auth.failuresPerMinute = try integer(value, path, 1...1_000_000)
            }
        }
        if let file = auth.tokensFile {
            for token in try Self.readTokensFile(file) {
                guard auth.token(id: Substring(token.id)) == nil else {
                    throw SluiceError(.invalidConfiguration, "\(file): token \(token.id) is also in auth.tokens")
                }
                auth.tokens.append(token)
            }
        }
        configuration.auth = auth
    }

    func add(_ token: Configuration.Auth.Token, to auth: inout Configuration.Auth, _ node: Node) throws(SluiceError) {
        guard auth.token(id: Substring(token.id)) == nil else { throw error(node, "auth.tokens", "token id \(token.id) appears twice") }
        auth.tokens.append(token)
    }

    /// A relative path is taken from the configuration file's folder.
    func resolve(_ file: String) -> String {
        guard !file.hasPrefix("/"), let slash = source.lastIndex(of: "/") else { return file }
        return "\(source[...slash])\(file)"
    }

    func listenerAuth(_ node: Node, _ path: String) throws(SluiceError) -> Configuration.ListenerAuth {
        let text = try string(node, path)
        guard let auth = Configuration.ListenerAuth(rawValue: text) else { throw error(node, path, "expected token or none, got '\(text)'") }
        return auth
    }

    /// One token entry: `{id, hash, name, tenant, roles, created}`.
    func readToken(_ node: Node, _ path: String) throws(SluiceError) -> Configuration.Auth.Token {
        let entries = try mapping(node, path, keys: ["id", "hash", "name", "tenant", "roles", "created"])
        func required(_ key: String, _ expected: String) throws(SluiceError) -> (Node, String) {
            guard let value = entries.first(where: { $0.0 == key })?.1 else { throw error(node, "\(path).\(key)", expected) }
            return (value, try string(value, "\(path).\(key)"))
        }
        let (idNode, id) = try required("id", "expected the token's id (12 hex digits, as sluicectl token create writes it)")
        guard AccessToken.isID(id) else { throw error(idNode, "\(path).id", "expected 12 lowercase hex digits, got '\(id)'") }
        let (hashNode, hashText) = try required("hash", "expected the token's hash, sha256:<salt>:<hash>")
        guard let digest = AccessToken.Digest(hashText) else {
            throw error(hashNode, "\(path).hash", "expected sha256:<salt hex>:<hash hex> (a token's hash, never the token itself)")
        }
        var created: String?
        if let value = entries.first(where: { $0.0 == "created" })?.1 { created = try string(value, "\(path).created") }
        return Configuration.Auth.Token(id: id, digest: digest, identity: try readIdentity(entries, node, path, defaultName: "token:\(id)"),
                                        created: created)
    }

    /// An identity's `name`, `tenant` ("*": every tenant) and `roles`.
    func readIdentity(_ entries: [(key: String, value: Node)], _ node: Node, _ path: String, defaultName: String)
        throws(SluiceError) -> Configuration.Auth.Identity {
        var name = defaultName
        if let value = entries.first(where: { $0.0 == "name" })?.1 { name = try string(value, "\(path).name") }
        guard let tenantNode = entries.first(where: { $0.0 == "tenant" })?.1 else {
            throw error(node, "\(path).tenant", "expected the tenant it acts for (\"\" for the default tenant, \"*\" for every tenant)")
        }
        let tenantText = try string(tenantNode, "\(path).tenant")
        guard tenantText.utf8.count <= 4_096 else { throw error(tenantNode, "\(path).tenant", "expected at most 4096 bytes") }
        guard let rolesNode = entries.first(where: { $0.0 == "roles" })?.1 else {
            throw error(node, "\(path).roles", "expected a list of roles: check, report, read, operator")
        }
        var roles = Set<Configuration.Auth.Role>()
        for (i, item) in try sequence(rolesNode, "\(path).roles").enumerated() {
            let text = try string(item, "\(path).roles[\(i)]")
            guard let role = Configuration.Auth.Role(rawValue: text) else {
                throw error(item, "\(path).roles[\(i)]", "expected check, report, read or operator, got '\(text)'")
            }
            roles.insert(role)
        }
        guard !roles.isEmpty else { throw error(rolesNode, "\(path).roles", "expected at least one role") }
        return .init(name: name, tenant: tenantText == "*" ? nil : tenantText, roles: roles)
    }

    /// The entries of a tokens file (`tokens: [...]`, as `sluicectl token create` writes it).
    static func readTokensFile(_ path: String) throws(SluiceError) -> [Configuration.Auth.Token] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw SluiceError(.invalidConfiguration, "auth.tokens_file \(path): cannot read the file (\(error.localizedDescription))")
        }
        let reader = Reader(source: path)
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw SluiceError(.invalidConfiguration, "\(path): not valid YAML: \(error)")
        }
        guard let root else { return [] }
        var tokens: [Configuration.Auth.Token] = []
        for (_, value) in try reader.mapping(root, "", keys: ["tokens"]) {
            var auth = Configuration.Auth()
            for (i, item) in try reader.sequence(value, "tokens").enumerated() {
                try reader.add(reader.readToken(item, "tokens[\(i)]"), to: &auth, item)
            }
            tokens = auth.tokens
        }
        return tokens
    }
}

/// The tokens file `sluicectl token` keeps: read and written whole, entries in order.
public enum TokensFile {
    /// Its entries; an absent file has none.
    public static func read(_ path: String) throws(SluiceError) -> [Configuration.Auth.Token] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        return try Reader.readTokensFile(path)
    }

    /// The file's text for `tokens`: hashes only, each string quoted.
    public static func text(_ tokens: [Configuration.Auth.Token]) -> String {
        func quoted(_ text: String) -> String {
            let data = (try? JSONEncoder().encode(text)) ?? Data("\"\"".utf8)
            return String(decoding: data, as: UTF8.self)
        }
        var lines = ["# Written by sluicectl token: salted hashes of API tokens, never the tokens themselves.",
                     "# The daemon reads it at start and at each reload (auth.tokens_file).", "tokens:"]
        if tokens.isEmpty { lines[2] = "tokens: []" }
        for token in tokens {
            let identity = token.identity
            lines.append("  - id: \(quoted(token.id))")
            lines.append("    name: \(quoted(identity.name))")
            lines.append("    tenant: \(quoted(identity.tenant ?? "*"))")
            lines.append("    roles: [\(identity.roles.sorted().map(\.rawValue).joined(separator: ", "))]")
            lines.append("    hash: \(quoted(token.digest.description))")
            if let created = token.created { lines.append("    created: \(quoted(created))") }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
