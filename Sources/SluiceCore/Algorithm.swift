/// The limiting algorithms Sluice implements.
///
/// The raw values match `sluice.v1.Algorithm` on the wire.
public enum Algorithm: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Generic cell rate algorithm: one timestamp per key, smooth spacing with a burst allowance.
    case gcra = 1
    /// A bucket of `burst` tokens refilled continuously at `limit` per `period`.
    case tokenBucket = 2
    /// Two fixed windows, the previous one weighted by how much of it still overlaps the sliding window.
    case slidingWindow = 3
    /// A counter that resets at every multiple of `period` since the Unix epoch.
    case fixedWindow = 4
    /// At most `limit` leases held at once; each lease expires after `period` unless released.
    case concurrency = 5

    /// The name used in configuration files and on the command line.
    public var description: String {
        switch self {
        case .gcra: "gcra"
        case .tokenBucket: "token_bucket"
        case .slidingWindow: "sliding_window"
        case .fixedWindow: "fixed_window"
        case .concurrency: "concurrency"
        }
    }

    /// Parses a configuration name (`gcra`, `token_bucket`, `sliding_window`, `fixed_window`, `concurrency`).
    public init?(name: String) {
        guard let match = Algorithm.allCases.first(where: { $0.description == name }) else { return nil }
        self = match
    }
}
