import CorridorPolicy
import CorridorWire
import NIOCore
import NIOEmbedded
import Testing

@testable import CorridorProxy

/// The TLS passthrough listener's InspectHandler in an EmbeddedChannel: the paths that end in a
/// denial or before a decision. (Allowed connections dial real sockets; the integration tests cover them.)
@Suite(.timeLimit(.minutes(1)))
struct InspectHandlerPassthroughTests {
    let evil = ClientHelloBuilder(serverName: "evil.test")

    /// The common ending of a refused ClientHello for evil.test.
    private func expectEvilDenied(_ harness: ProxyHarness, _ channel: EmbeddedChannel,
                                  sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(try channel.drainOutbound() == accessDeniedAlert, sourceLocation: sourceLocation)
        #expect(!channel.isActive, "the connection is closed after the alert", sourceLocation: sourceLocation)
        let record = try harness.onlyRecord(sourceLocation: sourceLocation)
        #expect(record.string(LogKey.decision) == "deny", sourceLocation: sourceLocation)
        #expect(record.string(LogKey.reason) == "no ExternalService matches evil.test", sourceLocation: sourceLocation)
        #expect(record.string(LogKey.closeCause) == "denied", sourceLocation: sourceLocation)
        #expect(record.string(LogKey.sni) == "evil.test", sourceLocation: sourceLocation)
        #expect(record.strings(LogKey.alpn) == ["h2", "http/1.1"], sourceLocation: sourceLocation)
        #expect(record.string(LogKey.listener) == "tls", sourceLocation: sourceLocation)
        #expect(record.string(LogKey.source) == "127.0.0.1:40001", sourceLocation: sourceLocation)
    }

