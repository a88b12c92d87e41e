import NIOCore
import SluiceProto

/// Answers decoded requests. The server implements it; the wire layer only frames and codes.
public protocol RequestProcessor: Sendable {
    /// Answers one request. Called on the connection's event loop: it must not block or wait.
    func process(_ request: WireRequest) -> WireResponse

    /// The hot path: answers a frame holding a check request straight from its bytes (see
    /// ``CheckFrameCodec``), appending one whole answer frame to `out`. Returns false, having
    /// written nothing, for a frame it does not read; the handler then decodes it with
    /// swift-protobuf and calls ``process(_:)``.
    func answerCheckFrame(_ frame: UnsafeRawBufferPointer, into out: inout ByteBuffer) -> Bool

    /// Called when a frame did not decode or could not be framed (for counting).
    func recordMalformed()
}

extension RequestProcessor {
    /// No fast path: every frame goes through swift-protobuf and ``process(_:)``.
    public func answerCheckFrame(_ frame: UnsafeRawBufferPointer, into out: inout ByteBuffer) -> Bool { false }
}
