#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the access log's lines go: standard output, or a file. A file is reopened when its path
/// names another file or none (renamed by a rotation, or removed), checked before a line at most
/// every ``pathCheckInterval`` (a `stat` per line would be a system call per connection), and at
/// once on request (`SIGUSR1`, as nginx does); a line is written whole or not at all (what a failed
/// write left of it is cut off again), so a full disk never leaves a torn record. Not thread-safe:
/// `AccessLog` holds it under its lock.
struct AccessLogSink: ~Copyable {
    /// nil for standard output.
    let path: String?
    private var descriptor: Int32
    /// The device and inode `descriptor` is open on, to notice that `path` now names another file.
    private var device: UInt64 = 0
    private var inode: UInt64 = 0
    /// Why the last line or reopen failed; nil while lines are being written.
    private(set) var failure: String?
    /// When `path` is next compared with the open file (monotonic nanoseconds).
    private var nextPathCheck: UInt64 = 0
    /// How often `path` is compared with the open file: a file renamed or removed without a
    /// `SIGUSR1` receives the lines of at most this long.
    static let pathCheckInterval: UInt64 = 100_000_000

    /// Standard output.
    init() {
        path = nil
        descriptor = 1
    }

    /// Appends to `path`, creating it (mode 0640) if needed; throws what the first open says.
    init(path: String) throws(OpenError) {
        self.path = path
        descriptor = -1
        guard reopen() else { throw OpenError(reason: failure ?? "cannot open \(path)") }
    }

    /// The access log file cannot be opened at start; `reason` names the file and why.
    struct OpenError: Error, CustomStringConvertible {
        var reason: String
        var description: String { "access log: \(reason)" }
    }

    deinit {
        if path != nil && descriptor >= 0 { _ = close(descriptor) }
    }

    /// Opens `path` afresh (creating it) and closes the previous file; false, with `failure` set,
    /// when it cannot be opened (then no descriptor is kept: nothing goes to a file nobody sees).
    @discardableResult
    mutating func reopen() -> Bool {
        guard let path else { return true }
        let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        if descriptor >= 0 { _ = close(descriptor) }
        descriptor = opened
        guard opened >= 0 else {
            failure = "cannot open \(path): \(String(cString: strerror(errno)))"
            return false
        }
        var status = stat()
        if fstat(opened, &status) == 0 {
            device = UInt64(status.st_dev)
            inode = UInt64(status.st_ino)
        }
        return true
    }

    /// Whether `path` still names the file the descriptor is open on.
    private func pathNamesOpenFile() -> Bool {
        guard let path else { return true }
        var status = stat()
        guard descriptor >= 0, stat(path, &status) == 0 else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }

    /// Writes `bytes` (one line) whole; false, with `failure` set, when it could not.
    mutating func write(_ bytes: [UInt8]) -> Bool {
        if path != nil {
            let now = Self.monotonicNanoseconds()
            if descriptor < 0 || now >= nextPathCheck {
                nextPathCheck = now + Self.pathCheckInterval
                if !pathNamesOpenFile() && !reopen() { return false }
            }
        }
        let (written, error) = WholeWrite.write(descriptor, bytes)
        guard error != 0 else {
            failure = nil
            return true
        }
        // The lock is held by every writer of this process: what ends the file is the part of
        // this line that went out. Cut it off, so the next line does not follow a torn one.
        if written > 0 && path != nil {
            let end = lseek(descriptor, 0, SEEK_END)
            if end >= written { _ = ftruncate(descriptor, end - off_t(written)) }
        }
        failure = "cannot write \(path ?? "standard output"): \(String(cString: strerror(error)))"
        return false
    }
}

extension AccessLogSink {
    fileprivate static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
