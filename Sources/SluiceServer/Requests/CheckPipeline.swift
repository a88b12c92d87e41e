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
    /// Its rule's mode (``RuleModeStage``): ``exempt``, ``shadowed``.
    var ruleMode: UInt8 = 0
    /// Allowed without counting: an unlimited rule, or one another rule of the request replaces.
    static let exempt: UInt8 = 1
    /// Its rule is in shadow: a denial by its limits is reported, not enforced.
    static let shadowed: UInt8 = 2

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

    /// Checks `range` of this batch, as a batch of their own.
    func slice(_ range: Range<Int>) -> CheckBatch {
        CheckBatch(views: UnsafeBufferPointer(rebasing: views[range]), items: UnsafeMutableBufferPointer(rebasing: items[range]),
                   series: UnsafeBufferPointer(rebasing: series[range]),
                   notes: notes.isEmpty ? notes : UnsafeMutableBufferPointer(rebasing: notes[range]), live: live)
    }

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

/// The check path's stages, in order: an embedder's own first, then reputation, adaptive
/// limiting, anomaly responses, and the event tap last. A new feature's stage is one more field
/// here and one more line in each of the three walks; no other stage changes.
///
/// The features' stages are concrete `let`s, not an array of existentials: calling a stage out
/// of an array retained and released it each time (ten pairs a request with every feature on).
struct StageList {
    let extra: [any CheckStage]
    /// Rules' modes (shadow, unlimited, replaces), before every feature.
    let ruleModes = RuleModeStage()
    /// The stages, held; calls go through the borrowed references below (each call through a
    /// held one retained and released the stage).
    let reputationStage: ReputationStage?
    let adaptiveStage: AdaptiveStage
    let anomalyStage: AnomalyStage
    let tapStage: EventTapStage?
    let reputation: Borrowed<ReputationStage>?
    let adaptive: Borrowed<AdaptiveStage>
    let anomaly: Borrowed<AnomalyStage>
    let tap: Borrowed<EventTapStage>?

    /// Bits of ``active(in:)``: the extra stages take the low bits, in order.
    static let ruleModeBit: UInt64 = 1 << 58
    static let reputationBit: UInt64 = 1 << 59, adaptiveBit: UInt64 = 1 << 60, anomalyBit: UInt64 = 1 << 61, tapBit: UInt64 = 1 << 62

    init(extra: [any CheckStage], reputation: ReputationStage?, adaptive: AdaptiveStage, anomaly: AnomalyStage, tap: EventTapStage?) {
        precondition(extra.count < 58, "at most 57 extra stages")
        self.extra = extra
        reputationStage = reputation
        adaptiveStage = adaptive
        anomalyStage = anomaly
        tapStage = tap
        self.reputation = reputation.map(Borrowed.init)
        self.adaptive = Borrowed(adaptive)
        self.anomaly = Borrowed(anomaly)
        self.tap = tap.map(Borrowed.init)
    }

    /// The stages active for a request under `live`, as bits; 0 when none is.
    @inline(__always)
    func active(in live: LiveConfiguration) -> UInt64 {
        var active: UInt64 = 0
        if !extra.isEmpty {
            for index in extra.indices where extra[index].isActive(in: live) { active |= 1 << UInt64(index) }
        }
        if live.ruleModes != nil { active |= Self.ruleModeBit }
        if let reputation, reputation({ $0.isActive(in: live) }) { active |= Self.reputationBit }
        if adaptive({ $0.isActive(in: live) }) { active |= Self.adaptiveBit }
        if anomaly({ $0.isActive(in: live) }) { active |= Self.anomalyBit }
        if let tap, tap({ $0.isActive(in: live) }) { active |= Self.tapBit }
        return active
    }

    /// Lets each active stage prepare `batch`, in order; true when one asked for the batch to be
    /// decided in order (``CheckStage/prepare(_:)``).
    @inline(__always)
    func prepare(_ batch: CheckBatch, active: UInt64) -> Bool {
        var inOrder = false
        if !extra.isEmpty {
            for index in extra.indices where active & (1 << UInt64(index)) != 0 {
                if extra[index].prepare(batch) { inOrder = true }
            }
        }
        if active & Self.ruleModeBit != 0 { _ = ruleModes.prepare(batch) }
        if active & Self.reputationBit != 0, let reputation, reputation({ $0.prepare(batch) }) { inOrder = true }
        if active & Self.adaptiveBit != 0, adaptive({ $0.prepare(batch) }) { inOrder = true }
        if active & Self.anomalyBit != 0, anomaly({ $0.prepare(batch) }) { inOrder = true }
        return inOrder
    }

