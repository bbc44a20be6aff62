import Logging
import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// On a listening channel: when accept fails for want of descriptors or memory (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM), the socket stays readable and the event loop would spin on it. This stops
/// reading it (auto-read off, which takes it out of the poll set) for `pause`, then reads again;
/// connections wait in the backlog meanwhile. NIO's own AcceptBackoffHandler cannot do this here:
/// it only delays the next read request, and NIO keeps the socket in the poll set while a read
/// is pending, which stays so until one accept succeeds.
final class AcceptPauseHandler: ChannelInboundHandler {
    typealias InboundIn = any Channel

    private let listener: String
    private let logger: Logger
    private let pause: TimeAmount
    private var paused = false

    init(listener: String, logger: Logger, pause: TimeAmount = .milliseconds(250)) {
        self.listener = listener
        self.logger = logger
        self.pause = pause
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let ioError = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(ioError.errnoCode) else {
            context.fireErrorCaught(error)
            return
        }
        guard !paused, let options = context.channel.syncOptions else { return }
        paused = true
        logger.warning("cannot accept on the \(listener) listener: \(String(cString: strerror(ioError.errnoCode))); accepting again in \(pause.nanoseconds / 1_000_000) ms")
        try? options.setOption(.autoRead, value: false)
        context.eventLoop.assumeIsolated().scheduleTask(in: pause) { [self] in
            paused = false
            guard context.channel.isActive else { return }
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }
}
