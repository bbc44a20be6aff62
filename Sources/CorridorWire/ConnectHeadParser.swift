import CorridorPolicy
import NIOCore

/// A CONNECT request head that passed every check.
public struct ConnectRequest: Sendable, Equatable {
    /// The target host, normalised by ``HostName/normalize(_:)``; never an IP literal.
    public var host: String
    /// The target port, 1-65535.
    public var port: Int
    /// Bytes up to and including the blank line. Bytes after it (for example a ClientHello sent in
    /// the same write) belong to the tunnel.
    public var headLength: Int

    /// Creates a value; the parser is the usual source of these.
    public init(host: String, port: Int, headLength: Int) {
        self.host = host
        self.port = port
        self.headLength = headLength
    }
}

/// Why a proxy request head is refused, with the HTTP response it maps to.
public enum ConnectRejection: Sendable, Equatable, Error {
    /// No blank line within the size limit (431).
    case headTooLarge
    /// The head is not well-formed HTTP/1.1 (400); the string says why.
    case malformedRequest(String)
    /// A method other than CONNECT (405); the string is the method.
    case methodNotAllowed(String)
    /// The target host is an IP address in some spelling (400); the string is the host as sent.
    case ipLiteralTarget(String)
    /// The target is not `host:port` with an acceptable host name (400); the string says why.
    case invalidTarget(String)
    /// The port is missing or not a decimal number in 1-65535 (400); the string says why.
    case invalidPort(String)

    /// The HTTP status code to answer with.
    public var status: Int {
        switch self {
        case .headTooLarge: return 431
        case .methodNotAllowed: return 405
        case .malformedRequest, .ipLiteralTarget, .invalidTarget, .invalidPort: return 400
        }
    }

    /// The standard reason phrase for ``status``.
    public var reasonPhrase: String {
        switch self.status {
        case 431: return "Request Header Fields Too Large"
        case 405: return "Method Not Allowed"
        default: return "Bad Request"
        }
    }

    /// One human sentence for the response body and logs.
    public var explanation: String {
        switch self {
        case .headTooLarge: return "the request head is larger than the limit"
        case .malformedRequest(let reason): return "malformed request: \(reason)"
        case .methodNotAllowed(let method): return "method \(method) is not allowed; only CONNECT is supported"
        case .ipLiteralTarget(let host): return "IP-literal targets are not allowed (\(host))"
        case .invalidTarget(let reason): return "invalid CONNECT target: \(reason)"
        case .invalidPort(let reason): return "invalid CONNECT port: \(reason)"
        }
    }

    /// A stable snake_case label for metrics.
    public var metricLabel: String {
        switch self {
        case .headTooLarge: return "head_too_large"
        case .malformedRequest: return "malformed_request"
        case .methodNotAllowed: return "method_not_allowed"
        case .ipLiteralTarget: return "ip_literal_target"
        case .invalidTarget: return "invalid_target"
        case .invalidPort: return "invalid_port"
        }
    }
}

/// Incremental parser for an explicit-proxy `CONNECT host:port HTTP/1.1` request head.
///
/// Lines are checked as soon as their CRLF arrives, and the scan resumes where the previous call
/// stopped, so a client dripping one byte at a time costs linear time in total.
public struct ConnectHeadParser: Sendable {
    /// The result of a ``parse(_:)`` call.
    public enum Outcome: Sendable, Equatable {
        /// No blank line yet and nothing wrong so far; call again with more bytes.
        case needMoreData
        /// The head is complete and acceptable.
        case complete(ConnectRequest)
        /// The head is refused.
        case rejected(ConnectRejection)
    }

    /// The most bytes the head (blank line included) may take.
    public let maxHeadBytes: Int
    /// Offset (from the caller's readerIndex) of the next byte to scan.
    private var scanned = 0
    /// Offset of the first byte of the line being scanned.
    private var lineStart = 0
    /// The target from the request line, once it has been read.
    private var target: (host: String, port: Int)?
    /// The first outcome other than needMoreData; later calls return it again.
    private var finished: Outcome?

    /// Creates a parser that refuses heads longer than `maxHeadBytes`.
    public init(maxHeadBytes: Int = 8192) {
        self.maxHeadBytes = maxHeadBytes
    }

    /// `buffer` holds ALL bytes received from the client so far (readerIndex at the first byte).
    /// Call again each time more bytes arrive, with the grown buffer. `buffer` is not modified.
    public mutating func parse(_ buffer: ByteBuffer) -> Outcome {
        if let finished { return finished }
        let outcome: Outcome
        do {
            guard let request = try self.scan(buffer) else { return .needMoreData }
            outcome = .complete(request)
        } catch {
            outcome = .rejected(error)
        }
        self.finished = outcome
        return outcome
    }

    private mutating func scan(_ buffer: ByteBuffer) throws(ConnectRejection) -> ConnectRequest? {
        let view = buffer.readableBytesView
        let cr = UInt8(ascii: "\r")
        let lf = UInt8(ascii: "\n")
        while self.scanned < view.count {
            if self.scanned >= self.maxHeadBytes { throw .headTooLarge }
            let index = self.scanned
            let byte = view[view.startIndex + index]
            self.scanned += 1
            let previous: UInt8? = index > self.lineStart ? view[view.startIndex + index - 1] : nil
            if previous == cr, byte != lf { throw .malformedRequest("bare CR in the request head") }
            switch byte {
            case 0:
                throw .malformedRequest("NUL byte in the request head")
            case lf:
                guard previous == cr else { throw .malformedRequest("line ended by a bare LF instead of CRLF") }
                let line = view[(view.startIndex + self.lineStart)..<(view.startIndex + index - 1)]
                self.lineStart = index + 1
                if let request = try self.endOfLine(line, headLength: index + 1) { return request }
            default:
                continue
            }
        }
        return nil
    }