    /// Lets each active stage settle `batch`, in the same order.
    @inline(__always)
    func settle(_ batch: CheckBatch, decisions: UnsafeBufferPointer<Decision>, active: UInt64) {
        if !extra.isEmpty {
            for index in extra.indices where active & (1 << UInt64(index)) != 0 { extra[index].settle(batch, decisions: decisions) }
        }
        if active & Self.reputationBit != 0, let reputation { reputation { $0.settle(batch, decisions: decisions) } }
        if active & Self.adaptiveBit != 0 { adaptive { $0.settle(batch, decisions: decisions) } }
        if active & Self.anomalyBit != 0 { anomaly { $0.settle(batch, decisions: decisions) } }
        if active & Self.tapBit != 0, let tap { tap { $0.settle(batch, decisions: decisions) } }
    }
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

    /// Where each part lies in one block of `size` bytes.
    struct Layout {
        var size = 0
        var series = 0, items = 0, notes = 0, decisions = 0, verdicts = 0, names = 0
        let count: Int, noteCount: Int, nameCount: Int

        @inline(__always)
        init(count: Int, notes: Bool) {
            self.count = count
            noteCount = notes ? count : 0
            nameCount = notes ? 3 * count : count
            series = place(Int.self, count)
            items = place(BatchCheck.self, count)
            self.notes = place(CheckNote.self, noteCount)
            decisions = place(Decision.self, count)
            verdicts = place(CheckFrameCodec.VerdictFields.self, count)
            names = place(UnsafeRawBufferPointer.self, nameCount)
        }

        @inline(__always)
        mutating func place<T>(_: T.Type, _ elements: Int) -> Int {
            let start = (size + MemoryLayout<T>.alignment - 1) / MemoryLayout<T>.alignment * MemoryLayout<T>.alignment
            size = start + MemoryLayout<T>.stride * elements
            return start
        }

        @inline(__always)
        func scratch(at base: UnsafeMutableRawPointer) -> CheckScratch {
            func bind<T>(_: T.Type, _ start: Int, _ elements: Int) -> UnsafeMutableBufferPointer<T> {
                UnsafeMutableBufferPointer(start: (base + start).bindMemory(to: T.self, capacity: elements), count: elements)
            }
            return CheckScratch(series: bind(Int.self, series, count), items: bind(BatchCheck.self, items, count),
                                notes: bind(CheckNote.self, notes, noteCount), decisions: bind(Decision.self, decisions, count),
                                verdicts: bind(CheckFrameCodec.VerdictFields.self, verdicts, count),
                                names: bind(UnsafeRawBufferPointer.self, names, nameCount))
        }
    }

    /// Runs `body` with room for `count` checks, and for their notes when `notes`. Nothing is
    /// initialized. Inlined: called through, the closure's captures were retained each time.
    @inline(__always)
    static func with<Result>(count: Int, notes: Bool, _ body: (CheckScratch) -> Result) -> Result {
        let layout = Layout(count: count, notes: notes)
        return withUnsafeTemporaryAllocation(byteCount: max(layout.size, 1), alignment: 16) { raw in
            // A temporary allocation of at least one byte has a base address.
            body(layout.scratch(at: raw.baseAddress!))
        }
    }
}

extension RequestDispatcher {
    /// Validates every check, then decides them all and writes the answer, or the first invalid
    /// check's error (then nothing was consumed): one frame, the path of several.
    func decide(id: UInt64, views: UnsafeBufferPointer<CheckView>, context: WorkerContext, into out: inout ByteBuffer) {
        let frame = FramePart(id: id, body: UnsafeRawBufferPointer(start: nil, count: 0), start: 0, count: views.count)
        _ = withUnsafePointer(to: frame) { decideFrames(UnsafeBufferPointer(start: $0, count: 1), views: views, context: context, into: &out) }
    }

