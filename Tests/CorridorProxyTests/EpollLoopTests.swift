#if os(Linux)
import Foundation
import Glibc
import Synchronization
import Testing

@testable import CorridorProxy

/// The splice plane's event loop: work from other threads, readiness of descriptors, deadline
/// ticks, the pipe pool and stopping. (The connections themselves are tested over real sockets by
/// the integration suites, which run on both data planes.)
@Suite struct EpollLoopTests {
    /// Runs a loop on its own thread for the test's body, then stops it.
    private func withLoop(_ body: (EpollLoop) async throws -> Void) async throws {
        let loop = try EpollLoop()
        let stopped = Atomic<Bool>(false)
        let thread = Thread {
            loop.run { failure in stopped.store(failure == nil, ordering: .releasing) }
        }
        thread.start()
        defer {
            loop.stop()
        }
        try await body(loop)
        loop.stop()
        #expect(await within(seconds: 5) { stopped.load(ordering: .acquiring) }, "run returns after stop, having called onStop with no failure")
    }

    private func within(seconds: Double, _ condition: () -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return condition()
    }

    /// Runs `work` on the loop and returns once it has run. The loop runs its tasks in order,
    /// after it has handed out the events of the wake-up that took them: whatever was ready
    /// before this call has been reported by then.
    private func onLoop(_ loop: EpollLoop, _ work: @escaping @Sendable () -> Void = {}) async -> Bool {
        let done = Atomic<Bool>(false)
        loop.execute {
            work()
            done.store(true, ordering: .releasing)
        }
        return await within(seconds: 5) { done.load(ordering: .acquiring) }
    }

    private final class Recorder: EpollHandler, EpollTicking, @unchecked Sendable {
        let events = Mutex<[(Int32, UInt32)]>([])
        let ticks = Atomic<Int>(0)
        var tickSlot = -1
        func ready(fd: Int32, events: UInt32) { self.events.withLock { $0.append((fd, events)) } }
        func tick(now: ContinuousClock.Instant) { ticks.wrappingAdd(1, ordering: .relaxed) }
    }

    @Test func workFromOtherThreadsRunsOnTheLoopInOrder() async throws {
        try await withLoop { loop in
            let seen = Mutex<[Int]>([])
            let loopThread = Mutex<[String]>([])
            for n in 0..<100 {
                loop.execute {
                    seen.withLock { $0.append(n) }
                    loopThread.withLock { $0.append(Thread.current.description) }
                }
            }
            #expect(await within(seconds: 5) { seen.withLock { $0.count } == 100 })
            #expect(seen.withLock { $0 } == Array(0..<100))
            #expect(Set(loopThread.withLock { $0 }).count == 1, "one thread runs them all")
        }
    }

    @Test func aWatchedDescriptorIsReportedForWhatItIsWatchedFor() async throws {
        try await withLoop { loop in
            var fds: [Int32] = [0, 0]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
            let pair = fds
            defer { close(pair[1]) }
            let recorder = Recorder()
            #expect(await onLoop(loop) { _ = loop.add(pair[0], 0, recorder) })
            _ = send(pair[1], "x", 1, Int32(MSG_NOSIGNAL))
            #expect(await onLoop(loop))
            #expect(recorder.events.withLock { $0.isEmpty }, "watched for nothing: not reported")
            loop.execute { loop.modify(pair[0], EpollLoop.readable) }
            #expect(await within(seconds: 5) { recorder.events.withLock { $0.contains { $0.0 == pair[0] && $0.1 & EpollLoop.readable != 0 } } })
            #expect(await onLoop(loop) { loop.close(pair[0]) })
        }
    }

    /// Closes the other descriptor of the pair the first time either is ready, and reads what
    /// made it ready (so level-triggered epoll does not report it again).
    private final class Closer: EpollHandler, @unchecked Sendable {
        let loop: EpollLoop
        let pair: (Int32, Int32)
        let events = Mutex<[Int32]>([])
        init(loop: EpollLoop, pair: (Int32, Int32)) {
            self.loop = loop
            self.pair = pair
        }
        func ready(fd: Int32, events: UInt32) {
            let first = self.events.withLock { seen in
                seen.append(fd)
                return seen.count == 1
            }
            var byte: UInt8 = 0
            _ = recv(fd, &byte, 1, Int32(MSG_DONTWAIT))
            if first { loop.close(fd == pair.0 ? pair.1 : pair.0) }
        }
    }

