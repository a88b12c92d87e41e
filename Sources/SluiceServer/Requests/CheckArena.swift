import SluiceProto
import SluiceWire

/// A check request's checks as ``CheckView``s over one block of bytes it owns: what a request
/// the fast codec declined (decoded by swift-protobuf instead) is mapped to, once, so that it is
/// decided by the same path as a frame read in place. Owned rather than scoped, so that a batch
/// decided off the event loop keeps its bytes until it is answered.
final class CheckArena: @unchecked Sendable {
    let views: UnsafeMutableBufferPointer<CheckView>
    let bytes: UnsafeMutableRawBufferPointer
    /// What else the views point into (a principal's tenant bytes), kept as long as they are.
    var keepAlive: AnyObject?

    init(_ checks: [Sluice_V1_Check]) {
        var total = 0
        for check in checks {
            total += check.tenant.utf8.count + check.key.utf8.count + check.subject.utf8.count + check.ip.utf8.count + check.route.utf8.count
            if case .rule(let rule)? = check.limitSource { total += rule.utf8.count }
        }
        bytes = .allocate(byteCount: max(1, total), alignment: 1)
        views = .allocate(capacity: checks.count)
        views.initialize(repeating: CheckView())
        var offset = 0
        let bytes = bytes
        func place(_ text: String) -> UnsafeRawBufferPointer {
            let count = text.utf8.count
            let target = UnsafeMutableRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
            target.copyBytes(from: text.utf8)
            offset += count
            return UnsafeRawBufferPointer(target)
        }
        for (index, check) in checks.enumerated() {
            var view = CheckView()
            view.tenant = place(check.tenant)
            view.key = place(check.key)
            view.subject = place(check.subject)
            view.ip = place(check.ip)
            view.route = place(check.route)
            if case .hits(let hits)? = check.hitsPresence { view.hits = hits }
            view.nowMs = check.nowMs
            switch check.limitSource {
            case .rule(let rule)?: view.rule = place(rule)
            case .limit(let limit)?:
                view.limit = LimitView(limit: limit.limit, periodMs: limit.periodMs, burst: limit.burst,
                                       algorithm: Int32(truncatingIfNeeded: limit.algorithm.rawValue))
            case nil: break
            }
            views[index] = view
        }
    }

    /// The checks of a `CheckRequest` read in place (``CheckFrameCodec``) from a copy of its
    /// bytes; nil when the fast codec declines them.
    init?(body: UnsafeRawBufferPointer, count: Int) {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, body.count), alignment: 1)
        if body.count > 0, let base = body.baseAddress { copy.baseAddress?.copyMemory(from: base, byteCount: body.count) }
        let read = UnsafeMutableBufferPointer<CheckView>.allocate(capacity: count)
        read.initialize(repeating: CheckView())
        // Freed here, before any property is set: a failed init runs no deinit.
        guard CheckFrameCodec.readChecks(UnsafeRawBufferPointer(rebasing: copy[0..<body.count]), into: read, trustUTF8: false) else {
            read.deinitialize()
            read.deallocate()
            copy.deallocate()
            return nil
        }
        bytes = copy
        views = read
    }

    deinit {
        views.deinitialize()
        views.deallocate()
        bytes.deallocate()
    }
}

/// A batch decided off the event loop: its scratch on the heap, kept until it is answered.
final class DeferredBatch: @unchecked Sendable {
    let block: UnsafeMutableRawPointer
    let scratch: CheckScratch
    /// Checks resolved into `scratch.items` (deinitialized with the batch).
    var resolved = 0

    init(count: Int, notes: Bool) {
        let layout = CheckScratch.Layout(count: count, notes: notes)
        block = .allocate(byteCount: max(1, layout.size), alignment: 16)
        scratch = layout.scratch(at: block)
    }

    deinit {
        scratch.items.baseAddress?.deinitialize(count: resolved)
        block.deallocate()
    }
}
