import ArgumentParser
import Foundation
import CorridorGateway
import CorridorKubernetes
import CorridorPolicy
import Logging

/// The `corridor` command: thin; everything it does lives in the library targets.
@main
struct Corridor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "corridor",
        abstract: "An egress gateway for Kubernetes: TLS-only, SNI-inspecting, identity-aware.",
        subcommands: [Run.self, Check.self, Explain.self, PolicyTest.self, Learn.self, Report.self, IPTables.self, NetPol.self, Version.self]
    )

    /// Runs the subcommand. Bad input exits 2 whoever finds it: the argument parser (a missing or
    /// malformed option, which it would exit 64 for) or the subcommand itself (a bad file or value).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                printError(fullMessage(for: error))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway on a config file; SIGHUP or a change to the file reloads it, SIGTERM drains and exits.")

    @Option(name: .long, help: "The multi-document YAML config file (GatewayConfig, ExternalService, EgressPolicy, Workload); with --kubernetes, the GatewayConfig (and any static Workloads) only.")
    var config: String

    @Flag(name: .long, help: "Take ExternalServices, EgressPolicies and pod identities from the Kubernetes API: in-cluster (service-account token), else --kubeconfig, $KUBECONFIG or ~/.kube/config.")
    var kubernetes = false

    @Option(name: .long, help: "A kubeconfig for development outside a cluster (implies --kubernetes).")
    var kubeconfig: String?

    @Option(name: .long, help: "The kubeconfig context (default: current-context; implies --kubernetes).")
    var context: String?

    @Option(name: .long, help: "With --kubernetes: watch only this node's pods (the node topology, where a gateway only sees its own node's pods).")
    var nodeName: String?

    @Option(name: .long, help: "Event loop threads for the data plane (default: one per core).")
    var workers: Int?

    @Option(name: .long, help: "Operational log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    mutating func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        LoggingSystem.bootstrap { label in
            // One line per message, whatever a message quotes (OperationalLogStream).
            var handler = StreamLogHandler(label: label, stream: OperationalLogStream())
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "corridor")
        var endpoint: KubeEndpoint?
        if kubernetes || kubeconfig != nil || context != nil {
            do {
                let environment = ProcessInfo.processInfo.environment
                if kubeconfig == nil && context == nil && environment["KUBERNETES_SERVICE_HOST"] != nil {
                    endpoint = try KubeEndpoint.inCluster()
                } else {
                    endpoint = try KubeEndpoint.kubeconfig(path: KubeEndpoint.kubeconfigPath(explicit: kubeconfig), context: context)
                }
            } catch {
                printError("corridor: kubernetes: \(error)")
                throw ExitCode(2)
            }
        }
        let gateway: Gateway
        do {
            var options = Gateway.Options(configPath: config, workers: workers ?? Gateway.Options.defaultWorkers, kubernetes: endpoint)
            options.nodeName = nodeName.flatMap { $0.isEmpty ? nil : $0 }
            gateway = try Gateway(options: options, logger: logger)
        } catch let errors as ConfigErrors {
            printError(errors.description)
            throw ExitCode(2)
        } catch let error as KubeConfigError {
            printError("corridor: kubernetes: \(error)")
            throw ExitCode(2)
        }
        do {
            try await gateway.start()
        } catch {
            printError("corridor: cannot start: \(error)")
            await gateway.shutdown(drain: .zero)
            throw ExitCode(1)
        }
        await gateway.runUntilSignalled()
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate a config file and print a summary; exits 2 with file, document, field and reason on error.")

    @Option(name: .long, help: "The config file to validate.")
    var config: String

    mutating func run() throws {
        print(CheckSummary.render(loadPolicyOrExit(config), file: config))
    }
}

