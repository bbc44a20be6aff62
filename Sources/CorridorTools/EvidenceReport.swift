import CorridorPolicy
import Foundation

/// `corridor report`: what an auditor asks for, from the policy in force and the access records of
/// a period: the scope and the data (and its gaps), the policy per workload, default-deny evidence,
/// observed flows, denied attempts, unused grants, risky settings, signals, and a table mapping each
/// finding to the PCI DSS requirements it evidences. The records are streamed: memory grows with
/// the number of distinct workloads and destinations, not with the log.
public struct EvidenceReport {
    /// A (workload, destination) seen in the period.
    struct Seen {
        var connections = 0
        var first = ""
        var last = ""
        var reason = ""
        var decisions: Set<String> = []

        mutating func merge(_ other: Seen) {
            connections += other.connections
            if first.isEmpty || (!other.first.isEmpty && other.first < first) { first = other.first }
            if other.last >= last {
                last = other.last
                reason = other.reason
            }
            decisions.formUnion(other.decisions)
        }

        mutating func add(_ entry: AccessLogEntry) {
            connections += 1
            if first.isEmpty || entry.time < first { first = entry.time }
            if entry.time >= last {
                last = entry.time
                reason = entry.reason ?? ""
            }
            decisions.insert(entry.decision.rawValue)
        }
    }

    public let period: (since: String?, until: String?)
    private(set) var records = 0
    private(set) var skipped = 0
    private var first = ""
    private var last = ""
    /// `2026-11-27T02`: connections and denials per hour.
    private var hours: [String: (connections: Int, denials: Int)] = [:]
    private var generations: Set<Int> = []
    private var restarts = 0
    private var decisions: [String: Int] = [:]
    private var flows: [String: [String: Seen]] = [:]
    private var denied: [String: [String: Seen]] = [:]
    private var grantsUsed: Set<String> = []
    private var signals: [String: Int] = [:]
    private var signalExamples: [(signal: String, who: String, destination: String, time: String)] = []
    private var unregisteredDenials = 0
    private var unknownSourceConnections = 0
    private var destinations: [String: Int] = [:]

    public init(since: String?, until: String?) {
        period = (since, until)
    }

    /// Takes one access-log line (interim records and lines that are not records are skipped).
    public mutating func add(line: Substring) {
        guard !line.allSatisfy(\.isWhitespace) else { return }
        guard case .success(let entry) = AccessLogEntry.parse(line) else {
            skipped += 1
            return
        }
        if let since = period.since, entry.time < since { return }
        if let until = period.until, entry.time >= until { return }
        records += 1
        if first.isEmpty || entry.time < first { first = entry.time }
        if entry.time > last { last = entry.time }
        let hour = String(entry.time.prefix(13))
        var slot = hours[hour] ?? (0, 0)
        slot.connections += 1
        if entry.decision == .deny { slot.denials += 1 }
        hours[hour] = slot
        if let generation = entry.policyGeneration { generations.insert(generation) }
        if entry.id == 1 { restarts += 1 }
        decisions[entry.decision.rawValue, default: 0] += 1
        let who = entry.identity.map { "\($0.namespace)/\($0.workload)" } ?? "unknown \(entry.sourceAddress)"
        if entry.identity == nil { unknownSourceConnections += 1 }
        let destination = Self.destination(entry)
        destinations[destination, default: 0] += 1
        if entry.decision == .deny {
            denied[who, default: [:]][destination, default: Seen()].add(entry)
            if entry.reason?.hasPrefix("no ExternalService matches") == true { unregisteredDenials += 1 }
        } else {
            flows[who, default: [:]][destination, default: Seen()].add(entry)
            if entry.decision == .allow, let policy = entry.egressPolicy, let service = entry.externalService {
                grantsUsed.insert("\(policy)|\(service)")
            }
        }
        for signal in entry.signals {
            signals[signal, default: 0] += 1
            if signalExamples.count < 200 { signalExamples.append((signal, who, destination, entry.time)) }
        }
    }

