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
    /// Set while a deferred answer is being worked out: later frames wait in `partial`.
    var awaitingDeferred = false
    var kind = ConnectionKind.tcp
    /// Streams opened on this connection, closed with it.
    var streams: [ResponseStream] = []

    /// A handler answering through `processor`.
    public init(processor: any RequestProcessor, logger: Logger, maximumFrameBytes: Int = 1 << 20,
                quietPeriod: TimeAmount = .milliseconds(50)) {
        self.processor = processor
        self.maximumFrameBytes = maximumFrameBytes
        self.logger = logger
        self.quietPeriod = quietPeriod
        decodingOptions.discardUnknownFields = true
        decodingOptions.messageDepthLimit = 16
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if case .unixDomainSocket = context.channel.localAddress { kind = .unix }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        readSinceLastLook = true
        var bytes = unwrapInboundIn(data)
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

    /// Answers every whole frame in `bytes` (until one is deferred) and keeps the rest.
    func consume(_ bytes: inout ByteBuffer, context: ChannelHandlerContext) {
        do {
            while !closing, !awaitingDeferred, let frame = try FrameDecoder.nextFrame(in: &bytes, maximum: maximumFrameBytes) {
                answer(frame, context: context)
            }
        } catch FramingError.frameTooLarge(let length, let maximum) {
            processor.recordFailedFrame(.frameTooLarge)
            write(.error(id: 0, .frameTooLarge, "frame length \(length) exceeds the maximum of \(maximum) bytes; closing the connection"),
                  context: context)
            logger.debug("closing connection: frame too large", metadata: ["frame.length": "\(length)"])
            closeAfterWrites(context: context)
            return
        } catch {
            closeAfterWrites(context: context)
            return
        }
        if bytes.readableBytes > 0, !closing { partial = Self.kept(bytes) }
    }

    /// Answers one frame into the pending output.
    func answer(_ frame: ByteBuffer, context: ChannelHandlerContext) {
        // Taken out of `pending` while written to, so that appending never copies it.
        var out = pending ?? context.channel.allocator.buffer(capacity: 4_096)
        pending = nil
        let answered = frame.withUnsafeReadableBytes { processor.answerCheckFrame($0, into: &out) }
        if !answered {
            let response: WireResponse
            do {
                let request = try WireRequest(serializedBytes: frame.readableBytesSpan, options: decodingOptions)
                if case .watchAlerts = request.body {
                    let stream = ResponseStream(id: request.id, handler: self, context: context)
                    var first = processor.openStream(request, on: kind, stream: stream)
                    first.id = request.id
                    if case .error = first.body { stream.close() } else { streams.append(stream) }
                    out.writeResponseFrame(first)
                    pending = out
                    return
                }
                if let future = processor.deferredAnswer(to: request, on: kind, eventLoop: context.eventLoop) {
                    pending = out
                    awaitDeferred(future, id: request.id, context: context)
                    return
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
    }

    /// Stops answering (and reading) until `future` completes, then writes its answer and goes
    /// on with the frames that arrived meanwhile.
    func awaitDeferred(_ future: EventLoopFuture<WireResponse>, id: UInt64, context: ChannelHandlerContext) {
        awaitingDeferred = true
        flushPending(context: context)
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        future.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            handler.awaitingDeferred = false
            var response: WireResponse
            switch result {
            case .success(let answer): response = answer
            case .failure(let error): response = .error(id: id, .internal, "the request failed: \(error)")
            }
            response.id = id
            handler.write(response, context: context)
            if !handler.closing {
                if var rest = handler.partial {
                    handler.partial = nil
                    handler.consume(&rest, context: context)
                }
                if !handler.awaitingDeferred, context.channel.isWritable {
                    context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
                    context.read()
                }
            }
            handler.flushPending(context: context)
        }
    }

    func write(_ response: WireResponse, context: ChannelHandlerContext) {
        var out = pending ?? context.channel.allocator.buffer(capacity: 256)
        pending = nil
        out.writeResponseFrame(response)
        pending = out
    }

    /// Writes and flushes the answers gathered so far.
    func flushPending(context: ChannelHandlerContext) {
        guard let out = pending, out.readableBytes > 0 else { return }
        pending = nil
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        flushPending(context: context)
        context.fireChannelReadComplete()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Backpressure: a client that pipelines without reading stops being read from until
        // its answers drain, so one connection cannot grow the daemon's memory without bound.
        let resume = context.channel.isWritable && !awaitingDeferred
        context.channel.setOption(ChannelOptions.autoRead, value: resume).whenFailure { _ in }
        if resume { context.read() }
        context.fireChannelWritabilityChanged()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        for stream in streams { stream.close() }
        streams = []
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("closing connection", metadata: ["error": "\(error)"])
        closeAfterWrites(context: context)
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
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
    /// after all writes before it).
    func closeAfterWrites(context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        flushPending(context: context)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
