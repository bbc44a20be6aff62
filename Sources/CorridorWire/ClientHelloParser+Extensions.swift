import CorridorPolicy
import NIOCore

/// Extension types Corridor looks at.
enum TLSExtensionType {
    static let serverName: UInt16 = 0x0000
    static let alpn: UInt16 = 0x0010
    static let supportedVersions: UInt16 = 0x002b
    static let encryptedClientHello: UInt16 = 0xfe0d
}

extension ByteBuffer {
    /// Reads an integer or fails as malformed, naming the field (its name is built only on failure).
    fileprivate mutating func readOrFail<T: FixedWidthInteger>(_: T.Type, _ field: @autoclosure () -> String) throws(ClientHelloFailure) -> T {
        guard let value = self.readInteger(as: T.self) else {
            throw ClientHelloFailure(.malformed, "\(field()) is truncated")
        }
        return value
    }

    /// Reads a slice of exactly `length` bytes or fails as malformed, naming the field (its name is built only on failure).
    fileprivate mutating func readSliceOrFail(_ length: Int, _ field: @autoclosure () -> String) throws(ClientHelloFailure) -> ByteBuffer {
        guard let slice = self.readSlice(length: length) else {
            throw ClientHelloFailure(.malformed, "\(field()) length \(length) exceeds the \(self.readableBytes) bytes left")
        }
        return slice
    }
}

extension ClientHelloParser {
    /// True for the GREASE values of RFC 8701: 0x0a0a, 0x1a1a, ... 0xfafa.
    static func isGREASE(_ value: UInt16) -> Bool {
        value >> 8 == value & 0xff && value & 0x0f == 0x0a
    }

    /// The ClientHello body (RFC 8446 section 4.1.2), `body` being exactly the handshake length:
    ///
    ///     struct {
    ///         ProtocolVersion legacy_version = 0x0303;
    ///         Random random;                                   /* 32 bytes */
    ///         opaque legacy_session_id<0..32>;
    ///         CipherSuite cipher_suites<2..2^16-2>;
    ///         opaque legacy_compression_methods<1..2^8-1>;
    ///         Extension extensions<8..2^16-1>;                 /* absent in old clients */
    ///     } ClientHello;
    static func parseClientHello(_ body: ByteBuffer, helloBytes: Int) throws(ClientHelloFailure) -> ClientHelloInfo {
        var body = body
        let legacyVersion = try body.readOrFail(UInt16.self, "legacy_version")
        _ = try body.readSliceOrFail(32, "random")

        let sessionIDLength = Int(try body.readOrFail(UInt8.self, "legacy_session_id length"))
        guard sessionIDLength <= 32 else {
            throw ClientHelloFailure(.malformed, "legacy_session_id length \(sessionIDLength) is over 32")
        }
        _ = try body.readSliceOrFail(sessionIDLength, "legacy_session_id")

        let cipherSuitesLength = Int(try body.readOrFail(UInt16.self, "cipher_suites length"))
        guard cipherSuitesLength >= 2, cipherSuitesLength % 2 == 0 else {
            throw ClientHelloFailure(.malformed, "cipher_suites length \(cipherSuitesLength) is not a non-zero even number")
        }
        _ = try body.readSliceOrFail(cipherSuitesLength, "cipher_suites")

        let compressionLength = Int(try body.readOrFail(UInt8.self, "legacy_compression_methods length"))
        guard compressionLength >= 1 else {
            throw ClientHelloFailure(.malformed, "legacy_compression_methods is empty")
        }
        _ = try body.readSliceOrFail(compressionLength, "legacy_compression_methods")

        // A hello without an extensions block (pre-TLS 1.2 style) cannot carry SNI.
        guard body.readableBytes > 0 else { throw ClientHelloFailure(.noSNI, "the ClientHello has no extensions") }

        let extensionsLength = Int(try body.readOrFail(UInt16.self, "extensions length"))
        var extensions = try body.readSliceOrFail(extensionsLength, "extensions")
        guard body.readableBytes == 0 else {
            throw ClientHelloFailure(.trailingBytesInHello, "\(body.readableBytes) bytes after the extensions block")
        }
        var info = ClientHelloInfo(
            serverName: "", alpn: [], supportedVersions: [legacyVersion],
            legacyVersion: legacyVersion, hasECH: false, helloBytes: helloBytes)
        let serverName = try parseExtensions(&extensions, into: &info)
        guard let serverName else { throw ClientHelloFailure(.noSNI) }
        info.serverName = try parseServerName(serverName)
        return info
    }

    /// The extensions block, `extensions` being exactly its declared length:
    ///
    ///     struct {
    ///         ExtensionType extension_type;
    ///         opaque extension_data<0..2^16-1>;
    ///     } Extension;
    ///
    /// Fills ALPN, supported_versions and ECH presence into `info`; returns the server_name data if present.
    /// All extensions are checked structurally before the server name is judged.
    private static func parseExtensions(
        _ extensions: inout ByteBuffer, into info: inout ClientHelloInfo
    ) throws(ClientHelloFailure) -> ByteBuffer? {
        var seen = ExtensionTypeSet()
        var serverName: ByteBuffer?
        while extensions.readableBytes > 0 {
            let type = try extensions.readOrFail(UInt16.self, "extension type")
            let length = Int(try extensions.readOrFail(UInt16.self, "extension length"))
            let data = try extensions.readSliceOrFail(length, "extension 0x\(String(type, radix: 16)) data")
            guard seen.insert(type) else {
                throw ClientHelloFailure(.duplicateExtension, "extension 0x\(String(type, radix: 16)) appears twice")
            }
            switch type {
            case TLSExtensionType.serverName: serverName = data
            case TLSExtensionType.alpn: info.alpn = try parseALPN(data)
            case TLSExtensionType.supportedVersions: info.supportedVersions = try parseSupportedVersions(data)
            case TLSExtensionType.encryptedClientHello, 0xfe08...0xfe0c, 0xff02, 0xffce:
                // Earlier Encrypted Client Hello drafts took 0xfe08 to 0xfe0c (draft-08 to -12) and
                // 0xff02 (draft-07), ESNI's encrypted_server_name 0xffce: clients and fronts that
                // speak them hide the real server name as the published code point does.
                info.hasECH = true
            default: break
            }
        }
        return serverName
    }

