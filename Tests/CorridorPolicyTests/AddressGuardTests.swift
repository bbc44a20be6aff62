import Testing
@testable import CorridorPolicy

@Suite("AddressGuard")
struct AddressGuardTests {
    static let plain = AddressGuard(allowPrivate: [])

    @Test("non-public destinations are blocked", arguments: [
        "127.0.0.1", "127.255.255.254", "169.254.169.254", "169.254.0.1", "10.0.0.1", "10.255.255.255",
        "172.16.0.1", "172.31.255.255", "192.168.0.1", "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3",
        "224.0.0.1", "255.255.255.255", "192.0.2.1",
        "::1", "::", "fc00::1", "fd12:3456:789a::1", "fe80::1", "febf:ffff::1", "ff02::1",
        "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:192.168.1.1", "::ffff:0.0.0.0",
        "::10.0.0.1", "::127.0.0.1", "::169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::1",
    ])
    func blocked(_ address: String) {
        guard case .blocked(let range, let name) = Self.plain.check(ip(address)) else {
            Issue.record("\(address) was allowed")
            return
        }
        #expect(!range.isEmpty && !name.isEmpty)
    }

    @Test("public destinations are allowed", arguments: [
        "93.184.216.34", "8.8.8.8", "1.1.1.1", "11.0.0.1", "172.15.255.255", "172.32.0.1", "192.169.0.1",
        "100.63.255.255", "100.128.0.1", "169.255.0.1", "126.255.255.255", "128.0.0.1",
        "2606:2800:220:1::1", "2a00:1450:4001::1", "::ffff:93.184.216.34",
    ])
    func allowed(_ address: String) {
        #expect(Self.plain.check(ip(address)) == .allowed)
    }

    @Test("the blocked range and its name are reported", arguments: [
        Named("metadata service", ("169.254.169.254", "169.254.0.0/16", "metadata")),
        Named("loopback", ("127.0.0.1", "127.0.0.0/8", "loopback")),
        Named("mapped RFC 1918", ("::ffff:10.1.2.3", "10.0.0.0/8", "RFC 1918")),
        Named("CGNAT", ("100.64.1.1", "100.64.0.0/10", "carrier-grade NAT")),
        Named("ULA", ("fd00::1", "fc00::/7", "unique local")),
        Named("IPv6 link-local", ("fe80::1", "fe80::/10", "link-local")),
        Named("Azure WireServer", ("168.63.129.16", "168.63.129.16/32", "Azure's platform endpoint")),
        Named("Azure WireServer, mapped", ("::ffff:168.63.129.16", "168.63.129.16/32", "WireServer")),
    ])
    func reportsRange(_ example: Named<(String, String, String)>) {
        let (address, range, name) = example.value
        guard case .blocked(let reported, let reportedName) = Self.plain.check(ip(address)) else {
            Issue.record("\(address) was allowed")
            return
        }
        #expect(reported == range)
        #expect(reportedName.contains(name))
    }

    @Test("allowPrivate opens the listed ranges, in every spelling, and nothing else")
    func allowPrivate() {
        let guardLoopback = AddressGuard(allowPrivate: [cidr("127.0.0.0/8"), cidr("fd00:1::/64")])
        #expect(guardLoopback.check(ip("127.0.0.1")) == .allowed)
        #expect(guardLoopback.check(ip("127.9.9.9")) == .allowed)
        #expect(guardLoopback.check(ip("::ffff:127.0.0.1")) == .allowed)
        #expect(guardLoopback.check(ip("fd00:1::5")) == .allowed)
        #expect(guardLoopback.check(ip("fd00:2::5")) != .allowed)
        #expect(guardLoopback.check(ip("10.0.0.1")) != .allowed)
        #expect(guardLoopback.check(ip("169.254.169.254")) != .allowed)
        #expect(guardLoopback.check(ip("::1")) != .allowed, "IPv6 loopback is not in 127.0.0.0/8")
    }

