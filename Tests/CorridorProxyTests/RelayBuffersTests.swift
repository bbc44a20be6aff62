import NIOCore
import Testing

@testable import CorridorProxy

/// What an idle relay keeps of its receive buffers: NIO's per-channel pool driven by
/// ``RelayRecvAllocator`` keeps only the 16-byte first buffer once the relay trims the channel to
/// one read per wake-up. These tests pin the NIO pool behaviour the design relies on.
@Suite struct RelayBuffersTests {
    /// One simulated read of `bytes` bytes through the pool, as NIO's stream channel does it.
    private func read(_ pool: inout NIOPooledRecvBufferAllocator, _ bytes: Int) -> ByteBuffer {
        let (buffer, count) = pool.buffer(allocator: ByteBufferAllocator()) { buffer -> Int in
            let n = min(bytes, buffer.writableBytes)
            buffer.writeRepeatingByte(0x17, count: n)
            return n
        }
        pool.record(actualReadBytes: count)
        return buffer
    }

    @Test func theFirstBufferIsSixteenBytesAndLaterOnesFollowTheAdaptiveSizes() {
        var pool = NIOPooledRecvBufferAllocator(capacity: Int(RelayBuffers.startingMessagesPerRead), recvAllocator: RelayRecvAllocator())
        let first = read(&pool, 517)
        #expect(first.readableBytes == 16, "the first read fills the 16-byte buffer")
        #expect(first.writableBytes == 0, "a full buffer makes NIO read again in the same wake-up")
        let second = read(&pool, 501)
        #expect(second.readableBytes == 501, "the rest of a ClientHello in one read")
        #expect(second.capacity >= 1024)
    }

    @Test func aTrimmedChannelKeepsOnlyTheFirstBuffer() {
        var pool = NIOPooledRecvBufferAllocator(capacity: Int(RelayBuffers.startingMessagesPerRead), recvAllocator: RelayRecvAllocator())
        _ = read(&pool, 517)
        _ = read(&pool, 501)
        #expect(pool.count == 2)
        pool.updateCapacity(to: Int(RelayBuffers.maxMessagesPerRead))
        #expect(pool.count == 1, "the relay's trim drops the second buffer")
        // Later reads get fresh buffers that the pool does not keep (they are freed once written on).
        for size in [90, 1200, 40, 3000] {
            let buffer = read(&pool, size)
            #expect(buffer.readableBytes == min(size, buffer.capacity))
            #expect(buffer.capacity > RelayRecvAllocator.firstBufferBytes)
            #expect(pool.count == 1)
        }
    }

    @Test func aBulkTransferSwitchesToTheReusingAllocator() {
        var pool = NIOPooledRecvBufferAllocator(capacity: Int(RelayBuffers.startingMessagesPerRead), recvAllocator: RelayRecvAllocator())
        _ = read(&pool, 517)
        pool.updateCapacity(to: Int(RelayBuffers.maxMessagesPerRead))
        pool.recvAllocator = RelayBuffers.bulkAllocator
        pool.updateCapacity(to: Int(RelayBuffers.bulkMaxMessagesPerRead))
        var kept = ByteBuffer()
        for _ in 0..<3 {
            kept = read(&pool, 1 << 20)
            #expect(kept.readableBytes == 65536, "bulk reads fill 64 KiB buffers")
        }
        #expect(pool.count <= Int(RelayBuffers.bulkMaxMessagesPerRead))
    }

    @Test func laterSizesFollowNIOsAdaptiveRuleAndTheAllocatorFitsAnExistentialInline() {
        #expect(MemoryLayout<RelayRecvAllocator>.size <= 3 * MemoryLayout<Int>.size, "no heap box per channel")
        var ours = RelayRecvAllocator()
        var nio = RelayBuffers.adaptiveAllocator
        _ = ours.record(actualReadBytes: 16)  // the 16-byte first read
        var generator = SystemRandomNumberGenerator()
        for step in 0..<20_000 {
            #expect(ours.nextAdaptiveSize == nio.nextBufferSize(), "step \(step)")
            if ours.nextAdaptiveSize != nio.nextBufferSize() { return }
            let size = ours.nextAdaptiveSize
            // Reads that fill the buffer, fit in half or a quarter of it, or land in between.
            let read = [size, size / 2, size / 4, size * 3 / 4, 0, Int.random(in: 0...size, using: &generator)].randomElement(using: &generator)!
            let mayGrow = ours.record(actualReadBytes: read)
            #expect(mayGrow, "never lets NIO reuse a later buffer")
            _ = nio.record(actualReadBytes: read)
        }
    }
}
