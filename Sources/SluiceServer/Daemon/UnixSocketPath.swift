#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SluiceCore

/// Makes a Unix socket path ready to bind without ever taking it from a live daemon.
enum UnixSocketPath {
    /// Removes a stale socket file at `path`.
    ///
    /// - Throws: ``SluiceError`` `address_in_use` when a daemon answers on it or the path is not a
    ///   socket (nothing else is ever deleted), `io` when it cannot be inspected.
    static func prepare(_ path: String) throws(SluiceError) {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw SluiceError(.io, "cannot inspect \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw SluiceError(.addressInUse, "\(path) exists and is not a socket; refusing to replace it")
        }
        switch probe(path) {
        case 0:
            throw SluiceError(.addressInUse, "another daemon is listening on \(path); stop it or choose another path")
        case ECONNREFUSED:
            guard unlink(path) == 0 || errno == ENOENT else {
                throw SluiceError(.io, "cannot remove the stale socket \(path): \(String(cString: strerror(errno)))")
            }
        case let code:
            throw SluiceError(.io, "cannot probe \(path): \(String(cString: strerror(code)))")
        }
    }

    /// Connects to `path` and closes again: 0 when something accepted, else the errno.
    static func probe(_ path: String) -> Int32 {
        #if canImport(Darwin)
        let fd = socket(AF_UNIX, SOCK_STREAM, 0)
        #else
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #endif
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return ENAMETOOLONG }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0 ? 0 : errno
    }

    /// Sets the socket file's mode.
    static func setMode(_ path: String, _ mode: UInt16) throws(SluiceError) {
        guard chmod(path, mode_t(mode)) == 0 else {
            throw SluiceError(.io, "cannot set mode \(String(mode, radix: 8)) on \(path): \(String(cString: strerror(errno)))")
        }
    }
}
