import SluiceCore
import SluiceWire

/// Offers every decided check to an event tap (an embedder's background feature): never blocks,
/// a full tap drops and counts.
final class EventTapStage: CheckStage {
    let events: EventTap<CheckEvent>

    init(events: EventTap<CheckEvent>) { self.events = events }

    func isActive(in live: LiveConfiguration) -> Bool { true }

    func settle(_ batch: CheckBatch, decisions: UnsafeBufferPointer<Decision>) {
        for index in 0..<batch.count {
            let view = batch.views[index], item = batch.items[index]
            events.offer(CheckEvent(timestampMs: item.now / 1_000_000, tenant: String(decoding: view.tenant, as: UTF8.self),
                                    subject: CheckStages.subject(of: view), ip: String(decoding: view.ip, as: UTF8.self),
                                    route: String(decoding: view.route, as: UTF8.self), cost: item.hits,
                                    key: String(decoding: view.key, as: UTF8.self), rule: view.rule.map { String(decoding: $0, as: UTF8.self) } ?? "",
                                    allowed: decisions[index].allowed, reason: decisions[index].reason))
        }
    }
}

/// What stages share.
enum CheckStages {
    /// A check's subject as a string: the key's when it names none.
    static func subject(of check: CheckView) -> String {
        String(decoding: check.subject.count > 0 ? check.subject : check.key, as: UTF8.self)
    }
}
