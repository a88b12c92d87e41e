import NIOConcurrencyHelpers
import SluiceCore
import SluiceIntelligence
import SluiceTestKit
import Testing

@Suite(.computes) struct ReputationBookTests {
    let minute: Int64 = 60_000_000_000
    var model: ReputationModel { ReputationModel(neutral: 50, halfLife: 10 * minute) }

    func event(_ subject: String, _ weight: Double, at: Int64, kind: String = EventKind.authFailure) -> ReputationEvent {
        ReputationEvent(tenant: "acme", subject: subject, kind: kind, weight: weight, at: at)
    }

    @Test func untrackedSubjectsHaveNoScoreAndEventsCreateThem() throws {
        let book = ReputationBook()
        let alice = Fingerprint.of(tenant: "acme", key: "alice")
        #expect(book.score(of: alice, at: 0, model: model) == nil)
        book.apply(event("alice", -10, at: 0), model: model)
        #expect(book.score(of: alice, at: 0, model: model) == 40)
        // Read lazily with the decay: one half-life later, halfway back.
        #expect(book.score(of: alice, at: 10 * minute, model: model) == 45)
        #expect(book.count == 1)
        #expect(try #require(book.record(of: alice)).events == 1)
    }

    @Test func aLateEventCountsWithItsWeightDecayedToTheLatestTime() throws {
        let inOrder = ReputationBook(), late = ReputationBook()
        inOrder.apply(event("bob", -20, at: 0), model: model)
        inOrder.apply(event("bob", -10, at: 10 * minute), model: model)
        late.apply(event("bob", -10, at: 10 * minute), model: model)
        late.apply(event("bob", -20, at: 0), model: model)
        let bob = Fingerprint.of(tenant: "acme", key: "bob")
        let a = try #require(inOrder.score(of: bob, at: 20 * minute, model: model))
        let b = try #require(late.score(of: bob, at: 20 * minute, model: model))
        #expect(abs(a - b) < 1e-9)
        #expect(abs(a - (50 - 20 * 0.25 - 10 * 0.5)) < 1e-9)
    }

    @Test func aPinnedScoreMovesWithNeitherEventsNorTime() {
        let book = ReputationBook()
        let carol = Fingerprint.of(tenant: "acme", key: "carol")
        book.update(carol) { _ in ReputationRecord(tenant: "acme", subject: "carol", score: 3, updatedAt: 0, pinned: true) }
        book.apply(event("carol", +20, at: minute), model: model)
        #expect(book.score(of: carol, at: 100 * minute, model: model) == 3)
        #expect(book.record(of: carol)?.events == 1)
    }

    @Test func compactionForgetsSubjectsBackAtNeutralAndTheMildestBeyondTheCap() {
        let changes = NIOLockedValueBox<[String: ReputationRecord?]>([:])
        let book = ReputationBook { _, record, _, subject, _ in changes.withLockedValue { $0[subject] = .some(record) } }
        book.apply(event("mild", -1, at: 0), model: model)
        book.apply(event("harsh", -40, at: 0), model: model)
        book.apply(event("medium", -20, at: 0), model: model)
        book.update(Fingerprint.of(tenant: "acme", key: "pinned")) { _ in
            ReputationRecord(tenant: "acme", subject: "pinned", score: 50.1, updatedAt: 0, pinned: true)
        }
        // After two half-lives, "mild" is 0.25 from neutral: forgotten; the pinned one stays.
        let removed = book.compact(now: 20 * minute, model: model)
        #expect(removed.map(\.subject) == ["mild"])
        #expect(book.score(of: Fingerprint.of(tenant: "acme", key: "mild"), at: 20 * minute, model: model) == nil)
        #expect(changes.withLockedValue { $0["mild"] } == .some(nil))
        // Over the cap: the record nearest neutral goes first.
        let capped = book.compact(now: 20 * minute, model: model, maxSubjects: 2)
        #expect(capped.map(\.subject) == ["medium"])
        #expect(book.records().map(\.subject).sorted() == ["harsh", "pinned"])
    }

    @Test func aTenantOverItsSubjectQuotaLosesItsOwnMildestRecordsFirst() {
        func filled() -> ReputationBook {
            let book = ReputationBook()
            for index in 0..<100 {
                book.apply(ReputationEvent(tenant: "noisy", subject: "n\(index)", kind: EventKind.authFailure, weight: -10 - Double(index % 10),
                                           at: 0), model: model)
            }
            for index in 0..<10 {
                book.apply(ReputationEvent(tenant: "quiet", subject: "q\(index)", kind: EventKind.authFailure, weight: -5, at: 0), model: model)
            }
            return book
        }
        // The whole book may hold 50: without a per-tenant quota the mildest records go, and the
        // quiet tenant's (5 points from neutral) are the mildest of all.
        let shared = filled()
        #expect(shared.compact(now: 0, model: model, maxSubjects: 50).count == 60)
        #expect(shared.records(tenant: "quiet").isEmpty)
        // With the noisy tenant held to 30, its own excess goes first and the cap is not reached.
        let quota = filled()
        #expect(quota.compact(now: 0, model: model, maxSubjects: 50, perTenant: ["noisy": 30]).count == 70)
        #expect(quota.records(tenant: "quiet").count == 10, "the quiet tenant keeps every record")
        #expect(quota.records(tenant: "noisy").count == 30)
        #expect(quota.records(tenant: "noisy").allSatisfy { $0.score(at: 0, model: model) <= 50 - 17 }, "its harshest are kept")
    }

    @Test func theFilterNeverHidesATrackedSubject() {
        let book = ReputationBook()
        var subjects: [Fingerprint] = []
        for index in 0..<5_000 {
            book.apply(event("s\(index)", -10, at: 0), model: model)
            subjects.append(Fingerprint.of(tenant: "acme", key: "s\(index)"))
        }
        // Rebuilt with half of them gone: the rest are all still found.
        for index in stride(from: 0, to: 5_000, by: 2) { book.update(subjects[index]) { _ in nil } }
        _ = book.compact(now: 0, model: model)
        for index in stride(from: 1, to: 5_000, by: 2) {
            #expect(book.score(of: subjects[index], at: 0, model: model) == 40)
        }
        #expect(book.count == 2_500)
        #expect(book.records(tenant: "other").isEmpty)
        #expect(book.records(tenant: "acme").count == 2_500)
    }

    @Test func loadKeepsRecordsChangedSinceAndTellsNoOne() {
        let told = NIOLockedValueBox(0)
        let book = ReputationBook { _, _, _, _, _ in told.withLockedValue { $0 += 1 } }
        book.apply(event("dave", -10, at: 0), model: model)
        book.load([ReputationRecord(tenant: "acme", subject: "dave", score: 90, updatedAt: 0),
                   ReputationRecord(tenant: "acme", subject: "erin", score: 20, updatedAt: 0)])
        #expect(book.score(of: Fingerprint.of(tenant: "acme", key: "dave"), at: 0, model: model) == 40)
        #expect(book.score(of: Fingerprint.of(tenant: "acme", key: "erin"), at: 0, model: model) == 20)
        #expect(told.withLockedValue { $0 } == 1)
    }
}