    /// Adds what `other` read (another part of the same period's records, read in parallel).
    public mutating func merge(_ other: EvidenceReport) {
        records += other.records
        skipped += other.skipped
        if first.isEmpty || (!other.first.isEmpty && other.first < first) { first = other.first }
        if other.last > last { last = other.last }
        for (hour, slot) in other.hours {
            let mine = hours[hour] ?? (0, 0)
            hours[hour] = (mine.connections + slot.connections, mine.denials + slot.denials)
        }
        generations.formUnion(other.generations)
        restarts += other.restarts
        decisions.merge(other.decisions, uniquingKeysWith: +)
        for (table, theirs) in [(\EvidenceReport.flows, other.flows), (\EvidenceReport.denied, other.denied)] {
            for (who, destinations) in theirs {
                for (destination, seen) in destinations {
                    self[keyPath: table][who, default: [:]][destination, default: Seen()].merge(seen)
                }
            }
        }
        grantsUsed.formUnion(other.grantsUsed)
        signals.merge(other.signals, uniquingKeysWith: +)
        signalExamples += other.signalExamples.prefix(max(0, 200 - signalExamples.count))
        unregisteredDenials += other.unregisteredDenials
        unknownSourceConnections += other.unknownSourceConnections
        destinations.merge(other.destinations, uniquingKeysWith: +)
    }

    static func destination(_ entry: AccessLogEntry) -> String {
        let name = entry.connectHost ?? entry.sni ?? entry.host ?? entry.originalDestination ?? "?"
        if entry.originalDestination == name { return name }
        return entry.port.map { "\(name):\($0)" } ?? name
    }

    // MARK: findings

    /// One row of the report's requirement map.
    public struct Finding: Sendable {
        public var id: String
        public var text: String
        public var requirements: [String]
        public var ok: Bool
    }

    /// PCI DSS requirements, cited exactly (v4.0 numbering, with the v3.2.1 ones the brief cites).
    static let requirements: [String: String] = [
        "v4.0 1.3.2": "Outbound traffic from the CDE is restricted as follows: to only traffic that is necessary; all other traffic is specifically denied.",
        "v4.0 1.2.5": "All services, protocols, and ports allowed are identified, approved, and have a defined business need.",
        "v4.0 1.2.7": "Configurations of NSCs are reviewed at least once every six months to confirm they are relevant and effective.",
        "v4.0 10.2.2": "Audit logs record the following details for each auditable event: user identification, type of event, date and time, success and failure indication, origination of event, identity or name of affected data, system component, resource, or service.",
        "v4.0 10.5.1": "Retain audit log history for at least 12 months, with at least the most recent three months immediately available for analysis.",
        "v3.2.1 1.2.1": "Restrict inbound and outbound traffic to that which is necessary for the cardholder data environment, and specifically deny all other traffic.",
        "v3.2.1 1.3.4": "Do not allow unauthorized outbound traffic from the cardholder data environment to the Internet.",
    ]

    struct Grant {
        var policy: String
        var mode: String
        var selects: String
        var service: String
        var hosts: String
        var ports: String
        var used: Bool
    }

