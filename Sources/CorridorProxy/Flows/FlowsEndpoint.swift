import CorridorPolicy
import NIOHTTP1

/// The admin API's `/flows` (JSON) and the filters `/flows` and `/flows/stream` share:
/// `namespace`, `workload`, `host`, `decision`, `signal` (stream only), `since` (flows seen within
/// a duration such as `5m`, or since a Unix time in seconds), `limit` (default 1,000).
enum FlowsEndpoint {
    struct Problem: Error {
        var reason: String
    }

    static func filter(_ query: AdminQuery) throws(Problem) -> FlowStream.Filter {
        if let decision = query["decision"], Decision.Verdict(rawValue: decision) == nil {
            throw Problem(reason: "decision must be allow, deny or audit, got '\(decision)'")
        }
        if let signal = query["signal"], Signal(rawValue: signal) == nil {
            throw Problem(reason: "signal must be one of \(Signal.allCases.map(\.rawValue).joined(separator: ", ")), got '\(signal)'")
        }
        return FlowStream.Filter(namespace: query["namespace"], workload: query["workload"], host: query["host"], decision: query["decision"],
                                 signal: query["signal"])
    }

    static func json(_ query: AdminQuery, flows: FlowRecorder?) -> (HTTPResponseStatus, [UInt8]) {
        let filter: FlowStream.Filter
        var since = 0.0
        var limit = 1000
        do throws(Problem) {
            filter = try Self.filter(query)
            if let text = query["since"] {
                if let duration = DurationSyntax.parse(text) {
                    since = AccessLog.now() - Double(duration.components.seconds) - Double(duration.components.attoseconds) / 1e18
                } else if let seconds = Double(text), seconds >= 0 {
                    since = seconds
                } else {
                    throw Problem(reason: "since must be a duration such as 5m or a Unix time in seconds, got '\(text)'")
                }
            }
            if let text = query["limit"] {
                guard let value = Int(text), (1...1_000_000).contains(value) else { throw Problem(reason: "limit must be 1 to 1000000, got '\(text)'") }
                limit = value
            }
        } catch {
            var json = JSONLine()
            json.string("error", error.reason)
            return (.badRequest, json.finishLine())
        }
        let all = flows?.table.flows() ?? []
        let selected = all.filter { $0.stats.lastSeen >= since && filter.matches($0.key, signals: []) }
        var json = JSONLine()
        json.number("flows", selected.count)
        json.number("evictions", flows?.table.evictions ?? 0)
        json.objectArray("items", Array(selected.prefix(limit))) { f, flow in
            let key = flow.key, stats = flow.stats
            if key.unknownSource.isEmpty {
                f.string("namespace", key.namespace)
                f.string("workload", key.workload)
                f.string("serviceAccount", key.serviceAccount)
            } else {
                f.string("source", key.unknownSource)
            }
            f.string("listener", key.listener)
            f.string("destination", key.destination)
            f.number("port", key.port)
            f.string("decision", key.decision)
            if !key.externalService.isEmpty { f.string("externalService", key.externalService) }
            if !key.egressPolicy.isEmpty { f.string("egressPolicy", key.egressPolicy) }
            f.number("connections", stats.connections)
            f.number("active", stats.active)
            f.number("bytesUp", stats.bytesUp)
            f.number("bytesDown", stats.bytesDown)
            f.timestamp("firstSeen", stats.firstSeen)
            f.timestamp("lastSeen", stats.lastSeen)
            f.string("lastReason", stats.lastReason)
        }
        return (.ok, json.finishLine())
    }
}
