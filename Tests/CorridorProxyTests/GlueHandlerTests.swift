import CorridorPolicy
import NIOCore
import NIOEmbedded
import Testing

@testable import CorridorProxy

/// Counts the `read()` calls that reach it (it sits between the GlueHandler and the channel's head).
private final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    var reads = 0
    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

/// Records close modes. EmbeddedChannel has no half-close: its core treats `close(mode: .output)`
/// as a full close. So a `.output` close is recorded and answered here, as a socket that can
/// half-close would, and only full closes go on to the channel.
private final class CloseRecorder: ChannelOutboundHandler {
    typealias OutboundIn = Any
    var modes: [CloseMode] = []
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        modes.append(mode)
        if mode == .output {
            promise?.succeed(())
        } else {
            context.close(mode: mode, promise: promise)
        }
    }
}

/// A client channel and an upstream channel on one EmbeddedEventLoop, glued by a matched pair.
private final class GluedPair {
    let harness: ProxyHarness
    let record: ConnectionRecord
    let client: EmbeddedChannel
    let upstream: EmbeddedChannel
    let session: RelaySession
    let clientReads = ReadCounter()
    let upstreamReads = ReadCounter()
    let clientCloses = CloseRecorder()
    let upstreamCloses = CloseRecorder()

    init(harness: ProxyHarness) throws {
        self.harness = harness
        let source = try SocketAddress(ipAddress: workloadSource, port: 40_100)
        let machine = try relayingMachine(harness)
        record = machine.record
        let session = RelaySession(machine: machine, now: harness.loop.now)
        self.session = session
        let (clientGlue, upstreamGlue) = GlueHandler.matchedPair(session: session)
        client = EmbeddedChannel(loop: harness.loop)
        upstream = EmbeddedChannel(loop: harness.loop)
        try client.pipeline.syncOperations.addHandlers([clientReads, clientCloses, clientGlue])
        try upstream.pipeline.syncOperations.addHandlers([upstreamReads, upstreamCloses, upstreamGlue])
        client.remoteAddress = source
        upstream.remoteAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 443)
        try client.connect(to: client.remoteAddress!).wait()
        try upstream.connect(to: upstream.remoteAddress!).wait()
    }

    func finish() {
        _ = try? client.finish(acceptAlreadyClosed: true)
        _ = try? upstream.finish(acceptAlreadyClosed: true)
    }
}

private func withPair(_ body: (GluedPair) throws -> Void) throws {
    try withHarness(limits: "{idleTimeout: 30s}", gatewayExtra: dialablePrivateRange) { harness in
        let pair = try GluedPair(harness: harness)
        defer { pair.finish() }
        try body(pair)
    }
}

private func text(_ buffer: ByteBuffer?) -> String? { buffer.map { String(buffer: $0) } }

@Suite(.timeLimit(.minutes(1)))
struct GlueHandlerTests {
    @Test func bytesReadOnOneSideAreWrittenToTheOther() throws {
        try withPair { pair throws in
            try pair.client.writeInbound(ByteBuffer(string: "hello upstream"))
            #expect(text(try pair.upstream.readOutbound(as: ByteBuffer.self)) == "hello upstream")
            try pair.upstream.writeInbound(ByteBuffer(string: "hello client!"))
            #expect(text(try pair.client.readOutbound(as: ByteBuffer.self)) == "hello client!")
            #expect(try pair.client.readInbound(as: ByteBuffer.self) == nil, "the glue consumes what it relays")
            #expect(pair.record.bytesUp == 14)
            #expect(pair.record.bytesDown == 13)
        }
    }

    @Test func writesAreFlushedAtReadComplete() throws {
        try withPair { pair throws in
            pair.client.pipeline.fireChannelRead(ByteBuffer(string: "one"))
            pair.client.pipeline.fireChannelRead(ByteBuffer(string: "two"))
            #expect(try pair.upstream.readOutbound(as: ByteBuffer.self) == nil, "written, not yet flushed")
            pair.client.pipeline.fireChannelReadComplete()
            #expect(text(try pair.upstream.readOutbound(as: ByteBuffer.self)) == "one")
            #expect(text(try pair.upstream.readOutbound(as: ByteBuffer.self)) == "two")
        }
    }

    @Test func readPassesWhileThePartnerIsWritable() throws {
        try withPair { pair throws in
            let before = pair.clientReads.reads
            pair.client.read()
            #expect(pair.clientReads.reads == before + 1)
        }
    }

    @Test func readWaitsUntilThePartnerIsWritableAgain() throws {
        try withPair { pair throws in
            let before = pair.clientReads.reads
            pair.upstream.isWritable = false
            pair.upstream.pipeline.fireChannelWritabilityChanged()
            pair.client.read()
            #expect(pair.clientReads.reads == before, "held back while the upstream cannot take more")

            // A writability change that is still not writable does not release it.
            pair.upstream.pipeline.fireChannelWritabilityChanged()
            #expect(pair.clientReads.reads == before)

            pair.upstream.isWritable = true
            pair.upstream.pipeline.fireChannelWritabilityChanged()
            #expect(pair.clientReads.reads == before + 1, "issued once the upstream is writable")

            // Released once only.
            pair.upstream.pipeline.fireChannelWritabilityChanged()
            #expect(pair.clientReads.reads == before + 1)
        }
    }

    @Test func backpressureWorksInTheOtherDirection() throws {
        try withPair { pair throws in
            let before = pair.upstreamReads.reads
            pair.client.isWritable = false
            pair.upstream.read()
            #expect(pair.upstreamReads.reads == before)
            pair.client.isWritable = true
            pair.client.pipeline.fireChannelWritabilityChanged()
            #expect(pair.upstreamReads.reads == before + 1)
        }
    }

