import Foundation

/// A shallow reader of JSON text: the members of an object, or the elements of an array, as byte
/// ranges, found without building their values or recursing into them (nesting is counted, not
/// followed, so any depth costs the same).
///
/// The reflector reads a list or a watch event with `JSONDecoder` first. When that refuses the
/// whole text (Foundation stops at 512 levels of nesting, and `x-kubernetes-preserve-unknown-fields`
/// lets a custom object carry deeper values), this reader cuts it into its objects, so that each
/// is decoded on its own and one unreadable object cannot stop the others.
///
/// Only the structure it walks is checked (brackets, strings and their escapes, commas, colons);
/// the pieces it returns are for a decoder, which checks the rest.
enum ShallowJSON {
    struct Malformed: Error, CustomStringConvertible {
        var offset: Int
        var what: String
        var description: String { "malformed JSON at byte \(offset): \(what)" }
    }

    /// The members of the object that `range` of `bytes` holds (whitespace around it allowed):
    /// each key, decoded, and its value's range.
    static func members(of bytes: [UInt8], in range: Range<Int>? = nil) throws(Malformed) -> [(key: String, value: Range<Int>)] {
        let range = range ?? 0..<bytes.count
        var members: [(key: String, value: Range<Int>)] = []
        try walk(UInt8(ascii: "{"), UInt8(ascii: "}"), "object", bytes, range) { start throws(Malformed) in
            let keyEnd = try skipString(bytes, start, range.upperBound)
            let key = try decodeKey(bytes, start..<keyEnd)
            let colon = skipSpace(bytes, keyEnd, range.upperBound)
            try expect(UInt8(ascii: ":"), bytes, colon, range.upperBound)
            let valueStart = skipSpace(bytes, colon + 1, range.upperBound)
            let valueEnd = try skipValue(bytes, valueStart, range.upperBound)
            members.append((key, valueStart..<valueEnd))
            return valueEnd
        }
        return members
    }

    /// The elements' ranges of the array that `range` of `bytes` holds.
    static func elements(of bytes: [UInt8], in range: Range<Int>) throws(Malformed) -> [Range<Int>] {
        var elements: [Range<Int>] = []
        try walk(UInt8(ascii: "["), UInt8(ascii: "]"), "array", bytes, range) { start throws(Malformed) in
            let end = try skipValue(bytes, start, range.upperBound)
            elements.append(start..<end)
            return end
        }
        return elements
    }

    /// Walks the object or array (`what`) that `range` of `bytes` holds, from `open` to `close`:
    /// `item` reads one member or element from its first byte and returns where it ends.
    private static func walk(_ open: UInt8, _ close: UInt8, _ what: String, _ bytes: [UInt8], _ range: Range<Int>,
                             _ item: (Int) throws(Malformed) -> Int) throws(Malformed) {
        var index = skipSpace(bytes, range.lowerBound, range.upperBound)
        try expect(open, bytes, index, range.upperBound)
        index = skipSpace(bytes, index + 1, range.upperBound)
        if index < range.upperBound, bytes[index] == close { return try expectEnd(bytes, index + 1, range.upperBound) }
        while true {
            index = skipSpace(bytes, try item(index), range.upperBound)
            guard index < range.upperBound else { throw Malformed(offset: index, what: "the \(what) does not end") }
            if bytes[index] == close { return try expectEnd(bytes, index + 1, range.upperBound) }
            try expect(UInt8(ascii: ","), bytes, index, range.upperBound)
            index = skipSpace(bytes, index + 1, range.upperBound)
        }
    }

    /// The value of the first member named `key`, if the object has one.
    static func member(_ key: String, of bytes: [UInt8], in range: Range<Int>? = nil) throws(Malformed) -> Range<Int>? {
        try members(of: bytes, in: range).first { $0.key == key }?.value
    }

