import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension Process {
    /// Serialises the launches of every process the tests start.
    static let launching = NSLock()

    /// Set once, before the first launch (see ``spawn()``).
    public static let largeAllocationsMapped: Bool = {
        #if canImport(Glibc)
        // mallopt(M_MMAP_THRESHOLD, 32 KiB): <malloc.h> is not in Glibc's module, so by name.
        // M_MMAP_THRESHOLD is -3 in glibc's malloc.h.
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return false }
        let mallopt = unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
        return mallopt(-3, 32 * 1_024) == 1
        #else
        return true
        #endif
    }()

    /// Runs the process as `run()` does, working around a crash of Foundation's `Process.run` on
    /// Linux: to close the descriptors a child should not inherit it reads `/proc/self/fd`, and
    /// copies each entry's whole 256-byte name field, past the end of glibc's directory buffer
    /// when an entry sits at its end (swift-corelibs-foundation PR 5472, fixed after Swift
    /// 6.3.1). With many sockets open the test process crashed there (SIGSEGV in memcpy) in two
    /// fresh-clone CI runs of two. The buffer (32 KiB) is allocated with malloc: with the mmap
    /// threshold at 32 KiB it gets pages of its own, a page's slack after its end, so the
    /// over-read stays inside mapped memory. Launches also go one at a time.
    public func spawn() throws {
        _ = Self.largeAllocationsMapped
        Self.launching.lock()
        defer { Self.launching.unlock() }
        try run()
    }
}