    /// Decides the checks of several frames as one batch (``answerCheckFrames(_:into:)``) and
    /// writes each frame's answer, in order. A frame with an invalid check ends the batch: the
    /// frames before it are answered, then its error. Returns the frames answered.
    func decideFrames(_ frames: UnsafeBufferPointer<FramePart>, views: UnsafeBufferPointer<CheckView>, context: WorkerContext,
                      into out: inout ByteBuffer) -> Int {
        let started = time.now()
        let active = activeStages(in: context.live)
        let live = context.live
        return CheckScratch.with(count: views.count, notes: active != 0) { scratch -> Int in
            var resolved = 0
            defer { scratch.items.baseAddress!.deinitialize(count: resolved) }
            let failed = resolve(frames, views: views, scratch: scratch, started: started, live: live, resolved: &resolved)
            let decidedFrames = failed?.frame ?? frames.count
            if resolved > 0 {
                let items = UnsafeMutableBufferPointer(rebasing: scratch.items[0..<resolved])
                let batch = CheckBatch(views: UnsafeBufferPointer(rebasing: views[0..<resolved]), items: items,
                                       series: UnsafeBufferPointer(rebasing: scratch.series[0..<resolved]),
                                       notes: active != 0 ? UnsafeMutableBufferPointer(rebasing: scratch.notes[0..<resolved]) : scratch.notes,
                                       live: live)
                let inOrder = prepareStages(batch, active: active)
                let decisions = UnsafeMutableBufferPointer(rebasing: scratch.decisions[0..<resolved])
                if inOrder {
                    decideInOrder(batch, into: decisions)
                } else if resolved == 1, !items[0].skip {
                    decisions.initialize(repeating: target(items[0].partition, live).check(items.baseAddress!))
                } else {
                    // The table groups a batch by shard, one lock per shard, slots prefetched (docs/BENCHMARKS.md).
                    decisions.initialize(repeating: .blocked())
                    check(batch: UnsafeBufferPointer(items), into: decisions, live: live)
                }
                apply(batch, decisions: decisions, active: active, context: context)
                for frame in frames[0..<decidedFrames] {
                    let range = frame.start..<(frame.start + frame.count)
                    encode(id: frame.id, batch.slice(range), decisions: UnsafeBufferPointer(rebasing: decisions[range]), scratch: scratch,
                           annotated: active != 0, into: &out)
                }
                let latency = time.now() - started
                for _ in 0..<decidedFrames { context.record(latency: latency) }
            }
            if let failed { writeError(failed.error, id: frames[failed.frame].id, into: &out) }
            return failed.map { $0.frame + 1 } ?? frames.count
        }
    }

    /// Decides a batch against a backend that does not answer at once: resolves and prepares
    /// it now, hands it to the backend, and settles and encodes it on `eventLoop` when the
    /// decisions come. Its bytes and scratch live on the heap until then. A batch with a shadow
    /// check to evaluate is decided whole here (evaluating needs a backend that answers at once).
    func decideLater(id: UInt64, arena: CheckArena, context: WorkerContext, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        let started = time.now()
        let active = activeStages(in: context.live)
        let count = arena.views.count
        let work = DeferredBatch(count: count, notes: active != 0)
        let batch: CheckBatch
        switch prepare(UnsafeBufferPointer(arena.views), scratch: work.scratch, active: active, started: started, live: context.live,
                       resolved: &work.resolved) {
        case .success(let prepared): batch = prepared.0
        case .failure(let error):
            var out = ByteBufferAllocator().buffer(capacity: 128)
            writeError(error, id: id, into: &out)
            return eventLoop.makeSucceededFuture(out)
        }
        let promise = eventLoop.makePromise(of: ByteBuffer.self)
        // The batch points into `arena` and `work`, which the closure keeps alive; it is touched
        // only on `eventLoop`, here and when the decisions come back.
        let pending = NIOLoopBound((self, batch, work, arena, context), eventLoop: eventLoop)
        backend.decide(Array(work.scratch.items)) { decisions in
            @Sendable func answer() {
                let (dispatcher, batch, work, arena, context) = pending.value
                withExtendedLifetime(arena) {
                    let target = work.scratch.decisions
                    target.initialize(repeating: .blocked())
                    for index in 0..<min(count, decisions.count) { target[index] = decisions[index] }
                    var out = ByteBufferAllocator().buffer(capacity: 64 &* count &+ 32)
                    dispatcher.settle(id: id, batch, scratch: work.scratch, active: active, context: context, started: started, into: &out)
                    promise.succeed(out)
                }
            }
            // Answered on the connection's loop: at once when the backend answers there.
            if eventLoop.inEventLoop { answer() } else { eventLoop.execute { answer() } }
        }
        return promise.futureResult
    }

