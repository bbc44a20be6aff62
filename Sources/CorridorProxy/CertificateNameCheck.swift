import NIOSSL

/// TLS origination's own check of the upstream certificate's name, on top of NIOSSL's full
/// verification: the certificate must name the expected host in a DNS subject alternative name.
/// NIOSSL also accepts an IP address entry equal to the address dialled, whatever name was
/// expected, and, in a certificate without alternative names, the common name. The gateway
/// resolved the name itself and verifies that name: a certificate for an address proves nothing
/// about it (whoever steers the answer to an address of theirs can hold one for that address).
enum CertificateNameCheck {
    /// Whether `certificate` names `host` (a normalized host name: lower case, no trailing dot)
    /// in a DNS alternative name: exactly, or by a wildcard that stands for the whole leftmost
    /// label (`*.example.com`; not `*.com`, `f*.example.com` or `*`).
    static func names(_ host: String, in certificate: NIOSSLCertificate) -> Bool {
        // NIOSSL's own reading of the extension (underscored, but the one its verification uses).
        for name in certificate._subjectAlternativeNames() where name.nameType == .dnsName {
            if matches(Array(name.contents), host: Array(host.utf8)) { return true }
        }
        return false
    }

    /// One DNS alternative name against `host`, ignoring ASCII case and a trailing dot.
    static func matches(_ name: [UInt8], host: [UInt8]) -> Bool {
        var pattern = name.map(ASCIICase.lowered)
        if pattern.last == dot { pattern.removeLast() }
        let host = host.map(ASCIICase.lowered)
        guard !pattern.isEmpty, !host.isEmpty else { return false }
        if pattern.count > 2 && pattern[0] == star && pattern[1] == dot {
            let suffix = pattern.dropFirst()  // ".example.com": two labels at least
            guard suffix.filter({ $0 == dot }).count >= 2, !suffix.contains(star),
                  let firstDot = host.firstIndex(of: dot), firstDot > 0 else { return false }
            return host[firstDot...].elementsEqual(suffix)
        }
        return !pattern.contains(star) && pattern == host
    }

    private static let dot = UInt8(ascii: "."), star = UInt8(ascii: "*")
}
