import Dispatch
import Foundation

/// Reads access-log files on one thread and hands their lines, in batches, to one `Part` per
/// batch on the other cores, then merges the parts: the parsing (the costly step) runs on every
/// core, and at most `2 × cores` batches are in memory at once.
public enum ParallelLineReader {
    public static let batchLines = 20_000

    /// `make` starts an empty part; `add` folds a line into it; `merge` folds a part into another.
    /// `progress` is told every million lines.
    public static func read<Part>(_ paths: [String], make: @escaping @Sendable () -> Part, add: @escaping @Sendable (inout Part, Substring) -> Void,
                                  merge: (inout Part, Part) -> Void, progress: (Int) -> Void = { _ in }) throws -> Part {
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let slots = DispatchSemaphore(value: cores * 2)
        let group = DispatchGroup()
        let queue = DispatchQueue(label: "corridor.report", attributes: .concurrent)
        let parts = PartBox<Part>()
        var batch: [String] = []
        batch.reserveCapacity(batchLines)
        var lines = 0
        func dispatch(_ lines: [String]) {
            slots.wait()
            queue.async(group: group) {
                var part = make()
                for line in lines { add(&part, Substring(line)) }
                parts.append(part)
                slots.signal()
            }
        }
        for path in paths {
            try AccessLogReader.forEachLine(path) { line, _ in
                batch.append(String(line))
                lines += 1
                if lines % 1_000_000 == 0 { progress(lines) }
                if batch.count == batchLines {
                    dispatch(batch)
                    batch = []
                    batch.reserveCapacity(batchLines)
                }
            }
        }
        if !batch.isEmpty { dispatch(batch) }
        group.wait()
        var result = make()
        for part in parts.take() { merge(&result, part) }
        return result
    }

    private final class PartBox<Part>: @unchecked Sendable {
        private let lock = NSLock()
        private var parts: [Part] = []
        func append(_ part: Part) { lock.lock(); parts.append(part); lock.unlock() }
        func take() -> [Part] { lock.lock(); defer { lock.unlock() }; return parts }
    }
}
