import Foundation
import PackagePlugin

/// Generates `CorridorVersion+Build.swift` before every build: the release version from the
/// repository's VERSION file and the git commit the binary is built from, with whether the tree
/// had changes (scripts/build-info does the reading, and rewrites the file only when it changes).
@main
struct BuildInfoPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let output = context.pluginWorkDirectoryURL.appending(path: "generated")
        let root = context.package.directoryURL
        return [
            .prebuildCommand(
                displayName: "Reading the version and git commit",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: [root.appending(path: "scripts/build-info").path, root.path,
                            output.appending(path: "CorridorVersion+Build.swift").path],
                outputFilesDirectory: output)
        ]
    }
}
