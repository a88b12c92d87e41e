/// One RESP2 reply (https://redis.io/docs/latest/develop/reference/protocol-spec/): what a
/// Redis server answers to a command.
public enum RESPValue: Sendable, Equatable {
    /// `+OK`: a status line.
    case simple(String)
    /// `-ERR message`: the command failed; the connection is still usable.
    case error(String)
    /// `:42`.
    case integer(Int64)
    /// `$3 abc`; nil for the null bulk string (`$-1`).
    case bulk([UInt8]?)
    /// `*2 …`; nil for the null array (`*-1`).
    case array([RESPValue]?)

    /// The integer this is, nil if it is another kind.
    public var integer: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    /// The text of a status line or a bulk string (as UTF-8, invalid bytes replaced); nil for
    /// other kinds and for nulls.
    public var string: String? {
        switch self {
        case .simple(let text): return text
        case .bulk(let bytes?): return String(decoding: bytes, as: UTF8.self)
        default: return nil
        }
    }

    /// The elements of an array; nil for other kinds and the null array.
    public var elements: [RESPValue]? {
        if case .array(let elements?) = self { return elements }
        return nil
    }

    /// The message of an error reply; nil when this is not one.
    public var errorMessage: String? {
        if case .error(let message) = self { return message }
        return nil
    }

    /// Whether this is the null bulk string or the null array.
    public var isNull: Bool {
        switch self {
        case .bulk(nil), .array(nil): return true
        default: return false
        }
    }
}

extension RESPValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .simple(let text): return text
        case .error(let message): return "(error) \(message)"
        case .integer(let value): return "(integer) \(value)"
        case .bulk(nil), .array(nil): return "(nil)"
        case .bulk(let bytes?): return "\"\(String(decoding: bytes, as: UTF8.self))\""
        case .array(let elements?): return "[" + elements.map(\.description).joined(separator: ", ") + "]"
        }
    }
}