    /// Handles one line without its CRLF. Returns the request at the blank line.
    private mutating func endOfLine(_ line: ByteBufferView.SubSequence, headLength: Int) throws(ConnectRejection) -> ConnectRequest? {
        guard let target = self.target else {
            self.target = try Self.parseRequestLine(line)
            return nil
        }
        if line.isEmpty { return ConnectRequest(host: target.host, port: target.port, headLength: headLength) }
        try Self.checkHeaderLine(line)
        return nil
    }

    /// `request-line = method SP request-target SP HTTP-version` (RFC 9112 section 3), where for
    /// CONNECT the request-target is authority-form `host:port` (RFC 9110 section 9.3.6).
    static func parseRequestLine(_ line: ByteBufferView.SubSequence) throws(ConnectRejection) -> (host: String, port: Int) {
        if line.isEmpty { throw .malformedRequest("empty request line") }
        guard line.allSatisfy({ (0x21...0x7e).contains($0) || $0 == UInt8(ascii: " ") }) else {
            throw .malformedRequest("control or non-ASCII byte in the request line")
        }
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty }) else {
            throw .malformedRequest("the request line is not 'METHOD target HTTP-version' with single spaces")
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        let version = String(decoding: parts[2], as: UTF8.self)
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else {
            throw .malformedRequest("unsupported HTTP version \(Self.clip(version))")
        }
        guard parts[0].allSatisfy(Self.isTokenChar) else { throw .malformedRequest("the method is not a token") }
        guard method == "CONNECT" else { throw .methodNotAllowed(Self.clip(method)) }
        return try Self.parseAuthority(String(decoding: parts[1], as: UTF8.self))
    }

    /// `authority = host ":" port`, host a DNS name only, port decimal 1-65535 without leading zeros.
    static func parseAuthority(_ authority: String) throws(ConnectRejection) -> (host: String, port: Int) {
        if authority.contains("@") { throw .invalidTarget("userinfo ('user@') is not allowed in the target") }
        let hostPart: Substring
        let portPart: Substring
        if authority.hasPrefix("[") {
            // IP-literal = "[" ( IPv6address / IPvFuture ) "]": never a host name.
            guard let close = authority.firstIndex(of: "]") else { throw .invalidTarget("unclosed '[' in the target") }
            hostPart = authority[...close]
            let rest = authority[authority.index(after: close)...]
            guard rest.hasPrefix(":") else { throw .invalidPort("the target has no ':port'") }
            portPart = rest.dropFirst()
        } else {
            guard let colon = authority.lastIndex(of: ":") else { throw .invalidPort("the target has no ':port'") }
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        }
        if hostPart.isEmpty { throw .invalidTarget("the target host is empty") }
        let host: String
        switch HostName.normalize(String(hostPart)) {
        case .success(let name): host = name
        case .failure(.ipLiteral), .failure(.allNumericTopLabel): throw .ipLiteralTarget(Self.clip(String(hostPart)))
        case .failure(let problem):
            if hostPart.hasPrefix("[") { throw .ipLiteralTarget(Self.clip(String(hostPart))) }
            throw .invalidTarget(problem.explanation)
        }
        return (host, try Self.parsePort(portPart))
    }

    /// `port = 1*5DIGIT`, value 1-65535, no sign, no leading zero.
    static func parsePort(_ text: Substring) throws(ConnectRejection) -> Int {
        if text.isEmpty { throw .invalidPort("the port is empty") }
        guard text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
            throw .invalidPort("the port is not a decimal number")
        }
        guard text.utf8.count <= 5 else { throw .invalidPort("the port has more than 5 digits") }
        guard text.utf8.first != UInt8(ascii: "0") else { throw .invalidPort("the port is 0 or has a leading zero") }
        let value = text.utf8.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        guard (1...65535).contains(value) else { throw .invalidPort("the port \(value) is out of range 1-65535") }
        return value
    }

    /// `field-line = field-name ":" OWS field-value OWS` (RFC 9112 section 5), no obs-fold.
    static func checkHeaderLine(_ line: ByteBufferView.SubSequence) throws(ConnectRejection) {
        guard let first = line.first, first != UInt8(ascii: " "), first != UInt8(ascii: "\t") else {
            throw .malformedRequest("obsolete line folding (a header line starting with whitespace)")
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
            throw .malformedRequest("a header line has no ':'")
        }
        let name = line[line.startIndex..<colon]
        guard !name.isEmpty, name.allSatisfy(Self.isTokenChar) else {
            throw .malformedRequest("a header name is empty or not a token")
        }
        let value = line[line.index(after: colon)...]
        guard value.allSatisfy({ $0 == UInt8(ascii: "\t") || ($0 >= 0x20 && $0 != 0x7f) }) else {
            throw .malformedRequest("a header value has a control byte")
        }
    }

    /// `tchar` from RFC 9110 section 5.6.2.
    static func isTokenChar(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }
    }

    /// Caps text echoed from the client at 100 characters.
    static func clip(_ text: String) -> String {
        text.count <= 100 ? text : String(text.prefix(100)) + "..."
    }
}
