#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import SluiceCore
import SluiceProto

/// An inline limit as read from a frame.
public struct LimitView: Sendable, Equatable {
    public var limit: UInt64 = 0
    public var periodMs: UInt64 = 0
    public var burst: UInt64 = 0
    /// The `Algorithm` enum's raw value (int32 on the wire).
    public var algorithm: Int32 = 0

    public init(limit: UInt64 = 0, periodMs: UInt64 = 0, burst: UInt64 = 0, algorithm: Int32 = 0) {
        self.limit = limit
        self.periodMs = periodMs
        self.burst = burst
        self.algorithm = algorithm
    }
}

/// A `sluice.v1.Check` read in place: its strings are byte ranges of the frame, valid while the
/// frame is. Plain stored fields with presence bits (not optionals), so that it is filled where
/// it lies: the profile showed copying an optional-laden view costing a fifth of the read.
public struct CheckView {
    public var tenant = UnsafeRawBufferPointer(start: nil, count: 0)
    public var key = UnsafeRawBufferPointer(start: nil, count: 0)
    public var subject = UnsafeRawBufferPointer(start: nil, count: 0)
    /// The client's address and the request's route (for anomaly detection); empty when not given.
    public var ip = UnsafeRawBufferPointer(start: nil, count: 0)
    public var route = UnsafeRawBufferPointer(start: nil, count: 0)
    var ruleBytes = UnsafeRawBufferPointer(start: nil, count: 0)
    var hitsValue: UInt64 = 0
    public var nowMs: UInt64 = 0
    var limitValue = LimitView()
    var presence: UInt8 = 0

    static let hasHits: UInt8 = 1, hasRule: UInt8 = 2, hasLimit: UInt8 = 4

    public init() {}

    /// nil when `hits` is unset (one hit).
    public var hits: UInt64? {
        get { presence & Self.hasHits != 0 ? hitsValue : nil }
        set {
            hitsValue = newValue ?? 0
            if newValue != nil { presence |= Self.hasHits } else { presence &= ~Self.hasHits }
        }
    }

    /// Set when the limit source is a rule.
    public var rule: UnsafeRawBufferPointer? {
        get { presence & Self.hasRule != 0 ? ruleBytes : nil }
        set {
            ruleBytes = newValue ?? UnsafeRawBufferPointer(start: nil, count: 0)
            if newValue != nil { presence |= Self.hasRule } else { presence &= ~Self.hasRule }
        }
    }

    /// Set when the limit source is an inline limit.
    public var limit: LimitView? {
        get { presence & Self.hasLimit != 0 ? limitValue : nil }
        set {
            limitValue = newValue ?? LimitView()
            if newValue != nil { presence |= Self.hasLimit } else { presence &= ~Self.hasLimit }
        }
    }
}

/// Reads and writes the hot messages — a `Request` holding a `CheckRequest`, and the
/// `Response` holding its verdicts — straight from and into frame bytes, without building
/// swift-protobuf messages.
///
/// The profile of the daemon under load put swift-protobuf's generic decoding and encoding at
/// about half of its time (docs/BENCHMARKS.md). This codec reads only the canonical encoding —
/// each field at most once, the expected wire types, ASCII strings unless told the bytes were
/// already validated — and declines anything else, which then takes the swift-protobuf path.
/// Tests hold it to swift-protobuf: the same bytes read to the same checks, and the verdicts it
/// writes decode to the messages swift-protobuf would have written.
public enum CheckFrameCodec {
    /// The frame's request id and the byte range of its `CheckRequest`, or nil if the frame is
    /// not a canonical `Request` with a `check` body.
    public static func checkBody(_ frame: UnsafeRawBufferPointer) -> (id: UInt64, body: UnsafeRawBufferPointer)? {
        var reader = FieldReader(frame)
        var id: UInt64?
        var body: UnsafeRawBufferPointer?
        while !reader.atEnd {
            guard let (field, wire) = reader.tag() else { return nil }
            switch field {
            case 1:
                guard wire == 0, id == nil, let value = reader.varint() else { return nil }
                id = value
            case 2:
                guard wire == 2, body == nil, let value = reader.lengthDelimited() else { return nil }
                body = value
            case 3...99:
                // Another body (3 to 19 today, the rest kept for more): the last member of a
                // oneof wins, so a check followed by a reload is a reload. The general path
                // decides what such a frame is.
                return nil
            default:
                guard reader.skip(wire) else { return nil }
            }
        }
        guard let body else { return nil }
        return (id ?? 0, body)
    }

