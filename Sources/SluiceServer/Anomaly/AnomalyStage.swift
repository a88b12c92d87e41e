import SluiceCore
import SluiceIntelligence

/// Anomaly detection on the check path: the responses in force apply to each check whose
/// subject or address is under one (a block denies it, `REASON_ANOMALY`, until the response
/// ends; a tightening scales its limits; the verdict names the alert's kind; in shadow mode a
/// block is reported as `would_deny` and a tightening evaluated). After the decision, every
/// check is offered to the detector (never blocking: a full queue drops and counts).
/// While a surge's response is in force, checks from sources the detector did not know before
/// the surge are tightened, blocked or shed as it says (``SurgeGuard``); known ones pass.
final class AnomalyStage: CheckStage {
    let anomaly: AnomalyService
    /// Borrowed: `anomaly` holds them.
    let responses: Borrowed<AnomalyResponseBook>
    let tap: Borrowed<PackedEventTap>
    /// The subjects' tiers, for a surge's `spare_tiers`.
    let tiers: TierBook?

    init(anomaly: AnomalyService, tiers: TierBook? = nil) {
        self.anomaly = anomaly
        self.tiers = tiers
        responses = Borrowed(anomaly.responses)
        tap = Borrowed(anomaly.tap)
    }

    func isActive(in live: LiveConfiguration) -> Bool { live.anomaly }

    func prepare(_ batch: CheckBatch) -> Bool {
        responses { book in prepare(batch, book: book) }
    }

    @inline(__always)
    private func prepare(_ batch: CheckBatch, book: AnomalyResponseBook) -> Bool {
        guard !book.isEmpty else { return false }
        let items = batch.items, notes = batch.notes
        var peeks = false
        var last: (tenant: UnsafeRawBufferPointer, gates: TenantGates.Gates?)?
        // A surge's response: read once for the batch.
        let surge = batch.count > 0 ? book.surge(at: items[0].now) : nil
        for index in 0..<batch.count {
            // The check's tenant's own flag, or the global one.
            var shadow = batch.live.anomalyShadow, rollout = batch.live.anomalyRollout
            if let tenants = batch.live.tenantGates, let own = batch.tenantGates(index, tenants, last: &last) {
                guard own.anomaly.enabled else { continue }
                shadow = own.anomaly.shadow
                rollout = own.anomaly.rollout
            } else if !batch.live.anomalyGlobal {
                continue
            }
            let now = items[index].now
            let subject = batch.subject(index)
            // Responses apply to the subjects in the flag's rollout; detection sees everyone.
            if let rollout, !rollout.includes(subject) { continue }
            var entry = book.entry(for: subject, at: now)
            if entry == nil, batch.views[index].ip.count > 0 { entry = book.entry(for: AnomalyResponseBook.key(ip: batch.views[index].ip), at: now) }
            var shed = false
            if entry == nil, let surge, surge.until > now {
                let view = batch.views[index]
                let verdict = surge.verdict(tenant: view.tenant, subject: view.subject.count > 0 ? view.subject : view.key, ip: view.ip) {
                    tiers?.withTier(of: subject) { $0 } ?? nil
                }
                if let verdict { entry = AnomalyResponseBook.Entry(kind: surge.kind, block: verdict, factor: surge.factor, until: surge.until) }
                // Shed, not blocked: the reason says it is load, not the caller's doing.
                shed = verdict == true && surge.action == .shed
            }
            guard let entry else { continue }
            notes[index].anomalyKind = AnomalyResponseBook.kindBytes[entry.kind]
            guard !items[index].skip else { continue }
            if entry.block {
                if shadow {
                    if notes[index].wouldDeny == nil { notes[index].wouldDeny = shed ? .shed : .anomaly }
                } else {
                    items[index].skip = true
                    notes[index].blockedFor = max(0, entry.until - now)
                    notes[index].blockReason = shed ? .shed : .anomaly
                }
            } else if shadow {
                notes[index].peek(entry.factor)
                peeks = true
            } else {
                items[index].multiplier *= entry.factor
                notes[index].multiplier = items[index].multiplier
            }
        }
        return peeks
    }

    func settle(_ batch: CheckBatch, decisions: UnsafeBufferPointer<Decision>) {
        // Bytes, not strings: the detector's queue makes the strings when it drains the tap.
        var last: (tenant: UnsafeRawBufferPointer, gates: TenantGates.Gates?)?
        tap { tap in
            for index in 0..<batch.count {
                // Only checks of tenants with detection on (their own flag, or the global one).
                if let tenants = batch.live.tenantGates, let own = batch.tenantGates(index, tenants, last: &last) {
                    guard own.anomaly.enabled else { continue }
                } else if !batch.live.anomalyGlobal {
                    continue
                }
                let view = batch.views[index]
                tap.offer(timestampMs: batch.items[index].now / 1_000_000, tenant: view.tenant,
                          subject: view.subject.count > 0 ? view.subject : view.key, ip: view.ip, route: view.route,
                          cost: max(1, batch.items[index].hits), allowed: decisions[index].allowed, reason: decisions[index].reason)
            }
        }
    }
}
