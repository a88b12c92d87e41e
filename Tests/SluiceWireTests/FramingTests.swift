import Logging
import NIOCore
import NIOEmbedded
import SluiceProto
import Testing
@testable import SluiceWire

/// Answers pings with their payload and counts malformed frames: just enough to see the wire.
final class EchoProcessor: RequestProcessor, @unchecked Sendable {
    var malformed = 0
    func process(_ request: WireRequest) -> WireResponse {
        var response = WireResponse()
        response.id = request.id
        if case .ping(let ping) = request.body { response.ping.payload = ping.payload }
        else { response.error = WireError(.unsupported, "echo only") }
        return response
    }
    func recordFailedFrame(_ code: WireError.Code) { malformed += 1 }
}

func frame(_ request: WireRequest) throws -> [UInt8] {
    let body: [UInt8] = try request.serializedBytes()
    var buffer = ByteBuffer()
    buffer.writeFrame(body)
    return Array(buffer.readableBytesView)
}

func ping(id: UInt64, payload: [UInt8] = [1, 2, 3]) -> WireRequest {
    var request = WireRequest()
    request.id = id
    request.ping.payload = Data(payload)
    return request
}

import struct Foundation.Data

/// Every answer frame the channel has written so far, decoded.
func responses(_ channel: EmbeddedChannel) throws -> [WireResponse] {
    var out: [WireResponse] = []
    while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
        while let body = try FrameDecoder.nextFrame(in: &buffer, maximum: 1 << 24) {
            out.append(try WireResponse(serializedBytes: Array(body.readableBytesView)))
        }
    }
    return out
}

@Suite("Framing")
final class FramingTests {
    /// Every channel a test made, finished on teardown so their pipelines are released.
    var channels: [EmbeddedChannel] = []

    deinit {
        for channel in channels {
            channel.embeddedEventLoop.run()
            _ = try? channel.finish(acceptAlreadyClosed: true)
        }
    }

    func makeChannel(maximum: Int = 1 << 20) throws -> (EmbeddedChannel, EchoProcessor) {
        let processor = EchoProcessor()
        let channel = EmbeddedChannel()
        channels.append(channel)
        try channel.pipeline.syncOperations.addHandler(ConnectionHandler(processor: processor, logger: Logger(label: "test"),
                                                                         maximumFrameBytes: maximum))
        // An embedded channel is inactive until connected; connect it so closing is observable.
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        #expect(channel.isActive)
        return (channel, processor)
    }

