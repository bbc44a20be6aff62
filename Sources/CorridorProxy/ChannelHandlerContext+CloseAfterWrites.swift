import NIOCore

extension ChannelHandlerContext {
    /// Closes the channel (`mode`) once every write made through this context so far has gone out:
    /// NIO's close drops writes the socket has not taken yet (and so does an output shutdown once
    /// the input has ended, which NIO makes a full close). An empty buffer written behind them
    /// completes after they do. A peer that takes nothing is closed anyway after `limit`.
    func closeAfterWrites(_ mode: CloseMode = .all, within limit: Duration) {
        let cutOff = eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(limit.nanoseconds)) {
            self.close(promise: nil)
        }
        writeAndFlush(NIOAny(channel.allocator.buffer(capacity: 0))).assumeIsolated().whenComplete { result in
            cutOff.cancel()
            if case .failure = result { return self.close(promise: nil) }
            self.close(mode: mode, promise: nil)
        }
    }
}
