import NIOHTTP1

extension HTTPHeaders {
    /// Fields that frame a message (and the Host): the Connection header may never name them as
    /// hop-by-hop, since dropping them would let a body be re-read as another request.
    static let framingFields: Set<String> = ["content-length", "transfer-encoding", "host"]

    /// Hop-by-hop fields that never cross the gateway (RFC 9110 section 7.6.1).
    static let hopByHopFields: Set<String> = ["connection", "proxy-connection", "keep-alive", "te", "trailer", "upgrade"]

    /// Removes the hop-by-hop headers, including those the Connection header names: one pass over
    /// the fields whatever the number of names (a set, not a scan per name).
    static func removeHopByHop(_ headers: inout HTTPHeaders) {
        var named = hopByHopFields
        for value in headers[canonicalForm: "connection"] { named.insert(value.lowercased()) }
        guard headers.contains(where: { named.contains($0.name.lowercased()) }) else { return }
        headers = HTTPHeaders(headers.filter { !named.contains($0.name.lowercased()) })
    }
}
