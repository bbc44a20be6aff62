/// Comparisons of protocol tokens (header names, URI schemes) against lowercase constants,
/// ignoring the case of ASCII letters only, without building lowercased copies.
enum ASCIICase {
    static func lowered(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
    }

    /// Whether `string` is `lowercase` but for the case of ASCII letters.
    static func equals(_ string: some StringProtocol, lowercase: String) -> Bool {
        guard string.utf8.count == lowercase.utf8.count else { return false }
        // Native strings compare as byte buffers; others (bridged, say) byte by byte.
        let compared = string.utf8.withContiguousStorageIfAvailable { bytes in
            lowercase.utf8.withContiguousStorageIfAvailable { expected in
                for index in 0..<bytes.count where lowered(bytes[index]) != expected[index] { return false }
                return true
            }
        }
        if let compared = compared ?? nil { return compared }
        return zip(string.utf8, lowercase.utf8).allSatisfy { lowered($0) == $1 }
    }

    /// Whether `string` starts with `lowercase` but for the case of ASCII letters.
    static func hasPrefix(_ string: String, lowercase: String) -> Bool {
        var bytes = string.utf8.makeIterator()
        for expected in lowercase.utf8 {
            guard let byte = bytes.next(), lowered(byte) == expected else { return false }
        }
        return true
    }

    /// `string` with its ASCII capital letters lowercased and every other byte kept.
    static func lowercased(_ string: some StringProtocol) -> String {
        guard string.utf8.contains(where: { lowered($0) != $0 }) else { return String(string) }
        return String(decoding: string.utf8.map(lowered), as: UTF8.self)
    }
}
