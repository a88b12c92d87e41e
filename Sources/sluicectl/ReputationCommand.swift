import ArgumentParser
import Foundation
import SluiceProto

/// `sluicectl reputation …`: read and override subjects' reputation, and report events.
struct ReputationCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reputation",
        abstract: "Read, list and override subjects' reputation; record events.",
        subcommands: [Get.self, List.self, Set.self, Pin.self, Unpin.self, Reset.self, Record.self]
    )

    struct SubjectOptions: ParsableArguments {
        @Argument(help: "The subject (a user, an API key, an IP).") var subject: String
        @Option(name: .long, help: "The tenant (default: the default tenant).") var tenant: String = ""
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A subject's score now, when it will be back to neutral, and its recent events.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var subject: SubjectOptions
        @Option(name: .long, help: "How many recent events to show.") var events: UInt32 = 10
        @Flag(name: .long, help: "Print as JSON.") var json = false

        func run() async throws {
            try await Self.reportFailures {
                var request = WireRequest()
                request.getReputation = Sluice_V1_GetReputationRequest.with {
                    $0.tenant = subject.tenant
                    $0.subject = subject.subject
                    $0.recentEvents = max(1, events)
                }
                let answer = try await connection.send(request).getReputation
                if json {
                    var object = answer.reputation.jsonObject
                    object["tracked"] = answer.tracked
                    object["recent_events"] = answer.recentEvents.map {
                        ["kind": $0.kind, "weight": $0.weight, "at_ms": $0.atMs, "note": $0.note] as [String: Any]
                    }
                    try printJSON(object)
                    return
                }
                print(answer.reputation.line + (answer.tracked ? "" : " (no record: the neutral start)"))
                for event in answer.recentEvents {
                    var line = "  \(formatTime(event.atMs))  \(event.kind)  \(String(format: "%+.2f", event.weight))"
                    if !event.note.isEmpty { line += "  \(event.note)" }
                    print(line)
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The worst (or best) subjects of a tenant, a page at a time.")
        @OptionGroup var connection: ConnectionOptions
        @Option(name: .long, help: "The tenant (default: the default tenant).") var tenant: String = ""
        @Flag(name: .long, help: "Every tenant.") var allTenants = false
        @Flag(name: .long, help: "The best first (default: the worst first).") var best = false
        @Option(name: .long, help: "Subjects per page (at most 1000).") var limit: UInt32 = 20
        @Option(name: .long, help: "The page token a previous list printed.") var page: String = ""
        @Flag(name: .long, help: "Print as JSON (one object per subject).") var json = false

        func run() async throws {
            try await Self.reportFailures {
                var request = WireRequest()
                request.listReputations = Sluice_V1_ListReputationsRequest.with {
                    $0.tenant = tenant
                    $0.allTenants = allTenants
                    $0.order = best ? .best : .worst
                    $0.pageSize = limit
                    $0.pageToken = page
                }
                let answer = try await connection.send(request).listReputations
                for reputation in answer.reputations {
                    if json { try printJSON(reputation.jsonObject) } else { print(reputation.line) }
                }
                if !json {
                    print("\(answer.total) subjects tracked" + (answer.nextPageToken.isEmpty ? "" : "; next page: --page \(answer.nextPageToken)"))
                }
            }
        }
    }

    static func override(_ action: Sluice_V1_SetReputationRequest.Action, score: Double, subject: SubjectOptions,
                         connection: ConnectionOptions, json: Bool) async throws {
        var request = WireRequest()
        request.setReputation = Sluice_V1_SetReputationRequest.with {
            $0.tenant = subject.tenant
            $0.subject = subject.subject
            $0.action = action
            $0.score = score
        }
        let reputation = try await connection.send(request).setReputation.reputation
        if json { try printJSON(reputation.jsonObject) } else { print(reputation.line) }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a subject's score; it decays and moves with events from there.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var subject: SubjectOptions
        @Argument(help: "The score, 0 (hostile) to 100 (trusted).") var score: Double
        @Flag(name: .long, help: "Pin it: events and time do not move it until unpinned.") var pin = false
        @Flag(name: .long, help: "Print as JSON.") var json = false

        func run() async throws {
            try await Self.reportFailures {
                try await ReputationCommand.override(pin ? .pin : .set, score: score, subject: subject, connection: connection, json: json)
            }
        }
    }

    struct Pin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Fix a subject's score until unpinned (same as set --pin).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var subject: SubjectOptions
        @Argument(help: "The score, 0 to 100.") var score: Double
        @Flag(name: .long, help: "Print as JSON.") var json = false

        func run() async throws {
            try await Self.reportFailures {
                try await ReputationCommand.override(.pin, score: score, subject: subject, connection: connection, json: json)
            }
        }
    }

    struct Unpin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let a pinned score move again, from where it was pinned.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var subject: SubjectOptions
        @Flag(name: .long, help: "Print as JSON.") var json = false

        func run() async throws {
            try await Self.reportFailures {
                try await ReputationCommand.override(.unpin, score: 0, subject: subject, connection: connection, json: json)
            }
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forget a subject's score: back to the neutral start (its events stay in history).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var subject: SubjectOptions
        @Flag(name: .long, help: "Print as JSON.") var json = false

        func run() async throws {
            try await Self.reportFailures {
                try await ReputationCommand.override(.reset, score: 0, subject: subject, connection: connection, json: json)
            }
        }
    }

    struct Record: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record an event for a subject (as a service would).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var subject: SubjectOptions
        @Argument(help: "The kind: auth_failure, bad_request, success, captcha_passed, anomaly, rate_limited or a configured custom kind.")
        var kind: String
        @Option(name: .long, help: "Override the kind's configured weight.") var weight: Double?
        @Option(name: .long, help: "A note kept with the event.") var note: String = ""
        @Option(name: .long, help: "Send it this many times (one batch).") var count: Int = 1
        @Flag(name: .long, help: "Answer only after the events are committed to the store.") var durable = false

        func run() async throws {
            try await Self.reportFailures {
                var event = Sluice_V1_ReputationEvent()
                event.tenant = subject.tenant
                event.subject = subject.subject
                event.kind = kind
                event.note = note
                if let weight { event.weight = weight }
                var request = WireRequest()
                request.recordEvents = Sluice_V1_RecordEventsRequest.with {
                    $0.events = Array(repeating: event, count: max(1, count))
                    $0.durable = durable
                }
                let answer = try await connection.send(request).recordEvents
                print("recorded \(answer.recorded) event(s)" + (answer.committed ? ", committed" : ""))
            }
        }
    }
}