    /// Counts the checks in a `CheckRequest`, or nil if it is not canonical.
    public static func countChecks(_ body: UnsafeRawBufferPointer) -> Int? {
        var reader = FieldReader(body)
        var count = 0
        while !reader.atEnd {
            guard let (field, wire) = reader.tag() else { return nil }
            if field == 1 {
                guard wire == 2, reader.lengthDelimited() != nil else { return nil }
                count += 1
            } else {
                guard reader.skip(wire) else { return nil }
            }
        }
        return count
    }

    /// Reads every check of a `CheckRequest` into `checks` (as long as ``countChecks(_:)``
    /// said). Returns false if any check is not canonical. With `trustUTF8` false, strings with
    /// bytes above 0x7F are declined (swift-protobuf validates those).
    public static func readChecks(_ body: UnsafeRawBufferPointer, into checks: UnsafeMutableBufferPointer<CheckView>,
                                  trustUTF8: Bool) -> Bool {
        var reader = FieldReader(body)
        var index = 0
        var previousLimit = PreviousLimit()
        while !reader.atEnd {
            guard let (field, wire) = reader.tag() else { return false }
            if field == 1 {
                guard wire == 2, let bytes = reader.lengthDelimited(), index < checks.count,
                      readCheck(bytes, into: checks.baseAddress! + index, trustUTF8: trustUTF8, previousLimit: &previousLimit)
                else { return false }
                index += 1
            } else {
                guard reader.skip(wire) else { return false }
            }
        }
        return index == checks.count
    }

    /// The last inline limit read in a batch, by its bytes: checks of a batch usually repeat it.
    struct PreviousLimit {
        var bytes = UnsafeRawBufferPointer(start: nil, count: 0)
        var limit = LimitView()
    }

    /// Reads one `Check` into `check` (which starts empty); false if it is not canonical.
    static func readCheck(_ bytes: UnsafeRawBufferPointer, into check: UnsafeMutablePointer<CheckView>, trustUTF8: Bool,
                          previousLimit: inout PreviousLimit) -> Bool {
        var reader = FieldReader(bytes)
        var seen: UInt16 = 0
        while !reader.atEnd {
            guard let (field, wire) = reader.tag() else { return false }
            if field <= 9 {
                let bit = UInt16(1) << field
                guard seen & bit == 0 else { return false }
                seen |= bit
            }
            switch field {
            case 1, 2, 3, 6, 8, 9:
                guard wire == 2, let text = reader.lengthDelimited(), trustUTF8 || isASCII(text) else { return false }
                switch field {
                case 1: check.pointee.tenant = text
                case 2: check.pointee.key = text
                case 3: check.pointee.subject = text
                case 8: check.pointee.ip = text
                case 9: check.pointee.route = text
                default:
                    check.pointee.ruleBytes = text
                    check.pointee.presence |= CheckView.hasRule
                }
            case 4:
                guard wire == 0, let value = reader.varint() else { return false }
                check.pointee.hitsValue = value
                check.pointee.presence |= CheckView.hasHits
            case 5:
                guard wire == 0, let value = reader.varint() else { return false }
                check.pointee.nowMs = value
            case 7:
                guard wire == 2, let message = reader.lengthDelimited() else { return false }
                if message.count > 0, message.count == previousLimit.bytes.count,
                   memcmp(message.baseAddress!, previousLimit.bytes.baseAddress!, message.count) == 0 {
                    check.pointee.limitValue = previousLimit.limit
                } else {
                    guard readLimit(message, into: &check.pointee.limitValue) else { return false }
                    previousLimit = PreviousLimit(bytes: message, limit: check.pointee.limitValue)
                }
                check.pointee.presence |= CheckView.hasLimit
            default:
                guard reader.skip(wire) else { return false }
            }
        }
        // Both halves of the oneof: proto's last-one-wins; leave that to swift-protobuf.
        return check.pointee.presence & (CheckView.hasRule | CheckView.hasLimit) != CheckView.hasRule | CheckView.hasLimit
    }

