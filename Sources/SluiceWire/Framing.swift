import NIOCore
import SluiceProto

/// Why a byte stream can no longer be framed.
public enum FramingError: Error, Equatable, Sendable {
    /// A length prefix above the maximum.
    case frameTooLarge(length: UInt32, maximum: Int)
}

/// Splits a byte stream into frames: a 4-byte unsigned big-endian length N, then N bytes.
///
/// The prefix is checked against `maximumFrameBytes` before any of the body is buffered, so a
/// hostile length costs nothing. A zero-length frame is a valid, empty message.
public struct FrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = ByteBuffer

    /// The largest body accepted.
    public let maximumFrameBytes: Int

    /// A decoder refusing bodies above `maximumFrameBytes`.
    public init(maximumFrameBytes: Int) { self.maximumFrameBytes = maximumFrameBytes }

    /// Emits every complete frame in `buffer`.
    ///
    /// - Throws: ``FramingError/frameTooLarge(length:maximum:)``; the stream is unusable after it.
    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try Self.nextFrame(in: &buffer, maximum: maximumFrameBytes) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    /// Drops a trailing partial frame at end of stream: there is no one to answer it.
    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }

    /// Reads one complete frame's body from `buffer`, or nil if it holds only part of one.
    ///
    /// - Throws: ``FramingError/frameTooLarge(length:maximum:)`` when the prefix is above `maximum`.
    @inlinable
    public static func nextFrame(in buffer: inout ByteBuffer, maximum: Int) throws -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else { return nil }
        guard Int(length) <= maximum else { throw FramingError.frameTooLarge(length: length, maximum: maximum) }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        return buffer.readSlice(length: Int(length))
    }
}

extension ByteBuffer {
    /// Writes `response` as one frame, encoded by swift-protobuf.
    public mutating func writeResponseFrame(_ response: WireResponse) {
        // Encoding fails only for messages with unset required fields, which proto3 has none of.
        let bytes: [UInt8] = (try? response.serializedBytes()) ?? []
        writeFrame(bytes)
    }

    /// Writes `body` as one frame: its length as 4 big-endian bytes, then the bytes.
    @inlinable
    public mutating func writeFrame(_ body: some Collection<UInt8>) {
        writeInteger(UInt32(body.count), endianness: .big)
        writeBytes(body)
    }
}

/// Reads the top-level field 1 (`id`, a varint) of a message that may be otherwise malformed, so
/// that an error response can still carry the request's id.
public enum RequestIDScanner {
    /// The id, or nil when the bytes before it cannot be walked.
    public static func id(in bytes: ByteBuffer) -> UInt64? {
        bytes.withUnsafeReadableBytes { raw in
            var reader = FieldReader(raw)
            var found: UInt64? = nil
            while !reader.atEnd {
                guard let key = reader.varint() else { return found }
                let wire = Int(key & 7)
                if wire == 0 {
                    guard let value = reader.varint() else { return found }
                    if key >> 3 == 1 { found = value }
                } else if !reader.skip(wire) {
                    return found
                }
            }
            return found
        }
    }
}