    /// The stages active for a request under `live`, as bits of ``StageList``.
    @inline(__always)
    func activeStages(in live: LiveConfiguration) -> UInt64 { stages.active(in: live) }

    /// Resolves every check into `scratch` (counting those initialized in `resolved`) and lets
    /// each active stage prepare the batch. Returns the batch and whether it must be decided in
    /// order, or the first invalid check's error.
    @inline(__always)
    func prepare(_ views: UnsafeBufferPointer<CheckView>, scratch: CheckScratch, active: UInt64, started: Int64, live: LiveConfiguration,
                 resolved: inout Int) -> Result<(CheckBatch, Bool), WireError> {
        let frame = FramePart(id: 0, body: UnsafeRawBufferPointer(start: nil, count: 0), start: 0, count: views.count)
        let failed = withUnsafePointer(to: frame) {
            resolve(UnsafeBufferPointer(start: $0, count: 1), views: views, scratch: scratch, started: started, live: live, resolved: &resolved)
        }
        if let failed { return .failure(failed.error) }
        let batch = CheckBatch(views: views, items: scratch.items, series: UnsafeBufferPointer(scratch.series), notes: scratch.notes,
                               live: live)
        return .success((batch, prepareStages(batch, active: active)))
    }

    /// Resolves the checks of `frames` into `scratch`, frame by frame (counting those initialized
    /// in `resolved`). Stops at the first frame with an invalid check, whose checks resolved so
    /// far are dropped, and returns it with the error.
    @inline(__always)
    func resolve(_ frames: UnsafeBufferPointer<FramePart>, views: UnsafeBufferPointer<CheckView>, scratch: CheckScratch, started: Int64,
                 live: LiveConfiguration, resolved: inout Int) -> (frame: Int, error: WireError)? {
        let batchNow = live.configuration.clock == .monotonic ? started : 0
        // Shared by the frames: pipelined frames usually name the same rule or limit.
        var previous = ResolvedLimits()
        for (number, frame) in frames.enumerated() {
            for index in frame.start..<(frame.start + frame.count) {
                switch resolve(views[index], index: index - frame.start, batchNow: batchNow, previous: &previous, in: live) {
                case .success(let (item, itemSeries)):
                    (scratch.items.baseAddress! + index).initialize(to: item)
                    scratch.series[index] = itemSeries
                    resolved += 1
                case .failure(let error):
                    scratch.items.baseAddress!.advanced(by: frame.start).deinitialize(count: index - frame.start)
                    resolved = frame.start
                    return (number, error)
                }
            }
            // The tenants' checks-per-second quotas, once the frame is valid: a refused frame is
            // answered like one with an invalid check.
            if let quotas = live.quotas,
               let error = quotas.charge(UnsafeBufferPointer(rebasing: views[frame.start..<(frame.start + frame.count)]), now: started) {
                scratch.items.baseAddress!.advanced(by: frame.start).deinitialize(count: frame.count)
                resolved = frame.start
                return (number, error)
            }
        }
        return nil
    }

    /// Lets each active stage prepare `batch` (its notes fresh first); true when it must be
    /// decided in order.
    @inline(__always)
    func prepareStages(_ batch: CheckBatch, active: UInt64) -> Bool {
        guard active != 0 else { return false }
        batch.notes.initialize(repeating: CheckNote())
        return stages.prepare(batch, active: active)
    }

    /// With the backend's decisions in `scratch.decisions`: applies the stages' blocks, counts
    /// each check, lets each active stage settle, and writes the answer.
    @inline(__always)
    func settle(id: UInt64, _ batch: CheckBatch, scratch: CheckScratch, active: UInt64, context: WorkerContext, started: Int64,
                into out: inout ByteBuffer) {
        apply(batch, decisions: scratch.decisions, active: active, context: context)
        encode(id: id, batch, decisions: UnsafeBufferPointer(scratch.decisions), scratch: scratch, annotated: active != 0, into: &out)
        context.record(latency: time.now() - started)
    }

