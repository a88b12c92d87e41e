import Synchronization

/// What a background consumer drains from a buffer the hot path offers to.
public protocol EventSource<Element>: AnyObject, Sendable {
    associatedtype Element: Sendable
    /// Removes and returns up to `limit` elements, oldest first.
    func drain(limit: Int) -> [Element]
}

extension EventTap: EventSource {}

/// A bounded, non-blocking buffer of check events from the hot path to a background consumer,
/// kept as bytes: an offer copies the event's fields and strings into a ring of bytes under a
/// short lock, and the consumer makes the strings when it drains. (An ``EventTap`` of
/// ``CheckEvent`` makes four strings per check on the event loop, which cost more than the rest
/// of the offer.)
///
/// Like ``EventTap``, `offer` never waits on the consumer: when the ring has no room the event
/// is dropped and counted. Each event carries a `mark` for its consumer (for anomaly detection:
/// whether it is a reported outcome rather than a check).
// @unchecked: the bytes and the positions are read and written only under `lock`.
public final class PackedEventTap: EventSource, @unchecked Sendable {
    /// One drained event.
    public struct Entry: Sendable, Equatable {
        public var event: CheckEvent
        public var mark: Bool

        public init(event: CheckEvent, mark: Bool) {
            self.event = event
            self.mark = mark
        }
    }

    /// A record's fixed part, before its strings: length (4), flags (1), reason (1), two spare,
    /// time (8), cost (8), status (8), six string lengths (2 each, 12), padded to 8.
    static let header = 56
    static let pad: UInt32 = 0xFFFF_FFFF
    /// The most bytes a drain copies under one hold of the lock.
    static let holdBytes = 64 << 10

    let bytes: UnsafeMutableRawPointer
    /// How many bytes the ring holds (a multiple of 8).
    public let capacity: Int
    /// Guards the positions, the counts and the bytes between them (a `Mutex`: one
    /// compare-and-swap where `NIOLock`'s `pthread_mutex` took about 55 instructions a hold).
    let lock = Mutex<Void>(())
    // Monotonic byte positions: the ring holds `written - read` bytes.
    var read = 0
    var written = 0
    var droppedCount: UInt64 = 0
    var offeredCount: UInt64 = 0

    /// A ring of `capacityBytes` bytes (at least 4 KiB), about `capacityBytes / 80` checks of
    /// short strings.
    public init(capacityBytes: Int) {
        capacity = (max(4_096, capacityBytes) + 7) & ~7
        bytes = .allocate(byteCount: capacity, alignment: 8)
    }

    deinit { bytes.deallocate() }

