import NIOHTTP1

/// What a plain-HTTP request head must satisfy before anything of it goes upstream: a bounded
/// number of fields, framing the gateway re-encodes exactly (RFC 9112 section 6), and a Connection
/// header that names no framing field. Every step is one pass over the fields. An acceptable head
/// yields its body's framing, which the forwarded head then states.
enum HTTPRequestHeadCheck {
    /// The most header fields a request head may carry (Envoy's and Apache's default is 100); a
    /// bound on the per-field work of every later step.
    static let maxHeaderFields = 100

    struct Problem: Error, Equatable {
        var status: HTTPResponseStatus
        var code: HTTPRefusalCode
        var reason: String
    }

    /// How a request's body is delimited, as the request decoder reads it (RFC 9112 section
    /// 6.3). The request goes upstream framed exactly so, in the gateway's words: the client's
    /// Content-Length and Transfer-Encoding fields never cross as they were written.
    enum BodyFraming: Equatable {
        /// No body: neither field.
        case none
        case length(Int)
        case chunked
    }

    /// The problem with `head`, if any.
    static func problem(_ head: HTTPRequestHead) -> Problem? {
        if case .failure(let problem) = check(head) { return problem }
        return nil
    }

    /// The body's framing of an acceptable `head`, or what is wrong with it.
    static func check(_ head: HTTPRequestHead) -> Result<BodyFraming, Problem> {
        let headers = head.headers
        if head.method == .CONNECT {
            return .failure(Problem(status: .methodNotAllowed, code: .methodNotAllowed,
                                    reason: "CONNECT opens a tunnel, which a connection carrying plain HTTP does not; send it on a connection of its own to the connect listener"))
        }
        if headers.count > maxHeaderFields {
            return .failure(Problem(status: .requestHeaderFieldsTooLarge, code: .tooManyHeaderFields,
                                    reason: "the request head has \(headers.count) header fields; at most \(maxHeaderFields) are accepted"))
        }
        var transferCodings: [Substring] = []
        var transferEncodingFields = 0
        var contentLengths: [String] = []
        var connectionTokens: [Substring] = []
        for (name, value) in headers {
            switch name.utf8.count {
            case 14 where ASCIICase.equals(name, lowercase: "content-length"): contentLengths.append(value)
            case 17 where ASCIICase.equals(name, lowercase: "transfer-encoding"):
                transferEncodingFields += 1
                transferCodings += tokens(value)
            case 10 where ASCIICase.equals(name, lowercase: "connection"): connectionTokens += tokens(value)
            default: break
            }
        }
        if let framing = connectionTokens.first(where: { HTTPHeaders.framingFields.contains(ASCIICase.lowercased($0)) }) {
            return .failure(Problem(status: .badRequest, code: .badRequest,
                                    reason: "the Connection header names \(ASCIICase.lowercased(framing)), which frames the message and cannot be hop-by-hop"))
        }
        let framing: BodyFraming
        if transferEncodingFields > 0 {
            if !contentLengths.isEmpty {
                return .failure(Problem(status: .badRequest, code: .badRequest, reason: "the request has both Content-Length and Transfer-Encoding"))
            }
            // Chunked must be the final coding (else the body's end is unknowable: 400); any other
            // coding would reach the upstream re-framed as chunked alone, so it is refused (501).
            guard let last = transferCodings.last, ASCIICase.equals(last, lowercase: "chunked") else {
                return .failure(Problem(status: .badRequest, code: .badRequest,
                                        reason: "Transfer-Encoding '\(transferCodings.joined(separator: ", ").prefix(100))' does not end with chunked"))
            }
            if transferCodings.count > 1 {
                return .failure(Problem(status: .notImplemented, code: .unsupportedTransferCoding,
                                        reason: "Transfer-Encoding '\(transferCodings.joined(separator: ", ").prefix(100))': only chunked is supported"))
            }
            framing = .chunked
        } else if let text = contentLengths.first {
            guard contentLengths.count == 1, isDigits(text), let length = Int(text) else {
                return .failure(Problem(status: .badRequest, code: .badRequest, reason: "the request has an invalid or repeated Content-Length"))
            }
            framing = .length(length)
        } else {
            framing = .none
        }
        // RFC 9110 section 9.3.8: a TRACE request has no content.
        if head.method == .TRACE && framing != .none && framing != .length(0) {
            return .failure(Problem(status: .badRequest, code: .badRequest, reason: "a TRACE request carries no content (RFC 9110 section 9.3.8)"))
        }
        return .success(framing)
    }

    /// The comma-separated elements of a list-valued field, without surrounding whitespace; empty
    /// elements are dropped (RFC 9110 section 5.6.1).
    static func tokens(_ value: String) -> [Substring] {
        var tokens: [Substring] = []
        forEachToken(value) { tokens.append($0) }
        return tokens
    }

    /// ``tokens(_:)`` one at a time, without collecting them.
    static func forEachToken(_ value: String, _ body: (Substring) -> Void) {
        let text = Substring(value)
        var start = text.startIndex
        while start < text.endIndex {
            let end = text.utf8[start...].firstIndex(of: UInt8(ascii: ",")) ?? text.endIndex
            let token = text[start..<end].trimmingOWS()
            if !token.isEmpty { body(token) }
            start = end < text.endIndex ? text.utf8.index(after: end) : end
        }
    }

    private static func isDigits(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (HTTP's optional whitespace).
    func trimmingOWS() -> Substring {
        func isOWS(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        let bytes = utf8
        guard let first = bytes.firstIndex(where: { !isOWS($0) }), let last = bytes.lastIndex(where: { !isOWS($0) }) else {
            return self[endIndex...]
        }
        return Substring(bytes[first...last])
    }
}
