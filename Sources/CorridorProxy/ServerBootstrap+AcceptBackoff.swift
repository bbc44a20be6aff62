import Logging
import NIOCore
import NIOPosix

extension ServerBootstrap {
    /// Pauses accepting on the listener named `name` for a moment when accept fails for want of
    /// descriptors or memory, instead of spinning on it (see ``AcceptPauseHandler``), as the
    /// splice plane does.
    func backingOffFailedAccepts(listener name: String, logger: Logger) -> ServerBootstrap {
        serverChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(AcceptPauseHandler(listener: name, logger: logger))
            }
        }
    }
}
