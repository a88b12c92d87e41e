/// A store failure, in words an operator can act on (the file, what SQLite said).
public struct StoreError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public var message: String
    /// The commit that failed wrote its events (in a transaction of their own) before it failed
    /// at the score rows: retry the rows, not the events.
    public var eventsCommitted = false

    /// Creates an error.
    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
