/// Host names as Corridor compares them: ASCII, lower case, no trailing dot,
/// letters-digits-hyphen labels of 1-63 bytes, at most 253 bytes, never an IP literal.
///
/// Both sides of every comparison go through ``HostName/normalize(_:)``: the names in
/// ExternalServices when a snapshot is built, and the SNI / CONNECT host of every connection.
public enum HostName {
    /// Why a string is not an acceptable host name. The raw value is a stable metric/log label.
    public enum Problem: String, Sendable, Error, Equatable {
        case empty = "empty"
        case tooLong = "too_long"
        case emptyLabel = "empty_label"
        case labelTooLong = "label_too_long"
        case invalidCharacter = "invalid_character"
        case nonASCII = "non_ascii"
        case nulByte = "nul_byte"
        case hyphenAtLabelEdge = "hyphen_at_label_edge"
        case ipLiteral = "ip_literal"
        case allNumericTopLabel = "numeric_top_label"

        /// A sentence a human can read.
        public var explanation: String {
            switch self {
            case .empty: return "the name is empty"
            case .tooLong: return "the name is longer than 253 bytes"
            case .emptyLabel: return "the name has an empty label"
            case .labelTooLong: return "a label is longer than 63 bytes"
            case .invalidCharacter: return "the name has a character other than letters, digits, '-' and '.'"
            case .nonASCII: return "the name has non-ASCII bytes (IDNs must be sent as xn-- A-labels)"
            case .nulByte: return "the name has a NUL byte"
            case .hyphenAtLabelEdge: return "a label starts or ends with '-'"
            case .ipLiteral: return "the name is an IP address literal"
            case .allNumericTopLabel: return "the top-level label is all digits (an IP address in another spelling)"
            }
        }
    }

    /// Normalises raw bytes (from the wire) into a host name, or says why they are not one.
    public static func normalize<Bytes: Collection>(bytes: Bytes) -> Result<String, Problem> where Bytes.Element == UInt8 {
        var count = bytes.count
        if count == 0 { return .failure(.empty) }
        // One trailing dot is the absolute form of the same name.
        var endsWithDot = false
        if bytes[bytes.index(bytes.startIndex, offsetBy: count - 1)] == UInt8(ascii: ".") {
            endsWithDot = true
            count -= 1
            if count == 0 { return .failure(.empty) }
        }
        if count > 253 { return .failure(.tooLong) }

        var out = [UInt8]()
        out.reserveCapacity(count)
        var labelLength = 0
        var labelStart = 0
        var labelAllDigits = true
        var sawColon = false
        var index = 0
        for byte in bytes {
            if index == count { break }  // skip the one trailing dot
            index += 1
            switch byte {
            case 0: return .failure(.nulByte)
            case 0x80...: return .failure(.nonASCII)
            case UInt8(ascii: "."):
                if labelLength == 0 { return .failure(.emptyLabel) }
                if out.last == UInt8(ascii: "-") { return .failure(.hyphenAtLabelEdge) }
                out.append(byte)
                labelLength = 0
                labelStart = out.count
                labelAllDigits = true
                continue
            case UInt8(ascii: "A")...UInt8(ascii: "Z"):
                out.append(byte | 0x20)
                labelAllDigits = false
            case UInt8(ascii: "a")...UInt8(ascii: "z"):
                out.append(byte)
                labelAllDigits = false
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                out.append(byte)
            case UInt8(ascii: "-"):
                if labelLength == 0 { return .failure(.hyphenAtLabelEdge) }
                out.append(byte)
                labelAllDigits = false
            case UInt8(ascii: ":"), UInt8(ascii: "["), UInt8(ascii: "]"):
                sawColon = true
                out.append(byte)
            default:
                return .failure(.invalidCharacter)
            }
            labelLength += 1
            if labelLength > 63 { return .failure(.labelTooLong) }
        }
        _ = labelStart
        if sawColon {
            return .failure(IPAddress(parsing: String(decoding: out, as: UTF8.self)) != nil ? .ipLiteral : .invalidCharacter)
        }
        if labelLength == 0 { return .failure(endsWithDot ? .emptyLabel : .emptyLabel) }
        if out.last == UInt8(ascii: "-") { return .failure(.hyphenAtLabelEdge) }
        if labelAllDigits {
            // "1.2.3.4", "127.1", "2130706433": every spelling an IPv4 parser might accept ends
            // in an all-digit label, and no real TLD is numeric.
            return .failure(IPAddress(parsing: String(decoding: out, as: UTF8.self)) != nil ? .ipLiteral : .allNumericTopLabel)
        }
        if looksLikeHexIPv4(out) { return .failure(.ipLiteral) }
        return .success(String(decoding: out, as: UTF8.self))
    }

    /// Normalises a string (from configuration or a CONNECT line).
    public static func normalize(_ string: String) -> Result<String, Problem> {
        normalize(bytes: Array(string.utf8))
    }

    /// True for a normalised name (lowercase ASCII, no empty label) whose labels are all
    /// inet_aton-style numbers, e.g. `0x7f.1` or `0x7f000001`: at most four labels, each decimal
    /// digits or `0x` and hex digits. Byte by byte: this runs for every ClientHello's name.
    static func looksLikeHexIPv4<Bytes: Collection>(_ name: Bytes) -> Bool where Bytes.Element == UInt8 {
        var labels = 1
        var length = 0
        var decimal = true
        var hex = true  // "0x" then hex digits; judged at the label's end
        for byte in name {
            if byte == UInt8(ascii: ".") {
                guard decimal || (hex && length > 2) else { return false }
                labels += 1
                if labels > 4 { return false }
                (length, decimal, hex) = (0, true, true)
                continue
            }
            let isDigit = byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
            let isHexLetter = byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f")
            switch length {
            case 0: hex = hex && byte == UInt8(ascii: "0")
            case 1: hex = hex && byte == UInt8(ascii: "x")
            default: hex = hex && (isDigit || isHexLetter)
            }
            decimal = decimal && isDigit
            if !decimal && !hex { return false }
            length += 1
        }
        return decimal || (hex && length > 2)
    }
}
