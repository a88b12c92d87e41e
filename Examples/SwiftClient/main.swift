// An application's use of the SluiceClient library: one check before doing work for a caller.
//
//   swift run sluice-client-example unix:/tmp/sluice.sock login:203.0.113.7 default
//
// Exits 0 when allowed, 1 when denied (printing when to retry and the HTTP fields to send), 2 on
// an error. docs/SWIFT_CLIENT.md explains each call.
import Foundation
import SluiceClient

@main
struct Example {
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard arguments.count >= 2, let endpoint = try? Endpoint(parsing: arguments[0]) else {
            print("usage: sluice-client-example ENDPOINT KEY [RULE]")
            exit(2)
        }
        exit(await ask(endpoint, key: arguments[1], rule: arguments.count > 2 ? arguments[2] : "default"))
    }

    static func ask(_ endpoint: Endpoint, key: String, rule: String) async -> Int32 {
        let sluice: SluiceClient
        do {
            sluice = try await SluiceClient.connect(to: endpoint, timeout: .seconds(2))
        } catch {
            print("cannot connect to \(endpoint): \(error)")
            return 2
        }
        do {
            let verdict = try await sluice.check(key, rule: rule)
            await sluice.close()
            print(verdict.allowed ? "allowed" : "denied", "remaining=\(verdict.remaining)", "reason=\(verdict.reason)")
            if !verdict.allowed { print("retry in \(verdict.retryAfterMs) ms") }
            for field in verdict.rateLimitHeaders(windowSeconds: 60) { print("\(field.name): \(field.value)") }
            return verdict.allowed ? 0 : 1
        } catch let error as DaemonError {
            await sluice.close()
            print("sluiced refused the check: \(error)")
            return 2
        } catch {
            await sluice.close()
            print("no answer from \(endpoint): \(error)")
            return 2
        }
    }
}
