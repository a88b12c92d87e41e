import NIOCore
import SluiceProto
import Synchronization

/// The later answers of a streaming request (`WatchAlerts`): the processor keeps it and pushes
/// frames with the request's id from any thread; each push hops to the connection's event loop
/// and is written and flushed there, between whole frames of other answers.
///
/// A reader that does not keep up is not queued for without bound: while the connection is not
/// writable (NIO's outbound high-water mark), pushes are dropped and counted, and the next frame
/// that goes out tells the reader how many it missed.
public final class ResponseStream: Sendable {
    /// The streaming request's id, carried by every push.
    public let id: UInt64
    let eventLoop: any EventLoop
    let writer: NIOLoopBound<(ConnectionHandler, ChannelHandlerContext)>
    let open = Atomic<Bool>(true)
    /// Items dropped since the last frame that went out (touched on the event loop only, but
    /// atomic so the stream stays Sendable without a lock).
    let dropped = Atomic<UInt64>(0)

    init(id: UInt64, handler: ConnectionHandler, context: ChannelHandlerContext) {
        self.id = id
        eventLoop = context.eventLoop
        writer = NIOLoopBound((handler, context), eventLoop: context.eventLoop)
    }

    /// False once the connection has closed: the processor forgets the stream.
    public var isOpen: Bool { open.load(ordering: .relaxed) }

    func close() { open.store(false, ordering: .relaxed) }

    /// Sends one more frame: `make(dropped)` builds it, given how many items were dropped since
    /// the previous frame; `items` is how many this frame carries, counted as dropped if it
    /// cannot be written now.
    public func push(items: Int, _ make: @escaping @Sendable (_ dropped: UInt64) -> WireResponse) {
        guard isOpen else { return }
        eventLoop.execute { [self] in
            guard isOpen else { return }
            let (handler, context) = writer.value
            guard context.channel.isWritable, !handler.closing else {
                dropped.add(UInt64(items), ordering: .relaxed)
                return
            }
            var response = make(dropped.exchange(0, ordering: .relaxed))
            response.id = id
            handler.write(response, context: context)
            handler.flushPending(context: context)
        }
    }
}
