#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// How long the bytes waiting in one TCP connection's receive queue will wait before the
/// daemon reads them: the queue's size (the kernel's `SO_MEMINFO` receive allocation) divided by
/// the rate at which this connection's bytes have been consumed.
///
/// The loop's own lateness (``QueueDelayGauge``) does not see this queue: a few connections
/// pipelining deep keep every turn short while the kernel holds megabytes of their requests
/// (TCP grows a receive buffer to several MiB), so requests waited seconds and were never
/// refused. Past the bound the connection's checks are answered `CODE_OVERLOADED`, which is
/// cheap: the queue drains at the speed of refusals until its wait is under half the bound.
///
/// Unix sockets need none of this: their queue is charged to, and bounded by, the sender's
/// buffer (about 208 KiB, a few milliseconds of checks), and reports nothing here.
struct SocketBacklog {
    /// Bytes consumed since the last sample.
    var consumed = 0
    var lastSample: NIODeadline
    /// The wait of the newest byte in the queue at the last sample (ns).
    var wait: Int64 = 0
    /// Whether the connection's checks are being refused for its backlog.
    var refusing = false

    /// The shortest time between two samples: a sample is a system call.
    static let interval = TimeAmount.milliseconds(5)
    init(now: NIODeadline) { lastSample = now }

    /// Counts a read of `bytes`; returns true when a sample is due: the read filled its buffer
    /// (`full`: more may wait), an interval after the last.
    mutating func record(read bytes: Int, full: Bool, now: NIODeadline) -> Bool {
        consumed &+= bytes
        guard full else {
            // A read that did not fill its buffer emptied the socket: nothing waits any more.
            refusing = false
            wait = 0
            return false
        }
        return now - lastSample >= Self.interval
    }

    /// Takes a sample of `queued` bytes at `now`; returns whether checks are to be refused
    /// (past `bound`; until under half of it).
    mutating func sample(queued: Int, now: NIODeadline, bound: Int64) -> Bool {
        let elapsed = (now - lastSample).nanoseconds
        defer {
            consumed = 0
            lastSample = now
        }
        guard elapsed > 0, consumed > 0, queued > 0 else {
            wait = 0
            refusing = false
            return false
        }
        // ns = queued bytes ÷ (consumed bytes / elapsed ns), in floating point: no trap.
        let estimate = Double(queued) * Double(elapsed) / Double(consumed)
        wait = estimate >= Double(Int64.max) ? .max : Int64(estimate)
        refusing = refusing ? wait > bound / 2 : wait > bound
        return refusing
    }

    /// The bytes the kernel holds in `channel`'s receive queue (their allocation, a little over
    /// their size), or nil when the channel does not say (not a socket, an error).
    static func queued(in channel: any Channel) -> Int? {
        #if os(Linux)
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        let queued = NIOLoopBoundBox<Int?>(nil, eventLoop: channel.eventLoop)
        // The first word of SO_MEMINFO is SK_MEMINFO_RMEM_ALLOC; the kernel copies as many words
        // as asked for. On the channel's own loop the future is complete on return.
        provider.unsafeGetSocketOption(level: .socket, name: NIOBSDSocket.Option(rawValue: SO_MEMINFO)).whenSuccess { (value: UInt32) in
            queued.value = Int(value)
        }
        return queued.value
        #else
        return nil
        #endif
    }
}
