import Foundation
import NIOConcurrencyHelpers
import SluiceCore

/// The bearer token `GET /metrics` requires (`metrics.bearer_token_file`), read at start and
/// again at each reload, so that rotating it is replacing the file and reloading.
final class MetricsToken: Sendable {
    let path: String
    let token = NIOLockedValueBox<[UInt8]>([])

    init(path: String) throws(SluiceError) {
        self.path = path
        try reload()
    }

    func reload() throws(SluiceError) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SluiceError(.invalidConfiguration, "metrics.bearer_token_file \(path): cannot read the file")
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.utf8.count >= 16, !trimmed.contains(where: \.isWhitespace) else {
            throw SluiceError(.invalidConfiguration, "metrics.bearer_token_file \(path): expected one token of at least 16 characters and no spaces")
        }
        token.withLockedValue { $0 = Array(trimmed.utf8) }
    }

    /// Whether `header` (an Authorization header's value) carries the token, comparing every
    /// byte whatever differs first.
    func accepts(_ header: String?) -> Bool {
        guard let header, header.hasPrefix("Bearer ") else { return false }
        let presented = Array(header.dropFirst("Bearer ".count).utf8)
        let expected = token.withLockedValue { $0 }
        guard presented.count == expected.count else { return false }
        var difference: UInt8 = 0
        for index in expected.indices { difference |= presented[index] ^ expected[index] }
        return difference == 0
    }
}
