import NIOCore

/// A receive allocator whose first buffer is 16 bytes and whose later buffers NIO never keeps:
/// NIO's buffer pool stores the first buffer it allocates for a channel, reuses a stored buffer
/// only when the allocator names a next size (`nextBufferSize()`; here nil) or says reads will
/// not grow (`record`; here always "may grow"), and stores later buffers only up to
/// `maxMessagesPerRead`. Later sizes follow NIO's adaptive rule (``RelayBuffers/adaptiveAllocator``:
/// 1 KiB first, powers of two from 64 B to 64 KiB, double after a read that fills the buffer,
/// halve after two reads in a row that fit in half of it), kept in three bytes: a channel stores
/// its allocator as an existential, and one over 24 bytes (NIO's is 48) costs a heap box per channel.
struct RelayRecvAllocator: RecvByteBufferAllocator {
    static let firstBufferBytes = 16
    static let minimumShift: UInt8 = 6  // 64 B
    static let initialShift: UInt8 = 10  // 1 KiB
    static let maximumShift: UInt8 = 16  // 64 KiB
    /// log2 of the next buffer's size, after the first.
    private(set) var shift = Self.initialShift
    private var first = true
    private var decreaseNow = false

    var nextAdaptiveSize: Int { 1 << Int(shift) }

    func buffer(allocator: ByteBufferAllocator) -> ByteBuffer {
        allocator.buffer(capacity: first ? Self.firstBufferBytes : nextAdaptiveSize)
    }

    func nextBufferSize() -> Int? { nil }

    mutating func record(actualReadBytes: Int) -> Bool {
        if first {
            first = false
            return true
        }
        let size = nextAdaptiveSize
        if actualReadBytes <= size >> 1 && shift > Self.minimumShift {
            if decreaseNow { shift -= 1 }
            decreaseNow.toggle()
        } else if actualReadBytes >= size && shift < Self.maximumShift {
            shift += 1
            decreaseNow = false
        } else {
            decreaseNow = false
        }
        return true
    }
}
