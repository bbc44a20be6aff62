#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs a program found on PATH with posix_spawn, feeds it `input` on standard input and returns
/// its exit status and what it wrote to standard output and error together. Foundation's
/// `Process.run` is not used: in swift-corelibs-foundation 6.3.1 it reads past a directory entry
/// while closing inherited descriptors (swift-corelibs-foundation#5472), which AddressSanitizer
/// reports and which can crash.
enum ChildProcess {
    struct SpawnFailure: Error, CustomStringConvertible {
        var command: String
        var reason: String
        var description: String { "cannot start \(command): \(reason)" }
    }

    static func run(_ tool: String, _ arguments: [String], input: String? = nil) throws(SpawnFailure) -> (status: Int32, output: String) {
        let command = ([tool] + arguments).joined(separator: " ")
        var toChild: [Int32] = [-1, -1], fromChild: [Int32] = [-1, -1]
        guard pipe(&toChild) == 0 else { throw SpawnFailure(command: command, reason: String(cString: strerror(errno))) }
        guard pipe(&fromChild) == 0 else {
            close(toChild[0]); close(toChild[1])
            throw SpawnFailure(command: command, reason: String(cString: strerror(errno)))
        }
        for fd in toChild + fromChild { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 clears close-on-exec on the copies; every other descriptor of ours is CLOEXEC.
        posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 2)
        // The child starts with every signal at its default and none blocked, whatever this
        // process ignores or blocks (the gateway ignores SIGHUP, SIGTERM and SIGPIPE itself).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let argv: [UnsafeMutablePointer<CChar>?] = ([tool] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = argv.withUnsafeBufferPointer { posix_spawnp(&pid, tool, &actions, &attributes, $0.baseAddress!, environ) }
        close(toChild[0])
        close(fromChild[1])
        guard spawned == 0 else {
            close(toChild[1]); close(fromChild[0])
            throw SpawnFailure(command: command, reason: String(cString: strerror(spawned)))
        }
        if let input {
            // A child that exits early closes its end: ignore SIGPIPE for this write (EPIPE instead).
            let previous = signal(SIGPIPE, SIG_IGN)
            var bytes = Array(input.utf8)[...]
            while !bytes.isEmpty {
                let n = bytes.withUnsafeBytes { write(toChild[1], $0.baseAddress, $0.count) }
                if n > 0 { bytes = bytes.dropFirst(n) } else if n < 0 && errno == EINTR { continue } else { break }
            }
            signal(SIGPIPE, previous)
        }
        close(toChild[1])
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fromChild[0], $0.baseAddress, $0.count) }
            if n > 0 { output += buffer[..<n] } else if n < 0 && errno == EINTR { continue } else { break }
        }
        close(fromChild[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED / WEXITSTATUS, spelled out (the C macros are not imported).
        let exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (exitStatus, String(decoding: output, as: UTF8.self))
    }
}
