import NIOHTTP1

extension HTTPHeaders {
    /// Fields that frame a message (and the Host): the Connection header may never name them as
    /// hop-by-hop, since dropping them would let a body be re-read as another request.
    static let framingFields: Set<String> = ["content-length", "transfer-encoding", "host"]

    /// Hop-by-hop fields that never cross the gateway (RFC 9110 section 7.6.1).
    static let hopByHopFields: [String] = ["connection", "proxy-connection", "keep-alive", "te", "trailer", "upgrade"]

    /// Removes the hop-by-hop headers, including those the Connection header names: one pass over
    /// the fields whatever the number of names (a set, not a scan per name), and no copy of the
    /// fields when none is hop-by-hop.
    static func removeHopByHop(_ headers: inout HTTPHeaders) {
        let connection = headers[canonicalForm: "connection"]
        let named = connection.isEmpty ? nil : Set(connection.map { $0.lowercased() })
        func isHopByHop(_ name: String) -> Bool {
            hopByHopFields.contains { ASCIICase.equals(name, lowercase: $0) } || named?.contains(name.lowercased()) == true
        }
        guard headers.contains(where: { isHopByHop($0.name) }) else { return }
        headers = HTTPHeaders(headers.filter { !isHopByHop($0.name) })
    }
}