    @Test("a service's own addresses are an exception for that service only")
    func serviceAddresses() {
        let onPrem = [cidr("10.20.0.0/16")]
        #expect(Self.plain.check(ip("10.20.1.1"), serviceAddresses: onPrem) == .allowed)
        #expect(Self.plain.check(ip("::ffff:10.20.1.1"), serviceAddresses: onPrem) == .allowed)
        #expect(Self.plain.check(ip("10.21.0.1"), serviceAddresses: onPrem) != .allowed)
        #expect(Self.plain.check(ip("10.20.1.1")) != .allowed)
    }

    @Test("an exception that takes in the metadata service or loopback is named as a risk")
    func sensitiveExceptions() {
        let everything = ExternalService(metadata: ObjectMeta(name: "anything"), hosts: [], addresses: [cidr("0.0.0.0/0")], ports: [])
        let onPrem = ExternalService(metadata: ObjectMeta(name: "on-prem"), hosts: [], addresses: [cidr("10.20.0.0/16")], ports: [])
        let risks = AddressGuard.sensitiveExceptions(allowPrivate: [cidr("10.0.0.0/8"), cidr("169.254.0.0/16"), cidr("::/0")],
                                                     services: [everything, onPrem])
        #expect(risks == [
            "allowPrivate 169.254.0.0/16 lets any allowed name resolve to the cloud metadata service (169.254.169.254)",
            "allowPrivate ::/0 lets any allowed name resolve to the cloud metadata service (fd00:ec2::254) and loopback (the gateway's own host)",
            "ExternalService anything addresses 0.0.0.0/0 let its names resolve to the cloud metadata service (169.254.169.254) and loopback (the gateway's own host)",
        ], "\(risks)")
    }

    @Test("extra blocked ranges from the GatewayConfig are blocked")
    func extraBlocked() {
        let strict = AddressGuard(allowPrivate: [], extraBlocked: [cidr("93.184.216.0/24")])
        #expect(strict.check(ip("93.184.216.34")) == .blocked(range: "93.184.216.0/24", name: "blocked by GatewayConfig spec.destinations.block"))
        #expect(strict.check(ip("93.184.217.34")) == .allowed)
    }
}

@Suite("IPAddress and CIDR")
struct CIDRTests {
    @Test("IP parsing is strict", arguments: [
        Named("dotted quad", ("192.0.2.1", true)), Named("IPv6", ("2001:db8::1", true)),
        Named("bracketed IPv6", ("[::1]", true)), Named("mapped", ("::ffff:1.2.3.4", true)),
        Named("short IPv4", ("127.1", false)), Named("decimal IPv4", ("2130706433", false)),
        Named("hex IPv4", ("0x7f000001", false)), Named("octal IPv4", ("0177.0.0.1", false)),
        Named("zone id", ("fe80::1%eth0", false)), Named("out of range octet", ("256.0.0.1", false)),
        Named("name", ("example.com", false)), Named("empty", ("", false)),
    ])
    func parsing(_ example: Named<(String, Bool)>) {
        #expect((IPAddress(parsing: example.value.0) != nil) == example.value.1)
    }

    @Test("addresses print canonically", arguments: [
        Named("IPv4", ("192.0.2.1", "192.0.2.1")), Named("IPv6 compressed", ("2001:0db8:0:0:0:0:0:1", "2001:db8::1")),
        Named("loopback", ("[::1]", "::1")), Named("mapped", ("::ffff:10.0.0.1", "::ffff:10.0.0.1")),
    ])
    func description(_ example: Named<(String, String)>) {
        #expect(ip(example.value.0).description == example.value.1)
    }

    @Test("embedded IPv4 is found in mapped and compatible forms only", arguments: [
        Named<(String, String?)>("mapped", ("::ffff:10.0.0.1", "10.0.0.1")), Named<(String, String?)>("compatible", ("::10.0.0.1", "10.0.0.1")),
        Named("loopback is not compatible", ("::1", String?.none)), Named("unspecified", ("::", String?.none)),
        Named("global", ("2606:2800:220:1::1", String?.none)), Named("IPv4 itself", ("10.0.0.1", String?.none)),
    ])
    func embedded(_ example: Named<(String, String?)>) {
        #expect(ip(example.value.0).embeddedIPv4?.description == example.value.1)
    }

