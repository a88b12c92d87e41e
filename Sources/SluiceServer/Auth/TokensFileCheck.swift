#if canImport(Glibc)
import Glibc
#endif
import Logging

/// A tokens file others may read holds hashes only, but a hash of a token is still worth
/// keeping to its owner: the daemon says so at start and at each reload (it does not refuse:
/// a deployment's permissions are the operator's to fix).
enum TokensFileCheck {
    static func warnIfShared(_ path: String?, logger: Logger) {
        guard let path else { return }
        var status = stat()
        guard stat(path, &status) == 0, status.st_mode & 0o077 != 0 else { return }
        logger.warning("the tokens file can be read or written by others than its owner: chmod 600 it", metadata: [
            "auth.tokens_file": "\(path)", "file.mode": "\(String(status.st_mode & 0o777, radix: 8))",
        ])
    }
}
