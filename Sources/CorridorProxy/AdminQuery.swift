/// The parameters of an admin API request's query string (`a=1&b=x%20y&label=k=v&label=...`),
/// percent-decoded, in order; a key may repeat.
struct AdminQuery: Sendable, Equatable {
    private(set) var items: [(key: String, value: String)] = []

    init(uri: String) {
        guard let mark = uri.firstIndex(of: "?") else { return }
        for pair in uri[uri.index(after: mark)...].split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            items.append((Self.decode(parts[0]), parts.count > 1 ? Self.decode(parts[1]) : ""))
        }
    }

    /// The first value of `key`.
    subscript(key: String) -> String? { items.first { $0.key == key }?.value }

    /// Every value of `key`, in order.
    func all(_ key: String) -> [String] { items.filter { $0.key == key }.map(\.value) }

    /// `%XX` and `+` decoded; a malformed escape is kept as it is.
    static func decode(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var index = text.utf8.startIndex
        let utf8 = text.utf8
        while index != utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), let high = utf8.index(index, offsetBy: 1, limitedBy: utf8.endIndex), high != utf8.endIndex,
                      let low = utf8.index(high, offsetBy: 1, limitedBy: utf8.endIndex), low != utf8.endIndex,
                      let value = UInt8(String(decoding: [utf8[high], utf8[low]], as: UTF8.self), radix: 16) {
                bytes.append(value)
                index = low
            } else {
                bytes.append(byte)
            }
            index = utf8.index(after: index)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func == (lhs: AdminQuery, rhs: AdminQuery) -> Bool {
        lhs.items.map(\.key) == rhs.items.map(\.key) && lhs.items.map(\.value) == rhs.items.map(\.value)
    }
}
