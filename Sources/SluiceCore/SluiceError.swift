/// An error a user sees: a stable code and a sentence.
public struct SluiceError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A stable error code. New codes may be added; match with `==`, never exhaustively.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        enum Value: String, Sendable, Hashable {
            case invalidArgument = "invalid_argument"
            case invalidLimit = "invalid_limit"
            case unknownRule = "unknown_rule"
            case unknownTenant = "unknown_tenant"
            case invalidConfiguration = "invalid_configuration"
            case frameTooLarge = "frame_too_large"
            case malformedMessage = "malformed_message"
            case overloaded = "overloaded"
            case addressInUse = "address_in_use"
            case io = "io"
            case unavailable = "unavailable"
            case `internal` = "internal"
        }
        let value: Value
        /// A field of a request is missing or out of range.
        public static let invalidArgument = Code(value: .invalidArgument)
        /// A limit's numbers are out of range.
        public static let invalidLimit = Code(value: .invalidLimit)
        /// A check named a rule that is not configured.
        public static let unknownRule = Code(value: .unknownRule)
        /// A check named a tenant that is not configured.
        public static let unknownTenant = Code(value: .unknownTenant)
        /// A configuration file is unreadable or invalid.
        public static let invalidConfiguration = Code(value: .invalidConfiguration)
        /// A frame's length prefix is above the maximum.
        public static let frameTooLarge = Code(value: .frameTooLarge)
        /// A frame's bytes do not decode.
        public static let malformedMessage = Code(value: .malformedMessage)
        /// Work refused to protect the daemon.
        public static let overloaded = Code(value: .overloaded)
        /// A listener's address is taken (for Unix sockets: by a live daemon).
        public static let addressInUse = Code(value: .addressInUse)
        /// An operating-system call failed.
        public static let io = Code(value: .io)
        /// The operation needs something the daemon was not configured with.
        public static let unavailable = Code(value: .unavailable)
        /// A bug.
        public static let `internal` = Code(value: .internal)

        /// The code's stable name, e.g. `invalid_argument`.
        public var description: String { value.rawValue }
    }

    /// The stable code.
    public var code: Code
    /// A sentence saying what went wrong and what was expected.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `code: message`.
    public var description: String { "\(code): \(message)" }
}
