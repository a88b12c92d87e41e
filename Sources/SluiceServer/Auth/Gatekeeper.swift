import NIOConcurrencyHelpers
import NIOCore
import SluiceConfiguration
import SluiceProto
import Synchronization

/// Checks presented tokens and limits failed attempts per client address, with the counters
/// `/metrics` shows (`sluice_auth_*`).
///
/// Every failure is answered the same way, whatever was wrong (no such token id, a wrong
/// secret, a malformed token): nothing that helps guessing. An address past
/// `auth.failures_per_minute` failures in its current minute is refused without its tokens
/// being looked at (even a right one) until that minute ends.
final class Gatekeeper: Sendable {
    /// Results of `Authenticate`, for the metric's label.
    enum Result: Int, CaseIterable, CustomStringConvertible {
        case accepted, rejected, throttled

        var description: String {
            switch self {
            case .accepted: "accepted"
            case .rejected: "rejected"
            case .throttled: "throttled"
            }
        }
    }

    /// Authentications by result.
    let results = CounterBlock(count: Result.allCases.count)
    /// Requests refused CODE_UNAUTHENTICATED because their connection had not authenticated.
    let unauthenticatedRequests = Atomic<UInt64>(0)
    /// Requests refused CODE_FORBIDDEN by the identity's role or tenant.
    let forbiddenRequests = Atomic<UInt64>(0)

    struct Window {
        var started: NIODeadline
        var failures: Int
    }

    /// Failures per address in its current minute.
    let windows = NIOLockedValueBox<[String: Window]>([:])
    /// Addresses remembered at most; past it, windows already over are dropped, then the oldest.
    static let addressLimit = 65_536
    static let window = TimeAmount.minutes(1)

    /// The token entry `token` matches, or the error to answer. `address` is the client's (its IP,
    /// or "unix").
    func authenticate(token: String, address: String, auth: Configuration.Auth, now: NIODeadline = .now())
        -> Swift.Result<Configuration.Auth.Token, WireError> {
        if let wait = throttled(address, limit: auth.failuresPerMinute, now: now) {
            results.add(Result.throttled.rawValue)
            var error = WireError(.unauthenticated, "too many failed authentications from this address; try again later")
            error.retryAfterMs = UInt64(max(1, wait.nanoseconds / 1_000_000))
            return .failure(error)
        }
        if let (id, secret) = AccessToken.parse(token), let entry = auth.token(id: id), entry.digest.matches(secret: secret) {
            results.add(Result.accepted.rawValue)
            return .success(entry)
        }
        results.add(Result.rejected.rawValue)
        recordFailure(address, now: now)
        return .failure(WireError(.unauthenticated, "the token is not valid"))
    }

    /// How long `address` must still wait, nil when it may try.
    func throttled(_ address: String, limit: Int, now: NIODeadline) -> TimeAmount? {
        windows.withLockedValue { windows in
            guard let window = windows[address], now - window.started < Self.window, window.failures >= limit else { return nil }
            return window.started + Self.window - now
        }
    }

    func recordFailure(_ address: String, now: NIODeadline) {
        windows.withLockedValue { windows in
            if var window = windows[address], now - window.started < Self.window {
                window.failures += 1
                windows[address] = window
                return
            }
            if windows.count >= Self.addressLimit {
                windows = windows.filter { now - $0.value.started < Self.window }
                if windows.count >= Self.addressLimit {
                    let oldest = windows.sorted { $0.value.started < $1.value.started }.prefix(Self.addressLimit / 2).map(\.key)
                    for key in oldest { windows[key] = nil }
                }
            }
            windows[address] = Window(started: now, failures: 1)
        }
    }
}
