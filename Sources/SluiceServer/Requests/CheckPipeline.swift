import NIOCore
import SluiceCore
import SluiceProto
import SluiceWire

// The path of a check request: decode (the fast codec, SluiceWire) → resolve each check's rule
// (RequestDispatcher.resolve) → the active stages prepare the whole batch, in order (reputation,
// adaptive limiting, anomaly responses) → the backend decides → the stages settle (events,
// counters) → encode. A stage is a small type with one job; adding one touches no other.

/// What the stages did to one check, for its verdict and for the stages after them.
struct CheckNote {
    /// The reputation score reported; NaN when none (the feature is off, or the subject is
    /// outside its rollout).
    var score = Double.nan
    /// The multiplier applied (enforced mode); 0 when none.
    var multiplier: Double = 0
    /// Enforced block: the retry-after in ns; -1 when not blocked.
    var blockedFor: Int64 = -1
    /// Why it was blocked: reputation, shed by load-aware scaling, an anomaly response.
    var blockReason = DecisionReason.reputation
    /// The adaptive feature, in shadow mode, asked for this check to be evaluated (or would have shed it).
    var adaptiveShadow = false
    /// The kind of the anomaly response the subject or its address is under (static bytes); empty when none.
    var anomalyKind = UnsafeRawBufferPointer(start: nil, count: 0)
    /// The subject's fingerprint, once a stage needed it (``CheckBatch/subject(_:)``).
    var subject = Fingerprint(high: 0, low: 0)
    var hasSubject = false
    /// Shadow mode: the reason the check would have been denied; nil when it would not.
    var wouldDeny: DecisionReason?
    /// Shadow mode: the check must also be evaluated with its limits this many times smaller; 0
    /// when not.
    var peekFactor: Double = 0
    /// The subject's tier name (the tier table's bytes); empty when none.
    var tier = UnsafeRawBufferPointer(start: nil, count: 0)

    @inline(__always)
    func annotate(_ fields: inout CheckFrameCodec.VerdictFields) {
        fields.reputation = score
        // 1x is sent as "none" (0 on the wire means 1x), which saves 9 bytes on most verdicts.
        fields.multiplier = multiplier == 1 ? 0 : multiplier
        if let wouldDeny {
            fields.wouldDeny = true
            fields.wouldDenyReason = UInt64(wouldDeny.rawValue)
        }
    }

    /// Asks for the check to be evaluated `factor` times tighter before it is decided (shadow
    /// mode): factors of several stages multiply.
    @inline(__always)
    mutating func peek(_ factor: Double) {
        peekFactor = (peekFactor == 0 ? 1 : peekFactor) * factor
    }
}

/// One batch of checks on its way through the pipeline: one element per check in each buffer.
struct CheckBatch {
    /// The checks as decoded.
    let views: UnsafeBufferPointer<CheckView>
    /// The checks resolved for the backend; stages scale their limits, replace them, or mark
    /// them `skip` (decided before the backend: blocked).
    let items: UnsafeMutableBufferPointer<BatchCheck>
    /// The metric series each check counts under (its tenant and rule).
    let series: UnsafeBufferPointer<Int>
    /// What the stages did; empty when no stage is active.
    let notes: UnsafeMutableBufferPointer<CheckNote>
    /// The configuration the request is decided under.
    unowned(unsafe) let live: LiveConfiguration

    var count: Int { items.count }

    /// The fingerprint of check `index`'s subject (the key's when it names none), hashed at most
    /// once per check whichever stages ask for it.
    @inline(__always)
    func subject(_ index: Int) -> Fingerprint {
        if notes[index].hasSubject { return notes[index].subject }
        let view = views[index]
        let subject = view.subject.count == 0 ? items[index].key : Fingerprint.of(tenant: view.tenant, key: view.subject)
        notes[index].subject = subject
        notes[index].hasSubject = true
        return subject
    }
}

/// One step of the check path, over a whole batch: a feature's effect on checks before the
/// backend decides them, and what it takes from the decisions after.
protocol CheckStage: AnyObject, Sendable {
    /// Whether the stage has anything to do for checks under `live` now: a flag, a count. When
    /// no stage is active, a check costs what it costs without features.
    func isActive(in live: LiveConfiguration) -> Bool

