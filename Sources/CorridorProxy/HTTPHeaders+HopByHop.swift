import NIOHTTP1

extension HTTPHeaders {
    /// Fields that frame a message (and the Host): the Connection header may never name them as
    /// hop-by-hop, since dropping them would let a body be re-read as another request.
    static let framingFields: Set<String> = ["content-length", "transfer-encoding", "host"]

    /// Removes the hop-by-hop headers, including those the Connection header names: one pass over
    /// the fields whatever the number of names, and no copy of the fields when none is hop-by-hop.
    /// Names compare ignoring the case of ASCII letters only, as `HTTPRequestHeadCheck` compares
    /// them with the framing fields.
    static func removeHopByHop(_ headers: inout HTTPHeaders) {
        guard headers.contains(where: { FieldRole.of($0.name) == .hopByHop }) else { return }
        headers = HTTPHeaders(kept(headers, extraCapacity: 0) { _ in true })
    }

    /// The fields a request goes upstream with: the client's, in their order, without the
    /// hop-by-hop ones (RFC 9110 section 7.6.1, those the Connection header names included), the
    /// credentials meant for a proxy (`Proxy-Authorization`), the client's Host and its framing
    /// fields; then `host` as the Host and the body's `framing` (as the request decoder read the
    /// body, which is what goes upstream) in the gateway's words: `Content-Length: N`,
    /// `Transfer-Encoding: chunked`, or, with no body, `Content-Length: 0` for a method whose
    /// content means something (RFC 9110 section 8.6) and nothing otherwise. Two passes over the
    /// fields: one for the names the Connection fields add, one to keep the rest.
    static func forwardedRequest(_ headers: HTTPHeaders, host: String, method: HTTPMethod,
                                 framing: HTTPRequestHeadCheck.BodyFraming) -> HTTPHeaders {
        var fields = kept(headers, extraCapacity: 2) { role in role == .other }
        fields.append(("Host", host))
        switch framing {
        case .length(let length): fields.append(("Content-Length", String(length)))
        case .chunked: fields.append(("Transfer-Encoding", "chunked"))
        case .none:
            if method == .POST || method == .PUT || method == .PATCH { fields.append(("Content-Length", "0")) }
        }
        return HTTPHeaders(fields)
    }

    /// Whether the Transfer-Encoding fields of `headers` say anything but `chunked`: each field
    /// must be exactly that word (any case, spaces around it aside, no tab). Anything else counts
    /// as another coding: a list with an empty element (`chunked,`) or a tab after the word is
    /// not chunked to the response decoder, which would read the body to the connection's end,
    /// so such a response is refused, not passed on.
    static func hasTransferCodingBesidesChunked(_ headers: HTTPHeaders) -> Bool {
        for (name, value) in headers where ASCIICase.equals(name, lowercase: "transfer-encoding") {
            let word = value.utf8.drop(while: { $0 == UInt8(ascii: " ") }).reversed().drop(while: { $0 == UInt8(ascii: " ") }).reversed()
            if !word.elementsEqual("chunked".utf8, by: { ASCIICase.lowered($0) == $1 }) { return true }
        }
        return false
    }

    /// The trailer fields a request goes upstream with (and a response goes back with): the
    /// sender's, less the hop-by-hop ones (those the Connection fields of the message's `header`
    /// section name included) and every field that routes, frames, authenticates or conditions a
    /// message (RFC 9110 section 6.5.1: those cannot be sent as trailers, and a recipient that
    /// merged them into the header section would act on what the gateway never judged, a Host
    /// above all).
    static func forwardedTrailers(_ trailers: HTTPHeaders, header: HTTPHeaders) -> HTTPHeaders {
        HTTPHeaders(kept(trailers, extraCapacity: 0, alsoNamedBy: header) { role in role == .other }.filter { name, _ in
            !notInTrailers.contains(ASCIICase.lowercased(name))
        })
    }

    /// Only the Connection fields of `headers` (usually none): what ``forwardedTrailers(_:header:)``
    /// needs of a header section.
    static func connectionFields(_ headers: HTTPHeaders) -> HTTPHeaders {
        HTTPHeaders(headers.filter { ASCIICase.equals($0.name, lowercase: "connection") })
    }

    /// Fields a forwarded trailer section never carries (Host, Proxy-Authorization and the framing
    /// fields go by their role, the hop-by-hop ones always).
    static let notInTrailers: Set<String> = [
        "authorization", "cookie", "content-type", "content-encoding",
        "content-range", "expect", "max-forwards", "range", "if-match", "if-none-match", "if-modified-since",
        "if-unmodified-since", "if-range", "cache-control", "pragma", "forwarded", "via", "x-forwarded-for",
        "x-forwarded-host", "x-forwarded-proto",
    ]

    /// The fields that are not hop-by-hop (named by their own Connection fields or those of
    /// `alsoNamedBy`) and whose role `keep` accepts.
    private static func kept(_ headers: HTTPHeaders, extraCapacity: Int, alsoNamedBy other: HTTPHeaders? = nil,
                             _ keep: (FieldRole) -> Bool) -> [(String, String)] {
        var named: [String] = []
        for section in [headers, other ?? [:]] {
            for (name, value) in section where ASCIICase.equals(name, lowercase: "connection") {
                HTTPRequestHeadCheck.forEachToken(value) { token in
                    if FieldRole.of(token) != .hopByHop { named.append(ASCIICase.lowercased(token)) }
                }
            }
        }
        // Past a few names a set answers faster than a scan per field.
        let namedSet = named.count > 8 ? Set(named) : nil
        func isNamed(_ name: String) -> Bool {
            if named.isEmpty { return false }
            if let namedSet { return namedSet.contains(ASCIICase.lowercased(name)) }
            return named.contains { ASCIICase.equals(name, lowercase: $0) }
        }
        var fields: [(String, String)] = []
        fields.reserveCapacity(headers.count + extraCapacity)
        for (name, value) in headers {
            let role = FieldRole.of(name)
            if role != .hopByHop, keep(role), !isNamed(name) { fields.append((name, value)) }
        }
        return fields
    }

    /// What a field is to the gateway, told by its name's length first: most names are no
    /// hop-by-hop field's length and cost no comparison.
    private enum FieldRole: Equatable {
        /// Never crosses the gateway (RFC 9110 section 7.6.1): Connection, Proxy-Connection,
        /// Keep-Alive, TE, Trailer, Upgrade.
        case hopByHop
        case host
        case proxyAuthorization
        /// Content-Length, Transfer-Encoding: a forwarded request states its framing itself.
        case framing
        case other

        static func of(_ name: some StringProtocol) -> FieldRole {
            switch name.utf8.count {
            case 2 where ASCIICase.equals(name, lowercase: "te"): return .hopByHop
            case 4 where ASCIICase.equals(name, lowercase: "host"): return .host
            case 7 where ASCIICase.equals(name, lowercase: "trailer") || ASCIICase.equals(name, lowercase: "upgrade"): return .hopByHop
            case 10 where ASCIICase.equals(name, lowercase: "connection") || ASCIICase.equals(name, lowercase: "keep-alive"): return .hopByHop
            case 14 where ASCIICase.equals(name, lowercase: "content-length"): return .framing
            case 17 where ASCIICase.equals(name, lowercase: "transfer-encoding"): return .framing
            case 16 where ASCIICase.equals(name, lowercase: "proxy-connection"): return .hopByHop
            case 19 where ASCIICase.equals(name, lowercase: "proxy-authorization"): return .proxyAuthorization
            default: return .other
            }
        }
    }
}
