#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// How long the bytes waiting in one TCP connection's receive queue will wait before the
/// daemon reads them (the queue's size, the kernel's `SO_MEMINFO` receive allocation, divided by
/// the rate at which this connection's bytes have been consumed), and the share of this
/// connection's checks to refuse so that the wait stays near `server.max_queue_delay`; none is
/// refused while the wait is under it.
///
/// The loop's own lateness (``QueueDelayGauge``) does not see this queue: a few connections
/// pipelining deep keep every turn short while the kernel holds megabytes of their requests
/// (TCP grows a receive buffer to several MiB), so requests waited seconds and were never
/// refused. A refusal (`CODE_OVERLOADED`) costs a fraction of a decision, so refusing a share
/// of the checks drains the queue while the rest are still decided.
///
/// The share is a proportional-integral controller on the estimated wait, the one PIE (RFC 8033)
/// runs on a router's queue: each sample moves it by the wait's distance from the bound and by
/// how much the wait changed since the sample before, both in units of the bound; under the
/// bound it only falls. A fixed
/// all-or-nothing refusal (past the bound, until under half of it) refused in bursts and decided
/// half the checks the daemon had the capacity for (docs/BENCHMARKS.md). Refusals are spread
/// evenly over the checks (an accumulator, no randomness).
///
/// Unix sockets need none of this: their queue is charged to, and bounded by, the sender's
/// buffer (about 208 KiB, a few milliseconds of checks), and reports nothing here.
struct SocketBacklog {
    /// Bytes consumed since the last sample.
    var consumed = 0
    /// When the rate's window starts: the last sample, or the first full read after the socket
    /// was empty.
    var lastSample: NIODeadline
    /// The last read that filled its buffer.
    var lastFull: NIODeadline
    /// Whether the socket was empty at the last read (or reading was paused): the rate is
    /// measured again from the next full read, so that idle time never counts as slowness.
    var fresh = true
    /// The wait of the newest byte in the queue at the last sample (ns).
    var wait: Int64 = 0
    /// The share of checks refused, 0...1.
    private(set) var share: Double = 0
    /// Refusals owed: grows by `share` per check, a check is refused per whole one.
    private var owed: Double = 0

    /// Forgets what was measured (reading was paused, not slow): the rate is measured again from
    /// the next full read; nothing is refused until a sample finds a backlog.
    mutating func restart(now: NIODeadline) {
        fresh = true
        wait = 0
    }

    /// Whether any of the connection's checks are being refused for its backlog: a share is
    /// set and something waits (a read that emptied the socket stops refusals until the next
    /// sample finds a backlog again; the share is kept for it).
    var refusing: Bool { share > 0 && wait > 0 }

    /// The shortest time between two samples: a sample is a system call.
    static let interval = TimeAmount.milliseconds(5)
    /// How long after its last full read a connection's socket is taken to be drained for good.
    static let idle = TimeAmount.milliseconds(40)
    /// The controller's gains per sample, the wait measured in bounds: how far the wait is from
    /// the bound, and how far it moved since the last sample.
    static let proportional = 0.1
    static let derivative = 0.25

    init(now: NIODeadline) {
        lastSample = now
        lastFull = now
    }

    /// Counts a read of `bytes`; returns true when a sample is due: the read filled its buffer
    /// (`full`: more may wait), an interval after the window started.
    mutating func record(read bytes: Int, full: Bool, now: NIODeadline) -> Bool {
        guard full else {
            // A read that did not fill its buffer emptied the socket: nothing waits (so nothing
            // is refused until a sample finds a backlog again), and the share refused was more
            // than enough. It falls a little, not to none, for when the socket fills again within
            // a few samples (sustained overload); to none once it has not for `idle`.
            wait = 0
            fresh = true
            share = now - lastFull >= Self.idle ? 0 : max(0, share - Self.proportional / 2)
            if share == 0 { owed = 0 }
            return false
        }
        lastFull = now
        if fresh {
            // The first full read after an empty socket starts the window: the time before it
            // was idle, not slow.
            fresh = false
            consumed = 0
            lastSample = now
            return false
        }
        consumed &+= bytes
        return now - lastSample >= Self.interval
    }

    /// Takes a sample of `queued` bytes at `now` and moves the share refused towards keeping the
    /// wait at `bound`; returns whether any checks are to be refused.
    mutating func sample(queued: Int, now: NIODeadline, bound: Int64) -> Bool {
        let elapsed = (now - lastSample).nanoseconds
        let before = wait
        defer {
            consumed = 0
            lastSample = now
        }
        if elapsed > 0, consumed > 0, queued > 0 {
            // ns = queued bytes ÷ (consumed bytes / elapsed ns), in floating point: no trap.
            let estimate = Double(queued) * Double(elapsed) / Double(consumed)
            wait = estimate >= Double(Int64.max) ? .max : Int64(estimate)
        } else {
            wait = 0
        }
        let scale = Double(max(bound, 1))
        // Clamped to 8 bounds: a wait of hours moves the share no faster than a wait of 8 bounds.
        let now = min(Double(wait) / scale, 8), then = min(Double(before) / scale, 8)
        var next = share + Self.proportional * (now - 1) + Self.derivative * (now - then)
        // Under the bound no more checks are refused than before, however fast the wait grew: a
        // client's burst that waits less than max_queue_delay is answered, every check of it.
        if now <= 1 { next = min(next, share) }
        share = min(1, max(0, next))
        if share == 0 { owed = 0 }
        return refusing
    }

    /// Whether the next check is to be refused: `share` of them are, spread evenly.
    mutating func refuseNext() -> Bool {
        guard refusing else { return false }
        owed += share
        guard owed >= 1 else { return false }
        owed -= 1
        return true
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
