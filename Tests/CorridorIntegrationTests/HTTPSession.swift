import Foundation

/// One kept-alive client connection to a plain-HTTP listener (Tests/Support/http_session.py):
/// requests are sent one at a time as raw bytes, so a test can act (reload, rewrite the policy)
/// between two requests of the same connection.
final class HTTPSession: @unchecked Sendable {
    private let process: BackgroundProcess
    private var answered = 0

    init(port: Int) throws {
        process = try BackgroundProcess("python3", [Repo.support.appendingPathComponent("http_session.py").path, "\(port)"], withStdin: true)
        guard eventually(timeout: 15, { lines.first?.contains("connected") ?? false }) else {
            throw TestError.failed("http_session.py did not connect: \(process.stderrText)")
        }
        answered = 1
    }

    private var lines: [String] { process.stdoutText.split(separator: "\n").map(String.init) }

    /// Sends `raw` on the connection and waits for one response (status 0: closed without one).
    func send(_ raw: String, timeout: TimeInterval = 20) throws -> HTTPResult {
        let command = try JSONSerialization.data(withJSONObject: ["send": raw])
        process.write(String(decoding: command, as: UTF8.self) + "\n")
        guard eventually(timeout: timeout, { lines.count > answered }) else {
            throw TestError.failed("no answer from http_session.py: \(process.stderrText)")
        }
        let line = lines[answered]
        answered += 1
        guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
            throw TestError.failed("http_session.py printed no JSON: \(line)")
        }
        var result = HTTPResult(head: "", body: object["body"] as? String ?? "")
        result.status = object["status"] as? Int ?? 0
        result.headers = object["headers"] as? [String: String] ?? [:]
        return result
    }

    /// A GET in origin form for `host`.
    func get(_ path: String, host: String) throws -> HTTPResult {
        try send("GET \(path) HTTP/1.1\r\nHost: \(host)\r\n\r\n")
    }

    func close() { process.closeStdin() }
}
