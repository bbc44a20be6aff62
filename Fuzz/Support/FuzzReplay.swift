import Foundation

/// Runs a fuzz target's body over files instead of under libFuzzer: every file named, and every
/// file in every directory named (the committed corpora and the crashes found, in `Fuzz/corpus/`).
/// A failed invariant stops the process (``fuzzCheck(_:_:)``), so a replay that exits 0 means
/// every input still holds. The fuzz targets are built this way by a plain `swift build`, and
/// the test suite replays the corpora with them.
public enum FuzzReplay {
    public static func main(_ body: ([UInt8]) -> Void) {
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            FileHandle.standardError.write(Data("usage: \(CommandLine.arguments[0]) FILE|DIR...\n".utf8))
            exit(2)
        }
        var count = 0
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                FileHandle.standardError.write(Data("\(path): no such file or directory\n".utf8))
                exit(2)
            }
            let files = isDirectory.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { "\(path)/\($0)" }
                : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                currentInput = file
                body([UInt8](data))
                count += 1
            }
        }
        print("replayed \(count) inputs")
    }

    /// The file being replayed, for failure messages.
    nonisolated(unsafe) static var currentInput: String?
}

/// Stops the process with `message` when `condition` is false: a broken invariant, which
/// libFuzzer reports as a crash and saves the input for.
public func fuzzCheck(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #file, line: UInt = #line) {
    guard !condition else { return }
    let input = FuzzReplay.currentInput.map { " (input \($0))" } ?? ""
    FileHandle.standardError.write(Data("invariant broken at \(file):\(line)\(input): \(message())\n".utf8))
    abort()
}
