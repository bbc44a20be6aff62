import CorridorGateway
import CorridorProxy
import Foundation
import Logging
import NIOCore

/// Paths of the repository, found from this file.
enum Repo {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let support = root.appendingPathComponent("Tests/Support")
    static var corridorBinary: URL { root.appendingPathComponent(".build/debug/corridor") }
}

/// A scratch directory removed at deinit.
final class TempDir: @unchecked Sendable {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("corridor-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

enum TestError: Error, CustomStringConvertible {
    case failed(String)
    var description: String { if case .failed(let s) = self { return s } else { return "" } }
}

/// Runs a command to completion with a time limit (killed after it). stdin is empty.
@discardableResult
func runCommand(_ executable: String, _ arguments: [String], timeout: TimeInterval = 60, stdin: Data? = nil) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/env")
    process.arguments = executable.hasPrefix("/") ? arguments : [executable] + arguments
    let out = Pipe(), err = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try? input.fileHandleForWriting.close()
    // Drain both pipes concurrently so a chatty process cannot block on a full pipe.
    let outData = LockedData(), errData = LockedData()
    let group = DispatchGroup()
    for (pipe, sink) in [(out, outData), (err, errData)] {
        group.enter()
        DispatchQueue.global().async {
            sink.set(pipe.fileHandleForReading.readDataToEndOfFile())
            group.leave()
        }
    }
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning {
        process.terminate()
        usleep(200_000)
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
    process.waitUntilExit()
    _ = group.wait(timeout: .now() + 5)
    let result = CommandResult(status: process.terminationStatus,
                               stdout: String(decoding: outData.get(), as: UTF8.self),
                               stderr: String(decoding: errData.get(), as: UTF8.self))
    // env's answer for a program that is not installed: say which, rather than hand back an empty
    // output that a test would read as "no sockets" or "no match".
    if !executable.hasPrefix("/") && result.status == 127 && result.stderr.hasPrefix("/usr/bin/env") && result.stderr.contains("No such file") {
        throw TestError.failed("this test needs '\(executable)', which is not installed (scripts/test installs its Debian package when run as root): \(result.stderr)")
    }
    return result
}

final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ d: Data) { lock.lock(); data = d; lock.unlock() }
    func append(_ d: Data) { lock.lock(); data.append(d); lock.unlock() }
    func get() -> Data { lock.lock(); defer { lock.unlock() }; return data }
}

/// A test PKI minted at run time with the openssl CLI: a CA and a server certificate for the
/// test names. Nothing is checked in, nothing expires between runs.
struct TestPKI {
    let caCert: String
    let serverCert: String
    let serverKey: String
    static let names = ["api.allowed.test", "*.wild.allowed.test", "second.allowed.test", "evil.test", "private.allowed.test"]

    init(in dir: TempDir) throws {
        caCert = dir.path("ca.pem")
        serverCert = dir.path("server.pem")
        serverKey = dir.path("server-key.pem")
        let caKey = dir.path("ca-key.pem"), csr = dir.path("server.csr"), ext = dir.path("san.ext")
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        try check(runCommand("openssl", ["req", "-x509"] + ec + ["-keyout", caKey, "-out", caCert, "-days", "2", "-subj", "/CN=Corridor Test CA"]))
        try check(runCommand("openssl", ["req", "-new"] + ec + ["-keyout", serverKey, "-out", csr, "-subj", "/CN=api.allowed.test"]))
        try ("subjectAltName=" + Self.names.map { "DNS:\($0)" }.joined(separator: ",") + "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
            .write(toFile: ext, atomically: true, encoding: .utf8)
        try check(runCommand("openssl", ["x509", "-req", "-in", csr, "-CA", caCert, "-CAkey", caKey, "-CAcreateserial",
                                         "-out", serverCert, "-days", "2", "-extfile", ext]))
    }

    private func check(_ result: CommandResult) throws {
        guard result.status == 0 else { throw TestError.failed("openssl failed: \(result.stderr)") }
    }
}

/// A background process (the TLS upstream, the gateway binary) that is killed at deinit.
final class BackgroundProcess: @unchecked Sendable {
    let process = Process()
    let stdout = LockedData()
    let stderr = LockedData()
    private var input: Pipe?

    init(_ executable: String, _ arguments: [String], withStdin: Bool = false) throws {
        process.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/env")
        process.arguments = executable.hasPrefix("/") ? arguments : [executable] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        if withStdin {
            let pipe = Pipe()
            input = pipe
            process.standardInput = pipe
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        // Plain threads reading until EOF: FileHandle.readabilityHandler (a dispatch source) has been
        // seen to crash libdispatch's manager thread on Linux when many processes come and go.
        for (pipe, sink) in [(out, stdout), (err, stderr)] {
            let handle = pipe.fileHandleForReading
            let thread = Thread {
                while true {
                    let data = handle.availableData
                    if data.isEmpty { break }
                    sink.append(data)
                }
            }
            thread.start()
        }
        try process.run()
    }

    var stdoutText: String { String(decoding: stdout.get(), as: UTF8.self) }
    var stderrText: String { String(decoding: stderr.get(), as: UTF8.self) }

    func signal(_ signo: Int32) { kill(process.processIdentifier, signo) }

    func write(_ text: String) { input?.fileHandleForWriting.write(Data(text.utf8)) }
    func closeStdin() { try? input?.fileHandleForWriting.close() }

    /// Waits for the process to exit; returns its status, or nil on timeout.
    func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: TimeInterval = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(20_000)
    }
    return try condition()
}

/// The same poll for async tests, sleeping without holding a thread: swift-testing runs async tests
/// on Swift's cooperative pool (one thread per core), which the in-process gateway's Kubernetes
/// sync shares; a blocking poll there can starve it until the poll gives up.
func eventually(timeout: TimeInterval = 10, _ condition: () throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try condition()
}

/// The Python TLS upstream (Tests/Support/tls_upstream.py) on 127.0.0.1.
final class TLSUpstream: @unchecked Sendable {
    let process: BackgroundProcess
    let port: Int
    let logPath: String

    init(pki: TestPKI, dir: TempDir) throws {
        logPath = dir.path("upstream.log")
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let process = try BackgroundProcess("python3", [Repo.support.appendingPathComponent("tls_upstream.py").path,
                                                        "--cert", pki.serverCert, "--key", pki.serverKey, "--log", logPath])
        self.process = process
        var found: Int?
        _ = eventually(timeout: 15) {
            if let line = process.stdoutText.split(separator: "\n").first(where: { $0.hasPrefix("PORT ") }) {
                found = Int(line.dropFirst(5))
            }
            return found != nil
        }
        guard let found else { throw TestError.failed("upstream did not start: \(process.stderrText)") }
        port = found
    }

    /// The SNI of every TLS connection the upstream accepted.
    var acceptedNames: [String] {
        ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").split(separator: "\n").map { String($0.split(separator: " ")[0]) }
    }
}
