import CorridorPolicy
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import CorridorProxy

/// What `/flows/stream` can hold is bounded whoever connects (found in review: 200 clients that
/// read nothing grew the gateway to 1.9 GB): a bounded number of clients, a bounded queue each,
/// and a client that takes nothing for `maxStall` is closed.
@Suite struct FlowStreamTests {
    private let key = FlowKey(namespace: "payments", workload: "checkout", serviceAccount: "checkout", unknownSource: "", listener: "tls",
                              destination: "api.example", port: 443, decision: "deny", externalService: "", egressPolicy: "")

    /// A client, behind to begin with, whose state, closes and bytes written the test sees.
    final class Client: Sendable {
        let behind = Atomic<Bool>(true), closed = Atomic<Int>(0), written = Atomic<Int>(0)
    }

    static func subscribedClient(filter: FlowStream.Filter = .init()) -> (FlowStream, EmbeddedEventLoop, Client) {
        let stream = FlowStream(), loop = EmbeddedEventLoop(), client = Client()
        _ = stream.subscribe(filter: filter, source: IPAddress(parsing: "10.0.0.1"), eventLoop: loop, state: { client.behind.load(ordering: .relaxed) ? .behind : .ready },
                             close: { client.closed.add(1, ordering: .relaxed) }, write: { client.written.add($0.count, ordering: .relaxed) })
        return (stream, loop, client)
    }

    @Test func atMostMaxSubscribersStreamAtOnce() {
        let stream = FlowStream()
        let loop = EmbeddedEventLoop()
        var ids: [ObjectIdentifier] = []
        for _ in 0..<FlowStream.maxSubscribers {
            let id = stream.subscribe(filter: .init(), source: IPAddress(parsing: "10.0.0.\(ids.count / 4)"), eventLoop: loop, state: { .ready }, close: {}, write: { _ in })
            ids.append(try! id.get())
        }
        #expect(stream.subscribe(filter: .init(), source: IPAddress(parsing: "10.9.9.9"), eventLoop: loop, state: { .ready }, close: {}, write: { _ in }) == .failure(.full))
        stream.unsubscribe(ids[0])
        #expect((try? stream.subscribe(filter: .init(), source: IPAddress(parsing: "10.9.9.9"), eventLoop: loop, state: { .ready }, close: {}, write: { _ in }).get()) != nil)
    }

    /// One address cannot take every place (found in review: 32 clients that read nothing kept
    /// operators out for as long as they stayed).
    @Test func atMostFourStreamFromOneAddress() {
        let stream = FlowStream()
        let loop = EmbeddedEventLoop()
        for _ in 0..<FlowStream.maxSubscribersPerSource {
            #expect((try? stream.subscribe(filter: .init(), source: IPAddress(parsing: "10.0.0.1"), eventLoop: loop, state: { .ready }, close: {}, write: { _ in }).get()) != nil)
        }
        #expect(stream.subscribe(filter: .init(), source: IPAddress(parsing: "10.0.0.1"), eventLoop: loop, state: { .ready }, close: {}, write: { _ in }) == .failure(.fullForSource))
        #expect((try? stream.subscribe(filter: .init(), source: IPAddress(parsing: "10.0.0.2"), eventLoop: loop, state: { .ready }, close: {}, write: { _ in }).get()) != nil)
        // Loopback is every port-forwarded client (found in review: the default setup took 4 streams in all).
        for _ in 0..<6 {
            #expect((try? stream.subscribe(filter: .init(), source: IPAddress(parsing: "127.0.0.1"), eventLoop: loop, state: { .ready }, close: {}, write: { _ in }).get()) != nil)
        }
    }

    /// A client whose filter matches nothing still gets heartbeats, so one that takes nothing is
    /// found stalled and closed.
    @Test func heartbeatsFindAClientThatTakesNothingEvenWithoutEvents() {
        let (_, loop, client) = Self.subscribedClient(filter: .init(host: "nothing.invalid"))
        client.behind.store(false, ordering: .relaxed)
        loop.advanceTime(by: .seconds(16))
        #expect(client.written.load(ordering: .relaxed) == FlowStream.heartbeatFrame.count)
        client.behind.store(true, ordering: .relaxed)
        loop.advanceTime(by: .seconds(30))  // two heartbeats found it behind: the first may have come just after it fell behind
        #expect(client.closed.load(ordering: .relaxed) == 0)
        loop.advanceTime(by: .seconds(15))  // three: 30 s at least since the first
        #expect(client.closed.load(ordering: .relaxed) == 1)
    }

    @Test func aClientThatTakesNothingIsClosedAfterTheStallLimit() {
        let (stream, loop, client) = Self.subscribedClient()
        stream.publish(.close, key: key, signals: [], record: { Array("{}\n".utf8) })
        loop.advanceTime(by: .seconds(29))
        #expect(client.closed.load(ordering: .relaxed) == 0 && client.written.load(ordering: .relaxed) == 0)
        loop.advanceTime(by: .seconds(2))
        #expect(client.closed.load(ordering: .relaxed) == 1)
    }

    @Test func aClientThatCatchesUpInTimeIsKeptAndSentWhatWaited() {
        let (stream, loop, client) = Self.subscribedClient()
        stream.publish(.close, key: key, signals: [], record: { Array("{}\n".utf8) })
        loop.advanceTime(by: .seconds(20))
        client.behind.store(false, ordering: .relaxed)
        loop.advanceTime(by: .seconds(1))
        #expect(client.written.load(ordering: .relaxed) > 0)
        // The stall count starts again once the client took something.
        client.behind.store(true, ordering: .relaxed)
        stream.publish(.close, key: key, signals: [], record: { Array("{}\n".utf8) })
        loop.advanceTime(by: .seconds(20))
        #expect(client.closed.load(ordering: .relaxed) == 0)
    }
}