    @Test("a frame split into single bytes decodes once, whole")
    func splitBytes() throws {
        let (channel, _) = try makeChannel()
        let bytes = try frame(ping(id: 7)) + frame(ping(id: 8))
        for byte in bytes {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        let answers = try responses(channel)
        #expect(answers.map(\.id) == [7, 8])
        #expect(answers.first?.ping.payload == Data([1, 2, 3]))
    }

    @Test("reads that never end on a frame boundary keep at most about one frame, however long the stream")
    func splitReadsStayBounded() throws {
        let (channel, _) = try makeChannel()
        let handler = try channel.pipeline.syncOperations.handler(type: ConnectionHandler.self)
        let frameBytes = try frame(ping(id: 1, payload: Array(repeating: 5, count: 100_000)))
        let stream = frameBytes + frameBytes
        var largest = 0
        var answered = 0
        for index in 0..<300 {
            // Each read ends 3 bytes into the next frame (30 MB in all).
            let start = index == 0 ? 0 : 3
            try channel.writeInbound(ByteBuffer(bytes: stream[start..<(frameBytes.count + 3)]))
            largest = max(largest, handler.partial?.capacity ?? 0)
            answered += try responses(channel).count
        }
        #expect(answered == 300)
        #expect(handler.partial?.readableBytes == 3)
        #expect(largest <= 4 * frameBytes.count, "a kept buffer of \(largest) bytes for frames of \(frameBytes.count)")
    }

    @Test("a partial frame kept from a large read is copied out of it")
    func keptPartialIsSmall() throws {
        let (channel, _) = try makeChannel()
        let handler = try channel.pipeline.syncOperations.handler(type: ConnectionHandler.self)
        var bytes: [UInt8] = []
        for id in 1...500 { bytes += try frame(ping(id: UInt64(id), payload: Array(repeating: 1, count: 100))) }
        var read = ByteBuffer(bytes: bytes + [0, 0, 0])
        read.reserveCapacity(1 << 20)
        try channel.writeInbound(read)
        #expect(try responses(channel).count == 500)
        #expect(handler.partial?.readableBytes == 3)
        #expect((handler.partial?.capacity ?? 0) < 64 * 1024)
    }

    @Test("many frames in one read are answered in order")
    func coalesced() throws {
        let (channel, _) = try makeChannel()
        var bytes: [UInt8] = []
        for id in 1...100 { bytes += try frame(ping(id: UInt64(id))) }
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        #expect(try responses(channel).map(\.id) == Array(1...100))
    }

    @Test("a zero-length frame is an empty request, answered as unsupported, and the stream goes on")
    func zeroLength() throws {
        let (channel, _) = try makeChannel()
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0] + (try frame(ping(id: 3)))))
        let answers = try responses(channel)
        #expect(answers.count == 2)
        #expect(answers[0].error.code == .unsupported)
        #expect(answers[1].id == 3)
        #expect(channel.isActive)
    }

    @Test("an absurd length is refused before buffering and closes the connection", arguments: [
        [0xFF, 0xFF, 0xFF, 0xFF] as [UInt8], [0x00, 0x10, 0x00, 0x01], [0x7F, 0xFF, 0xFF, 0xFF],
    ])
    func absurdLength(prefix: [UInt8]) throws {
        let (channel, processor) = try makeChannel(maximum: 1 << 20)
        // Only the prefix arrives: the decoder must not wait for (or allocate) the body.
        _ = try? channel.writeInbound(ByteBuffer(bytes: prefix))
        channel.embeddedEventLoop.run()
        let answers = try responses(channel)
        #expect(answers.count == 1)
        #expect(answers.first?.error.code == .frameTooLarge)
        #expect(processor.malformed == 1)
        #expect(!channel.isActive)
    }

    @Test("a frame exactly at the maximum is accepted")
    func atMaximum() throws {
        let request = ping(id: 1, payload: Array(repeating: 9, count: 200))
        let body: [UInt8] = try request.serializedBytes()
        let (channel, _) = try makeChannel(maximum: body.count)
        try channel.writeInbound(ByteBuffer(bytes: try frame(request)))
        #expect(try responses(channel).first?.id == 1)
    }

    @Test("garbage bodies get a malformed-message error and the connection keeps serving")
    func garbage() throws {
        let (channel, processor) = try makeChannel()
        var random = SystemRandomNumberGenerator()
        var expectedErrors = 0
        for length in [1, 2, 7, 64, 500] {
            // 0xFF bytes never form a valid field key, so these can never decode.
            var body = [UInt8](repeating: 0xFF, count: length)
            if length > 2 { for i in 1..<length { body[i] = UInt8.random(in: 0...255, using: &random) | 0x80 } }
            var buffer = ByteBuffer()
            buffer.writeFrame(body)
            try channel.writeInbound(buffer)
            expectedErrors += 1
        }
        try channel.writeInbound(ByteBuffer(bytes: try frame(ping(id: 99))))
        let answers = try responses(channel)
        #expect(answers.count == expectedErrors + 1)
        #expect(answers.dropLast().allSatisfy { $0.error.code == .malformedMessage })
        #expect(answers.last?.id == 99)
        #expect(processor.malformed == expectedErrors)
        #expect(channel.isActive)
    }

    @Test("a malformed request still gets its id back when the id precedes the damage")
    func idOfMalformed() throws {
        let (channel, _) = try makeChannel()
        // id = 300 (field 1 varint), then field 2 (check) claiming 50 bytes but holding 2.
        let body: [UInt8] = [0x08, 0xAC, 0x02, 0x12, 50, 0x0A, 0x00]
        var buffer = ByteBuffer()
        buffer.writeFrame(body)
        try channel.writeInbound(buffer)
        let answer = try #require(try responses(channel).first)
        #expect(answer.error.code == .malformedMessage)
        #expect(answer.id == 300)
    }

    @Test("the id scanner survives truncated and hostile varints")
    func scanner() {
        #expect(RequestIDScanner.id(in: ByteBuffer(bytes: [0x08, 0x05])) == 5)
        #expect(RequestIDScanner.id(in: ByteBuffer(bytes: [0x08])) == nil)
        #expect(RequestIDScanner.id(in: ByteBuffer(bytes: [0x08] + Array(repeating: 0xFF, count: 20))) == nil)
        #expect(RequestIDScanner.id(in: ByteBuffer(bytes: [0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])) == nil)
        #expect(RequestIDScanner.id(in: ByteBuffer(bytes: [])) == nil)
        #expect(RequestIDScanner.id(in: ByteBuffer(bytes: [0x0A, 0x01, 0x00, 0x08, 0x2A])) == 42)
    }

    @Test("a truncated frame at end of stream is dropped without an answer or a crash")
    func truncatedAtEOF() throws {
        let (channel, _) = try makeChannel()
        let bytes = try frame(ping(id: 5))
        try channel.writeInbound(ByteBuffer(bytes: bytes.dropLast(2)))
        #expect(try responses(channel).isEmpty)
        _ = try? channel.finish()
    }

    @Test("random byte streams never crash the decoder")
    func fuzzish() throws {
        var random = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let (channel, _) = try makeChannel(maximum: 4096)
            let count = Int.random(in: 0...300, using: &random)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
            var offset = 0
            while offset < bytes.count, channel.isActive {
                let step = Int.random(in: 1...32, using: &random)
                _ = try? channel.writeInbound(ByteBuffer(bytes: bytes[offset..<min(bytes.count, offset + step)]))
                offset += step
            }
            _ = try responses(channel)
            _ = try? channel.finish()
        }
        #expect(Bool(true), "no crash over 300 random streams")
    }
}
