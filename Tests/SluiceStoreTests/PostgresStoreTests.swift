import Foundation
import NIOConcurrencyHelpers
import NIOCore
import SluiceCore
import SluiceIntelligence
import SluicePostgres
import SluiceStore
import SluiceTestKit
import Testing

@Suite("The PostgreSQL store", .ownThreads, .enabled(if: PostgresServer.installed))
struct PostgresStoreTests {
    @Test func urlsAreReadAsLibpqReadsThemAndMistakesAreSentences() throws {
        let tcp = try PostgresEndpoint(url: "postgres://sluice:p%40ss@db.internal:6432/limits?sslmode=require")
        #expect(tcp.address == .tcp(host: "db.internal", port: 6432))
        #expect(tcp.user == "sluice" && tcp.password == "p@ss" && tcp.database == "limits" && tcp.tls == .require)
        #expect(!tcp.description.contains("p@ss") && !tcp.description.contains("p%40ss"))
        let socket = try PostgresEndpoint(url: "postgresql://app@/state?host=/run/postgresql")
        #expect(socket.address == .unix(path: "/run/postgresql/.s.PGSQL.5432"))
        #expect(socket.database == "state" && socket.password == nil)
        let defaults = try PostgresEndpoint(url: "postgres://localhost")
        #expect(defaults.user == "postgres" && defaults.database == "postgres" && defaults.tls == .prefer)
        for (url, words) in [("mysql://x@y/z", "scheme"), ("postgres://u@h/d?sslmode=verify", "sslmode"),
                             ("postgres://u@h/d?ssl=true", "unknown parameter 'ssl'"), ("postgres://u@/d", "no host"),
                             ("postgres://u@h:0/d", "port"), ("postgres://u@/d?host=relative", "starting with /")] {
            let error = #expect(throws: StoreError.self, "\(url)") { try PostgresEndpoint(url: url) }
            #expect(error?.message.contains(words) == true, "\(url): \(error?.message ?? "")")
        }
    }