    /// Adjusts the checks before the backend decides them. Returns true when a check must be
    /// evaluated (its note's `peekFactor`) just before it is decided, so the batch is decided in
    /// order, a check at a time.
    func prepare(_ batch: CheckBatch) -> Bool

    /// Takes what it needs from the decisions (events, counters).
    func settle(_ batch: CheckBatch, decisions: UnsafeBufferPointer<Decision>)
}

extension CheckStage {
    func prepare(_ batch: CheckBatch) -> Bool { false }
    func settle(_ batch: CheckBatch, decisions: UnsafeBufferPointer<Decision>) {}
}

/// Per-check scratch for one batch, carved out of one temporary allocation.
struct CheckScratch {
    let series: UnsafeMutableBufferPointer<Int>
    let items: UnsafeMutableBufferPointer<BatchCheck>
    let notes: UnsafeMutableBufferPointer<CheckNote>
    let decisions: UnsafeMutableBufferPointer<Decision>
    let verdicts: UnsafeMutableBufferPointer<CheckFrameCodec.VerdictFields>
    /// Rule names, then tier names, then anomaly kinds (the last two only with notes).
    let names: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>

    /// Runs `body` with room for `count` checks, and for their notes when `notes`. Nothing is
    /// initialized. Inlined: called through, the closure's captures were retained each time.
    @inline(__always)
    static func with<Result>(count: Int, notes: Bool, _ body: (CheckScratch) -> Result) -> Result {
        var size = 0
        func place<T>(_: T.Type, _ elements: Int) -> Int {
            let start = (size + MemoryLayout<T>.alignment - 1) / MemoryLayout<T>.alignment * MemoryLayout<T>.alignment
            size = start + MemoryLayout<T>.stride * elements
            return start
        }
        let noteCount = notes ? count : 0
        let series = place(Int.self, count), items = place(BatchCheck.self, count), noteStart = place(CheckNote.self, noteCount)
        let decisions = place(Decision.self, count), verdicts = place(CheckFrameCodec.VerdictFields.self, count)
        let nameCount = notes ? 3 * count : count
        let names = place(UnsafeRawBufferPointer.self, nameCount)
        return withUnsafeTemporaryAllocation(byteCount: max(size, 1), alignment: 16) { raw in
            // A temporary allocation of at least one byte has a base address.
            let base = raw.baseAddress!
            func bind<T>(_: T.Type, _ start: Int, _ elements: Int) -> UnsafeMutableBufferPointer<T> {
                UnsafeMutableBufferPointer(start: (base + start).bindMemory(to: T.self, capacity: elements), count: elements)
            }
            return body(CheckScratch(series: bind(Int.self, series, count), items: bind(BatchCheck.self, items, count),
                                     notes: bind(CheckNote.self, noteStart, noteCount), decisions: bind(Decision.self, decisions, count),
                                     verdicts: bind(CheckFrameCodec.VerdictFields.self, verdicts, count),
                                     names: bind(UnsafeRawBufferPointer.self, names, nameCount)))
        }
    }
}

