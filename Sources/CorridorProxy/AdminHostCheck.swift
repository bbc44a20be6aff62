import CorridorPolicy

/// Which Host names the admin listener answers to. A web page can point a name of its own at the
/// admin address (DNS rebinding: the name first resolves to the page's server, then to
/// 127.0.0.1 or the gateway's address), and the browser then lets it read the answers as its own
/// origin's; its requests carry that name as their Host. The admin listener answers only to names
/// no outsider's DNS can hand a browser: an IP address, `localhost` (and `*.localhost`), a single
/// label, a cluster Service's name (`*.svc`, `*.svc.cluster.local`), and those the operator lists
/// (`spec.admin.hosts`: an Ingress's name, a Service's `NAME.NAMESPACE`, or `*.svc.DOMAIN` for the
/// Service names of a cluster domain other than cluster.local). A request without a Host
/// (HTTP/1.0) is no browser's.
enum AdminHostCheck {
    static func allows(_ host: String?, listed: Set<String>) -> Bool {
        guard let host, !host.isEmpty else { return true }
        var name = Substring(host)
        if name.hasPrefix("[") {
            // An IPv6 literal, with or without a port.
            guard let close = name.firstIndex(of: "]") else { return false }
            return IPAddress(parsing: String(name[name.index(after: name.startIndex)..<close])) != nil
        }
        if let colon = name.lastIndex(of: ":"), name[name.index(after: colon)...].allSatisfy(\.isASCIIDigit) {
            name = name[..<colon]
        }
        if IPAddress(parsing: String(name)) != nil { return true }
        var lower = name.lowercased()
        if lower.hasSuffix(".") { lower.removeLast() }
        if listed.contains(lower) { return true }
        for entry in listed where entry.hasPrefix("*.") && lower.hasSuffix(entry.dropFirst()) { return true }
        if lower.isEmpty || lower.contains(where: { !($0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".")) }) { return false }
        return lower == "localhost" || lower.hasSuffix(".localhost") || !lower.contains(".")
            || lower.hasSuffix(".svc") || lower.hasSuffix(".svc.cluster.local")
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
