import Foundation
import Logging
@testable import SluiceServer
import SluiceCore
import SluiceIntelligence
import SluicePostgres
import SluiceStore
import SluiceTestKit
import Testing

/// `FleetSync` and `FleetCommitStore` on a real PostgreSQL: two daemons' books and write-behinds
/// in one process, stepped by hand.
@Suite(.ownThreads, .enabled(if: PostgresServer.installed))
struct FleetSyncTests {
    struct Member {
        let store: PostgresStore
        let book: ReputationBook
        let fleet: FleetSync
        let writer: WriteBehind

        init(url: String) throws {
            let store = try PostgresStore(PostgresEndpoint(url: url))
            let writer = WriteBehind(store: nil, recordsEvery: 1)
            let book = ReputationBook { key, record, tenant, subject, event in
                writer.enqueue(record.map(StoreBatch.Change.upsert) ?? .delete(tenant: tenant, subject: subject), for: key, event: event)
            }
            let fleet = FleetSync(book: book, tiers: TierBook(), responses: AnomalyResponseBook(), model: { ReputationModel() },
                                  logger: Logger(label: "test"))
            fleet.attach(store, cursor: try store.loadShared(now: 0).cursor)
            writer.attach(FleetCommitStore(store, fleet: fleet))
            (self.store, self.book, self.fleet, self.writer) = (store, book, fleet, writer)
        }

        func record(_ subject: String, at time: Int64) {
            book.apply(ReputationEvent(tenant: "", subject: subject, kind: "auth_failure", weight: -5, at: time), model: ReputationModel())
        }

        func events(of subject: String) -> UInt64 { book.record(of: Fingerprint.of(tenant: "", key: subject))?.events ?? 0 }
    }

    @Test func scoreRowsThatFailAfterTheirEventsCommittedAreRetriedWithoutWritingTheEventsTwice() async throws {
        let server = try await PostgresServer.shared()
        let database = try await blocking { try server.createDatabase() }
        let url = server.socketURL(database: database)
        let (a, b) = try await blocking { (try Member(url: url), try Member(url: url)) }
        // A row PostgreSQL refuses (a constraint added by hand): the events go in, the rows fail.
        _ = try await blocking { try server.psql("ALTER TABLE reputation_scores ADD CONSTRAINT poison CHECK (subject <> 'poison')", database: database) }
        a.record("poison", at: 1)
        a.record("fine", at: 2)
        let failed = try #require(a.writer.flush())
        #expect(failed.eventsCommitted, "\(failed.message)")
        #expect(try await blocking { try server.psql("SELECT count(*) FROM reputation_events", database: database) } == "2")
        #expect(a.writer.current.pendingEvents == 0 && a.writer.current.pendingRecords == 2)
        // B reads both events, each once.
        #expect(b.fleet.sync(now: 0) == nil)
        #expect(b.events(of: "poison") == 1 && b.events(of: "fine") == 1)
        // The constraint gone, the rows go in with the next commit, and no event twice.
        _ = try await blocking { try server.psql("ALTER TABLE reputation_scores DROP CONSTRAINT poison", database: database) }
        #expect(a.writer.flush() == nil)
        #expect(try await blocking { try server.psql("SELECT count(*) FROM reputation_events", database: database) } == "2")
        #expect(try await blocking { try server.psql("SELECT subject, events FROM reputation_scores ORDER BY subject", database: database) }
            == "fine|1\npoison|1")
        // B commits an event of its own: the fold brings A's nothing new; its own row says 2.
        b.record("fine", at: 3)
        #expect(b.writer.flush() == nil)
        #expect(b.events(of: "fine") == 2)
        #expect(a.fleet.sync(now: 0) == nil)
        #expect(a.events(of: "fine") == 2)
        a.store.close()
        b.store.close()
    }
}
