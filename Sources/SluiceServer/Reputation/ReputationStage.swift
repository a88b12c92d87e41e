import Foundation
import SluiceCore
import SluiceIntelligence

/// Reputation on the check path: each check's subject is looked up in the book and its score
/// scales the check's limits, or blocks it below `block_below` (in shadow mode: reported as
/// `would_deny`, the tighter limits evaluated); after the decision, checks a limit denied become
/// `rate_limited` events, and what shadow mode would have denied is counted.
///
/// The cost for a subject without a record is a hash (none when the subject is the key) and one
/// relaxed load; the book is read under a stripe lock only for tracked subjects.
final class ReputationStage: CheckStage {
    /// Borrowed: `hot` holds the book for longer than any request.
    let book: Borrowed<ReputationBook>
    let hot: ReputationHotPath

    init(hot: ReputationHotPath) {
        self.hot = hot
        book = Borrowed(hot.book)
    }

    func isActive(in live: LiveConfiguration) -> Bool { live.reputation != nil || live.tenantGates?.anyReputation == true }

    /// The gate check `index` takes: its tenant's own flag, or the global one (nil: off for it).
    @inline(__always)
    func gate(_ batch: CheckBatch, _ index: Int, last: inout (tenant: UnsafeRawBufferPointer, gates: TenantGates.Gates?)?) -> ReputationGate? {
        guard let tenants = batch.live.tenantGates, let own = batch.tenantGates(index, tenants, last: &last) else { return batch.live.reputation }
        return own.reputation
    }

    func prepare(_ batch: CheckBatch) -> Bool {
        var peeks = false
        var last: (tenant: UnsafeRawBufferPointer, gates: TenantGates.Gates?)?
        // Both borrowed: the request holds its configuration, `hot` the book.
        Borrowed(batch.live) { live in book { book in
            for index in 0..<batch.count {
                guard let gate = gate(batch, index, last: &last) else { continue }
                let subject = batch.subject(index)
                guard gate.includes(subject) else { continue }
                let items = batch.items, notes = batch.notes
                if let score = book.score(of: subject, at: items[index].now, neutral: gate.neutral, halfLife: gate.halfLife) {
                    notes[index].score = score
                    let multiplier = live.reputationModel.curve.multiplier(at: score)
                    let blockedFor = score < gate.blockBelow ? live.reputationModel.timeUntilUnblocked(score) : nil
                    if gate.shadow {
                        if blockedFor != nil {
                            notes[index].wouldDeny = .reputation
                        } else if multiplier < 1, !items[index].skip {
                            // Evaluated just before this check is decided (decideInOrder).
                            notes[index].peekFactor = multiplier
                            peeks = true
                        }
                    } else {
                        items[index].multiplier *= multiplier
                        notes[index].multiplier = items[index].multiplier
                        if let blockedFor, !items[index].skip {
                            items[index].skip = true
                            notes[index].blockedFor = blockedFor
                        }
                    }
                } else {
                    notes[index].score = gate.neutral
                    if !gate.shadow {
                        items[index].multiplier *= gate.neutralMultiplier
                        notes[index].multiplier = items[index].multiplier
                    }
                }
            }
        } }
        return peeks
    }

    func settle(_ batch: CheckBatch, decisions: UnsafeBufferPointer<Decision>) {
        var wouldDeny: UInt64 = 0
        var last: (tenant: UnsafeRawBufferPointer, gates: TenantGates.Gates?)?
        for index in 0..<batch.count {
            guard let gate = gate(batch, index, last: &last) else { continue }
            let reason = decisions[index].reason
            if gate.shadow, decisions[index].allowed, batch.notes[index].wouldDeny != nil { wouldDeny &+= 1 }
            if gate.recordDenials, reason == .overLimit || reason == .exceedsCapacity, batch.items[index].hits > 0 {
                let view = batch.views[index]
                hot.recordDenial(tenant: view.tenant, subject: view.subject.count > 0 ? view.subject : view.key,
                                 now: batch.items[index].now, weight: gate.denialWeight)
            }
        }
        if wouldDeny > 0 { hot.wouldDeny.add(wouldDeny, ordering: .relaxed) }
    }
}