struct IPTables: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iptables",
        abstract: "Print (or --apply / --remove) the iptables rules that redirect workload egress to the gateway and refuse the rest.")

    @Option(name: .long, help: "The config file: the tls listener port and the ExternalServices' TLS ports come from it.")
    var config: String

    @Option(name: .long, help: "node (gateway on the host network, PREROUTING/FORWARD) or pod (gateway beside the app, OUTPUT).")
    var topology: String = "node"

    @Option(name: .long, parsing: .upToNextOption, help: "Pod CIDRs to capture (node topology).")
    var podCIDR: [String] = []

    @Option(name: .long, parsing: .upToNextOption, help: "Cluster CIDRs (pods, services) that are neither captured nor refused.")
    var clusterCIDR: [String] = []

    @Option(name: .long, parsing: .upToNextOption, help: "DNS server addresses the workloads may reach on port 53.")
    var dns: [String] = []

    @Option(name: .long, help: "The gateway's user ID (pod topology): its own traffic is not captured.")
    var gatewayUID: Int = 1337

    @Option(name: .long, help: "More ports to redirect to the tls listener, comma-separated (with --kubernetes the ExternalServices are not in the file: list their TLS and TCP ports here).")
    var tlsPorts: String?

    @Option(name: .long, help: "More ports to redirect to the http listener for TLS origination, comma-separated.")
    var httpPorts: String?

    @Flag(name: .long, help: "IPv6 rules (ip6tables) instead of IPv4.")
    var ipv6 = false

    @Flag(name: .long, help: "Install the rules (idempotent).")
    var apply = false

    @Flag(name: .long, help: "Remove the rules (idempotent).")
    var remove = false

    mutating func run() throws {
        guard let topology = CaptureRules.Topology(rawValue: topology) else {
            throw ValidationError("--topology must be node or pod")
        }
        let snapshot: PolicySnapshot
        do { snapshot = try PolicyFile.load(config, generation: 1) } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        let listeners = snapshot.gateway.listeners
        guard listeners.tls != nil || listeners.http != nil else {
            throw ValidationError("\(config): spec.listeners.tls or spec.listeners.http is required for transparent capture")
        }
        let pods = try parseCIDRs(podCIDR, flag: "--pod-cidr")
        if topology == .node && pods.isEmpty { throw ValidationError("--pod-cidr is required for the node topology") }
        let dnsServers = try parseAddresses(dns, flag: "--dns")
        func portList(_ text: String?, flag: String) throws -> [Int] {
            try (text ?? "").split(separator: ",").map { item in
                guard let port = Int(item.trimmingCharacters(in: .whitespaces)), (1...65535).contains(port) else {
                    throw ValidationError("\(flag): '\(item)' is not a port number")
                }
                return port
            }
        }
        let extraHTTP = try portList(httpPorts, flag: "--http-ports")
        if !extraHTTP.isEmpty && listeners.http == nil {
            throw ValidationError("--http-ports needs spec.listeners.http in \(config)")
        }
        let rules = CaptureRules(topology: topology, podCIDRs: pods, clusterCIDRs: try parseCIDRs(clusterCIDR, flag: "--cluster-cidr"),
                                 dnsServers: dnsServers, gatewayUID: gatewayUID, tlsListenerPort: listeners.tls?.port ?? 0,
                                 capturedPorts: CaptureRules.ports(for: snapshot.source) + (try portList(tlsPorts, flag: "--tls-ports")),
                                 httpListenerPort: snapshot.gateway.listeners.http?.port,
                                 httpPorts: CaptureRules.httpPorts(for: snapshot.source) + extraHTTP,
                                 ipv6: ipv6)
        if apply && remove { throw ValidationError("--apply and --remove exclude each other") }
        try Self.checkFamilies(rules)
        if apply {
            try rules.apply()
        } else if remove {
            try rules.remove()
        } else {
            print(rules.restoreText, terminator: "")
        }
    }
}

extension IPTables {
    /// Refuses rules that would capture nothing, and names what a run of one family leaves out:
    /// dual-stack clusters run the same flags twice, once with --ipv6, but a run never made
    /// leaves that family's egress neither captured nor refused.
    static func checkFamilies(_ rules: CaptureRules) throws {
        if let problem = rules.emptyProblem { throw ValidationError(problem) }
        if rules.topology == .pod && !rules.ipv6 {
            // A pod's own IPv6 egress, where it has IPv6, needs its own run: nothing here says so.
            printError("corridor iptables: these are the IPv4 rules; where the pod has IPv6 (a dual-stack cluster), install the --ipv6 rules too, "
                       + "or its IPv6 egress is neither captured nor refused")
        }
        let left = rules.otherFamily
        guard !left.isEmpty else { return }
        let family = rules.ipv6 ? "IPv6" : "IPv4"
        let verb = left.count == 1 ? "is of the other family and needs" : "are of the other family and need"
        let run = rules.ipv6 ? "without" : "with"
        printError("corridor iptables: these are the \(family) rules; \(left.joined(separator: ", ")) \(verb) a run \(run) --ipv6, "
                   + "or that family's egress is neither captured nor refused")
    }
}