    /// The server_name extension data (RFC 6066 section 3):
    ///
    ///     struct {
    ///         NameType name_type;                 /* host_name(0) */
    ///         select (name_type) {
    ///             case host_name: HostName;
    ///         } name;
    ///     } ServerName;
    ///     opaque HostName<1..2^16-1>;
    ///     struct {
    ///         ServerName server_name_list<1..2^16-1>
    ///     } ServerNameList;
    ///
    /// Returns the name normalised by ``HostName/normalize(bytes:)``.
    private static func parseServerName(_ data: ByteBuffer) throws(ClientHelloFailure) -> String {
        var data = data
        guard data.readableBytes > 0 else {
            throw ClientHelloFailure(.emptyServerNameList, "the server_name extension data is empty")
        }
        let listLength = Int(try data.readOrFail(UInt16.self, "server_name_list length"))
        var list = try data.readSliceOrFail(listLength, "server_name_list")
        guard data.readableBytes == 0 else {
            throw ClientHelloFailure(.malformed, "\(data.readableBytes) bytes after server_name_list")
        }
        guard listLength > 0 else { throw ClientHelloFailure(.emptyServerNameList) }

        // Walk every entry first, so a malformed list is reported as such.
        var entries: [(type: UInt8, name: ByteBuffer)] = []
        while list.readableBytes > 0 {
            let nameType = try list.readOrFail(UInt8.self, "ServerName name_type")
            let nameLength = Int(try list.readOrFail(UInt16.self, "HostName length"))
            entries.append((nameType, try list.readSliceOrFail(nameLength, "HostName")))
        }
        guard entries.count == 1, let entry = entries.first else {
            throw ClientHelloFailure(.multipleServerNames, "\(entries.count) names in server_name_list")
        }
        guard entry.type == 0 else {
            throw ClientHelloFailure(.unsupportedNameType, "name_type \(entry.type)")
        }
        switch HostName.normalize(bytes: entry.name.readableBytesView) {
        case .success(let name): return name
        case .failure(let problem): throw ClientHelloFailure(.invalidServerName, problem.explanation)
        }
    }

    /// The ALPN extension data (RFC 7301 section 3.1):
    ///
    ///     opaque ProtocolName<1..2^8-1>;
    ///     struct {
    ///         ProtocolName protocol_name_list<2..2^16-1>
    ///     } ProtocolNameList;
    private static func parseALPN(_ data: ByteBuffer) throws(ClientHelloFailure) -> [String] {
        var data = data
        let listLength = Int(try data.readOrFail(UInt16.self, "protocol_name_list length"))
        guard listLength >= 2 else {
            throw ClientHelloFailure(.malformed, "protocol_name_list length \(listLength) is under 2")
        }
        var list = try data.readSliceOrFail(listLength, "protocol_name_list")
        guard data.readableBytes == 0 else {
            throw ClientHelloFailure(.malformed, "\(data.readableBytes) bytes after protocol_name_list")
        }
        var names: [String] = []
        while list.readableBytes > 0 {
            let nameLength = Int(try list.readOrFail(UInt8.self, "ProtocolName length"))
            guard nameLength >= 1 else { throw ClientHelloFailure(.malformed, "empty ProtocolName") }
            let name = try list.readSliceOrFail(nameLength, "ProtocolName")
            names.append(String(decoding: name.readableBytesView, as: UTF8.self))
        }
        return names
    }

    /// The supported_versions extension data in a ClientHello (RFC 8446 section 4.2.1):
    ///
    ///     struct {
    ///         ProtocolVersion versions<2..254>;
    ///     } SupportedVersions;
    ///
    /// Returns the versions in order without GREASE values.
    private static func parseSupportedVersions(_ data: ByteBuffer) throws(ClientHelloFailure) -> [UInt16] {
        var data = data
        let listLength = Int(try data.readOrFail(UInt8.self, "supported_versions length"))
        guard listLength >= 2, listLength % 2 == 0 else {
            throw ClientHelloFailure(.malformed, "supported_versions length \(listLength) is not a non-zero even number")
        }
        var list = try data.readSliceOrFail(listLength, "supported_versions")
        guard data.readableBytes == 0 else {
            throw ClientHelloFailure(.malformed, "\(data.readableBytes) bytes after supported_versions")
        }
        var versions: [UInt16] = []
        while let version = list.readInteger(as: UInt16.self) {
            if !isGREASE(version) { versions.append(version) }
        }
        return versions
    }
}

/// The extension types seen in one ClientHello: a bitmap of all 65,536 (8 KiB, zeroed once), so
/// each insert is O(1) with no hashing, whatever the number of extensions a client sends.
struct ExtensionTypeSet {
    private var words = [UInt64](repeating: 0, count: 1 << 10)

    /// Inserts `type`; false if it was already there.
    mutating func insert(_ type: UInt16) -> Bool {
        let word = Int(type >> 6)
        let bit = UInt64(1) << (type & 63)
        if words[word] & bit != 0 { return false }
        words[word] |= bit
        return true
    }
}
