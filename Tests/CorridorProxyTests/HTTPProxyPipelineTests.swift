import CorridorPolicy
import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import CorridorProxy

/// The hand-over of a plain-HTTP connection from the splice plane's connect listener to the HTTP path.
@Suite struct HTTPProxyPipelineTests {
    @Test func aConnectionTheHTTPPathCannotAdoptIsClosedRecordedAndItsSlotFreed() throws {
        try withHarness(limits: "{maxConnections: 1}") { h in
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            defer { try? group.syncShutdownGracefully() }
            let gateway = h.proxy.policy.current.gateway
            let source = try SocketAddress(ipAddress: workloadSource, port: 40_300)
            guard case .success(let slot) = h.proxy.admit(source: IPAddress(source), gateway: gateway) else {
                Issue.record("the first connection was not admitted")
                return
            }
            // A UDP socket: NIO cannot set TCP_NODELAY on it, and gives up on the channel.
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            try #require(fd >= 0)
            var before = stat()
            try #require(fstat(fd, &before) == 0)
            HTTPProxyPipeline.adopt(fd, source: source, bytes: ByteBuffer(string: "GET http://api.allowed.test/ HTTP/1.1\r\n\r\n"),
                                    slot: slot, listenerName: "connect", proxy: h.proxy, group: group)
            var records: [[String: Any]] = []
            for _ in 0..<100 where records.isEmpty {
                Thread.sleep(forTimeInterval: 0.05)
                records = (try? h.records()) ?? []
            }
            let record = try #require(records.first, "no record of the connection")
            // The slot is given back just after the record is written, on the event loop.
            for _ in 0..<100 where h.proxy.openConnections != 0 { Thread.sleep(forTimeInterval: 0.05) }
            #expect(records.count == 1)
            #expect(record.string(LogKey.listener) == "connect")
            #expect(record.string(LogKey.closeCause) == "internal_error")
            #expect(record.string(LogKey.decision) == "deny")
            #expect(record.string(LogKey.reason)?.hasPrefix("the plain-HTTP connection could not be handed to the HTTP path: ") == true)
            #expect(record.string(LogKey.hint)?.contains("operational log") == true)
            #expect((record[LogKey.identity] as? [String: Any])?[LogKey.namespace] as? String != nil, "the source is identified")
            // The descriptor was closed with the failed channel (its number may serve another file since).
            var after = stat()
            #expect(fstat(fd, &after) != 0 || after.st_ino != before.st_ino)
            // The slot came back: with maxConnections 1, another connection is admitted.
            guard case .success(let next) = h.proxy.admit(source: IPAddress(source), gateway: gateway) else {
                Issue.record("the failed connection kept its admission slot")
                return
            }
            h.proxy.release(next)
            #expect(h.renderedMetrics.contains(#"corridor_connections_closed_total{cause="internal_error"} 1"#))
        }
    }
}
