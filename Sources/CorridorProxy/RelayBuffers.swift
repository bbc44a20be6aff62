import NIOCore
import NIOPosix

/// Receive buffers of relayed connections, and what an idle connection keeps of them.
///
/// NIO keeps a channel's receive buffers for reuse (up to `maxMessagesPerRead` of them), and an
/// idle relay would keep paying for them: about 1 KiB on each of its two channels, a third of
/// what an idle connection cost. Relayed channels therefore read with ``RelayRecvAllocator``:
/// NIO keeps the first buffer a channel reads into, and that one is 16 bytes; every later read
/// gets a fresh buffer sized by NIO's adaptive allocator (first 1 KiB, so a ClientHello or an
/// origin's first flight takes one read and one write), freed as soon as its bytes are written
/// on. Two reads per wake-up while a channel starts, so the 16-byte read costs one `read(2)` and
/// no extra wake-up; the relay then trims each channel to one kept buffer (see ``GlueHandler``).
/// A bulk transfer switches to NIO's reusing adaptive allocator, four buffers per wake-up.
enum RelayBuffers {
    /// Reads per wake-up while a channel starts: the 16-byte first read, then a full one.
    static let startingMessagesPerRead: UInt = 2
    /// Reads per wake-up of a relayed channel (and the buffers NIO keeps for it).
    static let maxMessagesPerRead: UInt = 1
    /// A read this large marks a bulk transfer (see ``GlueHandler``).
    static let bulkReadBytes = 16384
    static let bulkMaxMessagesPerRead: UInt = 4
    /// The reusing allocator of bulk transfers.
    static var bulkAllocator: AdaptiveRecvByteBufferAllocator { AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 65536, maximum: 65536) }
    /// NIO's adaptive sizes: 1 KiB first, between 64 B and 64 KiB. Plain-HTTP client connections
    /// (parsed by NIO's HTTP decoder, not relayed) read with it; ``RelayRecvAllocator`` follows
    /// the same rule (a test checks that it does).
    static var adaptiveAllocator: AdaptiveRecvByteBufferAllocator { AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536) }

    /// Sets a new channel's options directly (in its initializer, before it is registered): a
    /// bootstrap's option list costs a chain of futures and dynamic casts per connection.
    /// `relayed`: its bytes are relayed (``RelayRecvAllocator``, two reads per wake-up while it
    /// starts); else it is a plain-HTTP client connection.
    static func configure(_ channel: any Channel, relayed: Bool) throws {
        guard let options = channel.syncOptions else { return }
        try options.setOption(.allowRemoteHalfClosure, value: true)
        if relayed {
            try options.setOption(.maxMessagesPerRead, value: startingMessagesPerRead)
            try options.setOption(.recvAllocator, value: RelayRecvAllocator())
        } else {
            try options.setOption(.maxMessagesPerRead, value: maxMessagesPerRead)
            try options.setOption(.recvAllocator, value: adaptiveAllocator)
        }
    }
}
