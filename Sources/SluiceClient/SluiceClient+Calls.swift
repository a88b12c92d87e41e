// The protocol's message types (Sluice_V1_Check, Sluice_V1_Verdict, ...) come with the client:
// `import SluiceClient` is all an application needs.
@_exported import SluiceProto

/// The daemon answered a request with an error: its stable `code` (``Sluice_V1_Error/Code``),
/// its sentence, the check of a batch it is about, and when to retry where it says so (quotas).
public struct DaemonError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Sluice_V1_Error.Code
    public var message: String
    /// The index of the failing check (or outcome, or event) of a batch; nil when not one.
    public var checkIndex: Int?
    /// Milliseconds to wait before retrying, where the daemon says (CODE_QUOTA_EXCEEDED); 0 otherwise.
    public var retryAfterMs: UInt64

    public init(_ error: Sluice_V1_Error) {
        code = error.code
        message = error.message
        checkIndex = error.checkIndex >= 0 ? Int(error.checkIndex) : nil
        retryAfterMs = error.retryAfterMs
    }

    /// `overloaded: too many connections ...`: the code's name as in docs/PROTOCOL.md, then the sentence.
    public var description: String {
        let name = String(describing: code).replacingCamelCase()
        return "\(name): \(message)"
    }
}

/// The typed calls: what an application sends, as async functions that return the answer or
/// throw ``DaemonError`` (the daemon refused) or ``ClientError`` (the connection failed).
///
/// ```swift
/// import SluiceClient
///
/// let sluice = try await SluiceClient.connect(to: .unix(path: "/tmp/sluice.sock"))
/// let verdict = try await sluice.check("login:203.0.113.7", rule: "login")
/// if !verdict.allowed { print("retry in \(verdict.retryAfterMs) ms") }
/// await sluice.close()
/// ```
///
/// Any number of tasks may call one client at once: their requests are pipelined on its one
/// connection, and each gets its own answer.
extension SluiceClient {
    /// Sends `request` and returns its answer's body, or throws the daemon's error.
    func call(_ request: WireRequest) async throws -> WireResponse.OneOf_Body? {
        let response = try await send(request)
        if case .error(let error) = response.body { throw DaemonError(error) }
        return response.body
    }

    /// A round trip to the daemon.
    public func ping() async throws {
        var request = WireRequest()
        request.ping = .init()
        _ = try await call(request)
    }

    /// Decides one check against a configured rule.
    ///
    /// - Parameters:
    ///   - key: the identity the limit counts against (`login:203.0.113.7`).
    ///   - rule: a rule of the configuration (the tenant's, then the global ones).
    ///   - tenant: empty for the default tenant.
    ///   - subject: whose reputation, tier and anomaly state apply; empty means `key`.
    ///   - hits: the cost; 0 peeks without consuming.
    ///   - ip: the caller's address and `route` (`GET /items/7`), for anomaly detection.
    public func check(_ key: String, rule: String, tenant: String = "", subject: String = "", hits: UInt64 = 1,
                      ip: String = "", route: String = "") async throws -> Sluice_V1_Verdict {
        var one = Self.check(key, tenant: tenant, subject: subject, hits: hits, ip: ip, route: route)
        one.rule = rule
        return try await check([one])[0]
    }

    /// Decides one check against a limit given here: `limit` per `period`.
    public func check(_ key: String, limit: UInt64, per period: Duration, algorithm: Sluice_V1_Algorithm = .gcra, burst: UInt64 = 0,
                      tenant: String = "", subject: String = "", hits: UInt64 = 1, ip: String = "",
                      route: String = "") async throws -> Sluice_V1_Verdict {
        var one = Self.check(key, tenant: tenant, subject: subject, hits: hits, ip: ip, route: route)
        one.limit = .with {
            $0.limit = limit
            $0.periodMs = Self.units(period, perSecond: 1_000)
            $0.algorithm = algorithm
            $0.burst = burst
        }
        return try await check([one])[0]
    }

    /// A check's fields but its limit.
    static func check(_ key: String, tenant: String, subject: String, hits: UInt64, ip: String, route: String) -> Sluice_V1_Check {
        Sluice_V1_Check.with {
            $0.key = key
            $0.tenant = tenant
            $0.subject = subject
            $0.hits = hits
            $0.ip = ip
            $0.route = route
        }
    }

    /// Decides up to 1,000 checks in one round trip; verdict `i` answers check `i`. A daemon
    /// error fails the whole batch (nothing is consumed) and names the check (``DaemonError/checkIndex``).
    public func check(_ checks: [Sluice_V1_Check]) async throws -> [Sluice_V1_Verdict] {
        var request = WireRequest()
        request.check.checks = checks
        guard case .check(let answer) = try await call(request), answer.verdicts.count == checks.count else {
            throw ClientError.malformedResponse
        }
        return answer.verdicts
    }

