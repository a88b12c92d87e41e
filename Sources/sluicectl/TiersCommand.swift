import ArgumentParser
import Foundation
import SluiceProto

/// `sluicectl tiers …`: assign subjects to the configured tiers, and list them.
struct TiersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tiers",
        abstract: "Assign subjects to tiers (VIP, best effort …) and list the tiers and their subjects.",
        subcommands: [List.self, Get.self, Set.self, Remove.self]
    )

    static func line(_ assignment: Sluice_V1_TierAssignment) -> String {
        (assignment.tenant.isEmpty ? "" : "\(assignment.tenant)/") + assignment.subject + " tier=\(assignment.tier)"
            + " assigned=\(formatTime(assignment.assignedMs))"
    }

    static func print(_ answer: Sluice_V1_TierResponse, json: Bool) throws {
        if json {
            try printJSON(["assigned": answer.assigned, "tenant": answer.assignment.tenant, "subject": answer.assignment.subject,
                           "tier": answer.assignment.tier, "assigned_ms": answer.assignment.assignedMs])
        } else {
            Swift.print(answer.assigned ? line(answer.assignment) : "no tier")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The configured tiers, then the subjects assigned to them.")
        @OptionGroup var connection: ConnectionOptions
        @Option(name: .long, help: "The tenant (default: the default tenant).") var tenant: String = ""
        @Flag(name: .long, help: "Every tenant.") var allTenants = false
        @Option(name: .long, help: "Only this tier's subjects.") var tier: String = ""
        @Option(name: .long, help: "Subjects per page (at most 1000).") var limit: UInt32 = 50
        @Option(name: .long, help: "The page token a previous list printed.") var page: String = ""

        func run() async throws {
            try await Self.reportFailures {
                var request = WireRequest()
                request.listTiers = Sluice_V1_ListTiersRequest.with {
                    $0.tenant = tenant
                    $0.allTenants = allTenants
                    $0.tier = tier
                    $0.pageSize = limit
                    $0.pageToken = page
                }
                let answer = try await connection.send(request).listTiers
                for definition in answer.tiers {
                    Swift.print("tier \(definition.name): multiplier=\(String(format: "%g", definition.multiplier)) priority=\(definition.priority) subjects=\(definition.subjects)")
                }
                for assignment in answer.assignments { Swift.print(TiersCommand.line(assignment)) }
                Swift.print("\(answer.total) subjects listed" + (answer.nextPageToken.isEmpty ? "" : "; next page: --page \(answer.nextPageToken)"))
            }
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A subject's tier.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var subject: ReputationCommand.SubjectOptions
        @Flag(name: .long, help: "Print as JSON.") var json = false

        func run() async throws {
            try await Self.reportFailures {
                var request = WireRequest()
                request.getTier = .with {
                    $0.tenant = subject.tenant
                    $0.subject = subject.subject
                }
                try TiersCommand.print(try await connection.send(request).tier, json: json)
            }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Assign a subject to a tier (kept across restarts).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var subject: ReputationCommand.SubjectOptions
        @Argument(help: "A tier named in the configuration's tiers.") var tier: String
        @Flag(name: .long, help: "Print as JSON.") var json = false

        func run() async throws {
            try await Self.reportFailures {
                var request = WireRequest()
                request.setTier = .with {
                    $0.tenant = subject.tenant
                    $0.subject = subject.subject
                    $0.tier = tier
                }
                try TiersCommand.print(try await connection.send(request).tier, json: json)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a subject's tier.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var subject: ReputationCommand.SubjectOptions

        func run() async throws {
            try await Self.reportFailures {
                var request = WireRequest()
                request.removeTier = .with {
                    $0.tenant = subject.tenant
                    $0.subject = subject.subject
                }
                let answer = try await connection.send(request).tier
                Swift.print(answer.assigned ? "removed: \(TiersCommand.line(answer.assignment))" : "no tier to remove")
            }
        }
    }
}
