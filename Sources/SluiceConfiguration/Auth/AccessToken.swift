import Crypto
import Foundation

/// API tokens: made by `sluicectl token create`, presented by clients (`Authenticate`), kept by
/// the daemon only as salted hashes.
///
/// A token reads `sluice_<id>_<secret>`: `id` (12 hex digits) names the entry, so the daemon
/// hashes a presented token once, against that entry alone; `secret` is 32 random bytes in
/// base64url. Secrets this long need no slow password hash: nobody can guess one, and the
/// salted SHA-256 only keeps a leaked tokens file from being usable as it is.
public enum AccessToken {
    /// What every token begins with (secret scanners look for it).
    public static let prefix = "sluice_"

    /// A token's salted hash, written `sha256:<salt hex>:<hash hex>`.
    public struct Digest: Sendable, Hashable, CustomStringConvertible {
        public let salt: [UInt8]
        public let hash: [UInt8]

        /// Reads `sha256:<salt hex>:<hash hex>`; nil for anything else.
        public init?(_ text: String) {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0] == "sha256", let salt = Self.bytes(hex: parts[1]), salt.count >= 8,
                  let hash = Self.bytes(hex: parts[2]), hash.count == SHA256.byteCount else { return nil }
            self.salt = salt
            self.hash = hash
        }

        init(salt: [UInt8], hash: [UInt8]) {
            self.salt = salt
            self.hash = hash
        }

        public var description: String { "sha256:\(Self.hex(salt)):\(Self.hex(hash))" }

        /// Whether `secret` hashes to this digest, comparing every byte whatever differs first.
        public func matches(secret: Substring) -> Bool {
            let candidate = AccessToken.hash(secret: secret, salt: salt)
            guard candidate.count == hash.count else { return false }
            var difference: UInt8 = 0
            for index in hash.indices { difference |= candidate[index] ^ hash[index] }
            return difference == 0
        }

        static func hex(_ bytes: [UInt8]) -> String {
            let digits = Array("0123456789abcdef".utf8)
            var text = [UInt8]()
            text.reserveCapacity(bytes.count * 2)
            for byte in bytes {
                text.append(digits[Int(byte >> 4)])
                text.append(digits[Int(byte & 15)])
            }
            return String(decoding: text, as: UTF8.self)
        }

        static func bytes(hex: Substring) -> [UInt8]? {
            let utf8 = Array(hex.utf8)
            guard utf8.count % 2 == 0, utf8.count <= 256 else { return nil }
            func nibble(_ c: UInt8) -> UInt8? {
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
                default: nil
                }
            }
            var out = [UInt8]()
            out.reserveCapacity(utf8.count / 2)
            var index = 0
            while index < utf8.count {
                guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
                out.append(high << 4 | low)
                index += 2
            }
            return out
        }
    }

    /// A new token: what to give its holder (once), its id, and what to keep.
    public static func make() -> (token: String, id: String, digest: Digest) {
        var generator = SystemRandomNumberGenerator()
        let id = Digest.hex((0..<6).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
        let secretBytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let secret = Data(secretBytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let salt = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return ("\(prefix)\(id)_\(secret)", id, Digest(salt: salt, hash: hash(secret: Substring(secret), salt: salt)))
    }

    /// A presented token's id and secret; nil when it does not read `sluice_<id>_<secret>`.
    public static func parse(_ token: String) -> (id: Substring, secret: Substring)? {
        guard token.utf8.count <= 256, token.hasPrefix(prefix) else { return nil }
        let rest = token.dropFirst(prefix.count)
        guard let separator = rest.firstIndex(of: "_") else { return nil }
        let id = rest[..<separator], secret = rest[rest.index(after: separator)...]
        guard isID(id), !secret.isEmpty else { return nil }
        return (id, secret)
    }

    /// Whether `text` is a token id: 12 lowercase hex digits.
    public static func isID<S: StringProtocol>(_ text: S) -> Bool {
        text.utf8.count == 12 && text.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
    }

    static func hash(secret: Substring, salt: [UInt8]) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: salt)
        hasher.update(data: Array(secret.utf8))
        return Array(hasher.finalize())
    }
}