struct NetPol: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netpol",
        abstract: "Print the NetworkPolicies that let application namespaces reach only DNS and the gateway, and the gateway only them, DNS, the API server and the outside.")

    @Option(name: .long, help: "Application namespaces, comma-separated: their egress goes only to DNS and the gateway, and only they reach the gateway's listeners.")
    var namespaces: String

    @Option(name: .long, help: "The gateway's config file: the listener ports come from its spec.listeners. Without it, the ports deploy/ runs with (tls 15443, connect 13128, http 15080, admin 15000).")
    var config: String?

    @Option(name: .long, help: "The gateway's namespace.")
    var gatewayNamespace = "corridor-system"

    @Option(name: .long, help: "The gateway pods' labels, key=value[,key=value].")
    var gatewayLabels = "app.kubernetes.io/name=corridor"

    @Option(name: .long, help: "The cluster's pod CIDRs, comma-separated.")
    var podCIDR: String

    @Option(name: .long, help: "The cluster's service CIDRs, comma-separated.")
    var serviceCIDR: String

    @Option(name: .long, help: "The API server's endpoint addresses as CIDRs, comma-separated (kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes): the gateway in Kubernetes mode reads policy from it.")
    var apiServer: String?

    @Option(name: .long, help: "The API server's ports, comma-separated.")
    var apiServerPorts = "443,6443"

    @Flag(name: .long, help: "File mode: the gateway does not talk to the API server.")
    var noApiServer = false

    @Option(name: .long, help: "The namespace that scrapes the admin port (/metrics); empty for none.")
    var monitoringNamespace = "monitoring"

    @Option(name: .long, help: "The cluster DNS namespace.")
    var dnsNamespace = "kube-system"

    @Option(name: .long, help: "The cluster DNS pods' labels, key=value[,key=value].")
    var dnsLabels = "k8s-app=kube-dns"

    @Option(name: .long, help: "NodeLocal DNSCache's addresses, comma-separated, which the gateway may send DNS to (the rest of link-local, the metadata services among it, it may not); empty for none.")
    var nodeLocalDns = NetworkPolicies.defaultNodeLocalDNS.map(\.description).joined(separator: ",")

    @Flag(name: .long, help: "Only the gateway namespace's own policies (what deploy/base ships).")
    var gatewayOnly = false

    @Flag(name: .long, help: "Leave out the ValidatingAdmissionPolicies (Kubernetes 1.30 and later) that keep anyone else from adding egress NetworkPolicies, changing or deleting those that govern egress, or creating host-network, host-PID or privileged pods in the application namespaces.")
    var noAdmissionPolicy = false

    @Option(name: .long, help: "Groups the admission policies do not apply to, comma-separated: who applies this output and may change egress NetworkPolicies (your administrators' group: on EKS, GKE or AKS it is neither default).")
    var admissionExemptGroups = EgressLockdownAdmission.defaultExemptGroups.joined(separator: ",")

    @Option(name: .long, help: "Users the admission policies do not apply to, comma-separated (a GitOps controller: system:serviceaccount:NAMESPACE:NAME).")
    var admissionExemptUsers = ""

    mutating func validate() throws {
        if apiServer == nil && !noApiServer {
            throw ValidationError("--api-server: the API server's addresses are needed in Kubernetes mode (kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes); pass --no-api-server in file mode")
        }
        if apiServer != nil && noApiServer { throw ValidationError("--api-server and --no-api-server contradict each other") }
    }

    mutating func run() throws {
        func names(_ text: String, _ flag: String) throws -> [String] {
            let list = text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
            for name in list where ConfigLoader.dnsLabelProblem(name, maxLength: 63, allowDots: false) != nil {
                throw ValidationError("\(flag): '\(name)' is not a namespace name")
            }
            guard !list.isEmpty else { throw ValidationError("\(flag) is empty") }
            return list
        }
        func pairs(_ text: String, _ flag: String) throws -> [(String, String)] {
            try text.split(separator: ",").map { item in
                let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("\(flag): '\(item)' is not key=value") }
                return (parts[0], parts[1])
            }
        }
        func portList(_ text: String, _ flag: String) throws -> [Int] {
            try text.split(separator: ",").map { item in
                guard let port = Int(item), (1...65535).contains(port) else { throw ValidationError("\(flag): '\(item)' is not a port") }
                return port
            }
        }
        let ports = config.map { GatewayPorts(loadPolicyOrExit($0).gateway) } ?? .standard
        guard !ports.application.isEmpty else {
            throw ValidationError("--config: \(config ?? ""): no tls, connect or http listener for applications to reach")
        }
        let policies = NetworkPolicies(
            namespaces: try names(namespaces, "--namespaces"), gatewayNamespace: try names(gatewayNamespace, "--gateway-namespace")[0],
            gatewayLabels: try pairs(gatewayLabels, "--gateway-labels"), ports: ports,
            dnsNamespace: try names(dnsNamespace, "--dns-namespace")[0], dnsLabels: try pairs(dnsLabels, "--dns-labels"),
            podCIDRs: try parseCIDRs([podCIDR], flag: "--pod-cidr"), serviceCIDRs: try parseCIDRs([serviceCIDR], flag: "--service-cidr"),
            apiServerCIDRs: try apiServer.map { try parseCIDRs([$0], flag: "--api-server") } ?? [],
            apiServerPorts: try portList(apiServerPorts, "--api-server-ports"),
            monitoringNamespace: monitoringNamespace.isEmpty ? nil : try names(monitoringNamespace, "--monitoring-namespace")[0],
            nodeLocalDNS: try parseAddresses([nodeLocalDns], flag: "--node-local-dns"))
        if gatewayOnly {
            print(policies.gatewayYAML, terminator: "")
            return
        }
        print(policies.yaml, terminator: "")
        if !noAdmissionPolicy {
            func exempt(_ text: String, _ flag: String) throws -> [String] {
                let list = text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
                for name in list {
                    if let problem = EgressLockdownAdmission.nameProblem(name) { throw ValidationError("\(flag): '\(name)' \(problem)") }
                }
                return list
            }
            let admission = EgressLockdownAdmission(namespaces: policies.namespaces, exemptUsers: try exempt(admissionExemptUsers, "--admission-exempt-users"),
                                                    exemptGroups: try exempt(admissionExemptGroups, "--admission-exempt-groups"))
            print("---\n" + admission.yaml, terminator: "")
            printError("corridor netpol: once applied, only \(admission.exempt) may create, change or delete egress NetworkPolicies in "
                       + "\(policies.namespaces.joined(separator: ", ")) (--admission-exempt-groups, --admission-exempt-users)")
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version and the git commit this binary was built from.")
    mutating func run() { print(CorridorVersion.text, terminator: "") }
}

