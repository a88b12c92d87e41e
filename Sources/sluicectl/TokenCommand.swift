import ArgumentParser
import Foundation
import SluiceConfiguration
import SluiceCore

/// `sluicectl token …`: the tokens file the daemon reads (`auth.tokens_file`), without a daemon.
/// A new token is printed once; the file keeps only its salted hash.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Create, list or revoke API tokens in a tokens file (auth.tokens_file).",
        discussion: """
            The daemon reads the file at start and at each reload: after a change, reload it (sluicectl reload, \
            or SIGHUP). A revoked token stops serving at that reload, connections already using it included.
            """,
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct FileOption: ParsableArguments {
        @Option(name: .long, help: "The tokens file (default: $SLUICE_TOKENS_FILE).")
        var file: String?

        func path() throws -> String {
            guard let path = file ?? ProcessInfo.processInfo.environment["SLUICE_TOKENS_FILE"], !path.isEmpty else {
                throw Failure("name the tokens file: --file FILE (the daemon's auth.tokens_file)")
            }
            return path
        }
    }

    static func read(_ path: String) throws -> [Configuration.Auth.Token] {
        do {
            return try TokensFile.read(path)
        } catch {
            throw Failure(error.message)
        }
    }

    /// Writes the file whole, through a temporary file renamed over it, readable by its owner
    /// only (it holds hashes, but nobody else needs them).
    static func write(_ tokens: [Configuration.Auth.Token], to path: String) throws {
        let temporary = "\(path).tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(TokensFile.text(tokens).utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw Failure("cannot write \(temporary)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw Failure("cannot replace \(path): \(reason)")
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a token, print it once, and add its hash to the tokens file.",
            discussion: "The token is printed on standard output and nowhere else: keep it in your secret store.")
        @OptionGroup var file: FileOption
        @Option(name: .long, help: "A name for logs and listings (e.g. billing-api).") var name: String
        @Option(name: .long, help: "The tenant it acts for; \"*\" for every tenant; \"\" for the default tenant.") var tenant: String
        @Option(name: .long, parsing: .upToNextOption, help: "Its roles: check, report, read, operator.") var role: [String]

        func run() async throws {
            try await Self.reportFailures {
                let path = try file.path()
                var roles = Set<Configuration.Auth.Role>()
                for text in role {
                    guard let parsed = Configuration.Auth.Role(rawValue: text) else {
                        throw Failure("--role: expected check, report, read or operator, got '\(text)'")
                    }
                    roles.insert(parsed)
                }
                guard !roles.isEmpty else { throw Failure("--role: name at least one: check, report, read, operator") }
                guard !name.isEmpty else { throw Failure("--name must not be empty") }
                var tokens = try TokenCommand.read(path)
                guard !tokens.contains(where: { $0.identity.name == name }) else {
                    throw Failure("a token named '\(name)' is in \(path) already: revoke it first, or choose another name")
                }
                var made = AccessToken.make()
                while tokens.contains(where: { $0.id == made.id }) { made = AccessToken.make() }
                let created = ISO8601DateFormatter().string(from: Date())
                tokens.append(.init(id: made.id, digest: made.digest,
                                    identity: .init(name: name, tenant: tenant == "*" ? nil : tenant, roles: roles), created: created))
                try TokenCommand.write(tokens, to: path)
                print(made.token)
                FileHandle.standardError.write(Data("sluicectl: token \(made.id) ('\(name)') added to \(path); reload the daemon to use it\n".utf8))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the tokens in the file (never their secrets).")
        @OptionGroup var file: FileOption
        @Flag(name: .long, help: "One JSON object per line.") var json = false

        func run() async throws {
            try await Self.reportFailures {
                for token in try TokenCommand.read(try file.path()) {
                    let identity = token.identity
                    let roles = identity.roles.sorted().map(\.rawValue)
                    if json {
                        try printJSON(["id": token.id, "name": identity.name, "tenant": identity.tenant ?? "*", "roles": roles,
                                       "created": token.created ?? ""])
                    } else {
                        print("\(token.id)  \(identity.name)  tenant=\(identity.tenant.map { $0.isEmpty ? "(default)" : $0 } ?? "*")  roles=\(roles.joined(separator: ","))  created=\(token.created ?? "-")")
                    }
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a token (by its id or its name) from the file.")
        @OptionGroup var file: FileOption
        @Argument(help: "The token's id (12 hex digits) or name.") var token: String

        func run() async throws {
            try await Self.reportFailures {
                let path = try file.path()
                var tokens = try TokenCommand.read(path)
                let id = AccessToken.parse(token).map { String($0.id) } ?? token
                guard let index = tokens.firstIndex(where: { $0.id == id || $0.identity.name == token }) else {
                    throw Failure("no token '\(token)' in \(path)")
                }
                let removed = tokens.remove(at: index)
                try TokenCommand.write(tokens, to: path)
                FileHandle.standardError.write(Data("sluicectl: token \(removed.id) ('\(removed.identity.name)') revoked in \(path); reload the daemon to apply it\n".utf8))
            }
        }
    }
}