    @Test func unmatchedNameGetsAccessDeniedAlertAndOneDenyRecord() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            try channel.send(evil.record)
            try expectEvilDenied(harness, channel)
            let record = try harness.onlyRecord()
            let identity = try #require(record[LogKey.identity] as? [String: Any])
            #expect(identity.string(LogKey.workload) == "checkout")
            #expect(identity.string(LogKey.namespace) == "payments")
            #expect(record.strings(LogKey.tlsVersions) == ["TLSv1.3", "TLSv1.2"])
            #expect(record[LogKey.policyGeneration] as? Int == 7)
            #expect(record[LogKey.port] as? Int == 443)
        }
    }

    @Test func helloDrippedOneBytePerWriteIsDecidedOnTheLastByte() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            let bytes = evil.record
            for byte in bytes.dropLast() {
                try channel.send([byte])
                #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
                #expect(channel.isActive)
            }
            #expect(try harness.records().isEmpty, "nothing is logged before the decision")
            try channel.send([bytes.last!])
            try expectEvilDenied(harness, channel)
        }
    }

    @Test func helloSplitAcrossTwoRecordsIsReassembled() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            let bytes = evil.twoRecords(firstPart: 40)
            #expect(bytes.count == evil.record.count + 5, "two record headers")
            try channel.send(bytes)
            try expectEvilDenied(harness, channel)
        }
    }

    @Test func twoRecordsInSeparateWritesAreReassembled() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            let bytes = evil.twoRecords(firstPart: 60)
            let firstRecord = 5 + 60
            try channel.send(Array(bytes[..<firstRecord]))
            #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
            #expect(channel.isActive)
            try channel.send(Array(bytes[firstRecord...]))
            try expectEvilDenied(harness, channel)
        }
    }

    @Test func plainHTTPIsRefusedAsNotTLS() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            try channel.send("GET / HTTP/1.1\r\n\r\n")
            #expect(try channel.drainOutbound().isEmpty, "no TLS alert to a client that does not speak TLS")
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "invalid_client_hello")
            #expect(record.string(LogKey.decision) == "deny")
            #expect(record.string(LogKey.reason)?.hasPrefix("invalid ClientHello: the connection did not start with a TLS record") == true)
            #expect(harness.renderedMetrics.contains(#"corridor_clienthello_failures_total{reason="not_tls"} 1"#))
        }
    }

    @Test func malformedHelloGetsDecodeErrorAlert() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            // A handshake record whose first message is a ServerHello (type 2), not a ClientHello.
            var handshake = evil.handshake
            handshake[0] = 2
            try channel.send(ClientHelloBuilder.frame(handshake))
            #expect(try channel.drainOutbound() == TLSAlert.decodeError.recordBytes)
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "invalid_client_hello")
            #expect(harness.renderedMetrics.contains(#"corridor_clienthello_failures_total{reason="not_client_hello"} 1"#))
        }
    }

    @Test func encryptedClientHelloIsDeniedEvenForAGrantedName() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            let hello = ClientHelloBuilder(serverName: "api.allowed.test",
                                           extraExtensions: [tlsExtension(0xfe0d, [0x00, 0x00, 0x01, 0x00, 0x01])])
            try channel.send(hello.record)
            #expect(try channel.drainOutbound() == accessDeniedAlert)
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.decision) == "deny")
            #expect(record.string(LogKey.closeCause) == "denied")
            #expect(record.string(LogKey.reason)?.contains("Encrypted Client Hello") == true)
            #expect(record[LogKey.ech] as? Bool == true)
            #expect(record.string(LogKey.sni) == "api.allowed.test")
        }
    }

    @Test func handshakeTimeoutClosesAPartialHello() throws {
        try withHarness(limits: "{handshakeTimeout: 2s}") { harness in
            let channel = try harness.connect(.tls)
            try channel.send(Array(evil.record.prefix(20)))
            harness.loop.advanceTime(by: .milliseconds(1_900))
            #expect(channel.isActive, "not before the timeout")
            #expect(try harness.records().isEmpty)
            harness.loop.advanceTime(by: .milliseconds(200))
            #expect(!channel.isActive)
            #expect(try channel.drainOutbound().isEmpty)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "handshake_timeout")
            #expect(record.string(LogKey.reason) == "no complete ClientHello within 2s")
            #expect(record.string(LogKey.decision) == "deny")
        }
    }

    @Test func unknownSourceIsDenied() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls, from: strangerSource)
            try channel.send(ClientHelloBuilder(serverName: "api.allowed.test").record)
            #expect(try channel.drainOutbound() == accessDeniedAlert)
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.decision) == "deny")
            #expect(record.string(LogKey.reason)?.contains("\(strangerSource) is not a known workload") == true)
            #expect(record.string(LogKey.identity) == "unknown")
            #expect(record.string(LogKey.source) == "\(strangerSource):40001")
        }
    }

    @Test func clientClosingBeforeACompleteHelloIsRecorded() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            try channel.send(Array(evil.record.prefix(30)))
            try channel.close().wait()
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "client_closed_before_hello")
            #expect(record.string(LogKey.reason) == "the client closed before sending a complete ClientHello")
            #expect(record.string(LogKey.decision) == "deny")
        }
    }

    @Test func clientClosingWithoutSendingAnythingIsRecorded() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            try channel.close().wait()
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "client_closed_before_hello")
            #expect(record.string(LogKey.reason) == "the client closed without sending a ClientHello")
        }
    }

    @Test func clientShuttingItsWriteSideBeforeAHelloIsRecorded() throws {
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            try channel.send(Array(evil.record.prefix(30)))
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "client_closed_before_hello")
            #expect(record.string(LogKey.reason) == "the client shut its side before sending a complete ClientHello")
        }
    }

    @Test func connectionErrorBeforeTheHelloIsRecorded() throws {
        struct Reset: Error, CustomStringConvertible { var description: String { "connection reset" } }
        try withHarness { harness in
            let channel = try harness.connect(.tls)
            try channel.send(Array(evil.record.prefix(10)))
            channel.pipeline.fireErrorCaught(Reset())
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "client_error")
            #expect(record.string(LogKey.reason) == "client connection error: connection reset")
        }
    }

    @Test func connectionBeyondTheLimitIsClosedAtOnce() throws {
        try withHarness(limits: "{maxConnections: 1}") { harness in
            let first = try harness.connect(.tls, port: 40_001)
            let second = try harness.connect(.tls, port: 40_002)
            #expect(first.isActive)
            #expect(!second.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "connection_limit")
            #expect(record.string(LogKey.source) == "127.0.0.1:40002")
            #expect(record.string(LogKey.reason)?.contains("spec.limits.maxConnections") == true)
            #expect(harness.proxy.openConnections == 1)

            // Once the first one is gone, its slot is free again.
            try first.close().wait()
            harness.loop.run()
            #expect(harness.proxy.openConnections == 0)
            let third = try harness.connect(.tls, port: 40_003)
            #expect(third.isActive)
            #expect(harness.proxy.openConnections == 1)
        }
    }
}