    /// Gives a concurrency lease back early; `rule` (or `limit`) and `key` name what it was
    /// granted under. Returns whether it was still held.
    public func release(lease: UInt64, key: String, rule: String, tenant: String = "") async throws -> Bool {
        var request = WireRequest()
        request.release = .with {
            $0.leaseID = lease
            $0.key = key
            $0.rule = rule
            $0.tenant = tenant
        }
        guard case .release(let answer) = try await call(request) else { throw ClientError.malformedResponse }
        return answer.released
    }

    /// Reports what the upstream answered to checked requests (anomaly detection,
    /// docs/ANOMALY.md). Returns how many the daemon took (0 while its anomaly feature is off).
    @discardableResult
    public func reportOutcomes(_ outcomes: [Sluice_V1_Outcome]) async throws -> UInt32 {
        var request = WireRequest()
        request.reportOutcome.outcomes = outcomes
        guard case .reportOutcome(let answer) = try await call(request) else { throw ClientError.malformedResponse }
        return answer.recorded
    }

    /// Reports what subjects did (reputation, docs/REPUTATION.md); with `durable`, answers once
    /// the daemon's store has committed them. Returns how many were recorded.
    @discardableResult
    public func recordEvents(_ events: [Sluice_V1_ReputationEvent], durable: Bool = false) async throws -> UInt32 {
        var request = WireRequest()
        request.recordEvents = .with {
            $0.events = events
            $0.durable = durable
        }
        guard case .recordEvents(let answer) = try await call(request) else { throw ClientError.malformedResponse }
        return answer.recorded
    }

    /// A subject's reputation: its score, multiplier, block and pin, and its most recent events.
    public func reputation(of subject: String, tenant: String = "", recentEvents: UInt32 = 10) async throws -> Sluice_V1_GetReputationResponse {
        var request = WireRequest()
        request.getReputation = .with {
            $0.subject = subject
            $0.tenant = tenant
            $0.recentEvents = recentEvents
        }
        guard case .getReputation(let answer) = try await call(request) else { throw ClientError.malformedResponse }
        return answer
    }

    /// Reports how loaded `service` is (adaptive limits, docs/ADAPTIVE.md), say once a second;
    /// the answer has the share of its normal capacity to send it and each tier's multiplier.
    public func reportLoad(service: String, inFlight: UInt32 = 0, latencyP50: Duration = .zero, latencyP99: Duration = .zero,
                           errorRate: Double = 0) async throws -> Sluice_V1_ReportLoadResponse {
        var request = WireRequest()
        request.reportLoad = .with {
            $0.service = service
            $0.inFlight = inFlight
            $0.latencyP50Us = Self.units(latencyP50, perSecond: 1_000_000)
            $0.latencyP99Us = Self.units(latencyP99, perSecond: 1_000_000)
            $0.errorRate = errorRate
        }
        guard case .reportLoad(let answer) = try await call(request) else { throw ClientError.malformedResponse }
        return answer
    }

    /// Follows anomaly alerts as the daemon raises them (up to `recent` recent ones first), on
    /// this connection beside its other requests. The stream ends by throwing when the
    /// connection closes, or ``DaemonError`` when the request is refused; alerts a slow reader
    /// missed are skipped (the daemon counts them).
    public func alerts(kinds: [String] = [], tenant: String = "", recent: UInt32 = 0) -> AsyncThrowingStream<Sluice_V1_Alert, any Error> {
        var request = WireRequest()
        request.watchAlerts = .with {
            $0.kinds = kinds
            $0.tenant = tenant
            $0.recent = recent
        }
        let frames = stream(request)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await frame in frames {
                        for alert in frame.watchAlerts.alerts { continuation.yield(alert) }
                    }
                    continuation.finish()
                } catch ClientError.refused(let error) {
                    continuation.finish(throwing: DaemonError(error))
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// `duration` in units of which a second holds `perSecond` (1,000: milliseconds), rounded
    /// down; 0 when negative, `UInt64.max` past it.
    static func units(_ duration: Duration, perSecond: UInt64) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: perSecond)
        let part = UInt64(attoseconds) / (1_000_000_000_000_000_000 / perSecond)
        return overflow ? .max : whole.addingReportingOverflow(part).overflow ? .max : whole &+ part
    }
}

extension String {
    /// `quotaExceeded` → `quota_exceeded`.
    func replacingCamelCase() -> String {
        var out = ""
        for character in self {
            if character.isUppercase {
                out += "_" + character.lowercased()
            } else {
                out.append(character)
            }
        }
        return out
    }
}
