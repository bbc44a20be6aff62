import Yams

/// A kubeconfig's YAML as plain values (`[String: Any]`, `[Any]`, `String`, `Bool`, `Int`...),
/// built from Yams's node tree. Yams's own `load(yaml:)` stops the process on a mapping key that is
/// not a scalar (`? {server: ...}: x`); here such a key is an error naming the file and line.
enum KubeConfigYAML {
    static func load(_ text: String, path: String) throws(KubeConfigError) -> Any? {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw KubeConfigError(file: path, reason: "not valid YAML: \(error)")
        }
        return try node.map { node throws(KubeConfigError) in try plain(node, path: path) }
    }

    private static func plain(_ node: Node, path: String) throws(KubeConfigError) -> Any {
        switch node {
        case .scalar:
            return Constructor.default.any(from: node)
        case .sequence(let sequence):
            var items: [Any] = []
            for item in sequence { items.append(try plain(item, path: path)) }
            return items
        case .mapping(let mapping):
            var result: [String: Any] = [:]
            for (key, value) in mapping {
                guard case .scalar(let scalar) = key else {
                    throw KubeConfigError(file: path, reason: "line \(key.mark?.line ?? 0): a mapping key must be a plain string, not a \(key.mapping != nil ? "mapping" : "sequence")")
                }
                result[scalar.string] = try plain(value, path: path)
            }
            return result
        case .alias:
            throw KubeConfigError(file: path, reason: "line \(node.mark?.line ?? 0): an unresolved alias")
        }
    }
}