    @Test func inputClosedHalfClosesThePartnersOutput() throws {
        try withPair { pair throws in
            pair.client.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            #expect(pair.upstreamCloses.modes == [.output])
            #expect(pair.clientCloses.modes.isEmpty, "the client's own side stays open")
            #expect(pair.upstream.isActive)

            // The other direction goes on.
            try pair.upstream.writeInbound(ByteBuffer(string: "response"))
            #expect(text(try pair.client.readOutbound(as: ByteBuffer.self)) == "response")
            #expect(try pair.harness.records().isEmpty, "no record until both sides close")
        }
    }

    @Test func upstreamInputClosedHalfClosesTheClientsOutput() throws {
        try withPair { pair throws in
            pair.upstream.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            #expect(pair.clientCloses.modes == [.output])
            #expect(pair.upstreamCloses.modes.isEmpty)
        }
    }

    @Test func bothWaysEndingInTurnIsACompletedRelay() throws {
        try withPair { pair throws in
            try pair.client.writeInbound(ByteBuffer(string: "12345"))
            try pair.upstream.writeInbound(ByteBuffer(string: "1234567"))
            pair.client.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            pair.upstream.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            #expect(pair.upstreamCloses.modes == [.output] && pair.clientCloses.modes == [.output])
            // Input and output ended: NIO closes such a socket, and the glue the other.
            try pair.client.close().wait()
            #expect(!pair.upstream.isActive)
            let record = try pair.harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "completed")
            #expect(record[LogKey.bytesUp] as? Int == 5)
            #expect(record[LogKey.bytesDown] as? Int == 7)
        }
    }

    /// A channel goes inactive on its own only when its socket failed (a reset, a write that
    /// failed; a clean end arrives as `inputClosed`), which NIO does not always report as an error.
    @Test func aSideThatGoesAwayClosesTheOtherAndIsRecordedAsItsFailure() throws {
        try withPair { pair throws in
            try pair.client.writeInbound(ByteBuffer(string: "12345"))
            try pair.upstream.writeInbound(ByteBuffer(string: "1234567"))
            try pair.client.close().wait()
            #expect(!pair.upstream.isActive, "the partner is closed fully")
            #expect(pair.upstreamCloses.modes == [.all])
            let record = try pair.harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "client_error")
            #expect(record.string(LogKey.decision) == "allow")
            #expect(record.string(LogKey.reason) == "EgressPolicy payments/checkout-egress grants ExternalService allowed-api")
            #expect(record[LogKey.bytesUp] as? Int == 5)
            #expect(record[LogKey.bytesDown] as? Int == 7)
        }
    }

    @Test func theSweeperClosesARelayIdleForItsLimitAndNotBefore() throws {
        try withPair { pair throws in
            let sweeper = LoopConnections(eventLoop: pair.harness.loop)
            pair.session.clientChannel = pair.client
            sweeper.add(pair.session)
            pair.harness.loop.advanceTime(by: .seconds(20))
            // Traffic in either direction restarts the clock.
            try pair.upstream.writeInbound(ByteBuffer(string: "still here"))
            pair.harness.loop.advanceTime(by: .seconds(20))
            #expect(pair.client.isActive, "40 s old, but only 20 s idle")
            pair.harness.loop.advanceTime(by: .seconds(11))
            #expect(!pair.client.isActive)
            #expect(!pair.upstream.isActive)
            let record = try pair.harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "idle_timeout")
            #expect(record.string(LogKey.decision) == "allow")
            #expect(sweeper.count == 0, "a closed relay leaves the sweeper")
        }
    }

    @Test func theSweeperKeepsTrackOfManyRelaysAsTheyComeAndGo() throws {
        let harness = try ProxyHarness(limits: "{idleTimeout: 30s}", gatewayExtra: dialablePrivateRange)
        let sweeper = LoopConnections(eventLoop: harness.loop)
        let sessions = try (0..<5).map { RelaySession(machine: try relayingMachine(harness, port: 40_200 + $0), now: harness.loop.now) }
        for session in sessions { sweeper.add(session) }
        sweeper.add(sessions[2])
        #expect(sweeper.count == 5, "adding a watched relay again changes nothing")
        // The first, a middle one and the last leave (swapped out of the array in turn).
        for index in [0, 2, 4] { sweeper.remove(sessions[index]) }
        sweeper.remove(sessions[2])
        #expect(sweeper.count == 2, "removing a relay twice changes nothing")
        #expect(sessions.map { $0.table != nil } == [false, true, false, true, false])
        // The two left are still swept: both go idle and each closes once, which removes it.
        harness.loop.advanceTime(by: .seconds(20))
        sessions[3].count(bytes: 1, fromClient: true, at: harness.loop.now)
        harness.loop.advanceTime(by: .seconds(11))
        sweeper.sweep()
        sessions[1].sideClosed(isClientSide: true)
        sessions[1].sideClosed(isClientSide: false)
        #expect(sweeper.count == 1, "the idle one left; the one with traffic 11 s ago stays")
        #expect(sessions[3].table === sweeper)
        sessions[3].sideClosed(isClientSide: true)
        sessions[3].sideClosed(isClientSide: false)
        #expect(sweeper.count == 0)
    }

    @Test func upstreamErrorClosesTheRelayWithThatCause() throws {
        try withPair { pair throws in
            struct Boom: Error {}
            pair.upstream.pipeline.fireErrorCaught(Boom())
            #expect(!pair.client.isActive)
            #expect(!pair.upstream.isActive)
            #expect(try pair.harness.onlyRecord().string(LogKey.closeCause) == "upstream_error")
        }
    }
}
