import ArgumentParser
import Foundation
import NIOCore
import SluiceConfiguration
import SluiceLoad
import SluicePostgres
import SluiceStore

/// `sluicectl store …`: the daemon's database itself, without a daemon: apply its migrations,
/// say what it holds, copy a SQLite deployment into PostgreSQL.
struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Migrate, inspect or copy the store (a SQLite file, or PostgreSQL) directly, without a daemon.",
        discussion: """
            A store is named as sluiced's --store names it: a SQLite file (a path, or sqlite:PATH), or a \
            PostgreSQL URL (postgres://user:password@host:port/database, or postgres://user@/database?host=/socket/folder).
            """,
        subcommands: [Migrate.self, Status.self, Copy.self]
    )

    struct StoreOptions: ParsableArguments {
        @Option(name: .long, help: "Seconds one PostgreSQL operation may take (connecting included).")
        var timeout: Double = 10
    }

    /// Opens (and so migrates) the store `name` names.
    static func open(_ name: String, options: StoreOptions) throws -> any InspectableStore {
        do {
            if name.hasPrefix("postgres://") || name.hasPrefix("postgresql://") {
                let timeout = TimeAmount.milliseconds(Int64(max(0.001, min(options.timeout, 3_600)) * 1_000))
                return try PostgresStore(PostgresEndpoint(url: name), timeout: timeout)
            }
            let path = name.hasPrefix("sqlite:") ? String(name.dropFirst("sqlite:".count)) : name
            guard !path.isEmpty else { throw Failure("name a store: a SQLite file, or a postgres:// URL") }
            return try SQLiteReputationStore(path: path, busyTimeout: 5)
        } catch let error as StoreError {
            throw Failure(error.message)
        }
    }

    /// `name` as it may be printed (no password).
    static func location(_ name: String) -> String { Configuration.StoreSettings.redacted(name) }

    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply the migrations this version knows (under a lock: safe while daemons start).",
            discussion: "Daemons migrate at start too; this does it ahead of a rollout, and prints what the database has.")
        @Argument(help: "The store: a SQLite file, sqlite:PATH, or a postgres:// URL.") var store: String
        @OptionGroup var options: StoreOptions

        func run() async throws {
            try await Self.reportFailures {
                let opened = try StoreCommand.open(store, options: options)
                let applied = try StoreCommand.attempt { try opened.appliedMigrations() }
                print("\(StoreCommand.location(store)): \(applied.count) migrations applied, \(StoreMigrations.all.count) known")
                for identifier in applied { print("  \(identifier)") }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "What the store holds: migrations, events, scores, tiers, baselines.")
        @Argument(help: "The store: a SQLite file, sqlite:PATH, or a postgres:// URL.") var store: String
        @OptionGroup var options: StoreOptions
        @Flag(name: .long, help: "Print as JSON.") var json = false

        func run() async throws {
            try await Self.reportFailures {
                let opened = try StoreCommand.open(store, options: options)
                let (applied, counts, mark) = try StoreCommand.attempt { (try opened.appliedMigrations(), try opened.counts(), try opened.replayMark()) }
                let backend = opened is PostgresStore ? "postgres" : "sqlite"
                if json {
                    try printJSON(["backend": backend, "location": StoreCommand.location(store), "migrations": applied.count,
                                   "migrations_known": StoreMigrations.all.count, "events": counts.events, "scores": counts.scores,
                                   "tiers": counts.tiers, "baselines": counts.baselines, "newest_event_id": counts.newestEventID,
                                   "scores_through_event_id": mark])
                } else {
                    print("""
                        backend: \(backend)
                        location: \(StoreCommand.location(store))
                        migrations: \(applied.count) applied, \(StoreMigrations.all.count) known (\(applied.last ?? "none"))
                        events: \(counts.events) (newest id \(counts.newestEventID); scores written through id \(mark))
                        scores: \(counts.scores)
                        tiers: \(counts.tiers)
                        baselines: \(counts.baselines)
                        """)
                }
            }
        }
    }

    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy every event, score, tier and baseline into another, empty store, and verify the counts.",
            discussion: """
                Moves a deployment from its SQLite file to the PostgreSQL its fleet will share: stop the daemon \
                (or accept losing what it writes meanwhile), copy, then start the daemons with store.backend: postgres. \
                Exit status 0 when every count matches, 2 otherwise.
                """)
        @Option(name: .long, help: "The store to read: a SQLite file, sqlite:PATH, or a postgres:// URL.") var from: String
        @Option(name: .long, help: "The empty store to write: a postgres:// URL, a SQLite file or sqlite:PATH.") var to: String
        @OptionGroup var options: StoreOptions

        func run() async throws {
            try await Self.reportFailures {
                let source = try StoreCommand.open(from, options: options)
                let target = try StoreCommand.open(to, options: options)
                let started = Date()
                let line = ProgressLine("copying events")
                defer { line.finish() }
                let (before, after) = try StoreCommand.attempt {
                    try StoreCopy.copy(from: source, to: target) { copied, total in
                        line.update(done: Double(copied), total: Double(total), detail: "\(ProgressLine.count(copied)) of \(ProgressLine.count(total)) events")
                    }
                }
                line.finish()
                print("source \(StoreCommand.location(from)): \(before)")
                print("target \(StoreCommand.location(to)): \(after)")
                guard before.events == after.events, before.scores == after.scores, before.tiers == after.tiers,
                      before.baselines == after.baselines else {
                    throw Failure("the counts differ: the copy is incomplete (was a daemon writing to the source?)")
                }
                print(String(format: "copied and verified in %.1f s", Date().timeIntervalSince(started)))
            }
        }
    }

    /// `body`, its store error as a one-line failure.
    static func attempt<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as StoreError {
            throw Failure(error.message)
        }
    }
}