    @Test func aDescriptorClosedInAWakeUpGetsNoEventFetchedWithIt() async throws {
        try await withLoop { loop in
            // Two sockets ready before they are watched: the next wait reports both at once, and
            // the first one's handler closes the other, whose event is then dropped.
            var a: [Int32] = [0, 0], b: [Int32] = [0, 0]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &a) == 0)
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &b) == 0)
            let (left, right) = (a, b)
            defer { close(left[1]); close(right[1]) }
            _ = send(left[1], "x", 1, Int32(MSG_NOSIGNAL))
            _ = send(right[1], "x", 1, Int32(MSG_NOSIGNAL))
            let closer = Closer(loop: loop, pair: (left[0], right[0]))
            #expect(await onLoop(loop) {
                _ = loop.add(left[0], EpollLoop.readable, closer)
                _ = loop.add(right[0], EpollLoop.readable, closer)
            })
            #expect(await within(seconds: 5) { !closer.events.withLock { $0.isEmpty } })
            #expect(await onLoop(loop))
            let seen = closer.events.withLock { $0 }
            #expect(seen.count == 1, "one handler ran; the descriptor it closed was not reported: \(seen)")
            #expect(await onLoop(loop) { loop.close(seen[0]) })
        }
    }

    @Test func deadlinesAreTickedWhileWatchedAndNotAfter() async throws {
        try await withLoop { loop in
            let items = (0..<4).map { _ in Recorder() }
            loop.execute { for item in items { loop.watchDeadlines(item) } }
            #expect(await within(seconds: 5) { items.allSatisfy { $0.ticks.load(ordering: .relaxed) >= 2 } }, "about four ticks a second")
            // The second leaves (its slot is filled by the last); the others are still ticked.
            #expect(await onLoop(loop) { loop.unwatchDeadlines(items[1]) })
            let frozen = items[1].ticks.load(ordering: .relaxed)
            let others = [0, 2, 3].map { items[$0].ticks.load(ordering: .relaxed) }
            #expect(await within(seconds: 5) { zip([0, 2, 3], others).allSatisfy { items[$0].ticks.load(ordering: .relaxed) >= $1 + 2 } },
                    "the others ticked twice more")
            #expect(items[1].ticks.load(ordering: .relaxed) == frozen)
            #expect(items[1].tickSlot == -1)
        }
    }

    @Test func pipesAreReusedUpToThePoolSize() async throws {
        try await withLoop { loop in
            let result = Mutex<(first: Int32, again: Int32, kept: Int)>((0, 0, 0))
            loop.execute {
                let first = loop.takePipe()!
                loop.returnPipe(first)
                let again = loop.takePipe()!
                var many: [RelayPipe] = [again]
                for _ in 0..<(EpollLoop.maxPooledPipes + 10) { many.append(loop.takePipe()!) }
                for pipe in many { loop.returnPipe(pipe) }
                // Past the pool size, returned pipes are closed, not kept.
                result.withLock { $0 = (first.read, again.read, loop.pooledPipes) }
            }
            #expect(await within(seconds: 5) { result.withLock { $0.kept } > 0 })
            let (first, again, kept) = result.withLock { $0 }
            #expect(first == again, "an empty pipe given back is taken again")
            #expect(kept == EpollLoop.maxPooledPipes)
        }
    }

    /// What `enlarge` left: whether each call enlarged, the capacities, and what a pipe that held
    /// bytes while it grew gives back.
    private struct Enlarged: Sendable {
        var results: [Bool] = []
        var capacities: [Int] = []
        var largeOpen = 0
        var afterDrop = false
        var largeAfterDrop = 0
        var bytesKept = false
        var enlargedTakenFirst = false
    }

    @Test func bulkPipesAreEnlargedWithinTheLoopsBudget() async throws {
        try await withLoop { loop in
            let result = Mutex<Enlarged?>(nil)
            loop.execute {
                var state = Enlarged()
                var pipes: [RelayPipe] = []
                // The first pipe holds 64 KiB when it grows, as a bulk direction's does.
                var first = loop.takePipe()!
                let payload = [UInt8](repeating: 7, count: first.capacity)
                _ = payload.withUnsafeBytes { write(first.write, $0.baseAddress, $0.count) }
                state.results.append(loop.enlarge(&first))
                var back = [UInt8](repeating: 0, count: payload.count + 1)
                let got = back.withUnsafeMutableBytes { read(first.read, $0.baseAddress, $0.count) }
                state.bytesKept = got == payload.count && Array(back[..<got]) == payload
                pipes.append(first)
                for _ in 0..<EpollLoop.maxLargePipes {
                    var pipe = loop.takePipe()!
                    state.results.append(loop.enlarge(&pipe))
                    pipes.append(pipe)
                }
                state.capacities = pipes.map(\.capacity)
                state.largeOpen = loop.largePipes
                // Closing an enlarged pipe frees its place; a pooled one keeps it.
                loop.dropPipe(pipes.removeFirst())
                var last = pipes.removeLast()
                state.afterDrop = loop.enlarge(&last)
                state.largeAfterDrop = loop.largePipes
                // An enlarged pipe given back before a small one is still taken first.
                let small = loop.takePipe()!
                loop.returnPipe(last)
                loop.returnPipe(small)
                let taken = loop.takePipe()!
                state.enlargedTakenFirst = taken == last
                for pipe in pipes + [taken, loop.takePipe()!] { loop.dropPipe(pipe) }
                result.withLock { $0 = state }
            }
            #expect(await within(seconds: 5) { result.withLock { $0 != nil } })
            let state = try #require(result.withLock { $0 })
            #expect(state.results == Array(repeating: true, count: EpollLoop.maxLargePipes) + [false],
                    "up to maxLargePipes pipes are enlarged, then none")
            #expect(state.capacities.prefix(EpollLoop.maxLargePipes).allSatisfy { $0 == EpollLoop.largePipeBytes })
            #expect(state.capacities.last == RelayPipe.defaultCapacity)
            #expect(state.bytesKept, "a pipe enlarged while it holds bytes keeps them")
            #expect(state.largeOpen == EpollLoop.maxLargePipes)
            #expect(state.afterDrop, "closing an enlarged pipe lets another grow")
            #expect(state.largeAfterDrop == EpollLoop.maxLargePipes)
            #expect(state.enlargedTakenFirst, "a pooled enlarged pipe is taken before a small one")
        }
    }
}
#endif
