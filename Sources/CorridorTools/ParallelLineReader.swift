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
                                  merge: @escaping @Sendable (inout Part, Part) -> Void, progress: (Int) -> Void = { _ in }) throws -> Part {
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let slots = DispatchSemaphore(value: cores * 2)
        let group = DispatchGroup()
        let queue = DispatchQueue(label: "corridor.report", attributes: .concurrent)
        let parts = PartBox<Part>(make())
        var batch: [String] = []
        batch.reserveCapacity(batchLines)
        var lines = 0
        func dispatch(_ lines: [String]) {
            slots.wait()
            queue.async(group: group) {
                var part = make()
                for line in lines { add(&part, Substring(line)) }
                parts.fold(part, merge)
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
        return parts.take()
    }

    /// The running total: each finished part is merged into it at once, so memory holds the
    /// total and the batches in flight, not one part per batch.
    private final class PartBox<Part>: @unchecked Sendable {
        private let lock = NSLock()
        private var total: Part
        init(_ empty: Part) { total = empty }
        func fold(_ part: Part, _ merge: (inout Part, Part) -> Void) { lock.lock(); merge(&total, part); lock.unlock() }
        func take() -> Part { lock.lock(); defer { lock.unlock() }; return total }
    }
}