    func grants(_ snapshot: PolicySnapshot) -> [Grant] {
        let services = Dictionary(snapshot.source.externalServices.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [Grant] = []
        for policy in snapshot.source.egressPolicies {
            let selects = policy.podSelector.summary + (policy.serviceAccounts.isEmpty ? "" : ", service accounts \(policy.serviceAccounts.joined(separator: ","))")
            for rule in policy.egress {
                for name in rule.externalServices {
                    guard let service = services[name] else { continue }
                    let ports = service.ports.filter { rule.ports.isEmpty || rule.ports.contains($0.number) }.map(Self.describe)
                    out.append(Grant(policy: policy.metadata.qualifiedName, mode: policy.mode.rawValue, selects: selects, service: name,
                                     hosts: service.hosts.map(\.description).joined(separator: ", "), ports: ports.joined(separator: ", "),
                                     used: grantsUsed.contains("\(policy.metadata.qualifiedName)|\(name)")))
                }
            }
        }
        return out
    }

    static func describe(_ port: ExternalService.Port) -> String {
        switch port.protocol {
        case .tls: return "\(port.number)/TLS passthrough"
        case .tcp: return "\(port.number)/TCP"
        case .http:
            if let originate = port.originateTLS { return "\(port.number)/HTTP, TLS originated to \(originate.port), verified" }
            return "\(port.number)/HTTP plaintext"
        }
    }

    func risks(_ snapshot: PolicySnapshot) -> [String] {
        var risks: [String] = []
        let gateway = snapshot.gateway
        if gateway.mode == .audit { risks.append("the gateway is in Audit mode (spec.mode: Audit): policy refusals are let through") }
        if gateway.unknownSources == .allow { risks.append("unknownSources: Allow: sources no Workload claims may use access: All services") }
        if gateway.tls.allowECH { risks.append("tls.allowECH: Encrypted Client Hello is let through for every service without its own setting") }
        risks += AddressGuard.sensitiveExceptions(allowPrivate: gateway.allowPrivate, services: snapshot.source.externalServices)
        for service in snapshot.source.externalServices {
            for port in service.ports where port.allowPlaintext { risks.append("ExternalService \(service.name) port \(port.number) sends plain-text HTTP (allowPlaintext)") }
            if service.access == .all { risks.append("ExternalService \(service.name) is open to every workload (access: All)") }
            for host in service.hosts { if case .wildcard = host { risks.append("ExternalService \(service.name) registers the wildcard \(host)") } }
            if service.ech == .allow { risks.append("ExternalService \(service.name) lets Encrypted Client Hello through (spec.tls.ech: Allow)") }
        }
        for policy in snapshot.source.egressPolicies where policy.mode == .audit {
            risks.append("EgressPolicy \(policy.metadata.qualifiedName) is in Audit mode: its refusals are let through")
        }
        return risks
    }

    func findings(_ snapshot: PolicySnapshot) -> [Finding] {
        let grants = grants(snapshot)
        let gaps = gaps()
        let unused = grants.filter { !$0.used }
        let risks = risks(snapshot)
        let gateway = snapshot.gateway
        let audited = decisions["audit"] ?? 0
        return [
            Finding(id: "default-deny",
                    text: "Default deny: only registered ExternalServices granted to a workload are reachable; mode \(gateway.mode.rawValue), unknown sources \(gateway.unknownSources.rawValue); "
                        + "\(decisions["deny"] ?? 0) connections denied in the period, \(unregisteredDenials) of them to names no service registers"
                        + (audited > 0 ? "; \(audited) let through only by Audit" : ""),
                    requirements: ["v4.0 1.3.2", "v3.2.1 1.2.1", "v3.2.1 1.3.4"], ok: gateway.mode == .enforce && audited == 0),
            Finding(id: "allowed-services",
                    text: "\(grants.count) grants name every allowed service with its hosts, ports, protocol and TLS mode, per workload selector (section Policy in force)",
                    requirements: ["v4.0 1.2.5", "v4.0 1.3.2"], ok: true),
            Finding(id: "least-privilege",
                    text: unused.isEmpty ? "every grant was used in the period" : "\(unused.count) grants were not used in the period: candidates for removal at the next rule review",
                    requirements: ["v4.0 1.2.7", "v4.0 1.2.5"], ok: unused.isEmpty),
            Finding(id: "risky-settings", text: risks.isEmpty ? "no risky setting" : "\(risks.count) settings widen what is allowed (section Risky settings)",
                    requirements: ["v4.0 1.3.2", "v4.0 1.2.5"], ok: risks.isEmpty),
            Finding(id: "audit-log",
                    text: "\(records) access records: each names the workload (namespace, service account, labels), the destination, the decision and the rule, time, bytes and outcome",
                    requirements: ["v4.0 10.2.2"], ok: records > 0),
            Finding(id: "coverage",
                    text: "records from \(first.isEmpty ? "-" : first) to \(last.isEmpty ? "-" : last); \(gaps.count) hours without records; keep 12 months of logs, 3 immediately available",
                    requirements: ["v4.0 10.5.1"], ok: gaps.isEmpty && records > 0),
        ]
    }

    /// Hours between the first and the last record with no record at all.
    func gaps() -> [String] {
        guard let start = Self.hourDate(first), let end = Self.hourDate(last) else { return [] }
        var out: [String] = []
        var hour = start
        while hour <= end && out.count < 10_000 {
            let key = Self.hourKey(hour)
            if hours[key] == nil { out.append(key) }
            hour += 3600
        }
        return out
    }

    static func hourDate(_ time: String) -> Date? {
        guard time.count >= 13 else { return nil }
        let formatter = ISO8601DateFormatter()
        return formatter.date(from: String(time.prefix(13)) + ":00:00Z")
    }

    static func hourKey(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        return String(formatter.string(from: date).prefix(13))
    }

    // MARK: output

    public enum Format: String, CaseIterable, Sendable { case html, md, json }

    public func render(_ format: Format, snapshot: PolicySnapshot, policySource: String, inputs: [String], generated: Date = Date()) -> String {
        switch format {
        case .json: return json(snapshot: snapshot, policySource: policySource, inputs: inputs, generated: generated)
        case .md: return markdown(snapshot: snapshot, policySource: policySource, inputs: inputs, generated: generated)
        case .html: return html(snapshot: snapshot, policySource: policySource, inputs: inputs, generated: generated)
        }
    }

    func sortedDenied() -> [(who: String, destination: String, seen: Seen)] {
        denied.flatMap { who, destinations in destinations.map { (who, $0.key, $0.value) } }.sorted {
            ($0.seen.connections, $1.who, $1.destination) > ($1.seen.connections, $0.who, $0.destination)
        }
    }

    func sortedFlows() -> [(who: String, destination: String, seen: Seen)] {
        flows.flatMap { who, destinations in destinations.map { (who, $0.key, $0.value) } }.sorted { ($0.who, $0.destination) < ($1.who, $1.destination) }
    }

    func json(snapshot: PolicySnapshot, policySource: String, inputs: [String], generated: Date) -> String {
        var object: [String: Any] = [:]
        object["generated"] = ISO8601DateFormatter().string(from: generated)
        object["scope"] = ["policy": policySource, "policyGeneration": snapshot.generation, "inputs": inputs,
                           "since": period.since ?? NSNull(), "until": period.until ?? NSNull()]
        object["data"] = ["records": records, "skippedLines": skipped, "first": first, "last": last, "hoursWithoutRecords": gaps(),
                          "gatewayStarts": restarts, "policyGenerations": generations.sorted()]
        object["policy"] = ["mode": snapshot.gateway.mode.rawValue, "unknownSources": snapshot.gateway.unknownSources.rawValue,
                            "grants": grants(snapshot).map { ["egressPolicy": $0.policy, "mode": $0.mode, "selects": $0.selects, "externalService": $0.service,
                                                               "hosts": $0.hosts, "ports": $0.ports, "usedInPeriod": $0.used] }]
        object["defaultDeny"] = ["denied": decisions["deny"] ?? 0, "deniedUnregistered": unregisteredDenials, "audited": decisions["audit"] ?? 0,
                                 "allowed": decisions["allow"] ?? 0, "unknownSourceConnections": unknownSourceConnections]
        object["flows"] = sortedFlows().map { ["workload": $0.who, "destination": $0.destination, "connections": $0.seen.connections,
                                               "decisions": $0.seen.decisions.sorted(), "first": $0.seen.first, "last": $0.seen.last] }
        object["denied"] = sortedDenied().map { ["workload": $0.who, "destination": $0.destination, "connections": $0.seen.connections,
                                                 "first": $0.seen.first, "last": $0.seen.last, "reason": $0.seen.reason] }
        object["unusedGrants"] = grants(snapshot).filter { !$0.used }.map { ["egressPolicy": $0.policy, "externalService": $0.service] }
        object["riskySettings"] = risks(snapshot)
        object["signals"] = signals
        object["findings"] = findings(snapshot).map { ["id": $0.id, "text": $0.text, "requirements": $0.requirements, "ok": $0.ok] }
        object["requirements"] = Self.requirements
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// `text` (names and reasons a workload chose: hosts, paths) as inert Markdown table-cell text:
    /// no cell or line break, no HTML, link or code span, and control and format characters
    /// (a right-to-left override, say) shown as `[U+XXXX]` rather than acted on.
    static func markdownCell(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "|", "`", "[", "]", "\\": out += "\\" + String(scalar)
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            default: appendShown(scalar, to: &out)
            }
        }
        return out
    }

