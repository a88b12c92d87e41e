import NIOCore

/// Runs Swift tasks on one NIO event loop: a gRPC handler whose tasks prefer it runs on the loop
/// that reads its connection and decides its checks, instead of hopping to the global executor
/// and back at every await (each hop a thread wake-up: most of a call's cost here, measured).
final class LoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    let loop: any EventLoop

    init(_ loop: any EventLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