    /// Adds one event unless the ring is full (or the event is longer than a quarter of it).
    ///
    /// - Returns: false when the event was dropped.
    /// - Complexity: O(bytes of its strings), never blocks on the consumer.
    @discardableResult
    public func offer(timestampMs: Int64, tenant: UnsafeRawBufferPointer, subject: UnsafeRawBufferPointer,
                      ip: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                      route: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0), status: Int = 0, cost: UInt64 = 1,
                      key: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                      rule: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0), allowed: Bool = true,
                      reason: DecisionReason = .withinLimit, mark: Bool = false) -> Bool {
        let strings = (tenant, subject, ip, route, key, rule)
        let lengths = (tenant.count, subject.count, ip.count, route.count, key.count, rule.count)
        let longest = max(lengths.0, lengths.1, lengths.2, lengths.3, lengths.4, lengths.5)
        let total = lengths.0 &+ lengths.1 &+ lengths.2 &+ lengths.3 &+ lengths.4 &+ lengths.5
        let size = (Self.header &+ total &+ 7) & ~7
        return lock.withLock { _ -> Bool in put(strings, longest: longest, size: size, timestampMs: timestampMs,
                                                status: status, cost: cost, allowed: allowed, reason: reason, mark: mark) }
    }

    /// The body of ``offer(timestampMs:tenant:subject:ip:route:status:cost:key:rule:allowed:reason:mark:)``,
    /// under the lock.
    @inline(__always)
    private func put(_ strings: (UnsafeRawBufferPointer, UnsafeRawBufferPointer, UnsafeRawBufferPointer, UnsafeRawBufferPointer,
                                 UnsafeRawBufferPointer, UnsafeRawBufferPointer),
                     longest: Int, size: Int, timestampMs: Int64, status: Int, cost: UInt64,
                     allowed: Bool, reason: DecisionReason, mark: Bool) -> Bool {
        offeredCount &+= 1
        guard longest <= Int(UInt16.max), size <= capacity / 4 else {
            droppedCount &+= 1
            return false
        }
        var at = written % capacity
        // A record never wraps: the end's remainder (a multiple of 8, so room for the marker)
        // is skipped.
        let skip = capacity - at < size ? capacity - at : 0
        guard capacity - (written - read) >= size + skip else {
            droppedCount &+= 1
            return false
        }
        if skip > 0 {
            bytes.storeBytes(of: Self.pad, toByteOffset: at, as: UInt32.self)
            written += skip
            at = 0
        }
        let record = bytes + at
        record.storeBytes(of: UInt32(size), as: UInt32.self)
        record.storeBytes(of: (allowed ? 1 : 0) | (mark ? 2 : 0), toByteOffset: 4, as: UInt8.self)
        record.storeBytes(of: reason.rawValue, toByteOffset: 5, as: UInt8.self)
        record.storeBytes(of: timestampMs, toByteOffset: 8, as: Int64.self)
        record.storeBytes(of: cost, toByteOffset: 16, as: UInt64.self)
        record.storeBytes(of: Int64(status), toByteOffset: 24, as: Int64.self)
        var offset = Self.header
        func put(_ field: Int, _ string: UnsafeRawBufferPointer) {
            record.storeBytes(of: UInt16(truncatingIfNeeded: string.count), toByteOffset: 32 + 2 * field, as: UInt16.self)
            if let base = string.baseAddress, string.count > 0 { (record + offset).copyMemory(from: base, byteCount: string.count) }
            offset &+= string.count
        }
        put(0, strings.0)
        put(1, strings.1)
        put(2, strings.2)
        put(3, strings.3)
        put(4, strings.4)
        put(5, strings.5)
        written += size
        return true
    }

    /// Adds one event given as strings (the paths that have them already).
    @discardableResult
    public func offer(_ event: CheckEvent, mark: Bool = false) -> Bool {
        var tenant = event.tenant, subject = event.subject, ip = event.ip, route = event.route, key = event.key, rule = event.rule
        return tenant.withUTF8 { tenant in
            subject.withUTF8 { subject in
                ip.withUTF8 { ip in
                    route.withUTF8 { route in
                        key.withUTF8 { key in
                            rule.withUTF8 { rule in
                                offer(timestampMs: event.timestampMs, tenant: UnsafeRawBufferPointer(tenant), subject: UnsafeRawBufferPointer(subject),
                                      ip: UnsafeRawBufferPointer(ip), route: UnsafeRawBufferPointer(route), status: event.status, cost: event.cost,
                                      key: UnsafeRawBufferPointer(key), rule: UnsafeRawBufferPointer(rule), allowed: event.allowed,
                                      reason: event.reason, mark: mark)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Removes and returns up to `limit` events, oldest first. The strings are made here, on
    /// the consumer's queue: the bytes are copied out under the lock, at most 64 KiB a hold (so
    /// an offer never waits long behind a drain), then decoded outside it.
    public func drain(limit: Int = .max) -> [Entry] {
        var copied: [UInt8] = []
        var count = 0
        var more = true
        while more, count < limit {
            lock.withLock { _ in
                var position = read
                let stop = copied.count + Self.holdBytes
                while position < written, count < limit, copied.count < stop {
                    let at = position % capacity
                    let size = bytes.load(fromByteOffset: at, as: UInt32.self)
                    if size == Self.pad {
                        position += capacity - at
                        continue
                    }
                    copied.append(contentsOf: UnsafeRawBufferPointer(start: bytes + at, count: Int(size)))
                    position += Int(size)
                    count += 1
                }
                read = position
                more = position < written
            }
        }
        var out: [Entry] = []
        out.reserveCapacity(count)
        copied.withUnsafeBytes { all in
            var at = 0
            while at < all.count {
                let record = UnsafeRawBufferPointer(rebasing: all[at...])
                let size = Int(record.loadUnaligned(as: UInt32.self))
                out.append(Self.decode(record))
                at += size
            }
        }
        return out
    }

    static func decode(_ record: UnsafeRawBufferPointer) -> Entry {
        let flags = record.loadUnaligned(fromByteOffset: 4, as: UInt8.self)
        var offset = header
        func string(_ field: Int) -> String {
            let count = Int(record.loadUnaligned(fromByteOffset: 32 + 2 * field, as: UInt16.self))
            defer { offset += count }
            return String(decoding: UnsafeRawBufferPointer(rebasing: record[offset..<(offset + count)]), as: UTF8.self)
        }
        let tenant = string(0), subject = string(1), ip = string(2), route = string(3), key = string(4), rule = string(5)
        let event = CheckEvent(timestampMs: record.loadUnaligned(fromByteOffset: 8, as: Int64.self), tenant: tenant, subject: subject,
                               ip: ip, route: route, status: Int(record.loadUnaligned(fromByteOffset: 24, as: Int64.self)),
                               cost: record.loadUnaligned(fromByteOffset: 16, as: UInt64.self), key: key, rule: rule,
                               allowed: flags & 1 != 0,
                               reason: DecisionReason(rawValue: record.loadUnaligned(fromByteOffset: 5, as: UInt8.self)) ?? .withinLimit)
        return Entry(event: event, mark: flags & 2 != 0)
    }

    /// Events dropped because the ring was full (or the event too long).
    public var dropped: UInt64 { lock.withLock { _ in droppedCount } }
    /// Bytes waiting to be drained now.
    public var pendingBytes: Int { lock.withLock { _ in written - read } }
    /// Events offered in all.
    public var offered: UInt64 { lock.withLock { _ in offeredCount } }
}