    /// `scalar` as text a reader sees: a control or format character (a right-to-left override,
    /// a line separator) as `[U+XXXX]`, anything else as itself.
    static func appendShown(_ scalar: Unicode.Scalar, to out: inout String) {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator:
            out += "[U+" + String(scalar.value, radix: 16, uppercase: true) + "]"
        default:
            out.unicodeScalars.append(scalar)
        }
    }

    func markdown(snapshot: PolicySnapshot, policySource: String, inputs: [String], generated: Date) -> String {
        func cell(_ text: String) -> String { Self.markdownCell(text) }
        var lines = ["# Corridor egress evidence", "",
                     "Generated \(ISO8601DateFormatter().string(from: generated)) from policy `\(policySource)` (generation \(snapshot.generation)) and \(inputs.count) log file(s).", "",
                     "## Findings and PCI DSS requirements", "", "| finding | status | requirements |", "|---|---|---|"]
        for finding in findings(snapshot) {
            lines.append("| \(cell(finding.text)) | \(finding.ok ? "ok" : "review") | \(finding.requirements.joined(separator: ", ")) |")
        }
        lines += ["", "## Data", "", "- \(records) records, \(first) to \(last); \(gaps().count) hours without records; \(restarts) gateway start(s); policy generations \(generations.sorted().map(String.init).joined(separator: ", "))", ""]
        lines += ["## Policy in force", "", "| EgressPolicy | selects | ExternalService | hosts | ports | used |", "|---|---|---|---|---|---|"]
        for grant in grants(snapshot) {
            lines.append("| \(cell(grant.policy)) [\(grant.mode)] | \(cell(grant.selects)) | \(cell(grant.service)) | \(cell(grant.hosts)) | \(cell(grant.ports)) | \(grant.used ? "yes" : "**no**") |")
        }
        lines += ["", "## Denied attempts", "", "| workload | destination | connections | first | last | reason |", "|---|---|---|---|---|---|"]
        for row in sortedDenied().prefix(200) {
            lines.append("| \(cell(row.who)) | \(cell(row.destination)) | \(row.seen.connections) | \(row.seen.first) | \(row.seen.last) | \(cell(row.seen.reason)) |")
        }
        lines += ["", "## Risky settings", ""] + (risks(snapshot).isEmpty ? ["none"] : risks(snapshot).map { "- \($0)" })
        lines += ["", "## Signals", ""] + (signals.isEmpty ? ["none"] : signals.sorted { $0.key < $1.key }.map { "- \($0.key): \($0.value)" })
        lines += ["", "## Requirements cited", ""] + Self.requirements.sorted { $0.key < $1.key }.map { "- PCI DSS \($0.key): \($0.value)" }
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: HTML

    /// `text` as inert HTML text or attribute value, with control and format characters shown as
    /// `[U+XXXX]`, as in ``markdownCell(_:)``: a right-to-left override in a workload's host name
    /// must not turn the text around it.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: appendShown(scalar, to: &out)
            }
        }
        return out
    }

    /// Connections and denials per hour, as an SVG chart.
    func timeChart() -> String {
        let keys = hours.keys.sorted()
        guard !keys.isEmpty else { return "<p class=\"muted\">no records</p>" }
        let width = 900.0, height = 220.0, left = 50.0, bottom = 30.0
        let peak = Double(max(1, hours.values.map(\.connections).max() ?? 1))
        let step = (width - left - 10) / Double(keys.count)
        var bars = ""
        for (index, key) in keys.enumerated() {
            let slot = hours[key]!
            let x = left + Double(index) * step
            let h = Double(slot.connections) / peak * (height - bottom - 10)
            let d = Double(slot.denials) / peak * (height - bottom - 10)
            bars += "<rect class=\"conn\" x=\"\(x + 1)\" y=\"\(height - bottom - h)\" width=\"\(max(1, step - 2))\" height=\"\(h)\"><title>\(key):00 \(slot.connections) connections</title></rect>"
            bars += "<rect class=\"deny\" x=\"\(x + 1)\" y=\"\(height - bottom - d)\" width=\"\(max(1, step - 2))\" height=\"\(d)\"><title>\(key):00 \(slot.denials) denials</title></rect>"
        }
        let axis = "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - 10)\" y2=\"\(height - bottom)\" class=\"axis\"/>"
            + "<text x=\"\(left - 6)\" y=\"16\" text-anchor=\"end\">\(Int(peak))</text><text x=\"\(left - 6)\" y=\"\(height - bottom)\" text-anchor=\"end\">0</text>"
            + "<text x=\"\(left)\" y=\"\(height - 8)\">\(Self.escape(keys.first!)):00</text>"
            + "<text x=\"\(width - 10)\" y=\"\(height - 8)\" text-anchor=\"end\">\(Self.escape(keys.last!)):00</text>"
        return "<svg id=\"chart-time\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"connections and denials per hour\">\(axis)\(bars)</svg>"
    }

    /// A horizontal bar chart of the largest `items`.
    static func barChart(id: String, _ items: [(String, Int)], kind: String) -> String {
        let top = Array(items.prefix(10))
        guard let peak = top.map(\.1).max(), peak > 0 else { return "<p class=\"muted\">none</p>" }
        let rowHeight = 22.0, width = 900.0, label = 330.0
        var rows = ""
        for (index, item) in top.enumerated() {
            let y = Double(index) * rowHeight
            let w = Double(item.1) / Double(peak) * (width - label - 60)
            rows += "<text x=\"\(label - 8)\" y=\"\(y + 15)\" text-anchor=\"end\">\(escape(String(item.0.prefix(48))))</text>"
                + "<rect class=\"\(kind)\" x=\"\(label)\" y=\"\(y + 3)\" width=\"\(max(1, w))\" height=\"\(rowHeight - 6)\"/>"
                + "<text x=\"\(label + w + 6)\" y=\"\(y + 15)\">\(item.1)</text>"
        }
        return "<svg id=\"\(id)\" viewBox=\"0 0 \(Int(width)) \(Int(Double(top.count) * rowHeight + 4))\" role=\"img\">\(rows)</svg>"
    }

    func html(snapshot: PolicySnapshot, policySource: String, inputs: [String], generated: Date) -> String {
        let e = Self.escape
        func table(_ header: [String], _ rows: [[String]]) -> String {
            guard !rows.isEmpty else { return "<p class=\"muted\">none</p>" }
            return "<table><thead><tr>" + header.map { "<th>\(e($0))</th>" }.joined() + "</tr></thead><tbody>"
                + rows.map { "<tr>" + $0.map { "<td>\(e($0))</td>" }.joined() + "</tr>" }.joined() + "</tbody></table>"
        }
        let findings = findings(snapshot)
        let grants = grants(snapshot)
        let deniedRows = sortedDenied()
        var deniedByWorkload: [String: Int] = [:]
        for row in deniedRows { deniedByWorkload[row.who, default: 0] += row.seen.connections }
        let gaps = gaps()
        var body = "<header><h1>Corridor egress evidence</h1><p>Generated \(e(ISO8601DateFormatter().string(from: generated))) · policy <code>\(e(policySource))</code> (generation \(snapshot.generation)) · \(inputs.count) log file(s)</p></header>"
        body += "<section id=\"scope\"><h2>Scope and period</h2><p>Records from <b>\(e(first.isEmpty ? "-" : first))</b> to <b>\(e(last.isEmpty ? "-" : last))</b>"
            + (period.since.map { ", asked from \(e($0))" } ?? "") + (period.until.map { " until \(e($0))" } ?? "") + ".</p>"
            + "<p>Inputs: \(e(inputs.joined(separator: ", ")))</p></section>"
        body += "<section id=\"data\"><h2>Data and its gaps</h2><ul><li>\(records) access records (\(skipped) lines skipped: interim records and lines that are not records)</li>"
            + "<li>\(gaps.count) hour(s) without any record\(gaps.isEmpty ? "" : ": " + e(gaps.prefix(24).joined(separator: ", ")) + (gaps.count > 24 ? ", …" : ""))</li>"
            + "<li>\(restarts) gateway start(s) seen (connection numbering restarting at 1)</li><li>policy generations in force: \(e(generations.sorted().map(String.init).joined(separator: ", ")))</li></ul>"
            + "<h3>Connections (blue) and denials (red) per hour</h3>\(timeChart())</section>"
        body += "<section id=\"findings\"><h2>Findings and PCI DSS requirements</h2>"
            + "<table><thead><tr><th>finding</th><th>status</th><th>requirements</th></tr></thead><tbody>"
            + findings.map { "<tr><td>\(e($0.text))</td><td class=\"\($0.ok ? "ok" : "review")\">\($0.ok ? "ok" : "review")</td><td>\(e($0.requirements.joined(separator: ", ")))</td></tr>" }.joined()
            + "</tbody></table><h3>Requirements cited</h3><dl>"
            + Self.requirements.sorted { $0.key < $1.key }.map { "<dt>PCI DSS \(e($0.key))</dt><dd>\(e($0.value))</dd>" }.joined() + "</dl></section>"
        body += "<section id=\"policy\"><h2>Policy in force</h2><p>Mode <b>\(snapshot.gateway.mode.rawValue)</b>; unknown sources <b>\(snapshot.gateway.unknownSources.rawValue)</b>. "
            + "What each workload selector may reach, with the rule that grants it:</p>"
            + table(["EgressPolicy", "mode", "selects", "ExternalService", "hosts", "ports and TLS mode", "used in period"],
                    grants.map { [$0.policy, $0.mode, $0.selects, $0.service, $0.hosts, $0.ports, $0.used ? "yes" : "no"] })
            + "<h3>Open to every workload</h3>"
            + table(["ExternalService", "hosts", "ports"], snapshot.source.externalServices.filter { $0.access == .all }.map {
                [$0.name, $0.hosts.map(\.description).joined(separator: ", "), $0.ports.map(Self.describe).joined(separator: ", ")] })
            + "</section>"
        body += "<section id=\"default-deny\"><h2>Default-deny evidence</h2><ul><li>\(decisions["allow"] ?? 0) allowed, \(decisions["deny"] ?? 0) denied, \(decisions["audit"] ?? 0) audited</li>"
            + "<li>\(unregisteredDenials) denials of names no ExternalService registers</li><li>\(unknownSourceConnections) connections from unknown sources</li></ul></section>"
        body += "<section id=\"flows\"><h2>Observed flows per workload</h2><h3>Top destinations</h3>"
            + Self.barChart(id: "chart-destinations", destinations.sorted { $0.value > $1.value }.map { ($0.key, $0.value) }, kind: "conn")
            + table(["workload", "destination", "connections", "decisions", "first", "last"],
                    sortedFlows().prefix(500).map { [$0.who, $0.destination, String($0.seen.connections), $0.seen.decisions.sorted().joined(separator: ", "), $0.seen.first, $0.seen.last] })
            + "</section>"
        body += "<section id=\"denied\"><h2>Denied attempts</h2><h3>Top denied workloads</h3>"
            + Self.barChart(id: "chart-denied", deniedByWorkload.sorted { $0.value > $1.value }.map { ($0.key, $0.value) }, kind: "deny")
            + table(["workload", "destination", "connections", "first", "last", "reason"],
                    deniedRows.prefix(500).map { [$0.who, $0.destination, String($0.seen.connections), $0.seen.first, $0.seen.last, $0.seen.reason] })
            + "</section>"
        body += "<section id=\"unused\"><h2>Grants unused in the period</h2><p>Least-privilege candidates for the next rule review:</p>"
            + table(["EgressPolicy", "ExternalService", "hosts"], grants.filter { !$0.used }.map { [$0.policy, $0.service, $0.hosts] }) + "</section>"
        let risks = risks(snapshot)
        body += "<section id=\"risks\"><h2>Risky settings</h2>" + (risks.isEmpty ? "<p>none</p>" : "<ul>" + risks.map { "<li>\(e($0))</li>" }.joined() + "</ul>") + "</section>"
        body += "<section id=\"signals\"><h2>Suspicious-traffic signals</h2>"
            + table(["signal", "count"], signals.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] })
            + table(["time", "signal", "workload", "destination"], signalExamples.prefix(50).map { [$0.time, $0.signal, $0.who, $0.destination] })
            + "</section>"
        let style = """
            body{font:14px/1.45 system-ui,sans-serif;color:#1d2430;max-width:1100px;margin:24px auto;padding:0 16px}
            h1{font-size:22px;margin:0}h2{font-size:18px;border-bottom:2px solid #d9dde3;padding-bottom:4px;margin-top:28px}h3{font-size:15px}
            header p{color:#66707f}table{border-collapse:collapse;width:100%;margin:8px 0}th,td{border:1px solid #d9dde3;padding:4px 6px;text-align:left;vertical-align:top;font-size:12.5px}
            th{background:#eef1f5}.ok{color:#1f8a4c;font-weight:600}.review{color:#c77d00;font-weight:600}.muted{color:#66707f}
            svg{width:100%;height:auto;font-size:11px}svg .conn{fill:#6f95e8}svg .deny{fill:#d65a5a}svg .axis{stroke:#999}
            dt{font-weight:600;margin-top:6px}dd{margin-left:16px}code{background:#eef1f5;padding:1px 4px;border-radius:3px}
            @media print{body{margin:0;max-width:none}section{break-inside:avoid-page}h2{break-after:avoid}}
            """
        return "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Corridor egress evidence</title><style>\(style)</style></head><body>\(body)</body></html>\n"
    }
}