    @Test func daemonsStartingTogetherOnAnEmptyDatabaseMigrateItOnce() async throws {
        let server = try await PostgresServer.shared()
        let database = try await blocking { try server.createDatabase() }
        let endpoint = try PostgresEndpoint(url: server.socketURL(database: database))
        // Six stores opened at the same moment, each on its own thread, as six daemons would.
        let failures = NIOLockedValueBox<[String]>([])
        let group = DispatchGroup()
        for _ in 0..<6 {
            DispatchQueue.global().async(group: group) {
                do {
                    let store = try PostgresStore(endpoint)
                    store.close()
                } catch {
                    failures.withLockedValue { $0.append("\(error)") }
                }
            }
        }
        await withCheckedContinuation { done in group.notify(queue: .global()) { done.resume() } }
        #expect(failures.withLockedValue { $0 }.isEmpty)
        #expect(try server.psql("SELECT count(*), count(DISTINCT identifier) FROM sluice_migrations", database: database)
                == "\(StoreMigrations.all.count)|\(StoreMigrations.all.count)")
    }

    /// Several daemons committing at once: every event lands once, and event ids follow commit
    /// order with no gap (what a daemon reading the others' events by id relies on).
    @Test func concurrentCommitsFromSeveralDaemonsLoseNothingAndNumberEventsInCommitOrder() async throws {
        let server = try await PostgresServer.shared()
        let database = try await blocking { try server.createDatabase() }
        let endpoint = try PostgresEndpoint(url: server.socketURL(database: database))
        let stores = try (0..<3).map { _ in try PostgresStore(endpoint) }
        let group = DispatchGroup()
        let failures = NIOLockedValueBox<[String]>([])
        for (daemon, store) in stores.enumerated() {
            DispatchQueue.global().async(group: group) {
                for commit in 0..<40 {
                    var batch = StoreBatch()
                    batch.events = (0..<25).map { index in
                        ReputationEvent(tenant: "t", subject: "s\(index % 7)", kind: "x", weight: 1, at: Int64(commit * 25 + index),
                                        note: "d\(daemon)-c\(commit)-e\(index)")
                    }
                    do { try store.commit(batch) } catch { failures.withLockedValue { $0.append("\(error)") } }
                }
            }
        }
        await withCheckedContinuation { done in group.notify(queue: .global()) { done.resume() } }
        #expect(failures.withLockedValue { $0 }.isEmpty)
        #expect(try stores[0].eventCount() == 3 * 40 * 25)
        #expect(try server.psql("SELECT count(DISTINCT note), min(id), max(id) FROM reputation_events", database: database) == "3000|1|3000")
        // Each commit's 25 events are consecutive ids: commits did not interleave.
        #expect(try server.psql("""
            SELECT count(*) FROM (SELECT split_part(note, '-e', 1) AS c, max(id) - min(id) AS span FROM reputation_events GROUP BY 1) s
            WHERE span <> 24
            """, database: database) == "0")
        for store in stores { store.close() }
    }

    @Test func aWrongPasswordAnUnreachableServerAndAMissingDatabaseAreClearErrors() async throws {
        let server = try await PostgresServer.shared()
        let wrong = await #expect(throws: StoreError.self) {
            try await blocking { try PostgresStore(PostgresEndpoint(url: server.tcpURL(password: "not-the-password") + "?sslmode=disable"), timeout: .seconds(5)) }
        }
        #expect(wrong?.message.contains("password authentication failed") == true, "\(wrong?.message ?? "")")
        #expect(wrong?.message.contains("not-the-password") == false)
        // The right password over TCP works (SCRAM), with TLS preferred and the server offering none.
        let database = try await blocking { try server.createDatabase() }
        let store = try await blocking { try PostgresStore(PostgresEndpoint(url: server.tcpURL(database: database))) }
        #expect(try store.eventCount() == 0)
        store.close()

        let nobody = try #require(RedisServer.freePort())
        let started = ContinuousClock.now
        let unreachable = await #expect(throws: StoreError.self) {
            try await blocking { try PostgresStore(PostgresEndpoint(url: "postgres://sluice:x@127.0.0.1:\(nobody)/db?sslmode=disable"), timeout: .seconds(2)) }
        }
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(unreachable?.message.contains("127.0.0.1:\(nobody)") == true, "\(unreachable?.message ?? "")")
        #expect(unreachable?.message.contains("could not apply migrations") == true)

        let missing = #expect(throws: StoreError.self) {
            try PostgresStore(PostgresEndpoint(url: server.socketURL(database: "no_such_database")))
        }
        #expect(missing?.message.contains("does not exist") == true, "\(missing?.message ?? "")")
    }

    @Test func somethingThatIsNotPostgresOnThePortIsAnErrorNotAHang() async throws {
        let redis = try await RedisServer.start(["--port", String(try #require(RedisServer.freePort())), "--bind", "127.0.0.1"])
        defer { redis.stop() }
        let port = try #require(Int(RedisCluster.run(["-s", redis.socket, "CONFIG", "GET", "port"]).output.split(separator: "\n").last ?? ""))
        let started = ContinuousClock.now
        let error = await #expect(throws: StoreError.self) {
            try await blocking { try PostgresStore(PostgresEndpoint(url: "postgres://sluice:x@127.0.0.1:\(port)/db?sslmode=disable"), timeout: .seconds(2)) }
        }
        // An error, not a hang: bounded by a few timeouts of 2 s (a loaded CI run took 10.4 s).
        #expect(ContinuousClock.now - started < .seconds(30))
        #expect(error?.message.contains("could not apply migrations") == true, "\(error?.message ?? "")")
    }

    @Test func aTableAlteredByHandFailsTheCommitInWordsAndNothingOfItLands() async throws {
        let server = try await PostgresServer.shared()
        let database = try await blocking { try server.createDatabase() }
        let store = try PostgresStore(PostgresEndpoint(url: server.socketURL(database: database)))
        try server.psql("ALTER TABLE reputation_scores DROP COLUMN pinned", database: database)
        var batch = StoreBatch()
        batch.events = [ReputationEvent(tenant: "", subject: "s", kind: "x", weight: 1, at: 0)]
        batch.records[Fingerprint.of(tenant: "", key: "s")] = .upsert(ReputationRecord(tenant: "", subject: "s", score: 51, updatedAt: 0))
        let error = #expect(throws: StoreError.self) { try store.commit(batch) }
        #expect(error?.message.contains("pinned") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("could not commit") == true)
        // One transaction: the event did not land without its score.
        #expect(try store.eventCount() == 0)
        // A NUL in client text is stored as U+FFFD, not a failed commit.
        var nul = StoreBatch()
        nul.events = [ReputationEvent(tenant: "", subject: "s", kind: "x", weight: 1, at: 0, note: "a\u{0}b")]
        try store.commit(nul)
        #expect(try store.recentEvents(tenant: "", subject: "s", limit: 1).map(\.note) == ["a\u{FFFD}b"])
    }

    @Test func aServerThatStopsAndComesBackFailsOperationsMeanwhileThenServesThemAgain() async throws {
        let server = try await PostgresServer.start()
        defer { server.stop() }
        let store = try PostgresStore(PostgresEndpoint(url: server.socketURL()), timeout: .seconds(2))
        let batch = { () -> StoreBatch in
            var batch = StoreBatch()
            batch.events = [ReputationEvent(tenant: "", subject: "s", kind: "x", weight: 1, at: 0)]
            return batch
        }()
        try store.commit(batch)

        try await blocking { server.stop(keepData: true) }
        let down = await #expect(throws: StoreError.self) { try await blocking { try store.commit(batch) } }
        #expect(down?.message.contains("could not commit") == true, "\(down?.message ?? "")")

        try await server.restart()
        try await blocking { try store.commit(batch) }
        #expect(try store.eventCount() == 2)

        // Frozen (answers nothing, connections open): the operation fails after the timeout.
        server.freeze(true)
        let started = ContinuousClock.now
        let frozen = await #expect(throws: StoreError.self) { try await blocking { try store.commit(batch) } }
        let waited = ContinuousClock.now - started
        server.freeze(false)
        #expect(frozen?.message.contains("no answer within 2") == true, "\(frozen?.message ?? "")")
        #expect(waited >= .seconds(2) && waited < .seconds(8), "\(waited)")
        try store.commit(batch)
        #expect(try store.eventCount() == 3)
        store.close()
    }
}

/// `StoreCopy`: a SQLite deployment copied into PostgreSQL replays exactly what it would have.
@Suite(.ownThreads, .enabled(if: PostgresServer.installed))
struct StoreCopyTests {
    @Test func aCopyKeepsEveryRowAndTheEventsTheScoresDoNotReflectYet() async throws {
        let sqlite = try SQLiteReputationStore(path: temporaryDirectory() + "/sluice.db")
        // More events than one page of the copy, the scores written after them, then a few the
        // scores do not reflect (written by a daemon killed before its next scores).
        var first = StoreBehaviourTests.eventsOfTenSubjects(StoreCopy.page + 10_000)
        first.events[17].note = "kept"
        try sqlite.commit(first)
        var later = StoreBatch()
        later.events = (0..<7).map { ReputationEvent(tenant: "t", subject: "late\($0)", kind: "auth_failure", weight: -5, at: Int64($0)) }
        try sqlite.commit(later)
        try sqlite.saveTier(TierAssignment(tenant: "", subject: "s1", tier: "vip", assignedAt: 5))
        try sqlite.saveBaselines([(Fingerprint(high: 1, low: 2), Baseline(normal: [1, 2], windowStart: 0, lastSeen: 10, samples: 3))])

        let target = try await TestStore.make(.postgres)
        let postgres = try PostgresStore(PostgresEndpoint(url: target.url))
        var reported: [Int] = []
        let (source, copied) = try StoreCopy.copy(from: sqlite, to: postgres) { copied, _ in reported.append(copied) }
        #expect(source == copied.withNewest(source.newestEventID))
        #expect(copied.events == StoreCopy.page + 10_007 && copied.scores == 10 && copied.tiers == 1 && copied.baselines == 1)
        #expect(reported.last == copied.events && reported.count >= 2)
        #expect(try postgres.eventsAfterRecords() == sqlite.eventsAfterRecords())
        #expect(try postgres.eventsAfterRecords().count == 7)
        #expect(try Set(postgres.loadRecords().map(\.subject)) == Set(sqlite.loadRecords().map(\.subject)))
        #expect(try postgres.recentEvents(tenant: "", subject: "s7", limit: 10_000).contains { $0.note == "kept" })
        #expect(try postgres.loadTiers() == sqlite.loadTiers())
        // Only into an empty store.
        let refused = #expect(throws: StoreError.self) { try StoreCopy.copy(from: sqlite, to: postgres) }
        #expect(refused?.message.contains("already holds") == true)
    }
}

extension StoreCounts {
    /// These counts with `id` as the newest event's (ids differ between two databases).
    func withNewest(_ id: Int64) -> StoreCounts {
        var counts = self
        counts.newestEventID = id
        return counts
    }
}

/// TLS to PostgreSQL, against a real server with `ssl = on` and real certificates.
@Suite(.ownThreads, .enabled(if: PostgresServer.installed && TestCertificates.installed), .serialized)
struct PostgresTLSTests {
    @Test func sslmodesEncryptAndVerifyFullChecksTheCertificate() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        try PostgresServer.give(certificates)
        let server = try await PostgresServer.start(settings: ["ssl": "on", "ssl_cert_file": certificates.certificate,
                                                                "ssl_key_file": certificates.key])
        defer { server.stop() }
        /// How many client connections over TCP are encrypted now.
        @Sendable func encrypted() throws -> String {
            try server.psql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.client_addr IS NOT NULL")
        }
        for mode in ["prefer", "require", "verify-full&sslrootcert=\(certificates.authority)"] {
            let store = try await blocking { try PostgresStore(PostgresEndpoint(url: server.tcpURL() + "?sslmode=" + mode)) }
            try await blocking { try store.probe() }
            #expect(try await blocking { try encrypted() } == "1", "sslmode=\(mode)")
            try await blocking { store.close() }
        }
        // disable: in clear.
        let clear = try await blocking { try PostgresStore(PostgresEndpoint(url: server.tcpURL() + "?sslmode=disable")) }
        #expect(try await blocking { try encrypted() } == "0")
        try await blocking { clear.close() }
        // verify-full against another authority: refused, in words.
        let stranger = try TestCertificates.make()
        defer { stranger.remove() }
        let error = await #expect(throws: StoreError.self) {
            try await blocking { try PostgresStore(PostgresEndpoint(url: server.tcpURL() + "?sslmode=verify-full&sslrootcert=\(stranger.authority)"),
                                                   timeout: .seconds(10)) }
        }
        #expect(error?.message.lowercased().contains("certificate") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains(PostgresServer.password) == false)
    }
}
