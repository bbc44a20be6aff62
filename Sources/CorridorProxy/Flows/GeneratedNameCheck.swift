#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Whether a host name has a label that looks machine-made, as domain-generation algorithms and
/// DNS tunnels make them: a label of at least `minLength` letters and digits whose characters'
/// Shannon entropy is at least `minEntropy` bits, or that alternates between letters and digits at
/// least four times (`a9x3k2q7`). Words and ordinary names (`analytics`, `eu-west-1`,
/// `storage-api-2`) stay below. Byte by byte; no allocation.
enum GeneratedNameCheck {
    static func looksGenerated(_ name: String, minLength: Int, minEntropy: Double) -> Bool {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 36) { buffer in
            buffer.initialize(repeating: 0)
            return looksGenerated(name, minLength: minLength, minEntropy: minEntropy, counts: buffer)
        }
    }

    private static func looksGenerated(_ name: String, minLength: Int, minEntropy: Double, counts: UnsafeMutableBufferPointer<Int>) -> Bool {
        var length = 0
        var switches = 0
        var lastWasDigit: Bool?
        func judge() -> Bool {
            defer {
                for i in 0..<counts.count { counts[i] = 0 }
                length = 0
                switches = 0
                lastWasDigit = nil
            }
            guard length >= minLength else { return false }
            if switches >= 4 { return true }
            var entropy = 0.0
            for count in counts where count > 0 {
                let p = Double(count) / Double(length)
                entropy -= p * log2(p)
            }
            return entropy >= minEntropy
        }
        for byte in name.utf8 {
            switch byte {
            case UInt8(ascii: "."):
                if judge() { return true }
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
                counts[Int((byte | 0x20) - UInt8(ascii: "a"))] += 1
                length += 1
                if lastWasDigit == true { switches += 1 }
                lastWasDigit = false
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                counts[26 + Int(byte - UInt8(ascii: "0"))] += 1
                length += 1
                if lastWasDigit == false { switches += 1 }
                lastWasDigit = true
            default:
                // '-' (or anything else) is neither counted nor a character of the label's run:
                // counted without adding to the length, it made p exceed 1 and padding a label
                // with hyphens lowered its entropy below any threshold.
                break
            }
        }
        return judge()
    }
}
