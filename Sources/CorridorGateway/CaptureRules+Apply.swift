extension CaptureRules {
    public struct CommandFailure: Error, CustomStringConvertible {
        public var command: String
        public var output: String
        public var description: String { "\(command) failed: \(output)" }
    }

    private var binaries: (iptables: String, restore: String) {
        ipv6 ? ("ip6tables", "ip6tables-restore") : ("iptables", "iptables-restore")
    }

    /// Installs the rules idempotently: the chains are (re)written whole, the jumps added once.
    public func apply() throws {
        try run(binaries.restore, ["--noflush"], input: chainsRestoreText)
        for jump in jumps {
            let args = ["-w", "-t", jump.table]
            if (try? run(binaries.iptables, args + ["-C", jump.chain] + jump.rule)) == nil {
                try run(binaries.iptables, args + ["-I", jump.chain, "1"] + jump.rule)
            }
        }
    }

    /// Removes the jumps and the chains; removing what is not there is not an error.
    public func remove() throws {
        for jump in jumps {
            let args = ["-w", "-t", jump.table]
            while (try? run(binaries.iptables, args + ["-C", jump.chain] + jump.rule)) != nil {
                try run(binaries.iptables, args + ["-D", jump.chain] + jump.rule)
            }
        }
        for (table, chain) in [("nat", Self.captureChain), ("filter", Self.egressChain)] {
            _ = try? run(binaries.iptables, ["-w", "-t", table, "-F", chain])
            _ = try? run(binaries.iptables, ["-w", "-t", table, "-X", chain])
        }
    }

    @discardableResult
    private func run(_ tool: String, _ arguments: [String], input: String? = nil) throws -> String {
        let (status, output) = try ChildProcess.run(tool, arguments, input: input)
        guard status == 0 else {
            throw CommandFailure(command: ([tool] + arguments).joined(separator: " "), output: output)
        }
        return output
    }
}