    /// How deep the brackets of `range` of `bytes` nest (strings skipped): 1 for `[1]`.
    static func depth(of bytes: [UInt8], in range: Range<Int>) -> Int {
        var depth = 0, deepest = 0, index = range.lowerBound
        while index < range.upperBound {
            switch bytes[index] {
            case UInt8(ascii: "\""):
                guard let end = try? skipString(bytes, index, range.upperBound) else { return deepest }
                index = end
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                deepest = max(deepest, depth)
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
            default:
                break
            }
            index += 1
        }
        return deepest
    }

    // MARK: scanning

    private static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x0d }

    private static func isDelimiter(_ byte: UInt8) -> Bool {
        isSpace(byte) || byte == UInt8(ascii: ",") || byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]")
    }

    private static func skipSpace(_ bytes: [UInt8], _ index: Int, _ end: Int) -> Int {
        var index = index
        while index < end, isSpace(bytes[index]) { index += 1 }
        return index
    }

    private static func expect(_ byte: UInt8, _ bytes: [UInt8], _ index: Int, _ end: Int) throws(Malformed) {
        guard index < end, bytes[index] == byte else {
            throw Malformed(offset: index, what: "expected '\(Character(Unicode.Scalar(byte)))'")
        }
    }

    private static func expectEnd(_ bytes: [UInt8], _ index: Int, _ end: Int) throws(Malformed) {
        let rest = skipSpace(bytes, index, end)
        guard rest == end else { throw Malformed(offset: rest, what: "bytes after the value") }
    }

    /// The end of the string that starts at `index` (its opening quote), past its closing quote.
    private static func skipString(_ bytes: [UInt8], _ index: Int, _ end: Int) throws(Malformed) -> Int {
        try expect(UInt8(ascii: "\""), bytes, index, end)
        var index = index + 1
        while index < end {
            switch bytes[index] {
            case UInt8(ascii: "\""): return index + 1
            case UInt8(ascii: "\\"): index += 2
            case 0..<0x20: throw Malformed(offset: index, what: "a control character in a string")
            default: index += 1
            }
        }
        throw Malformed(offset: end, what: "a string does not end")
    }

    /// The end of the value that starts at `index`: a string, an object or array (its brackets
    /// counted, strings inside skipped), or a literal or number (up to the next delimiter).
    private static func skipValue(_ bytes: [UInt8], _ index: Int, _ end: Int) throws(Malformed) -> Int {
        guard index < end else { throw Malformed(offset: index, what: "a value is missing") }
        switch bytes[index] {
        case UInt8(ascii: "\""):
            return try skipString(bytes, index, end)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var open: [UInt8] = []  // the closing bracket each open one expects
            var index = index
            while index < end {
                switch bytes[index] {
                case UInt8(ascii: "\""):
                    index = try skipString(bytes, index, end)
                    continue
                case UInt8(ascii: "{"): open.append(UInt8(ascii: "}"))
                case UInt8(ascii: "["): open.append(UInt8(ascii: "]"))
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    guard open.popLast() == bytes[index] else { throw Malformed(offset: index, what: "a bracket closes what it did not open") }
                    if open.isEmpty { return index + 1 }
                default: break
                }
                index += 1
            }
            throw Malformed(offset: end, what: "an object or array does not end")
        default:
            let start = index
            var index = index
            while index < end, !isDelimiter(bytes[index]) { index += 1 }
            guard index > start else { throw Malformed(offset: index, what: "a value is missing") }
            return index
        }
    }

    private static func decodeKey(_ bytes: [UInt8], _ range: Range<Int>) throws(Malformed) -> String {
        let inner = bytes[(range.lowerBound + 1)..<(range.upperBound - 1)]
        if !inner.contains(UInt8(ascii: "\\")) { return String(decoding: inner, as: UTF8.self) }
        guard let key = try? JSONDecoder().decode(String.self, from: Data(bytes[range])) else {
            throw Malformed(offset: range.lowerBound, what: "a key with a bad escape")
        }
        return key
    }
}
