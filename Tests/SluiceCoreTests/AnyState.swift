@testable import SluiceCore

/// Drives any algorithm through one interface in tests: the rate algorithms through
/// ``LimiterState``, concurrency through its ``LeaseSet`` (as the table does).
enum AnyState: Equatable {
    case rate(LimiterState)
    case leases(LeaseSet)

    static func fresh(_ spec: LimitSpec, now: Int64) -> AnyState {
        spec.algorithm == .concurrency ? .leases(LeaseSet()) : .rate(.fresh(spec, now: now))
    }

    func evaluate(hits: UInt64, now: Int64, spec: LimitSpec, leaseID: UInt64 = 0) -> (Decision, AnyState) {
        switch self {
        case .rate(let state):
            let (decision, next) = state.evaluate(hits: hits, now: now, spec: spec)
            return (decision, .rate(next))
        case .leases(let leases):
            let (decision, next) = leases.evaluate(hits: hits, now: now, spec: spec, leaseID: leaseID)
            return (decision, .leases(next))
        }
    }
}
