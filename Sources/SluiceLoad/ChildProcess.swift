import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn`, for what Foundation's `Process` is used for here
/// (an executable, arguments, standard streams to a `Pipe` or `FileHandle`, the exit status).
///
/// Foundation's `Process.run` on Linux can crash its caller: to close the descriptors a child
/// should not inherit, it reads `/proc/self/fd` copying each entry's whole 256-byte name field,
/// past the end of glibc's directory buffer when an entry sits at its end
/// (swift-corelibs-foundation PR 5472, fixed after Swift 6.3.1). A test process with many
/// sockets open crashed there in four fresh-clone CI runs of four. Here the child closes every
/// descriptor from 3 up with `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34), and
/// nothing reads `/proc`.
public final class ChildProcess: @unchecked Sendable {
    public var executableURL: URL?
    public var arguments: [String] = []
    /// A `Pipe`, a `FileHandle`, or nil for the parent's own.
    public var standardInput: Any?
    public var standardOutput: Any?
    public var standardError: Any?
    /// Variables added to (or replacing) the parent's environment.
    public var environment: [String: String] = [:]
    public private(set) var processIdentifier: pid_t = 0
    let lock = NSLock()
    /// The exit status or the signal, once reaped.
    var status: (value: Int32, reason: TerminationReason)?

    /// How it ended, as Foundation's `Process` says it.
    public enum TerminationReason: Sendable, Equatable {
        case exit
        case uncaughtSignal
    }

    public init() {}

    struct SpawnError: Error, CustomStringConvertible {
        let description: String
    }

    /// Starts it.
    public func run() throws {
        guard let path = executableURL?.path else { throw SpawnError(description: "no executable") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var closeInParent: [FileHandle] = []
        func wire(_ stream: Any?, to target: Int32, reading: Bool) {
            switch stream {
            case let pipe as Pipe:
                let handle = reading ? pipe.fileHandleForReading : pipe.fileHandleForWriting
                posix_spawn_file_actions_adddup2(&actions, handle.fileDescriptor, target)
                closeInParent.append(handle)
            case let handle as FileHandle where handle.fileDescriptor < 0:
                // Foundation's `FileHandle.nullDevice` has no descriptor (-1): dup2 of it fails,
                // and the child would write to the parent's stream.
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", reading ? O_RDONLY : O_WRONLY, 0)
            case let handle as FileHandle:
                posix_spawn_file_actions_adddup2(&actions, handle.fileDescriptor, target)
            default: break
            }
        }
        wire(standardInput, to: 0, reading: true)
        wire(standardOutput, to: 1, reading: false)
        wire(standardError, to: 2, reading: false)
        // Every other descriptor of this process stays out of the child: an inherited pipe end
        // would keep another reader from seeing its end.
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
            throw SpawnError(description: "posix_spawn_file_actions_addclosefrom_np is missing (glibc 2.34 or later)")
        }
        let closeFrom = unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
        guard closeFrom(&actions, 3) == 0 else { throw SpawnError(description: "posix_spawn_file_actions_addclosefrom_np failed") }
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var variables = ProcessInfo.processInfo.environment
        variables.merge(environment) { _, new in new }
        let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var pid: pid_t = 0
        let result = argv.withUnsafeBufferPointer { argvBuffer -> Int32 in
            envp.withUnsafeBufferPointer { envpBuffer -> Int32 in
                guard let base = argvBuffer.baseAddress, let variables = envpBuffer.baseAddress else { return EINVAL }
                return posix_spawn(&pid, path, &actions, nil, base, variables)
            }
        }
        guard result == 0 else { throw SpawnError(description: "posix_spawn \(path): \(String(cString: strerror(result)))") }
        processIdentifier = pid
        // The parent's copies of the child's ends: a reader sees the end of the stream when the
        // child closes its own.
        for handle in closeInParent { try? handle.close() }
    }

    /// Sends it SIGTERM.
    public func terminate() {
        if processIdentifier > 0 { kill(processIdentifier, SIGTERM) }
    }

    /// Whether it has not exited yet.
    public var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        return reap(blocking: false) == nil
    }

    /// Waits for it to exit.
    public func waitUntilExit() {
        lock.lock()
        defer { lock.unlock() }
        _ = reap(blocking: true)
    }

    /// Waits at most `limit` for it to exit, on a thread of its own: an async caller never holds
    /// a thread of Swift's concurrency pool (two on a two-core machine) while a child runs. A
    /// child still running past the limit is killed (SIGKILL) and reaped, and false is returned;
    /// `terminationStatus` then answers at once.
    @discardableResult
    public func waitForExit(within limit: Duration) async -> Bool {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { [self] in
                let deadline = ContinuousClock.now + limit
                var pause: UInt32 = 1_000
                while isRunning {
                    guard ContinuousClock.now < deadline else {
                        if processIdentifier > 0 { kill(processIdentifier, SIGKILL) }
                        waitUntilExit()
                        continuation.resume(returning: false)
                        return
                    }
                    usleep(pause)
                    pause = min(pause * 2, 20_000)
                }
                continuation.resume(returning: true)
            }
        }
    }

    /// Its exit status, or the signal that ended it (waits for it to exit).
    public var terminationStatus: Int32 {
        lock.lock()
        defer { lock.unlock() }
        return reap(blocking: true)?.value ?? -1
    }

    /// Whether it exited or a signal ended it (waits for it to exit).
    public var terminationReason: TerminationReason {
        lock.lock()
        defer { lock.unlock() }
        return reap(blocking: true)?.reason ?? .exit
    }

    /// The exit status once it is known; reaps the child at most once. Called under `lock`.
    func reap(blocking: Bool) -> (value: Int32, reason: TerminationReason)? {
        if let status { return status }
        guard processIdentifier > 0 else { return nil }
        var raw: Int32 = 0
        while true {
            let reaped = waitpid(processIdentifier, &raw, blocking ? 0 : WNOHANG)
            if reaped == -1, errno == EINTR { continue }
            guard reaped == processIdentifier else { return nil }
            break
        }
        let signal = raw & 0x7f
        status = signal == 0 ? ((raw >> 8) & 0xff, .exit) : (signal, .uncaughtSignal)
        return status
    }
}
