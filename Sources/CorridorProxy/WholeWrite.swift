#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes bytes to a descriptor until all are written or a write fails (`EINTR` is tried again):
/// a log line goes out with as few `write(2)` calls as the descriptor allows, one as a rule.
public enum WholeWrite {
    /// How many bytes went out, and the errno that stopped the rest (0: none did).
    public static func write(_ descriptor: Int32, _ bytes: [UInt8]) -> (written: Int, error: Int32) {
        var written = 0
        var error: Int32 = 0
        bytes.withUnsafeBytes { raw in
            while written < raw.count {
                let n = systemWrite(descriptor, raw.baseAddress! + written, raw.count - written)
                if n > 0 {
                    written += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    error = n < 0 ? errno : EIO
                    return
                }
            }
        }
        return (written, error)
    }
}

#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Musl)
private let systemWrite = Musl.write
#elseif canImport(Darwin)
private let systemWrite = Darwin.write
#endif
