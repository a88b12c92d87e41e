import NIOCore
import SluiceProto

/// The kind of socket a connection arrived on: operator requests may be served on one and not
/// on the other.
public enum ConnectionKind: Sendable, Hashable {
    /// A Unix domain socket (its file mode says who may connect).
    case unix
    /// A TCP connection.
    case tcp
}

/// Answers decoded requests. The server implements it; the wire layer only frames and codes.
public protocol RequestProcessor: Sendable {
    /// Answers one request. Called on the connection's event loop: it must not block or wait.
    func process(_ request: WireRequest) -> WireResponse

    /// The hot path: answers a frame holding a check request straight from its bytes (see
    /// ``CheckFrameCodec``), appending one whole answer frame to `out`. Returns false, having
    /// written nothing, for a frame it does not read; the handler then decodes it with
    /// swift-protobuf and calls ``process(_:)``.
    func answerCheckFrame(_ frame: UnsafeRawBufferPointer, into out: inout ByteBuffer) -> Bool

    /// The hot path over the frames one read brought: answers, in order, a prefix of `frames`
    /// (each a frame's bytes without its length prefix) as one batch, appending each one's
    /// answer frame to `out`. Returns how many it answered; 0, having written nothing, when it
    /// does not read the first (the handler then answers that one with
    /// ``answerCheckFrame(_:into:)``).
    func answerCheckFrames(_ frames: UnsafeBufferPointer<UnsafeRawBufferPointer>, into out: inout ByteBuffer) -> Int

    /// Whether ``answerCheckFrames(_:into:)`` may answer anything: false spares the handler
    /// gathering frames for it (a backend that answers later, or a processor without it).
    var answersCheckFramesTogether: Bool { get }

    /// The hot path for checks decided off the event loop (a backend a fleet shares): a frame
    /// holding a check request, read straight from its bytes, and the future of its whole answer
    /// frame; nil for a frame it does not read (then decoded and given to
    /// ``answerChecks(_:into:eventLoop:)``).
    func answerCheckFrameLater(_ frame: UnsafeRawBufferPointer, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer>?

    /// A check request the fast path did not answer, decoded by swift-protobuf: appends its
    /// whole answer frame to `out` and returns nil, or returns the future of that frame when
    /// the checks are decided off the event loop (a backend a fleet shares). The connection goes
    /// on answering later frames meanwhile (several batches out at once) and writes every answer
    /// in request order.
    func answerChecks(_ request: WireRequest, into out: inout ByteBuffer, eventLoop: (any EventLoop)?) -> EventLoopFuture<ByteBuffer>?

    /// For a request whose work must not run on the event loop (it reads or writes files): a
    /// future of its answer. The connection answers nothing after it until it completes, so
    /// answers stay in request order. Nil: answer it with ``process(_:)``.
    func deferredAnswer(to request: WireRequest, on connection: ConnectionKind, eventLoop: any EventLoop)
        -> EventLoopFuture<WireResponse>?

    /// Opens the stream of a streaming request (`WatchAlerts`): returns its first answer and
    /// keeps `stream` to push the later ones. An error answer closes the stream.
    func openStream(_ request: WireRequest, on connection: ConnectionKind, stream: ResponseStream) -> WireResponse

    /// Called when a frame could not be answered normally: it did not decode (`CODE_MALFORMED_MESSAGE`)
    /// or its length was too large (`CODE_FRAME_TOO_LARGE`). For counting.
    func recordFailedFrame(_ code: WireError.Code)

    /// Called when the connection layer closed a connection on its own (idle, stalled, evicted).
    /// For counting.
    func connectionEnded(_ reason: ConnectionEnd)

    /// Set once the connection should be closed after the answers written so far (it failed to
    /// authenticate too often). Read after each frame answered on its own.
    var closeRequested: Bool { get }
}

extension RequestProcessor {
    /// Never.
    public var closeRequested: Bool { false }

    /// Nothing counted.
    public func connectionEnded(_ reason: ConnectionEnd) {}

    /// No fast path: every frame goes through swift-protobuf and ``process(_:)``.
    public func answerCheckFrame(_ frame: UnsafeRawBufferPointer, into out: inout ByteBuffer) -> Bool { false }

    /// No batch of frames: each is answered alone.
    public func answerCheckFrames(_ frames: UnsafeBufferPointer<UnsafeRawBufferPointer>, into out: inout ByteBuffer) -> Int { 0 }

    /// No batch of frames.
    public var answersCheckFramesTogether: Bool { false }

    /// No fast deferred path.
    public func answerCheckFrameLater(_ frame: UnsafeRawBufferPointer, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer>? { nil }

    /// Answered by ``process(_:)``, at once.
    public func answerChecks(_ request: WireRequest, into out: inout ByteBuffer, eventLoop: (any EventLoop)?)
        -> EventLoopFuture<ByteBuffer>? {
        var response = process(request)
        response.id = request.id
        out.writeResponseFrame(response)
        return nil
    }

    /// No streams: a streaming request is refused.
    public func openStream(_ request: WireRequest, on connection: ConnectionKind, stream: ResponseStream) -> WireResponse {
        .error(id: request.id, .unsupported, "this daemon serves no streaming requests")
    }

    /// Nothing deferred: every request is answered by ``process(_:)``.
    public func deferredAnswer(to request: WireRequest, on connection: ConnectionKind, eventLoop: any EventLoop)
        -> EventLoopFuture<WireResponse>? { nil }
}