extension RequestDispatcher {
    /// Validates every check, then decides them all and writes the answer; returns the error
    /// instead if any check is invalid (then nothing was consumed and nothing written).
    func decide(id: UInt64, views: UnsafeBufferPointer<CheckView>, context: WorkerContext, into out: inout ByteBuffer) -> WireError? {
        let count = views.count
        let live = context.live
        let started = time.now()
        let batchNow = live.configuration.clock == .monotonic ? started : 0
        // The stages active for this request, as bits of `stages` (at most 64 stages).
        var active: UInt64 = 0
        for index in stages.indices where stages[index].isActive(in: live) { active |= 1 << UInt64(index) }
        return CheckScratch.with(count: count, notes: active != 0) { scratch -> WireError? in
            var resolved = 0
            defer { scratch.items.baseAddress!.deinitialize(count: resolved) }
            var previous = ResolvedLimits()
            for index in 0..<count {
                switch resolve(views[index], index: index, batchNow: batchNow, previous: &previous, in: live) {
                case .success(let (item, itemSeries)):
                    (scratch.items.baseAddress! + index).initialize(to: item)
                    scratch.series[index] = itemSeries
                    resolved += 1
                case .failure(let error):
                    return error
                }
            }
            let batch = CheckBatch(views: views, items: scratch.items, series: UnsafeBufferPointer(scratch.series), notes: scratch.notes,
                                   live: live)
            let annotated = active != 0
            var inOrder = false
            if annotated {
                scratch.notes.initialize(repeating: CheckNote())
                for index in stages.indices where active & (1 << UInt64(index)) != 0 {
                    if stages[index].prepare(batch) { inOrder = true }
                }
            }
            let decisions = scratch.decisions
            if inOrder {
                decideInOrder(batch, into: decisions)
            } else if count == 1, !scratch.items[0].skip {
                decisions.initialize(repeating: backend.check(scratch.items.baseAddress!))
            } else {
                // The table groups a batch by shard, one lock per shard, slots prefetched (docs/BENCHMARKS.md).
                decisions.initialize(repeating: .blocked())
                backend.check(batch: UnsafeBufferPointer(scratch.items), into: decisions)
            }
            for index in 0..<count {
                if annotated, scratch.notes[index].blockedFor >= 0 {
                    var decision = Decision.blocked(retryAfter: scratch.notes[index].blockedFor)
                    decision.reason = scratch.notes[index].blockReason
                    decisions[index] = decision
                }
                context.count(series: scratch.series[index], reason: decisions[index].reason)
            }
            if annotated {
                for index in stages.indices where active & (1 << UInt64(index)) != 0 {
                    stages[index].settle(batch, decisions: UnsafeBufferPointer(decisions))
                }
            }
            encode(id: id, batch, decisions: UnsafeBufferPointer(decisions), scratch: scratch, annotated: annotated, into: &out)
            context.record(latency: time.now() - started)
            return nil
        }
    }

    /// Decides the checks one at a time, in order, evaluating each shadow check just before it
    /// is decided: what it would have met is the state the checks before it left, even within
    /// one batch. Used only for batches with a shadow check to evaluate.
    func decideInOrder(_ batch: CheckBatch, into decisions: UnsafeMutableBufferPointer<Decision>) {
        for index in 0..<batch.count {
            // A buffer with an element at `index` has a base address.
            let item = UnsafePointer(batch.items.baseAddress! + index)
            if batch.notes[index].peekFactor != 0 {
                let decision = backend.evaluate(item.pointee, factor: batch.notes[index].peekFactor)
                if !decision.allowed { batch.notes[index].wouldDeny = decision.reason }
            }
            (decisions.baseAddress! + index).initialize(to: item.pointee.skip ? .blocked() : backend.check(item))
        }
    }

    /// Writes the verdicts of a decided batch as one response frame.
    func encode(id: UInt64, _ batch: CheckBatch, decisions: UnsafeBufferPointer<Decision>, scratch: CheckScratch, annotated: Bool,
                into out: inout ByteBuffer) {
        let count = batch.count
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        for index in 0..<count {
            var fields = CheckFrameCodec.VerdictFields(decisions[index])
            if annotated {
                batch.notes[index].annotate(&fields)
                (scratch.names.baseAddress! + count + index).initialize(to: batch.notes[index].tier)
                (scratch.names.baseAddress! + 2 * count + index).initialize(to: batch.notes[index].anomalyKind)
            }
            (scratch.verdicts.baseAddress! + index).initialize(to: fields)
            (scratch.names.baseAddress! + index).initialize(to: batch.views[index].rule ?? empty)
        }
        let names = UnsafeBufferPointer(scratch.names)
        CheckFrameCodec.writeCheckResponse(id: id, verdicts: UnsafeBufferPointer(scratch.verdicts),
                                           rules: UnsafeBufferPointer(rebasing: names[0..<count]),
                                           tiers: annotated ? UnsafeBufferPointer(rebasing: names[count..<(2 * count)]) : nil,
                                           anomalies: annotated ? UnsafeBufferPointer(rebasing: names[(2 * count)...]) : nil, into: &out)
    }
}
