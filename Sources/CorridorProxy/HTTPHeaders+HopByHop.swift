import NIOHTTP1

extension HTTPHeaders {
    /// Fields that frame a message (and the Host): the Connection header may never name them as
    /// hop-by-hop, since dropping them would let a body be re-read as another request.
    static let framingFields: Set<String> = ["content-length", "transfer-encoding", "host"]

    /// Hop-by-hop fields that never cross the gateway (RFC 9110 section 7.6.1).
    static let hopByHopFields: [String] = ["connection", "proxy-connection", "keep-alive", "te", "trailer", "upgrade"]

    /// Removes the hop-by-hop headers, including those the Connection header names: one pass over
    /// the fields whatever the number of names (a set, not a scan per name, once there are more
    /// than a few), and no copy of the fields when none is hop-by-hop. Names compare ignoring the
    /// case of ASCII letters only, as `HTTPRequestHeadCheck` compares them with the framing fields.
    static func removeHopByHop(_ headers: inout HTTPHeaders) {
        var named: [String] = []
        var found = false
        for (name, value) in headers where isStandardHopByHop(name) {
            found = true
            guard ASCIICase.equals(name, lowercase: "connection") else { continue }
            HTTPRequestHeadCheck.forEachToken(value) { token in
                if !isStandardHopByHop(token) { named.append(ASCIICase.lowercased(token)) }
            }
        }
        guard found else { return }
        let namedSet = named.count > 8 ? Set(named) : nil
        func isHopByHop(_ name: String) -> Bool {
            if isStandardHopByHop(name) { return true }
            if let namedSet { return namedSet.contains(ASCIICase.lowercased(name)) }
            return named.contains { ASCIICase.equals(name, lowercase: $0) }
        }
        headers = HTTPHeaders(headers.filter { !isHopByHop($0.name) })
    }

    private static func isStandardHopByHop(_ name: some StringProtocol) -> Bool {
        hopByHopFields.contains { ASCIICase.equals(name, lowercase: $0) }
    }
}
