import Logging
import NIOCore
import SluiceProto
import SwiftProtobuf

/// Serves one connection: splits the byte stream into frames (``FrameDecoder/nextFrame(in:maximum:)``),
/// asks the processor, writes the response. Check requests take the processor's fast path straight
/// from the frame bytes; the rest are decoded with swift-protobuf. Responses go out in request
/// order, gathered into one buffer per read burst and written and flushed once, so pipelined
/// requests share system calls.
///
/// The handler frames the stream itself rather than behind a `ByteToMessageHandler`: the profile
/// put that handler's own bookkeeping at a tenth of the daemon's time at pipeline depth 1
/// (docs/BENCHMARKS.md). Frames are slices of the bytes read, never copied; only a partial frame
/// at the end of a read is kept for the next.
///
/// A frame that does not decode is answered with `CODE_MALFORMED_MESSAGE` (and the request's id
/// when it could be read) and the connection stays open. A length prefix above the maximum is
/// answered with `CODE_FRAME_TOO_LARGE` and the connection is closed: the stream cannot be framed
/// any more. On a quiesce event (shutdown) the handler answers what it has read and closes.
///
/// A connection that receives nothing for ``ConnectionTimeouts/idle`` (and follows no stream),
/// leaves a frame unfinished for ``ConnectionTimeouts/read``, or whose answers cannot be written
/// for ``ConnectionTimeouts/write`` (the client stopped reading), is closed; so is one the
/// tracker evicts (``ConnectionEviction``). A connection closed on the daemon's own initiative
/// gets what was answered until then, but waits for a client that does not read them no longer
/// than the write timeout. While the loop's ``QueueDelayGauge`` says it is
/// overloaded, check requests are answered `CODE_OVERLOADED` without being decided.
public final class ConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    let processor: any RequestProcessor
    let logger: Logger
    /// The largest frame body accepted; a longer length prefix closes the connection.
    let maximumFrameBytes: Int
    /// The start of a frame whose rest has not arrived yet.
    var partial: ByteBuffer?
    var decodingOptions = BinaryDecodingOptions()
    /// Answers of the current read burst, not yet written.
    var pending: ByteBuffer?
    var closing = false
    var draining = false
    var readSinceLastLook = false
    /// How long a draining connection must be quiet before it is closed.
    let quietPeriod: TimeAmount
    /// Set while a deferred answer (not a check batch) is being worked out: later frames wait
    /// in `partial`.
    var awaitingDeferred = false
    /// Answers in request order behind a check batch decided off the loop (a backend a fleet
    /// shares): nil where the batch's answer has not come yet. Empty: answers go straight out.
    /// Later frames are answered meanwhile, so a connection has many batches out at once, as
    /// a pipelining client expects, and their answers wait here for the ones before them.
    var answerQueue = CircularBuffer<ByteBuffer?>()
    /// The sequence number of `answerQueue`'s first slot.
    var queueBase: UInt64 = 0
    /// Check batches out, decided off the loop.
    var outstandingChecks = 0
    /// Check batches a connection may have out at once; past it, later frames wait in `partial`.
    let maximumOutstandingChecks: Int
    /// Set once a close waits for the answers still queued.
    var closeAfterQueue = false
    /// Set while a flush of answers written is queued on the loop (``flushSoon(context:)``).
    var flushQueued = false
    /// Whether later frames must wait: a deferred answer, or as many check batches out as allowed.
    var holding: Bool { awaitingDeferred || outstandingChecks >= maximumOutstandingChecks }
    /// Set while whole frames wait in `partial` for this connection's next turn (reading paused).
    var backlogged = false
    /// Since when this connection has had whole frames waiting from one turn to the next: the
    /// queueing delay its requests see, which the loop's own lateness does not show once turns
    /// are bounded (the rest waits in the socket).
    var backlogSince: NIODeadline?
    /// Set while this turn answers check requests `CODE_OVERLOADED` instead of deciding them.
    var refusingChecks = false
    var kind = ConnectionKind.tcp
    /// Streams opened on this connection, closed with it.
    var streams: [ResponseStream] = []
    let timeouts: ConnectionTimeouts
    /// Shared with the connection tracker (eviction); nil when nothing tracks it.
    let activity: ConnectionActivity?
    /// The event loop's queueing delay; nil never refuses.
    let queueDelay: QueueDelayGauge?
    /// When bytes last arrived.
    var lastRead = NIODeadline.now()
    /// When the unfinished frame in `partial` began (nil: none).
    var partialSince: NIODeadline?
    var timer: Scheduled<Void>?
    /// Since when more than the write buffer's high mark has been waiting to be written (nil:
    /// writable): the client has not been reading.
    var unwritableSince: NIODeadline?
    /// Set once the channel is closed.
    var inactive = false
    /// The close that does not wait any longer for a client that does not read (see
    /// ``closeAfterWrites(context:)``), cancelled once the channel is closed: it holds the handler.
    var closeFallback: Scheduled<Void>?
    /// The wait of what this TCP connection's socket holds unread (nil: not measured: a Unix
    /// socket, no queueing-delay bound).
    var socketBacklog: SocketBacklog?

    /// A handler answering through `processor`.
    ///
    /// - Parameters:
    ///   - timeouts: when a silent or stalled connection is closed (none by default).
    ///   - activity: what the connection tracker sees of it, updated on every read.
    ///   - queueDelay: the loop's gauge; while it says overloaded, checks are refused.
    ///   - framesPerTurn: frames answered per turn while the loop is contended (nil: no bound).
    ///   - maximumOutstandingChecks: check batches decided off the loop that one connection may
    ///     have out at once (at least 1).
    public init(processor: any RequestProcessor, logger: Logger, maximumFrameBytes: Int = 1 << 20,
                quietPeriod: TimeAmount = .milliseconds(50), timeouts: ConnectionTimeouts = ConnectionTimeouts(),
                activity: ConnectionActivity? = nil, queueDelay: QueueDelayGauge? = nil, framesPerTurn: Int? = nil,
                maximumOutstandingChecks: Int = 128) {
        self.maximumOutstandingChecks = max(1, maximumOutstandingChecks)
        framesPerContendedTurn = framesPerTurn.map { max(1, $0) } ?? .max
        self.processor = processor
        self.maximumFrameBytes = maximumFrameBytes
        self.logger = logger
        self.quietPeriod = quietPeriod
        self.timeouts = timeouts
        self.activity = activity
        self.queueDelay = queueDelay
        decodingOptions.discardUnknownFields = true
        decodingOptions.messageDepthLimit = 16
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if case .unixDomainSocket = context.channel.localAddress { kind = .unix }
        lastRead = .now()
        if kind == .tcp, let queueDelay, queueDelay.bound < .max { socketBacklog = SocketBacklog(now: lastRead) }
        armTimer(context: context)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        closeFallback?.cancel()
        closeFallback = nil
    }

    // MARK: Time limits

    /// Schedules the next look at the time limits, at the earliest deadline that applies.
    func armTimer(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        var deadline: NIODeadline?
        if let idle = timeouts.idle { deadline = lastRead + idle }
        if let read = timeouts.read, let since = partialSince { deadline = min(deadline ?? since + read, since + read) }
        if let write = timeouts.write, let since = unwritableSince { deadline = min(deadline ?? since + write, since + write) }
        guard let deadline, !closing else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = loopBound.value
            handler.timer = nil
            handler.checkTimeLimits(context: context)
        }
    }

    /// Closes the connection if it has been silent or stalled too long; else looks again later.
    func checkTimeLimits(context: ChannelHandlerContext) {
        guard !closing else { return }
        let now = NIODeadline.now()
        if let write = timeouts.write, let since = unwritableSince, now - since >= write {
            end(.writeTimeout, context: context)
            return
        }
        if let read = timeouts.read, let since = partialSince, now - since >= read, !holding, !backlogged {
            end(.readTimeout, context: context)
            return
        }
        if let idle = timeouts.idle, partial == nil, streams.isEmpty, !awaitingDeferred, outstandingChecks == 0, now - lastRead >= idle {
            end(.idle, context: context)
            return
        }
        // Busy (a deferred answer, a stream) or active since: keep it, and look again.
        if streams.isEmpty == false || awaitingDeferred || outstandingChecks > 0 { lastRead = max(lastRead, now) }
        armTimer(context: context)
    }

    /// Closes the connection on the daemon's own initiative, counting why.
    func end(_ reason: ConnectionEnd, context: ChannelHandlerContext) {
        guard !closing else { return }
        processor.connectionEnded(reason)
        logger.debug("closing connection", metadata: ["conn.reason": "\(reason)"])
        guard reason != .writeTimeout else {
            // Its answers have not moved for the whole limit: they never will be read. Closing
            // after the writes would wait for ever; the queued answers are dropped with it.
            closing = true
            pending = nil
            answerQueue.removeAll()
            context.close(promise: nil)
            return
        }
        closeAfterWrites(context: context)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        readSinceLastLook = true
        let now = NIODeadline.now()
        lastRead = now
        activity?.touch(now)
        queueDelay?.touch(on: context.eventLoop)
        let hadPartial = partial != nil
        var bytes = unwrapInboundIn(data)
        if socketBacklog?.record(read: bytes.readableBytes, full: bytes.writableBytes == 0, now: now) == true, let bound = queueDelay?.bound,
           let queued = SocketBacklog.queued(in: context.channel) {
            _ = socketBacklog?.sample(queued: queued, now: now, bound: bound)
        }
        if var earlier = partial {
            partial = nil
            // The frames already answered are still in the kept buffer's storage, before its
            // reader index: dropped here, or a stream whose reads never end on a frame boundary
            // would grow this buffer by every byte it sends.
            earlier.discardReadBytes()
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        consume(&bytes, context: context)
        if timeouts.read != nil, partialSince != nil, timer == nil || !hadPartial { armTimer(context: context) }
    }

    /// What is kept of a read for the next one: the start of an unfinished frame, in storage of
    /// its own size when the read's buffer is much larger than it, so a connection holds at most
    /// about one frame (``maximumFrameBytes`` plus a read) between reads.
    static func kept(_ bytes: ByteBuffer) -> ByteBuffer {
        guard bytes.capacity > 2 * bytes.readableBytes + Self.keptSlack else { return bytes }
        var copy = ByteBufferAllocator().buffer(capacity: bytes.readableBytes)
        var rest = bytes
        copy.writeBuffer(&rest)
        return copy
    }

    /// Spare capacity a kept buffer may have before it is copied to a smaller one.
    public static let keptSlack = 16 * 1024

    /// Bytes of storage held for an unfinished frame between reads (a fuzz target bounds it).
    public var keptCapacity: Int { partial?.capacity ?? 0 }

    /// Answers every whole frame in `bytes` (until one is deferred) and keeps the rest; returns
    /// how many frames it answered.
    @discardableResult
    func consume(_ bytes: inout ByteBuffer, context: ChannelHandlerContext) -> Int {
        var answered = 0
        // While the loop is contended, a turn answers a bounded number of frames: the rest wait
        // for the next turn, after every other ready connection had its own.
        let budget = queueDelay?.isContended == true ? framesPerContendedTurn : Int.max
        if let queueDelay {
            // Past the bound, on the loop or in this connection's own backlog: refuse checks now
            // (a share of them for what waits in the socket, SocketBacklog).
            let waited = backlogSince.map { NIODeadline.now() - $0 }?.nanoseconds ?? 0
            refusingChecks = queueDelay.isOverloaded || waited > queueDelay.bound
        }
        var decided = 0
        do {
            while !closing, !holding, decided < budget {
                // Two frames or more waiting: answered as one batch while the processor reads them.
                if gathersFrames, !refusingChecks, socketBacklog?.refusing != true {
                    let batched = answerWhole(&bytes, limit: min(Self.framesPerBatch, budget - decided), context: context)
                    decided += batched
                    answered += batched
                    if batched > 0 { continue }
                }
                guard let frame = try FrameDecoder.nextFrame(in: &bytes, maximum: maximumFrameBytes) else { break }
                // A refusal costs next to nothing: it does not use the turn's budget.
                if answer(frame, context: context) { decided += 1 }
                answered += 1
                if processor.closeRequested {
                    end(.unauthenticated, context: context)
                    break
                }
            }
        } catch FramingError.frameTooLarge(let length, let maximum) {
            processor.recordFailedFrame(.frameTooLarge)
            write(.error(id: 0, .frameTooLarge, "frame length \(length) exceeds the maximum of \(maximum) bytes; closing the connection"),
                  context: context)
            logger.debug("closing connection: frame too large", metadata: ["frame.length": "\(length)"])
            closeAfterWrites(context: context)
            return answered
        } catch {
            closeAfterWrites(context: context)
            return answered
        }
        if bytes.readableBytes > 0, !closing { partial = Self.kept(bytes) }
        // The read limit runs from the first byte of the frame left unfinished: it starts again
        // whenever a frame was answered (also after a deferred answer or a backlog's turn).
        if partial == nil {
            partialSince = nil
        } else if answered > 0 || partialSince == nil {
            partialSince = .now()
        }
        if decided >= budget, !closing, !holding, let rest = partial, Self.holdsWholeFrame(rest) {
            if backlogSince == nil { backlogSince = .now() }
            waitForNextTurn(context: context)
        } else {
            backlogSince = nil
        }
        return answered
    }

    /// Frames answered as one batch at most (``RequestProcessor/answerCheckFrames(_:into:)``).
    static let framesPerBatch = 64

    /// Whether the processor decides frames together (read once: it does not change).
    lazy var gathersFrames = processor.answersCheckFramesTogether

    /// Answers the whole frames at the front of `bytes`, if there are two or more, as one batch;
    /// returns how many were answered (and consumed), 0 when the processor took none.
    func answerWhole(_ bytes: inout ByteBuffer, limit: Int, context: ChannelHandlerContext) -> Int {
        guard limit > 1 else { return 0 }
        let maximum = maximumFrameBytes
        let answered = bytes.withUnsafeReadableBytes { raw -> (frames: Int, bytes: Int) in
            withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: limit) { frames in
                var count = 0, offset = 0
                while count < limit, raw.count - offset >= 4 {
                    let length = Int(UInt32(raw[offset]) << 24 | UInt32(raw[offset + 1]) << 16 | UInt32(raw[offset + 2]) << 8
                                     | UInt32(raw[offset + 3]))
                    // A frame too large is the single-frame path's to refuse.
                    guard length <= maximum, raw.count - offset - 4 >= length else { break }
                    (frames.baseAddress! + count).initialize(to: UnsafeRawBufferPointer(rebasing: raw[(offset + 4)..<(offset + 4 + length)]))
                    count += 1
                    offset += 4 + length
                }
                // Only a run that starts with a check request: anything else is answered alone
                // (and no answer buffer is made for nothing).
                guard count > 1, CheckFrameCodec.checkBody(frames[0]) != nil else { return (0, 0) }
                // Taken out of `pending` while written to, so that appending never copies it.
                let held = pending != nil
                var out = pending ?? context.channel.allocator.buffer(capacity: 4_096)
                pending = nil
                let taken = processor.answerCheckFrames(UnsafeBufferPointer(rebasing: frames[0..<count]), into: &out)
                if taken > 0 || held { pending = out }
                var consumed = 0
                for index in 0..<taken { consumed += 4 + frames[index].count }
                return (taken, consumed)
            }
        }
        bytes.moveReaderIndex(forwardBy: answered.bytes)
        return answered.frames
    }

    /// Frames one connection may have answered per turn of a contended event loop (`Int.max`:
    /// no bound, the default: bounded turns cost a fifth of the throughput in the one quiet
    /// measurement and did not shorten a newcomer's wait, docs/BENCHMARKS.md).
    let framesPerContendedTurn: Int

    /// Whether `bytes` begins with a whole frame.
    static func holdsWholeFrame(_ bytes: ByteBuffer) -> Bool {
        guard let length = bytes.getInteger(at: bytes.readerIndex, endianness: .big, as: UInt32.self) else { return false }
        return bytes.readableBytes >= 4 + Int(length)
    }

    /// Sends this turn's answers, stops reading, and goes on with the frames kept once the loop
    /// has served its other connections: the task is due a little later, so the loop polls its
    /// sockets first (a task due now would run in the same pass).
    func waitForNextTurn(context: ChannelHandlerContext) {
        backlogged = true
        flushPending(context: context)
        try? context.channel.syncOptions?.setOption(.autoRead, value: false)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .microseconds(20)) {
            let (handler, context) = loopBound.value
            handler.backlogged = false
            guard !handler.closing else { return }
            if !handler.holding, var rest = handler.partial {
                handler.partial = nil
                handler.consume(&rest, context: context)
            }
            handler.flushPending(context: context)
            handler.resumeReadingIfFree(context: context)
        }
    }

    /// Reads again unless something still holds reading back (a deferred answer, a backlog,
    /// answers the client has not read).
    func resumeReadingIfFree(context: ChannelHandlerContext) {
        guard !closing, !holding, !backlogged, context.channel.isWritable else { return }
        try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        context.read()
    }

    /// Answers one frame into the pending output.
    /// Returns false when the frame was refused unread (past the queueing-delay bound).
    @discardableResult
    func answer(_ frame: ByteBuffer, context: ChannelHandlerContext) -> Bool {
        // Taken out of `pending` while written to, so that appending never copies it.
        var out = pending ?? context.channel.allocator.buffer(capacity: 4_096)
        pending = nil
        if refusingChecks || socketBacklog?.refusing == true,
           let id = frame.withUnsafeReadableBytes({ CheckFrameCodec.checkBody($0)?.id }),
           refusingChecks || socketBacklog?.refuseNext() == true {
            // Past the queueing-delay bound: a check answered late is worth less than a refusal now.
            processor.recordFailedFrame(.overloaded)
            QueueDelayGauge.writeRefusal(id: id, into: &out)
            pending = out
            return false
        }
        let answered = frame.withUnsafeReadableBytes { processor.answerCheckFrame($0, into: &out) }
        if !answered, let future = frame.withUnsafeReadableBytes({ processor.answerCheckFrameLater($0, eventLoop: context.eventLoop) }) {
            pending = out
            awaitCheckBatch(future, id: 0, context: context)
            return true
        }
        if !answered {
            let response: WireResponse
            do {
                let request = try WireRequest(serializedBytes: frame.readableBytesSpan, options: decodingOptions)
                if case .watchAlerts = request.body {
                    let stream = ResponseStream(id: request.id, handler: self, context: context)
                    var first = processor.openStream(request, on: kind, stream: stream)
                    first.id = request.id
                    if case .error = first.body { stream.close() } else { streams.append(stream) }
                    activity?.following.store(!streams.isEmpty, ordering: .relaxed)
                    out.writeResponseFrame(first)
                    pending = out
                    return true
                }
                if case .check = request.body {
                    let future = processor.answerChecks(request, into: &out, eventLoop: context.eventLoop)
                    pending = out
                    if let future { awaitCheckBatch(future, id: request.id, context: context) }
                    return true
                }
                if let future = processor.deferredAnswer(to: request, on: kind, eventLoop: context.eventLoop) {
                    pending = out
                    let allocator = context.channel.allocator, id = request.id
                    awaitDeferred(future.map { answer in
                        var response = answer
                        response.id = id
                        var frame = allocator.buffer(capacity: 256)
                        frame.writeResponseFrame(response)
                        return frame
                    }, id: id, context: context)
                    return true
                }
                response = processor.process(request)
            } catch {
                processor.recordFailedFrame(.malformedMessage)
                let id = RequestIDScanner.id(in: frame) ?? 0
                response = .error(id: id, .malformedMessage, "frame of \(frame.readableBytes) bytes is not a valid sluice.v1.Request")
            }
            out.writeResponseFrame(response)
        }
        pending = out
        return true
    }

    /// Stops answering (and reading) until `future` completes, then writes its answer frame and
    /// goes on with the frames that arrived meanwhile.
    func awaitDeferred(_ future: EventLoopFuture<ByteBuffer>, id: UInt64, context: ChannelHandlerContext) {
        awaitingDeferred = true
        flushPending(context: context)
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        future.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            handler.awaitingDeferred = false
            switch result {
            case .success(var frame):
                var out = handler.pending ?? context.channel.allocator.buffer(capacity: frame.readableBytes)
                handler.pending = nil
                out.writeBuffer(&frame)
                handler.pending = out
            case .failure(let error):
                handler.write(.error(id: id, .internal, "the request failed: \(error)"), context: context)
            }
            handler.goOn(context: context)
        }
    }

    /// Answers the frames that waited, reads again if nothing holds reading back, and sends.
    func goOn(context: ChannelHandlerContext) {
        if !closing {
            if !holding, var rest = partial {
                partial = nil
                consume(&rest, context: context)
            }
            resumeReadingIfFree(context: context)
        }
        flushPending(context: context)
    }

    /// Takes a check batch's answer in its place in request order and goes on answering the
    /// frames after it: up to ``maximumOutstandingChecks`` batches are out at once.
    func awaitCheckBatch(_ future: EventLoopFuture<ByteBuffer>, id: UInt64, context: ChannelHandlerContext) {
        // The answers before it go first (to the socket, or behind what still waits).
        flushPending(context: context)
        let sequence = queueBase &+ UInt64(answerQueue.count)
        answerQueue.append(nil)
        outstandingChecks += 1
        if holding { context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in } }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        future.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            handler.outstandingChecks -= 1
            guard !handler.inactive else { return }
            let frame: ByteBuffer
            switch result {
            case .success(let answer): frame = answer
            case .failure(let error):
                var out = context.channel.allocator.buffer(capacity: 128)
                out.writeResponseFrame(.error(id: id, .internal, "the request failed: \(error)"))
                frame = out
            }
            handler.fill(sequence, with: frame, context: context)
            handler.goOn(context: context)
        }
    }

    /// Puts the answer numbered `sequence` in its slot and sends every answer at the head of the
    /// queue that no earlier one holds back.
    func fill(_ sequence: UInt64, with frame: ByteBuffer, context: ChannelHandlerContext) {
        let offset = Int(truncatingIfNeeded: sequence &- queueBase)
        guard offset >= 0, offset < answerQueue.count else { return }
        answerQueue[answerQueue.index(answerQueue.startIndex, offsetBy: offset)] = frame
        var out: ByteBuffer?
        while let first = answerQueue.first, var ready = first {
            answerQueue.removeFirst()
            queueBase &+= 1
            if out == nil {
                out = ready
            } else {
                out?.writeBuffer(&ready)
            }
        }
        if let out, out.readableBytes > 0 {
            // Batches decided together come back in tasks queued together: one flush (one
            // write to the socket) after them all, not one per batch.
            context.write(wrapOutboundOut(out), promise: nil)
            flushSoon(context: context)
        }
        if answerQueue.isEmpty, closeAfterQueue {
            closeAfterQueue = false
            flushPending(context: context)
            closeOnceWritten(context: context)
        }
    }

    /// Flushes once the tasks already queued on the loop have run.
    func flushSoon(context: ChannelHandlerContext) {
        guard !flushQueued else { return }
        flushQueued = true
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = loopBound.value
            handler.flushQueued = false
            if !handler.inactive { context.flush() }
        }
    }

    func write(_ response: WireResponse, context: ChannelHandlerContext) {
        var out = pending ?? context.channel.allocator.buffer(capacity: 256)
        pending = nil
        out.writeResponseFrame(response)
        pending = out
    }

    /// Writes and flushes the answers gathered so far, or queues them behind a check batch's
    /// answer that has not come yet.
    func flushPending(context: ChannelHandlerContext) {
        guard let out = pending, out.readableBytes > 0 else { return }
        pending = nil
        if answerQueue.isEmpty {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        } else {
            answerQueue.append(out)
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        flushPending(context: context)
        context.fireChannelReadComplete()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Backpressure: a client that pipelines without reading stops being read from until
        // its answers drain, so one connection cannot grow the daemon's memory without bound.
        if context.channel.isWritable {
            unwritableSince = nil
            // What queued in the socket while the client did not read its answers waited for
            // the client, not for the daemon: the backlog's estimate starts afresh.
            socketBacklog?.restart()
            resumeReadingIfFree(context: context)
        } else {
            if unwritableSince == nil {
                unwritableSince = .now()
                if timeouts.write != nil { armTimer(context: context) }
            }
            try? context.channel.syncOptions?.setOption(.autoRead, value: false)
        }
        context.fireChannelWritabilityChanged()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        inactive = true
        for stream in streams { stream.close() }
        streams = []
        timer?.cancel()
        timer = nil
        // Whatever still refers to the handler must not keep its buffers alive.
        closeFallback?.cancel()
        closeFallback = nil
        partial = nil
        pending = nil
        answerQueue.removeAll()
        context.fireChannelInactive()
    }

    /// Closes once everything written so far has reached the socket.
    func closeOnceWritten(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            loopBound.value.1.close(promise: nil)
        }
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("closing connection", metadata: ["error": "\(error)"])
        closeAfterWrites(context: context)
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ConnectionEviction {
            end(.evicted, context: context)
            return
        }
        if event is ChannelShouldQuiesceEvent {
            // Shutdown: keep answering what the client already sent (it may still be in the
            // socket buffer) and close once the connection has been quiet for `quietPeriod`.
            guard !draining else { return }
            draining = true
            readSinceLastLook = false
            scheduleQuietCheck(context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func scheduleQuietCheck(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: quietPeriod) {
            let (handler, context) = loopBound.value
            if handler.readSinceLastLook {
                handler.readSinceLastLook = false
                handler.scheduleQuietCheck(context: context)
            } else {
                handler.closeAfterWrites(context: context)
            }
        }
    }

    /// Closes once everything written so far has reached the socket (an empty write completes
    /// after all writes before it), or after ``ConnectionTimeouts/write`` (10 s without one) for
    /// a client that does not read it: the connection would otherwise stay open for ever.
    /// Check batches still out are waited for (within the same limit): their answers were owed.
    func closeAfterWrites(context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        timer?.cancel()
        timer = nil
        flushPending(context: context)
        if answerQueue.isEmpty {
            closeOnceWritten(context: context)
        } else {
            closeAfterQueue = true
        }
        guard !inactive else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        closeFallback = context.eventLoop.scheduleTask(in: timeouts.write ?? .seconds(10)) {
            let (handler, context) = loopBound.value
            handler.closeFallback = nil
            guard !handler.inactive else { return }
            context.close(promise: nil)
        }
    }
}


/// When a connection the daemon serves is closed for silence (nil: never).
public struct ConnectionTimeouts: Sendable, Hashable {
    /// Nothing received for this long (and no stream followed, no answer being worked out).
    public var idle: TimeAmount?
    /// A frame begun and not finished within this long.
    public var read: TimeAmount?
    /// Answers waiting to be written (more than the write buffer's high mark) for this long
    /// without the client reading enough of them to go below it.
    public var write: TimeAmount?

    /// Timeouts; none by default.
    public init(idle: TimeAmount? = nil, read: TimeAmount? = nil, write: TimeAmount? = nil) {
        self.idle = idle
        self.read = read
        self.write = write
    }
}