    /// Applies the stages' blocks to the decisions, counts each check, and lets each active
    /// stage settle.
    @inline(__always)
    func apply(_ batch: CheckBatch, decisions: UnsafeMutableBufferPointer<Decision>, active: UInt64, context: WorkerContext) {
        let annotated = active != 0
        for index in 0..<batch.count {
            if annotated {
                let mode = batch.notes[index].ruleMode
                if mode & CheckNote.exempt != 0 {
                    decisions[index] = .exempt
                } else if batch.notes[index].blockedFor >= 0 {
                    var decision = Decision.blocked(retryAfter: batch.notes[index].blockedFor)
                    decision.reason = batch.notes[index].blockReason
                    decisions[index] = decision
                } else if mode & CheckNote.shadowed != 0, !decisions[index].allowed,
                          decisions[index].reason == .overLimit || decisions[index].reason == .exceedsCapacity {
                    // A rule in shadow: its own limit's denial is reported, not enforced.
                    batch.notes[index].wouldDeny = decisions[index].reason
                    decisions[index].allowed = true
                    decisions[index].reason = .withinLimit
                    decisions[index].retryAfter = 0
                    context.countShadowed(series: batch.series[index])
                    continue
                }
            }
            context.count(series: batch.series[index], reason: decisions[index].reason)
        }
        if annotated { stages.settle(batch, decisions: UnsafeBufferPointer(decisions), active: active) }
    }

    /// Decides the checks one at a time, in order, evaluating each shadow check just before it
    /// is decided: what it would have met is the state the checks before it left, even within
    /// one batch. Used only for batches with a shadow check to evaluate.
    func decideInOrder(_ batch: CheckBatch, into decisions: UnsafeMutableBufferPointer<Decision>) {
        for index in 0..<batch.count {
            // A buffer with an element at `index` has a base address.
            let item = UnsafePointer(batch.items.baseAddress! + index)
            let table = target(item.pointee.partition, batch.live)
            if batch.notes[index].peekFactor != 0 {
                let decision = table.evaluate(item.pointee, factor: batch.notes[index].peekFactor)
                if !decision.allowed { batch.notes[index].wouldDeny = decision.reason }
            }
            (decisions.baseAddress! + index).initialize(to: item.pointee.skip ? .blocked() : table.check(item))
        }
    }

    /// Where a check of `partition` is decided: the backend, or its tenant's own table.
    @inline(__always)
    func target(_ partition: UInt16, _ live: LiveConfiguration) -> any LimiterBackend {
        guard partition != 0, let partitions = live.partitions else { return backend }
        return partitions.table(partition)
    }

    /// Decides a batch against the backend, and the checks of tenants with tables of their own
    /// against those: each table's checks as one batch of it, in order (a key lives in one).
    func check(batch items: UnsafeBufferPointer<BatchCheck>, into decisions: UnsafeMutableBufferPointer<Decision>, live: LiveConfiguration) {
        guard live.partitions != nil, items.contains(where: { $0.partition != 0 }) else {
            backend.check(batch: items, into: decisions)
            return
        }
        var remaining = Set(items.map(\.partition))
        withUnsafeTemporaryAllocation(of: BatchCheck.self, capacity: items.count) { gathered in
            withUnsafeTemporaryAllocation(of: Decision.self, capacity: items.count) { answers in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: items.count) { positions in
                    while let partition = remaining.popFirst() {
                        var count = 0
                        for index in items.indices where items[index].partition == partition {
                            (gathered.baseAddress! + count).initialize(to: items[index])
                            (answers.baseAddress! + count).initialize(to: decisions[index])
                            positions[count] = index
                            count += 1
                        }
                        target(partition, live).check(batch: UnsafeBufferPointer(rebasing: gathered[0..<count]),
                                                      into: UnsafeMutableBufferPointer(rebasing: answers[0..<count]))
                        for slot in 0..<count { decisions[positions[slot]] = answers[slot] }
                        gathered.baseAddress!.deinitialize(count: count)
                        answers.baseAddress!.deinitialize(count: count)
                    }
                }
            }
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
        // The first `count` of the scratch's room: a frame of a multi-frame batch uses a part of it.
        CheckFrameCodec.writeCheckResponse(id: id, verdicts: UnsafeBufferPointer(rebasing: scratch.verdicts[0..<count]),
                                           rules: UnsafeBufferPointer(rebasing: names[0..<count]),
                                           tiers: annotated ? UnsafeBufferPointer(rebasing: names[count..<(2 * count)]) : nil,
                                           anomalies: annotated ? UnsafeBufferPointer(rebasing: names[(2 * count)...]) : nil, into: &out)
    }
}