    @Test("CIDR parsing accepts ranges and bare addresses", arguments: [
        Named("IPv4 /8", ("10.0.0.0/8", "10.0.0.0/8")), Named("bare IPv4 is /32", ("192.0.2.1", "192.0.2.1/32")),
        Named("IPv6 /7", ("fc00::/7", "fc00::/7")), Named("bare IPv6 is /128", ("::1", "::1/128")),
        Named("zero prefix", ("0.0.0.0/0", "0.0.0.0/0")), Named("v6 /64", ("fd00:1::/64", "fd00:1::/64")),
    ])
    func parsesCIDR(_ example: Named<(String, String)>) throws {
        #expect(try CIDR(parsing: example.value.0).description == example.value.1)
    }

    @Test("CIDR parsing rejects bad text with the right problem", arguments: [
        Named("host bits set (v4)", ("10.0.0.1/8", CIDR.Problem.hostBitsSet("10.0.0.1/8"))),
        Named("host bits set (v6)", ("fd00::1/64", .hostBitsSet("fd00::1/64"))),
        Named("prefix too long (v4)", ("10.0.0.0/33", .badPrefix("10.0.0.0/33"))),
        Named("prefix too long (v6)", ("fd00::/129", .badPrefix("fd00::/129"))),
        Named("empty prefix", ("10.0.0.0/", .badPrefix("10.0.0.0/"))),
        Named("signed prefix", ("10.0.0.0/+8", .badPrefix("10.0.0.0/+8"))),
        Named("negative prefix", ("10.0.0.0/-1", .badPrefix("10.0.0.0/-1"))),
        Named("two slashes", ("10.0.0.0/8/8", .badPrefix("10.0.0.0/8/8"))),
        Named("not an address", ("10.0.0.300/24", .notAnAddress("10.0.0.300/24"))),
        Named("short IPv4", ("10.1/16", .notAnAddress("10.1/16"))),
        Named("empty", ("", .notAnAddress(""))),
    ])
    func rejectsCIDR(_ example: Named<(String, CIDR.Problem)>) {
        #expect(throws: example.value.1) { try CIDR(parsing: example.value.0) }
    }

    @Test("containment respects prefix, family and IPv4-mapped IPv6")
    func contains() {
        let ten = cidr("10.0.0.0/8")
        #expect(ten.contains(ip("10.255.0.1")))
        #expect(!ten.contains(ip("11.0.0.1")))
        #expect(ten.contains(ip("::ffff:10.1.1.1")))
        #expect(!ten.contains(ip("fd00::1")))
        #expect(cidr("0.0.0.0/0").contains(ip("203.0.113.1")))
        #expect(cidr("fe80::/10").contains(ip("febf::1")))
        #expect(!cidr("fe80::/10").contains(ip("fec0::1")))
        #expect(!cidr("::/0").contains(ip("10.0.0.1")), "an IPv6 range does not contain an IPv4 address")
        #expect(cidr("2001:db8::/96").contains(ip("2001:db8::ffff:ffff")))
        #expect(!cidr("2001:db8::/96").contains(ip("2001:db8::1:0:0")))
    }
}

@Suite struct AddressGuardPrecedenceTests {
    @Test("the operator's block ranges win over allowPrivate and service addresses")
    func blockWinsOverExceptions() throws {
        let guardrail = AddressGuard(allowPrivate: [try CIDR(parsing: "10.0.0.0/8")], extraBlocked: [try CIDR(parsing: "10.1.0.0/16")])
        #expect(guardrail.check(IPAddress(parsing: "10.2.0.1")!) == .allowed)
        #expect(guardrail.check(IPAddress(parsing: "10.1.0.1")!) != .allowed)
        #expect(guardrail.check(IPAddress(parsing: "10.1.0.1")!, serviceAddresses: [try CIDR(parsing: "10.1.0.0/24")]) != .allowed)
    }

    @Test("IPv4-translated addresses (::ffff:0:a.b.c.d) are blocked")
    func translatedForm() {
        #expect(AddressGuard(allowPrivate: []).check(IPAddress(parsing: "::ffff:0:10.0.0.1")!) != .allowed)
    }
}
