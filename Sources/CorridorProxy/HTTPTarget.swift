import CorridorPolicy
import NIOHTTP1

/// Where a plain-HTTP request is going: from the absolute-form URI of an explicit proxy client
/// (`GET http://host:port/path`), else from the Host header of an origin-form request (`GET /path`).
struct HTTPTarget: Equatable {
    /// Why a request has no usable target: a sentence for the 400 response.
    struct Problem: Error, Equatable {
        var reason: String
    }

    var host: String
    var port: Int
    /// Origin form, what the upstream is sent.
    var path: String
    /// The Host header value to send when the request had none.
    var hostHeader: String

    /// A fragment (`#...`) is never part of what is forwarded (RFC 9110 section 4.2.5: it is for
    /// the client alone); an absolute-form `OPTIONS` with no path and no query asks about the
    /// server as a whole and is forwarded as `OPTIONS *` (RFC 9112 section 3.2.4).
    static func parse(_ head: HTTPRequestHead) -> Result<HTTPTarget, HTTPTarget.Problem> {
        let uri = head.uri
        let bytes = uri.utf8
        // Delimiters are found byte by byte: a '#' or '/' followed by a combining mark still ends
        // what it ends, as it does for the upstream.
        let beforeFragment = bytes[..<(bytes.firstIndex(of: UInt8(ascii: "#")) ?? bytes.endIndex)]
        if ASCIICase.hasPrefix(uri, lowercase: "http://") {
            let rest = beforeFragment.dropFirst(7)
            let authorityEnd = rest.firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") } ?? rest.endIndex
            let authority = String(Substring(rest[..<authorityEnd]))
            var path = String(Substring(rest[authorityEnd...]))
            if path.isEmpty && head.method == .OPTIONS {
                path = "*"
            } else if path.utf8.first != UInt8(ascii: "/") {
                path = "/" + path
            }
            return target(authority: authority, path: path)
        }
        if ASCIICase.hasPrefix(uri, lowercase: "https://") {
            return .failure(Problem(reason: "https:// targets go through CONNECT (the client speaks TLS itself)"))
        }
        let path: String
        if uri == "*" && head.method == .OPTIONS {
            path = uri
        } else {
            guard bytes.first == UInt8(ascii: "/") else { return .failure(Problem(reason: "unsupported request target '\(uri.prefix(100))'")) }
            path = String(Substring(beforeFragment))
        }
        var host: String?
        var hosts = 0
        for (name, value) in head.headers where ASCIICase.equals(name, lowercase: "host") {
            hosts += 1
            host = value
        }
        guard let host, hosts == 1 else {
            return .failure(Problem(reason: hosts == 0 ? "the request has no Host header" : "the request has \(hosts) Host headers"))
        }
        // A field value excludes the whitespace around it (RFC 9110 section 5.5).
        return target(authority: String(Substring(host).trimmingOWS()), path: path)
    }

    private static func target(authority: String, path: String) -> Result<HTTPTarget, HTTPTarget.Problem> {
        let bytes = authority.utf8
        if bytes.contains(UInt8(ascii: "@")) { return .failure(Problem(reason: "userinfo in the request target is not allowed")) }
        var host = authority
        var port = 80
        if let colon = bytes.lastIndex(of: UInt8(ascii: ":")), bytes.last != UInt8(ascii: "]") {
            let portText = bytes[bytes.index(after: colon)...]
            guard !portText.isEmpty, portText.count <= 5,
                  portText.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  let number = Int(Substring(portText)), (1...65535).contains(number) else {
                return .failure(Problem(reason: "invalid port in '\(authority.prefix(100))'"))
            }
            port = number
            host = String(Substring(bytes[..<colon]))
        }
        switch HostName.normalize(host) {
        case .success(let name):
            return .success(HTTPTarget(host: name, port: port, path: path, hostHeader: port == 80 ? name : "\(name):\(port)"))
        case .failure(let problem):
            return .failure(Problem(reason: "'\(host.prefix(100))' is not an allowed host name: \(problem.explanation)"))
        }
    }
}
