#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// How long the bytes waiting in one TCP connection's receive queue will wait before the
/// daemon reads them (the queue's size, the kernel's `SO_MEMINFO` receive allocation, divided by
/// the rate at which this connection's bytes have been consumed), and the share of this
/// connection's checks to refuse so that the wait stays near half of `server.max_queue_delay`;
/// none is refused while the wait is under that.
///
/// The loop's own lateness (``QueueDelayGauge``) does not see this queue: a few connections
/// pipelining deep keep every turn short while the kernel holds megabytes of their requests
/// (TCP grows a receive buffer to several MiB), so requests waited seconds and were never
/// refused. A refusal (`CODE_OVERLOADED`) costs a fraction of a decision, so refusing a share
/// of the checks drains the queue while the rest are still decided.
///
/// The share is a proportional-integral controller on the estimated wait, the one PIE (RFC 8033)
/// runs on a router's queue: each sample moves it by the wait's distance from half the bound and
/// by how much the wait changed since the sample before, both in units of the bound; under half
/// the bound it only falls. A fixed
/// all-or-nothing refusal (past the bound, until under half of it) refused in bursts and decided
/// half the checks the daemon had the capacity for (docs/BENCHMARKS.md). Refusals are spread
/// evenly over the checks (an accumulator, no randomness).
///
/// Unix sockets need none of this: their queue is charged to, and bounded by, the sender's
/// buffer (about 208 KiB, a few milliseconds of checks), and reports nothing here.
struct SocketBacklog {
    /// Bytes consumed since the last sample.
    var consumed = 0
    /// When the rate's window starts: the last sample, or the first read after a silence.
    var lastSample: NIODeadline
    /// The last read.
    var lastRead: NIODeadline
    /// Whether reading was paused (the client did not read its answers): the rate's window
    /// starts again at the next read, so the pause is not taken for slowness.
    var fresh = true
    /// The wait of the newest byte in the queue at the last sample (ns).
    var wait: Int64 = 0
    /// The share of checks refused, 0...1.
    private(set) var share: Double = 0
    /// Refusals owed: grows by `share` per check, a check is refused per whole one.
    private var owed: Double = 0

    /// Reading was paused and resumes: the rate is measured again from the next read.
    mutating func restart() { fresh = true }

    /// Whether any of the connection's checks are being refused for its backlog.
    var refusing: Bool { share > 0 }

    /// The shortest time between two samples: a sample is a system call.
    static let interval = TimeAmount.milliseconds(5)
    /// A silence this long (no read at all, or no sample while reads did not fill their buffer)
    /// ends a backlog: the share is none, and the rate's window starts again.
    static let idle = TimeAmount.milliseconds(40)
    /// The controller's gains per sample, the wait measured in bounds: how far the wait is from
    /// the target (half the bound), and how far it moved since the last sample.
    static let proportional = 0.1
    static let derivative = 0.25

    init(now: NIODeadline) {
        lastSample = now
        lastRead = now
    }

    /// Counts a read of `bytes`; returns true when a sample is due: the read filled its buffer
    /// (`full`: more may wait), an interval after the last.
    mutating func record(read bytes: Int, full: Bool, now: NIODeadline) -> Bool {
        defer { lastRead = now }
        if fresh || now - lastRead >= Self.idle {
            // The time before this read was not spent reading (a silence, a pause): the window
            // starts here, or an hour idle would read as an hour to drain one buffer.
            if !fresh || now - lastRead >= Self.idle {
                share = 0
                owed = 0
                wait = 0
            }
            fresh = false
            consumed = 0
            lastSample = now
            return false
        }
        consumed &+= bytes
        guard full else {
            // A read that did not fill its buffer emptied the socket: nothing waits, and the
            // share refused was more than enough. Still refusing a little, not none, while the
            // socket fills again within a few samples (sustained overload); none once it has
            // not for `idle`.
            wait = 0
            share = now - lastSample >= Self.idle ? 0 : max(0, share - Self.proportional / 2)
            if share == 0 { owed = 0 }
            return false
        }
        return now - lastSample >= Self.interval
    }

    /// Takes a sample of `queued` bytes at `now` and moves the share refused towards keeping the
    /// wait at half of `bound`; returns whether any checks are to be refused.
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
        var next = share + Self.proportional * (now - 0.5) + Self.derivative * (now - then)
        // Under half the bound no more checks are refused than before, however fast the wait
        // grew: a burst that waits less than that is answered, every check of it.
        if now <= 0.5 { next = min(next, share) }
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
