import CorridorPolicy
import Logging
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The access log: one JSON object per line per connection, to standard output or a file.
/// Records are formatted on the connection's event loop into a byte array (no Foundation, no
/// reflection) and written with one `write(2)` under a lock, so lines never interleave. A file is
/// followed through rotation (`AccessLogSink`). While lines cannot be written, `writable` is false:
/// with `logging.accessLog.onWriteFailure: Deny` the listeners then refuse new connections.
public final class AccessLog: Sendable {
    private let sink: Mutex<AccessLogSink>
    private let healthy = Atomic<Bool>(true)
    private let logger: Logger?
    /// The flow table, the live stream and the signals every record passes through (nil: records only).
    public let flows: FlowRecorder?

    /// Standard output.
    public init(flows: FlowRecorder? = nil, logger: Logger? = nil) {
        self.sink = Mutex(AccessLogSink())
        self.flows = flows
        self.logger = logger
    }

    /// Appends to `path`, creating it (mode 0640) if needed.
    public init(path: String, flows: FlowRecorder? = nil, logger: Logger? = nil) throws {
        self.sink = Mutex(try AccessLogSink(path: path))
        self.flows = flows
        self.logger = logger
    }

    /// Whether the last record could be written (true until one could not).
    public var writable: Bool { healthy.load(ordering: .relaxed) }

    /// Why records cannot be written now; nil while they can.
    public var failure: String? { sink.withLock { $0.failure } }

