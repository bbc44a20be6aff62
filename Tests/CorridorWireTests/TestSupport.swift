import CorridorWire
import NIOCore

// Byte helpers for building wire messages in tests.
func u16(_ value: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)] }
func u24(_ value: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: value >> 16)] + u16(value) }

/// `extension_type(2) length(2) data`.
func tlsExtension(_ type: UInt16, _ data: [UInt8]) -> [UInt8] { u16(Int(type)) + u16(data.count) + data }

/// server_name extension data with the given (name_type, name) entries.
func serverNameData(_ entries: [(UInt8, [UInt8])]) -> [UInt8] {
    let list = entries.flatMap { [$0.0] + u16($0.1.count) + $0.1 }
    return u16(list.count) + list
}

func serverNameData(_ name: String) -> [UInt8] { serverNameData([(0, Array(name.utf8))]) }

func alpnData(_ names: [String]) -> [UInt8] {
    let list = names.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
    return u16(list.count) + list
}

func supportedVersionsData(_ versions: [UInt16]) -> [UInt8] {
    [UInt8(versions.count * 2)] + versions.flatMap { u16(Int($0)) }
}

/// A synthetic ClientHello whose every field can be replaced, length prefixes included.
struct HelloBuilder {
    var legacyVersion: [UInt8] = [0x03, 0x03]
    var random = [UInt8](repeating: 0xab, count: 32)
    var sessionID: [UInt8] = [32] + [UInt8](repeating: 0x5e, count: 32)  // length-prefixed
    var cipherSuites: [UInt8] = u16(4) + [0x13, 0x01, 0x13, 0x02]  // length-prefixed
    var compression: [UInt8] = [1, 0]  // length-prefixed
    var extensions: [[UInt8]] = [
        tlsExtension(0x0000, serverNameData("api.allowed.test")),
        tlsExtension(0x0010, alpnData(["h2", "http/1.1"])),
        tlsExtension(0x002b, supportedVersionsData([0x0304, 0x0303])),
    ]
    /// Replaces the whole extensions block (length prefix included) when set.
    var extensionsBlock: [UInt8]?
    /// Leaves the extensions block out entirely.
    var omitExtensions = false
    /// Appended after the extensions block, inside the ClientHello.
    var trailing: [UInt8] = []
    var handshakeType: UInt8 = 1
    var recordVersion: [UInt8] = [0x03, 0x01]

    init(configure: (inout HelloBuilder) -> Void = { _ in }) { configure(&self) }

    init(serverName: String) {
        self.extensions[0] = tlsExtension(0x0000, serverNameData(serverName))
    }

    var body: [UInt8] {
        var body = legacyVersion + random + sessionID + cipherSuites + compression
        if !omitExtensions {
            let joined = extensions.flatMap { $0 }
            body += extensionsBlock ?? (u16(joined.count) + joined)
        }
        return body + trailing
    }

    var handshake: [UInt8] { [handshakeType] + u24(body.count) + body }

    /// The handshake message in TLS records of at most `recordSize` payload bytes.
    func records(recordSize: Int = 16384) -> [UInt8] { frame(handshake, recordSize: recordSize, version: recordVersion) }
}

/// Wraps handshake bytes into handshake records of at most `recordSize` payload bytes.
func frame(_ handshake: [UInt8], recordSize: Int, version: [UInt8] = [0x03, 0x01]) -> [UInt8] {
    var out: [UInt8] = []
    var offset = 0
    while offset < handshake.count {
        let end = min(offset + recordSize, handshake.count)
        out += [22] + version + u16(end - offset) + handshake[offset..<end]
        offset = end
    }
    return out
}

/// Takes the handshake message out of a captured record stream and frames it again in records of
/// at most `recordSize` payload bytes. Bytes after the ClientHello's records are kept after the new ones.
func reframe(_ records: [UInt8], recordSize: Int) -> [UInt8] {
    var handshake: [UInt8] = []
    var offset = 0
    while offset + 5 <= records.count {
        let length = Int(records[offset + 3]) << 8 | Int(records[offset + 4])
        handshake += records[(offset + 5)..<min(offset + 5 + length, records.count)]
        offset += 5 + length
        if handshake.count >= 4, handshake.count >= 4 + (Int(handshake[1]) << 16 | Int(handshake[2]) << 8 | Int(handshake[3])) {
            break
        }
    }
    return frame(handshake, recordSize: recordSize) + records[min(offset, records.count)...]
}

func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }
func buffer(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

/// Parses all bytes in one call.
func parseHello(_ bytes: [UInt8], maxHelloBytes: Int = 65536) -> ClientHelloParser.Outcome {
    var parser = ClientHelloParser(maxHelloBytes: maxHelloBytes)
    return parser.parse(buffer(bytes))
}

/// Feeds a growing buffer one byte at a time. Returns the first outcome other than needMoreData
/// (or needMoreData) and how many bytes it took.
func dripHello(_ bytes: [UInt8], maxHelloBytes: Int = 65536) -> (ClientHelloParser.Outcome, Int) {
    var parser = ClientHelloParser(maxHelloBytes: maxHelloBytes)
    var grown = ByteBuffer()
    for (index, byte) in bytes.enumerated() {
        grown.writeInteger(byte)
        let outcome = parser.parse(grown)
        if outcome != .needMoreData { return (outcome, index + 1) }
    }
    return (.needMoreData, bytes.count)
}

/// Same for the CONNECT parser.
func dripConnect(_ bytes: [UInt8], maxHeadBytes: Int = 8192) -> (ConnectHeadParser.Outcome, Int) {
    var parser = ConnectHeadParser(maxHeadBytes: maxHeadBytes)
    var grown = ByteBuffer()
    for (index, byte) in bytes.enumerated() {
        grown.writeInteger(byte)
        let outcome = parser.parse(grown)
        if outcome != .needMoreData { return (outcome, index + 1) }
    }
    return (.needMoreData, bytes.count)
}

extension ClientHelloParser.Outcome {
    var info: ClientHelloInfo? { if case .complete(let info) = self { return info } else { return nil } }
    var rejection: ClientHelloRejection? {
        if case .rejected(let reason, _) = self { return reason } else { return nil }
    }
    var detail: String? { if case .rejected(_, let detail) = self { return detail } else { return nil } }
}

/// A small deterministic generator (SplitMix64) so fuzz runs are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
