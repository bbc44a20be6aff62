import Synchronization

/// `deny_burst`: a workload with `threshold` or more denials within `window`. Touched only by
/// denials (its lock is never taken for an allowed connection). Bounded: at most `maxWorkloads`
/// workloads are tracked; when that many have denials within the window, a workload not tracked
/// yet is not tracked until some window ends (many sources denied once each must not wipe the
/// windows of workloads in the middle of a burst).
final class DenyBurstDetector: Sendable {
    static let maxWorkloads = 10_000

    private let threshold: Int
    private let window: Double
    /// Per workload: the times of its recent denials (at most `threshold` kept).
    private let recent = Mutex<[String: [Double]]>([:])

    init(threshold: Int, window: Duration) {
        self.threshold = threshold
        self.window = Double(window.components.seconds) + Double(window.components.attoseconds) / 1e18
    }

    /// Records a denial of `who` at `now`; true when it makes `threshold` within the window.
    func denied(_ who: String, at now: Double) -> Bool {
        recent.withLock { recent in
            if recent[who] == nil && recent.count >= Self.maxWorkloads {
                let stale = recent.filter { ($0.value.last ?? 0) < now - window }.map(\.key)
                for key in stale { recent[key] = nil }
                if recent.count >= Self.maxWorkloads { return false }
            }
            var times = recent[who, default: []].filter { $0 > now - window }
            times.append(now)
            if times.count > threshold { times.removeFirst(times.count - threshold) }
            recent[who] = times
            return times.count >= threshold
        }
    }
}