    /// Opens the file afresh at its path (SIGUSR1, after a rotation that renamed it). A rename
    /// or removal is also noticed before the next record without it.
    public func reopen() {
        let failure: String? = sink.withLock { sink in sink.reopen() ? nil : sink.failure }
        if let failure {
            logger?.error("access log: \(failure)")
        } else {
            logger?.info("access log reopened")
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Writes the connection's final record (`"event":"close"`), after its signals are known;
    /// then the flow table and the live stream see it.
    func write(_ record: ConnectionRecord, cause: CloseCause, duration: Duration) {
        flows?.finishing(record, cause: cause)
        let bytes = Self.line(record, event: .close, cause: cause, duration: duration)
        append(bytes)
        flows?.finished(record, cause: cause, line: bytes)
    }

    /// Writes an interim record of a connection still open (`"event":"interim"`, bytes and duration so far).
    func writeInterim(_ record: ConnectionRecord) {
        let bytes = Self.line(record, event: .interim, cause: nil, duration: ContinuousClock.now - record.started)
        append(bytes)
        flows?.interim(record, line: bytes)
    }

    /// What every record and event starts with: when, which connection, on which listener, from
    /// where, and who (with the workload's labels when `labels`).
    private static func head(_ record: ConnectionRecord, labels: Bool, into json: inout JSONLine) {
        json.timestamp(LogKey.time, record.wallStart)
        json.number(LogKey.connectionID, Int(truncatingIfNeeded: record.id))
        json.string(LogKey.listener, record.listener)
        if let source = record.source { json.address(LogKey.source, source) } else { json.string(LogKey.source, "unknown") }
        guard let identity = record.identity else {
            json.string(LogKey.identity, "unknown")
            return
        }
        json.object(LogKey.identity) { inner in
            inner.string(LogKey.namespace, identity.namespace)
            inner.string(LogKey.workload, identity.workload)
            inner.string(LogKey.serviceAccount, identity.serviceAccount)
            if labels {
                inner.object(LogKey.labels) { labels in
                    for (key, value) in identity.labels.sorted(by: { $0.key < $1.key }) { labels.string(key, value) }
                }
            }
        }
    }

    /// The live stream's `open` event: who, where, the decision and the rule, without the fields
    /// only an ending has (bytes, duration, cause) and without the reason's words (the rule says it).
    static func openLine(_ record: ConnectionRecord) -> [UInt8] {
        var json = JSONLine()
        head(record, labels: false, into: &json)
        json.optionalString(LogKey.sni, record.sni)
        json.optionalString(LogKey.connectHost, record.connectHost)
        json.optionalString(LogKey.host, record.httpHost)
        if let port = record.decision?.port ?? record.port { json.number(LogKey.port, port) }
        let decision = record.decision
        json.string(LogKey.decision, decision?.verdict.rawValue ?? "deny")
        json.optionalString(LogKey.externalService, decision?.externalService)
        json.optionalString(LogKey.egressPolicy, decision?.egressPolicy)
        let signals = record.signals
        if !signals.isEmpty { json.stringArray(LogKey.signals, signals.map(\.rawValue)) }
        json.string(LogKey.event, FlowStream.Event.open.rawValue)
        return json.finishLine()
    }

    /// One record as a JSON line; `cause` nil for a connection still open.
    static func line(_ record: ConnectionRecord, event: FlowStream.Event, cause: CloseCause?, duration: Duration) -> [UInt8] {
        var json = JSONLine()
        head(record, labels: true, into: &json)
        json.optionalString(LogKey.sni, record.sni)
        json.optionalString(LogKey.connectHost, record.connectHost)
        json.optionalString(LogKey.method, record.httpMethod)
        json.optionalString(LogKey.host, record.httpHost)
        json.optionalString(LogKey.path, record.httpPath)
        if let status = record.httpStatus { json.number(LogKey.status, status) }
        if !record.alpn.isEmpty { json.stringArray(LogKey.alpn, record.alpn) }
        if !record.tlsVersions.isEmpty { json.stringArray(LogKey.tlsVersions, record.tlsVersions.map(Self.tlsVersionName)) }
        if record.ech { json.bool(LogKey.ech, true) }
        if let port = record.decision?.port ?? record.port { json.number(LogKey.port, port) }
        if let resolved = record.resolved { json.address(LogKey.resolved, resolved) }
        if let original = record.originalDestination { json.address(LogKey.originalDestination, original) }
        if record.addressMismatch { json.bool(LogKey.addressMismatch, true) }
        let decision = record.decision
        json.string(LogKey.decision, decision?.verdict.rawValue ?? "deny")
        json.optionalString(LogKey.externalService, decision?.externalService)
        json.optionalString(LogKey.egressPolicy, decision?.egressPolicy)
        json.optionalString(LogKey.reason, decision?.reason)
        json.optionalString(LogKey.hint, record.hint)
        json.number(LogKey.bytesUp, record.bytesUp)
        json.number(LogKey.bytesDown, record.bytesDown)
        let ms = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        json.decimal(LogKey.durationMs, ms)
        if let cause { json.string(LogKey.closeCause, cause.rawValue) }
        if let generation = record.policyGeneration { json.number(LogKey.policyGeneration, generation) }
        let signals = record.signals
        if !signals.isEmpty { json.stringArray(LogKey.signals, signals.map(\.rawValue)) }
        json.string(LogKey.event, event.rawValue)
        return json.finishLine()
    }

    private func append(_ bytes: [UInt8]) {
        let (written, failure) = sink.withLock { sink in (sink.write(bytes), sink.failure) }
        if !written { flows?.accessLogWriteFailed() }
        // Only a change of state is logged: one line when records stop, one when they resume.
        guard healthy.exchange(written, ordering: .relaxed) != written else { return }
        flows?.accessLogWritable(written)
        if written {
            logger?.notice("access log: records are written again")
        } else {
            logger?.error("access log: \(failure ?? "write failed"); new connections are refused while records cannot be written, unless spec.logging.accessLog.onWriteFailure is Continue")
        }
    }

    static func format(_ address: SocketAddress) -> String { address.hostPort }

    static func tlsVersionName(_ version: UInt16) -> String {
        switch version {
        case 0x0304: return "TLSv1.3"
        case 0x0303: return "TLSv1.2"
        case 0x0302: return "TLSv1.1"
        case 0x0301: return "TLSv1.0"
        case 0x0300: return "SSLv3"
        default: return "0x" + String(version, radix: 16)
        }
    }
}


/// A minimal JSON object writer: keys in insertion order, strings escaped per RFC 8259. Writes
/// into one byte array: nested objects, numbers and timestamps go straight in, no string per field.
struct JSONLine {
    private var bytes: [UInt8] = [UInt8(ascii: "{")]
    private var first = true

    init() { bytes.reserveCapacity(640) }

    private mutating func key(_ key: String) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        first = false
        Self.appendEscaped(key, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func string(_ name: String, _ value: String) {
        key(name)
        Self.appendEscaped(value, to: &bytes)
    }

    mutating func optionalString(_ name: String, _ value: String?) {
        if let value { string(name, value) }
    }

    /// `address` as ``SocketAddress/hostPort`` prints it; an IPv4 address is written digit by
    /// digit, without a string in between.
    mutating func address(_ name: String, _ address: SocketAddress) {
        key(name)
        guard case .v4(let v4) = address else {
            Self.appendEscaped(address.hostPort, to: &bytes)
            return
        }
        let ip = UInt32(bigEndian: v4.address.sin_addr.s_addr)
        bytes.append(UInt8(ascii: "\""))
        for shift in [24, 16, 8, 0] as [UInt32] {
            Self.appendDecimal(Int((ip >> shift) & 0xff), to: &bytes)
            bytes.append(UInt8(ascii: shift == 0 ? ":" : "."))
        }
        Self.appendDecimal(Int(UInt16(bigEndian: v4.address.sin_port)), to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func number(_ name: String, _ value: Int) {
        key(name)
        Self.appendDecimal(value, to: &bytes)
    }

    /// `value` with three decimals (milliseconds as `12.345`).
    mutating func decimal(_ name: String, _ value: Double) {
        key(name)
        var thousandths = Int((value * 1000).rounded())
        if thousandths < 0 {
            bytes.append(UInt8(ascii: "-"))
            thousandths = -thousandths
        }
        Self.appendDecimal(thousandths / 1000, to: &bytes)
        bytes.append(UInt8(ascii: "."))
        Self.appendDecimal(thousandths % 1000, width: 3, to: &bytes)
    }

    /// An RFC 3339 UTC timestamp with milliseconds, `2026-11-27T07:36:24.179Z`, from Unix seconds.
    /// The date is computed (``civil(days:)``), not asked of `gmtime_r`, which takes the C
    /// library's time-zone lock on every call: every data-plane thread writes records.
    mutating func timestamp(_ name: String, _ seconds: Double) {
        key(name)
        let whole = Int(seconds.rounded(.down))
        let millis = min(999, max(0, Int((seconds - Double(whole)) * 1000)))
        let (days, secondOfDay) = whole.quotientAndRemainder(dividingBy: 86_400)
        let (day, second) = secondOfDay < 0 ? (days - 1, secondOfDay + 86_400) : (days, secondOfDay)
        let date = Self.civil(days: day)
        bytes.append(UInt8(ascii: "\""))
        Self.appendDecimal(date.year, width: 4, to: &bytes)
        func field(_ separator: Unicode.Scalar, _ value: Int) {
            bytes.append(UInt8(ascii: separator))
            Self.appendDecimal(value, width: 2, to: &bytes)
        }
        field("-", date.month)
        field("-", date.day)
        field("T", second / 3600)
        field(":", second / 60 % 60)
        field(":", second % 60)
        bytes.append(UInt8(ascii: "."))
        Self.appendDecimal(millis, width: 3, to: &bytes)
        bytes.append(UInt8(ascii: "Z"))
        bytes.append(UInt8(ascii: "\""))
    }

    /// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`:
    /// whole 400-year eras, then the year of the era counted from March, so that the leap day
    /// ends a year).
    static func civil(days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthFromMarch = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthFromMarch + 2) / 5 + 1
        let month = monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    mutating func bool(_ name: String, _ value: Bool) {
        key(name)
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
    }

    mutating func stringArray(_ name: String, _ values: [String]) {
        key(name)
        bytes.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            Self.appendEscaped(value, to: &bytes)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    /// A nested object, written in place.
    mutating func object(_ name: String, _ body: (inout JSONLine) -> Void) {
        key(name)
        nestedObject(body)
    }

    /// An array of objects, one per item, written in place.
    mutating func objectArray<T>(_ name: String, _ items: [T], _ body: (inout JSONLine, T) -> Void) {
        key(name)
        bytes.append(UInt8(ascii: "["))
        for (index, item) in items.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            nestedObject { body(&$0, item) }
        }
        bytes.append(UInt8(ascii: "]"))
    }

    private mutating func nestedObject(_ body: (inout JSONLine) -> Void) {
        bytes.append(UInt8(ascii: "{"))
        first = true
        body(&self)
        first = false
        bytes.append(UInt8(ascii: "}"))
    }

    /// The object, closed and followed by a newline: a log line, without a copy.
    consuming func finishLine() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    /// The decimal digits of `value`, left-padded with zeros to `width`.
    static func appendDecimal(_ value: Int, width: Int = 1, to bytes: inout [UInt8]) {
        var value = value
        if value < 0 {
            bytes.append(UInt8(ascii: "-"))
            if value == .min {
                bytes.append(contentsOf: String(value).utf8.dropFirst())
                return
            }
            value = -value
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // room for 24 digits, on the stack
        withUnsafeMutableBytes(of: &digits) { raw in
            var n = 0
            repeat {
                raw[raw.count - 1 - n] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
                n += 1
            } while value > 0
            while n < min(width, raw.count) {
                raw[raw.count - 1 - n] = UInt8(ascii: "0")
                n += 1
            }
            bytes.append(contentsOf: raw[(raw.count - n)...])
        }
    }

    static func appendEscaped(_ string: String, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        // Most values (names, addresses, reasons) need no escape: copied whole.
        let copied = string.utf8.withContiguousStorageIfAvailable { utf8 -> Bool in
            guard !utf8.contains(where: needsEscape) else { return false }
            bytes.append(contentsOf: utf8)
            return true
        }
        if copied == true {
            bytes.append(UInt8(ascii: "\""))
            return
        }
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case UInt8(ascii: "\n"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case UInt8(ascii: "\r"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case UInt8(ascii: "\t"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20, 0x7f:
                let hex = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xf)]])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == 0x7f || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }
}

extension SocketAddress {
    /// `192.0.2.1:443` or `[2001:db8::1]:443`, as logs print addresses.
    public var hostPort: String {
        // An IPv4 client of a dual-stack listener is shown as the IPv4 address it is.
        guard let ip = IPAddress(self)?.unmapped, let port else { return "\(self)" }
        return ip.isIPv4 ? "\(ip):\(port)" : "[\(ip)]:\(port)"
    }
}
