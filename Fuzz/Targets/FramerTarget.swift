import Logging
import NIOCore
import NIOEmbedded
import SluiceProto
import SwiftProtobuf
import SluiceWire

/// The connection handler fed one stream of bytes at boundaries drawn from the input: every
/// whole frame is answered once, in order, with its request's id (or the id scanned from a
/// frame that does not decode); a length above the maximum is answered `CODE_FRAME_TOO_LARGE`
/// and ends the stream; between reads the handler keeps at most about one frame.
///
/// Input: 8 bytes seeding the read sizes, then the stream.
enum FramerTarget {
    static let maximumFrameBytes = 4_096
    static let largestRead = 700

    /// Answers every request with its own id, as the daemon does.
    final class Echo: RequestProcessor, @unchecked Sendable {
        func process(_ request: WireRequest) -> WireResponse {
            var response = WireResponse()
            response.id = request.id
            response.ping = .init()
            return response
        }
        func recordFailedFrame(_ code: WireError.Code) {}
    }

    static func run(_ bytes: UnsafeRawBufferPointer) -> String? {
        guard bytes.count >= 8 else { return nil }
        var random = SplitMix(state: bytes.loadUnaligned(as: UInt64.self))
        let stream = Array(bytes[8...])
        let expected = expectedIDs(stream)

        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        let handler = ConnectionHandler(processor: Echo(), logger: Logger(label: "fuzz"), maximumFrameBytes: maximumFrameBytes)
        guard (try? channel.pipeline.syncOperations.addHandler(handler)) != nil,
              (try? channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()) != nil else {
            return "the embedded channel could not be set up"
        }
        var offset = 0
        let bound = 2 * (maximumFrameBytes + 4) + ConnectionHandler.keptSlack
        while offset < stream.count, channel.isActive {
            let size = min(random.size(upTo: largestRead), stream.count - offset)
            _ = try? channel.writeInbound(ByteBuffer(bytes: stream[offset..<(offset + size)]))
            offset += size
            if handler.keptCapacity > bound {
                return "a kept partial frame holds \(handler.keptCapacity) bytes of storage (bound \(bound))"
            }
        }
        channel.embeddedEventLoop.run()
        var answered: [UInt64] = []
        var codes: [WireError.Code] = []
        while let out = try? channel.readOutbound(as: ByteBuffer.self) {
            var buffer = out
            while let frame = try? FrameDecoder.nextFrame(in: &buffer, maximum: Int(UInt32.max)) {
                guard let response = try? WireResponse(serializedBytes: Array(frame.readableBytesView)) else {
                    return "an answer frame of \(frame.readableBytes) bytes does not decode"
                }
                answered.append(response.id)
                if case .error(let error) = response.body { codes.append(error.code) }
            }
            if buffer.readableBytes > 0 { return "an answer frame was cut short" }
        }
        if answered != expected.ids {
            return "answers \(answered.prefix(20)) (\(answered.count)), expected \(expected.ids.prefix(20)) (\(expected.ids.count))"
        }
        if expected.tooLarge, codes.last != .frameTooLarge { return "an oversized length was not answered CODE_FRAME_TOO_LARGE" }
        if expected.tooLarge, channel.isActive { return "the connection stayed open after an oversized length" }
        return nil
    }

    /// The ids the answers must carry, in order, framing the whole stream at once.
    static func expectedIDs(_ stream: [UInt8]) -> (ids: [UInt64], tooLarge: Bool) {
        var options = BinaryDecodingOptions()
        options.discardUnknownFields = true
        options.messageDepthLimit = 16
        var buffer = ByteBuffer(bytes: stream)
        var ids: [UInt64] = []
        do {
            while let frame = try FrameDecoder.nextFrame(in: &buffer, maximum: maximumFrameBytes) {
                if let request = try? WireRequest(serializedBytes: Array(frame.readableBytesView), options: options) {
                    ids.append(request.id)
                } else {
                    ids.append(RequestIDScanner.id(in: frame) ?? 0)
                }
            }
        } catch {
            ids.append(0)
            return (ids, true)
        }
        return (ids, false)
    }
}
