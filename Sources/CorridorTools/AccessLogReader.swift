import CZlib
import Foundation

/// Reads access-log files line by line, plain or gzip-compressed (as rotated logs are), or
/// standard input for `-`, without loading a file whole. zlib's gz* calls read plain files as
/// they are, so one path serves both.
public struct AccessLogReader {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// The longest line kept (a record is well under 4 KiB; a longer line is not one of ours).
    static let maxLine = 1 << 20

    /// Calls `body` with each line of `path` (`-`: standard input) and its 1-based number.
    public static func forEachLine(_ path: String, _ body: (Substring, Int) throws -> Void) throws {
        let fd: Int32 = path == "-" ? dup(STDIN_FILENO) : open(path, O_RDONLY)
        guard fd >= 0 else { throw Failure(description: "\(path): cannot open: \(String(cString: strerror(errno)))") }
        guard let file = gzdopen(fd, "rb") else {
            close(fd)
            throw Failure(description: "\(path): cannot read")
        }
        defer { gzclose(file) }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var pending: [UInt8] = []
        var number = 0
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32($0.count)) }
            if n < 0 {
                throw Failure(description: "\(path): \(zlibError(file).message) (after line \(number))")
            }
            if n == 0 {
                // The end of the input, or of a compressed stream cut short (a log copied while
                // being compressed, a download cut off): zlib says which, and records lost to a
                // truncation must not pass as a complete log.
                let (code, message) = zlibError(file)
                if code != Z_OK && code != Z_STREAM_END {
                    throw Failure(description: "\(path): \(message) after line \(number): the file is incomplete")
                }
                break
            }
            var start = 0
            for index in 0..<Int(n) where chunk[index] == UInt8(ascii: "\n") {
                pending += chunk[start..<index]
                number += 1
                try body(Substring(decoding: pending, as: UTF8.self), number)
                pending.removeAll(keepingCapacity: true)
                start = index + 1
            }
            pending += chunk[start..<Int(n)]
            if pending.count > maxLine {
                throw Failure(description: "\(path): line \(number + 1) is longer than \(maxLine) bytes: not an access log")
            }
        }
        if !pending.isEmpty {
            number += 1
            try body(Substring(decoding: pending, as: UTF8.self), number)
        }
    }

    /// zlib's error code and message for `file`, without the `<fd:N>: ` it puts before the message
    /// of a file opened by descriptor.
    private static func zlibError(_ file: gzFile) -> (code: Int32, message: String) {
        var code: Int32 = 0
        var message = gzerror(file, &code).map { String(cString: $0) } ?? ""
        if message.hasPrefix("<fd:"), let end = message.range(of: ">: ") { message = String(message[end.upperBound...]) }
        return (code, message.isEmpty ? "read error" : message)
    }
}
