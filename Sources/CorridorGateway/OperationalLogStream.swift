import CorridorProxy

/// Standard error for the operational log, one line per message whatever the message holds.
/// Messages quote what others wrote (an object's name in a rejection, an upstream's error, a
/// client's bytes in a reason), and where standard output and standard error end up in one
/// stream (`kubectl logs`, a node's log shipper), a line break inside one could start a line of
/// the attacker's making, an access record for the offline tools among them. Every control
/// character but the line's final newline, and the Unicode characters that reorder or break
/// text on a terminal (bidirectional overrides and isolates, line and paragraph separators), is
/// written escaped, as `\n` or `\u{202E}`. Each line goes out in one `write(2)`, so lines of
/// different threads do not interleave.
public struct OperationalLogStream: TextOutputStream, Sendable {
    private let descriptor: Int32

    public init(descriptor: Int32 = 2) {
        self.descriptor = descriptor
    }

    public mutating func write(_ string: String) {
        _ = WholeWrite.write(descriptor, Self.escaped(string))  // a failed log write has nowhere to be reported
    }

    /// `string` as it is written: escaped, its final newline kept.
    public static func escaped(_ string: String) -> [UInt8] {
        // By bytes: a final "\r\n" is one Character, whose "\r" must be escaped too.
        let endsLine = string.utf8.last == UInt8(ascii: "\n")
        let body = Substring(endsLine ? string.utf8.dropLast() : string.utf8[...])
        var bytes: [UInt8] = []
        bytes.reserveCapacity(body.utf8.count + 1)
        if !body.unicodeScalars.contains(where: needsEscape) {
            bytes.append(contentsOf: body.utf8)
        } else {
            for scalar in body.unicodeScalars {
                guard needsEscape(scalar) else {
                    bytes.append(contentsOf: String(scalar).utf8)
                    continue
                }
                switch scalar {
                case "\n": bytes.append(contentsOf: #"\n"#.utf8)
                case "\r": bytes.append(contentsOf: #"\r"#.utf8)
                case "\t": bytes.append(contentsOf: #"\t"#.utf8)
                default: bytes.append(contentsOf: "\\u{\(String(scalar.value, radix: 16, uppercase: true))}".utf8)
                }
            }
        }
        if endsLine { bytes.append(UInt8(ascii: "\n")) }
        return bytes
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F: return true  // C0 and C1 controls, DEL
        case 0x2028, 0x2029: return true  // line and paragraph separators
        case 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: return true  // bidirectional marks, embeddings, overrides, isolates
        default: return false
        }
    }
}