/// `sluicectl flags`: list feature flags, or change one.
struct Flags: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the feature flags, or change one (until the next reload or restart).",
        discussion: "Examples: sluicectl flags; sluicectl flags reputation --rollout 25 --shadow off; sluicectl flags reputation --enable"
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The feature to change (omit to list).") var feature: String?
    @Option(name: .long, help: "The rollout percentage, 0 to 100.") var rollout: Double?
    @Option(name: .long, help: "on or off.") var shadow: String?
    @Flag(name: .long, help: "Turn the feature on.") var enable = false
    @Flag(name: .long, help: "Turn the feature off.") var disable = false
    @Flag(name: .long, help: "Print as JSON.") var json = false

    func run() async throws {
        try await Self.reportFailures {
            var request = WireRequest()
            request.flags = Sluice_V1_FlagsRequest()
            if let feature {
                var change = Sluice_V1_FlagChange()
                change.name = feature
                guard !(enable && disable) else { throw Failure("--enable and --disable contradict each other") }
                if enable { change.enabled = true }
                if disable { change.enabled = false }
                if let rollout { change.rolloutPercent = rollout }
                if let shadow {
                    guard ["on", "off", "true", "false"].contains(shadow) else { throw Failure("--shadow takes on or off, not '\(shadow)'") }
                    change.shadow = shadow == "on" || shadow == "true"
                }
                guard change.enabledPresence != nil || change.rolloutPresence != nil || change.shadowPresence != nil else {
                    throw Failure("say what to change: --enable, --disable, --rollout PERCENT or --shadow on|off")
                }
                request.flags.changes = [change]
            }
            let flags = try await connection.send(request).flags.flags
            for flag in flags {
                if json {
                    try printJSON(["name": flag.name, "enabled": flag.enabled, "rollout_percent": flag.rolloutPercent,
                                   "shadow": flag.shadow, "overridden": flag.overridden])
                } else {
                    var line = "\(flag.name): \(flag.enabled ? "on" : "off") rollout=\(String(format: "%g", flag.rolloutPercent))%"
                    line += flag.shadow ? " shadow" : " enforced"
                    if flag.overridden { line += " (changed at runtime; a reload restores the file's value)" }
                    print(line)
                }
            }
        }
    }
}

func formatTime(_ milliseconds: UInt64) -> String {
    guard milliseconds > 0 else { return "-" }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1_000))
}

extension Sluice_V1_Reputation {
    var jsonObject: [String: Any] {
        ["tenant": tenant, "subject": subject, "score": score, "pinned": pinned, "updated_ms": updatedMs,
         "neutral_at_ms": neutralAtMs, "multiplier": multiplier, "blocked": blocked, "events": events]
    }

    var line: String {
        var text = (tenant.isEmpty ? "" : "\(tenant)/") + subject + String(format: " score=%.1f multiplier=%.2f", score, multiplier)
        if blocked { text += " BLOCKED" }
        if pinned { text += " pinned" }
        text += " events=\(events)"
        if neutralAtMs > 0 { text += " neutral_at=\(formatTime(neutralAtMs))" }
        return text
    }
}
