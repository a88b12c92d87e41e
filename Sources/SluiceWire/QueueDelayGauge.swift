import NIOCore
import SluiceProto
import Synchronization

/// How long work waits on one event loop. A task scheduled every `interval` measures how late
/// it runs: that is how long a request that just became readable waits for its turn, while the
/// loop serves every other ready connection. Past `bound` on two samples in a row the loop is
/// overloaded, and its connections answer checks `CODE_OVERLOADED` at once instead of queueing
/// them (``ConnectionHandler``), until a sample is back under the bound: clients learn to back
/// off in milliseconds rather than waiting seconds for answers that come too late.
///
/// The gauge samples only while its loop reads: a connection's read arms it (``touch(on:)``),
/// and after ``idleSamples`` samples with no read it stops, so an idle daemon's loops sleep
/// instead of waking a hundred times a second each. A loop with nothing to read is not late.
public final class QueueDelayGauge: Sendable {
    /// The delay past which checks are refused (ns).
    public let bound: Int64
    let interval: TimeAmount
    let lastRun = Atomic<UInt64>(0)
    let lastDelay = Atomic<Int64>(0)
    let overloaded = Atomic<Bool>(false)
    /// The longest delay measured since it was last read (ns), for metrics.
    let longest = Atomic<Int64>(0)
    /// Whether a sample is due; set and cleared on the loop only.
    let armed = Atomic<Bool>(false)
    /// Whether a connection read since the last sample.
    let readSinceSample = Atomic<Bool>(false)
    /// Samples in a row with no read (on the loop only).
    let quietSamples = Atomic<Int>(0)
    /// The sample due, and whether the gauge was stopped (the loop is shutting down).
    let pending = Mutex<(stopped: Bool, task: Scheduled<Void>?)>((false, nil))

    /// Samples in a row with no read after which the gauge stops until the next read.
    public static let idleSamples = 10

    /// A gauge refusing checks past `bound` (nil: measures, never refuses).
    public init(bound: TimeAmount?, interval: TimeAmount = .milliseconds(10)) {
        self.bound = bound?.nanoseconds ?? .max
        self.interval = interval
    }

    /// A connection on `loop` read: keeps the gauge sampling, or starts it again after a quiet
    /// spell. Call on `loop`.
    @inline(__always)
    public func touch(on loop: any EventLoop) {
        readSinceSample.store(true, ordering: .relaxed)
        if !armed.load(ordering: .relaxed) { arm(on: loop) }
    }

    func arm(on loop: any EventLoop) {
        armed.store(true, ordering: .relaxed)
        quietSamples.store(0, ordering: .relaxed)
        // The quiet spell is not a delay; the last samples before it (of a loop with nothing
        // to do) stand until the next two.
        lastRun.store(0, ordering: .relaxed)
        schedule(on: loop)
    }

    func schedule(on loop: any EventLoop) {
        pending.withLock { pending in
            guard !pending.stopped else { return }
            pending.task = loop.scheduleTask(in: interval) { [self] in turn(on: loop) }
        }
    }

    /// One sample on the loop, then the next unless the loop has been quiet for long.
    func turn(on loop: any EventLoop) {
        sample()
        if readSinceSample.exchange(false, ordering: .relaxed) {
            quietSamples.store(0, ordering: .relaxed)
        } else if quietSamples.wrappingAdd(1, ordering: .relaxed).newValue >= Self.idleSamples {
            armed.store(false, ordering: .relaxed)
            return
        }
        schedule(on: loop)
    }

    /// Stops sampling for good; call before the loop shuts down (a task left on a loop that
    /// shuts down is an error NIO will make a crash).
    public func stop() {
        pending.withLock { pending in
            pending.stopped = true
            pending.task?.cancel()
            pending.task = nil
        }
    }

    func sample() {
        let now = NIODeadline.now().uptimeNanoseconds
        let previous = lastRun.exchange(now, ordering: .relaxed)
        guard previous > 0, now > previous else { return }
        let delay = max(0, Int64(clamping: now - previous) - interval.nanoseconds)
        let before = lastDelay.exchange(delay, ordering: .relaxed)
        overloaded.store(delay > bound && before > bound, ordering: .relaxed)
        var current = longest.load(ordering: .relaxed)
        while delay > current {
            let (exchanged, original) = longest.compareExchange(expected: current, desired: delay, ordering: .relaxed)
            if exchanged { break }
            current = original
        }
    }

    /// Whether the loop's last turn ran more than a millisecond late: other connections are
    /// waiting, so each connection's turn is bounded (``ConnectionHandler``).
    @inline(__always)
    public var isContended: Bool { lastDelay.load(ordering: .relaxed) > 1_000_000 }

    /// Whether checks on this loop are refused now.
    @inline(__always)
    public var isOverloaded: Bool { overloaded.load(ordering: .relaxed) }

    /// The longest delay since the previous call (ns).
    public func takeLongest() -> Int64 { longest.exchange(0, ordering: .relaxed) }

    /// The answer to a check refused while overloaded, encoded once: the request's id is put
    /// in front (protobuf fields may come in any order). Short: under overload the daemon may
    /// write a million of these a second, and the client reads them all.
    static let refusal: [UInt8] = (try? WireResponse.error(id: 0, .overloaded,
        "past server.max_queue_delay: refused at once, not answered late; retry with backoff")
        .serializedBytes()) ?? []

    /// Writes the refusal of request `id` as one frame, without allocating.
    static func writeRefusal(id: UInt64, into out: inout ByteBuffer) {
        let idBytes = id == 0 ? 0 : 1 + varintSize(id)
        let length = idBytes + refusal.count
        out.reserveCapacity(minimumWritableBytes: 4 + length)
        out.writeInteger(UInt32(length), endianness: .big)
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: idBytes) { buffer in
            guard idBytes > 0, let base = buffer.baseAddress else { return 0 }
            var writer = ByteWriter(base: base)
            writer.field(0x08, id)
            return writer.offset
        }
        out.writeBytes(refusal)
    }
}
