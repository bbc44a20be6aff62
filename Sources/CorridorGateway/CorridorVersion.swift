/// What this binary is: the release version and the git commit it was built from. `version`,
/// `commit` and `treeDirty` are generated before every build (scripts/build-info, run by the
/// BuildInfo plugin); `corridor version`, the `corridor_build_info` metric and the image labels
/// say the same.
public enum CorridorVersion {
    /// What `corridor version` prints: `corridor VERSION`, then `commit HASH`, with
    /// ` (tree modified)` when the tree differed from that commit.
    public static var text: String {
        "corridor \(version)\ncommit \(commit)\(treeDirty ? " (tree modified)" : "")\n"
    }
}
