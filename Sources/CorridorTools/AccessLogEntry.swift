import CorridorPolicy
import Foundation

/// One access record as the gateway wrote it (docs/resources.md, "The access record"): the fields
/// the offline tools read.
public struct AccessLogEntry: Sendable {
    /// `2026-11-27T02:44:59.576Z`: UTC, fixed width, so text order is time order.
    public var time: String
    public var listener: String
    public var source: String
    /// nil: an unknown source.
    public var identity: SourceIdentity?
    public var sni: String?
    public var connectHost: String?
    /// The Host of a plain-HTTP request.
    public var host: String?
    public var port: Int?
    public var originalDestination: String?
    public var ech: Bool
    public var decision: Decision.Verdict
    public var externalService: String?
    public var egressPolicy: String?
    public var reason: String?
    public var closeCause: String
    /// The connection's number since the gateway started (1: the first after a start).
    public var id: Int
    public var policyGeneration: Int?
    public var signals: [String]

    /// Parses one line; nil for a line that is not an access record (with why).
    public static func parse(_ line: Substring) -> Result<AccessLogEntry, Problem> {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
            return .failure(.notJSON)
        }
        // A connection still open when it was written; its close record follows.
        if object["event"] as? String == "interim" { return .failure(.interim) }
        // A record's time is as the gateway writes it (the tools order and bucket by its text),
        // and its id a number: a line of another shape is no record, whatever else it holds.
        guard let time = object["time"] as? String, Self.isRecordTime(time), let id = object["id"] as? Int,
              let listener = object["listener"] as? String,
              let decisionText = object["decision"] as? String, let decision = Decision.Verdict(rawValue: decisionText),
              let closeCause = object["closeCause"] as? String else {
            return .failure(.notARecord)
        }
        var identity: SourceIdentity?
        if let who = object["identity"] as? [String: Any], let namespace = who["namespace"] as? String {
            identity = SourceIdentity(namespace: namespace, workload: who["workload"] as? String ?? "",
                                      serviceAccount: who["serviceAccount"] as? String ?? "default",
                                      labels: who["labels"] as? [String: String] ?? [:])
        }
        return .success(AccessLogEntry(
            time: time, listener: listener, source: object["src"] as? String ?? "?", identity: identity,
            sni: object["sni"] as? String, connectHost: object["connectHost"] as? String, host: object["host"] as? String,
            port: object["port"] as? Int, originalDestination: object["originalDst"] as? String, ech: object["ech"] as? Bool ?? false,
            decision: decision, externalService: object["externalService"] as? String, egressPolicy: object["egressPolicy"] as? String,
            reason: object["reason"] as? String, closeCause: closeCause, id: id,
            policyGeneration: object["policyGeneration"] as? Int, signals: object["signals"] as? [String] ?? []))
    }

    /// `2026-11-27T02:44:59.576Z`, digit for digit.
    static func isRecordTime(_ time: String) -> Bool {
        let bytes = Array(time.utf8)
        guard bytes.count == 24 else { return false }
        for (index, byte) in bytes.enumerated() {
            let expected: UInt8? = switch index {
            case 4, 7: UInt8(ascii: "-")
            case 10: UInt8(ascii: "T")
            case 13, 16: UInt8(ascii: ":")
            case 19: UInt8(ascii: ".")
            case 23: UInt8(ascii: "Z")
            default: nil
            }
            if let expected { if byte != expected { return false } } else if !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { return false }
        }
        return true
    }

    public enum Problem: Error, Sendable {
        case notJSON
        case notARecord
        /// An interim record (`"event":"interim"`): not the connection's record, which is its close.
        case interim
    }

    /// The source's address without its port (`10.0.0.5` of `10.0.0.5:41234`, `::1` of `[::1]:80`).
    public var sourceAddress: String {
        if source.hasPrefix("["), let close = source.firstIndex(of: "]") { return String(source[source.index(after: source.startIndex)..<close]) }
        if let colon = source.lastIndex(of: ":"), source.filter({ $0 == ":" }).count == 1 { return String(source[..<colon]) }
        return source
    }

    /// The `--since` and `--until` bounds, normalised; an empty period (since at or after until)
    /// is an error rather than a report or proposal over no records.
    public static func period(since: String?, until: String?) throws(AccessLogReader.Failure) -> (since: String?, until: String?) {
        let start = try timeBound(since, option: "--since"), end = try timeBound(until, option: "--until")
        if let start, let end, start >= end {
            throw AccessLogReader.Failure(description: "--since \(since!) is not before --until \(until!): the period holds no record")
        }
        return (start, end)
    }

    /// The bound `option` (`--since`, `--until`) gives, normalised; nil when not given; a
    /// sentence naming the option when it is not a time.
    public static func timeBound(_ text: String?, option: String) throws(AccessLogReader.Failure) -> String? {
        guard let text else { return nil }
        guard let bound = timeBound(text) else { throw AccessLogReader.Failure(description: "\(option): '\(text)' is not a date or RFC 3339 time") }
        return bound
    }

    /// Normalises a `--since`/`--until` bound (`2026-11-27`, `2026-11-27T10:00:00Z`, or with an
    /// offset) to the records' own format, so it compares as text.
    public static func timeBound(_ text: String) -> String? {
        let full = ISO8601DateFormatter()
        full.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let plain = ISO8601DateFormatter()
        plain.formatOptions = [.withInternetDateTime]
        let day = ISO8601DateFormatter()
        day.formatOptions = [.withFullDate]
        guard let date = full.date(from: text) ?? plain.date(from: text) ?? day.date(from: text) else { return nil }
        let out = DateFormatter()
        out.locale = Locale(identifier: "en_US_POSIX")
        out.timeZone = TimeZone(identifier: "UTC")
        out.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
        return out.string(from: date)
    }
}