    static func readLimit(_ bytes: UnsafeRawBufferPointer, into limit: inout LimitView) -> Bool {
        var reader = FieldReader(bytes)
        var seen: UInt8 = 0
        while !reader.atEnd {
            guard let (field, wire) = reader.tag() else { return false }
            guard field > 4 || wire == 0 else { return false }
            if field <= 4 {
                let bit = UInt8(1) << field
                guard seen & bit == 0 else { return false }
                seen |= bit
            }
            switch field {
            case 1: guard let v = reader.varint() else { return false }; limit.limit = v
            case 2: guard let v = reader.varint() else { return false }; limit.periodMs = v
            case 3: guard let v = reader.varint() else { return false }; limit.burst = v
            case 4: guard let v = reader.varint() else { return false }; limit.algorithm = Int32(truncatingIfNeeded: v)
            default: guard reader.skip(wire) else { return false }
            }
        }
        return true
    }

    @inline(__always)
    static func isASCII(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        let count = bytes.count
        while offset + 8 <= count {
            if bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { return false }
            offset += 8
        }
        while offset < count {
            if bytes[offset] >= 0x80 { return false }
            offset += 1
        }
        return true
    }

    // MARK: writing

    /// The fields of one verdict, in wire units (milliseconds, raw enum values).
    public struct VerdictFields: Sendable, Equatable {
        public var allowed: Bool
        public var limit: UInt64
        public var remaining: UInt64
        public var resetAfterMs: UInt64
        public var retryAfterMs: UInt64
        public var algorithm: UInt64
        public var leaseID: UInt64
        public var reason: UInt64
        public var limitIndex: UInt64
        /// The subject's reputation score; NaN when none is reported (field 11 absent).
        public var reputation: Double = .nan
        /// The multiplier applied to the limits; 0 when none.
        public var multiplier: Double = 0
        /// Shadow mode: a feature would have denied the check, for `wouldDenyReason`.
        public var wouldDeny = false
        public var wouldDenyReason: UInt64 = 0

        /// The same mapping as `Sluice_V1_Verdict.init(_:rule:)`.
        @inline(__always)
        public init(_ decision: Decision) {
            allowed = decision.allowed
            limit = decision.limit
            remaining = decision.remaining
            resetAfterMs = decision.resetAfter.ceilingMilliseconds
            retryAfterMs = decision.retryAfter.ceilingMilliseconds
            algorithm = UInt64(decision.algorithm.rawValue)
            leaseID = decision.leaseID
            reason = UInt64(decision.reason.rawValue)
            limitIndex = UInt64(decision.limitIndex)
        }

        /// Bytes of the encoded `Verdict` (fields with their default value are left out, as
        /// every protobuf encoder does in proto3).
        @inline(__always)
        func size(ruleLength: Int) -> Int {
            var size = allowed ? 2 : 0
            size += field(limit) + field(remaining) + field(resetAfterMs) + field(retryAfterMs)
            if ruleLength > 0 { size += 1 + varintSize(UInt64(ruleLength)) + ruleLength }
            size += field(algorithm) + field(leaseID) + field(reason) + field(limitIndex)
            if !reputation.isNaN { size += 9 }
            if multiplier != 0 { size += 9 }
            if wouldDeny { size += 2 }
            size += field(wouldDenyReason)
            return size
        }

        @inline(__always)
        func field(_ value: UInt64) -> Int { value == 0 ? 0 : 1 + varintSize(value) }

        @inline(__always)
        func write(rule: UnsafeRawBufferPointer, to writer: inout ByteWriter) {
            if allowed { writer.byte(0x08); writer.byte(1) }
            writer.field(0x10, limit)
            writer.field(0x18, remaining)
            writer.field(0x20, resetAfterMs)
            writer.field(0x28, retryAfterMs)
            if rule.count > 0 {
                writer.byte(0x32)
                writer.varint(UInt64(rule.count))
                writer.bytes(rule)
            }
            writer.field(0x38, algorithm)
            writer.field(0x40, leaseID)
            writer.field(0x48, reason)
            writer.field(0x50, limitIndex)
            if !reputation.isNaN { writer.double(0x59, reputation) }
            if multiplier != 0 { writer.double(0x61, multiplier) }
            if wouldDeny { writer.byte(0x68); writer.byte(1) }
            writer.field(0x70, wouldDenyReason)

        }
    }

