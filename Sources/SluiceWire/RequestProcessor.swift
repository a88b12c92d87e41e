import SluiceProto

/// Answers decoded requests. The server implements it; the wire layer only frames and codes.
public protocol RequestProcessor: Sendable {
    /// Answers one request. Called on the connection's event loop: it must not block or wait.
    func process(_ request: WireRequest) -> WireResponse

    /// Called when a frame did not decode or could not be framed (for counting).
    func recordMalformed()
}