/// CIDRs from repeated and/or comma-separated option values; the error names the flag.
func parseCIDRs(_ values: [String], flag: String) throws -> [CIDR] {
    try values.flatMap { $0.split(separator: ",") }.map { item in
        do { return try CIDR(parsing: String(item)) } catch { throw ValidationError("\(flag): '\(item)' is not a CIDR") }
    }
}

/// IP addresses from repeated and/or comma-separated option values; the error names the flag.
func parseAddresses(_ values: [String], flag: String) throws -> [IPAddress] {
    try values.flatMap { $0.split(separator: ",") }.map { item in
        guard let address = IPAddress(parsing: String(item)) else { throw ValidationError("\(flag): '\(item)' is not an IP address") }
        return address
    }
}

/// The compiled policy of `file`; on error, every problem on standard error and exit 2.
func loadPolicyOrExit(_ file: String) -> PolicySnapshot {
    do {
        return try PolicyFile.loadCompiled(file, generation: 1).snapshot
    } catch {
        printError(error.description)
        printError("\(file): \(error.errors.count) problem\(error.errors.count == 1 ? "" : "s")")
        Foundation.exit(2)
    }
}

func printError(_ text: String) {
    var stderr = StandardError()
    print(text, to: &stderr)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var bytes = Array(string.utf8)
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(2, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { break }
                offset += n
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
