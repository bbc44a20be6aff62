// Does ThreadSanitizer see Synchronization.Mutex on this toolchain? Four threads add 20,000 each
// under a Mutex, four more under an NSLock (pthread). Both totals are exact; with Swift 6.3.1 on
// Linux, TSan still reports an access race in the Mutex closures (its lock is invisible to TSan)
// and none for NSLock. scripts/sanitize thread runs this first, so its reports can be read for
// what they are: a race reported inside a Mutex.withLock closure is this false positive.
//   swiftc -sanitize=thread scripts/tsan-mutex-probe.swift -o /tmp/probe && /tmp/probe
import Synchronization
import Foundation
final class Box: @unchecked Sendable { var value = 0 }
let mutex = Mutex<Int>(0)
let box = Box()
let lock = NSLock()
let threads = (0..<4).map { _ in Thread {
    for _ in 0..<20000 { mutex.withLock { $0 += 1 } }
} }
let threads2 = (0..<4).map { _ in Thread {
    for _ in 0..<20000 { lock.lock(); box.value += 1; lock.unlock() }
} }
for t in threads + threads2 { t.start() }
sleep(3)
print(mutex.withLock { $0 }, box.value)