    /// Appends a whole frame: `Response { id, check: CheckResponse { verdicts } }`, verdict `i`
    /// being `verdicts[i]` decided under the rule named `rules[i]` (empty for an inline limit).
    public static func writeCheckResponse(id: UInt64, verdicts: UnsafeBufferPointer<VerdictFields>,
                                          rules: UnsafeBufferPointer<UnsafeRawBufferPointer>,
                                          tiers: UnsafeBufferPointer<UnsafeRawBufferPointer>? = nil,
                                          anomalies: UnsafeBufferPointer<UnsafeRawBufferPointer>? = nil, into out: inout ByteBuffer) {
        // A tier name is field 15 of the verdict, an anomaly kind field 16 (a two-byte tag),
        // after everything VerdictFields writes.
        @inline(__always) func tierSize(_ index: Int) -> Int {
            var size = 0
            if let tiers, tiers[index].count > 0 { size += 1 + varintSize(UInt64(tiers[index].count)) + tiers[index].count }
            if let anomalies, anomalies[index].count > 0 { size += 2 + varintSize(UInt64(anomalies[index].count)) + anomalies[index].count }
            return size
        }
        var checksSize = 0
        for index in 0..<verdicts.count {
            let size = verdicts[index].size(ruleLength: rules[index].count) + tierSize(index)
            checksSize += 1 + varintSize(UInt64(size)) + size
        }
        var responseSize = 1 + varintSize(UInt64(checksSize)) + checksSize
        if id != 0 { responseSize += 1 + varintSize(id) }
        let total = 4 + responseSize
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { raw in
            var writer = ByteWriter(base: raw.baseAddress!)
            writer.byte(UInt8(truncatingIfNeeded: responseSize >> 24))
            writer.byte(UInt8(truncatingIfNeeded: responseSize >> 16))
            writer.byte(UInt8(truncatingIfNeeded: responseSize >> 8))
            writer.byte(UInt8(truncatingIfNeeded: responseSize))
            writer.field(0x08, id)
            writer.byte(0x12)
            writer.varint(UInt64(checksSize))
            for index in 0..<verdicts.count {
                writer.byte(0x0A)
                writer.varint(UInt64(verdicts[index].size(ruleLength: rules[index].count) + tierSize(index)))
                verdicts[index].write(rule: rules[index], to: &writer)
                if let tiers, tiers[index].count > 0 {
                    writer.byte(0x7A)
                    writer.varint(UInt64(tiers[index].count))
                    writer.bytes(tiers[index])
                }
                if let anomalies, anomalies[index].count > 0 {
                    writer.byte(0x82)
                    writer.byte(0x01)
                    writer.varint(UInt64(anomalies[index].count))
                    writer.bytes(anomalies[index])
                }
            }
            return total
        }
    }
}

@inline(__always)
func varintSize(_ value: UInt64) -> Int { Varint.size(value) }

/// Writes into memory already reserved for the whole message.
struct ByteWriter {
    var base: UnsafeMutableRawPointer
    var offset = 0

    @inline(__always) mutating func byte(_ value: UInt8) {
        base.storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
        offset += 1
    }

    @inline(__always) mutating func varint(_ value: UInt64) {
        offset = Varint.write(value, to: base, at: offset)
    }

    @inline(__always) mutating func field(_ tag: UInt8, _ value: UInt64) {
        guard value != 0 else { return }
        byte(tag)
        varint(value)
    }

    /// A fixed64 field holding a double, little-endian.
    @inline(__always) mutating func double(_ tag: UInt8, _ value: Double) {
        byte(tag)
        base.storeBytes(of: value.bitPattern.littleEndian, toByteOffset: offset, as: UInt64.self)
        offset += 8
    }

    @inline(__always) mutating func bytes(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        (base + offset).copyMemory(from: source, byteCount: bytes.count)
        offset += bytes.count
    }
}
