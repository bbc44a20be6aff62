/// Reads the `spec` of a `GatewayConfig` object.
enum GatewayConfigReader {
    /// A listener's `dataPlane` field (`path` names it in errors): Splice only on Linux.
    private static func dataPlane(_ fields: YAMLReader.Fields, _ path: String) throws(ConfigError) -> GatewayConfig.DataPlane? {
        let plane = try fields.enumeration("dataPlane", GatewayConfig.DataPlane.self)
        #if !os(Linux)
        if plane == .splice {
            throw fields.reader.error(path, fields.node("dataPlane"), "Splice needs Linux (epoll and splice(2)); use NIO here")
        }
        #endif
        return plane
    }

    /// Whether two listeners on one port of these hosts cannot both bind (Linux): the same address
    /// in any spelling, `::` (dual-stack) with any address, `0.0.0.0` with any IPv4 address.
    static func bindTogetherFails(_ a: String, _ b: String) -> Bool {
        guard let x = IPAddress(parsing: a)?.unmapped, let y = IPAddress(parsing: b)?.unmapped else { return a == b }
        if x == y { return true }
        let anyV6 = IPAddress(parsing: "::")!, anyV4 = IPAddress(parsing: "0.0.0.0")!
        if x == anyV6 || y == anyV6 { return true }
        return (x == anyV4 && y.isIPv4) || (y == anyV4 && x.isIPv4)
    }

    static func read(_ spec: YAMLReader.Fields, name: String) throws(ConfigError) -> GatewayConfig {
        let reader = spec.reader
        var config = GatewayConfig()
        config.name = name
        config.mode = try spec.enumeration("mode", GatewayConfig.Mode.self) ?? .enforce

        if let listeners = try spec.fields("listeners") {
            func address(_ key: String) throws(ConfigError) -> GatewayConfig.ListenAddress? {
                guard let text = try listeners.string(key) else { return nil }
                guard let address = GatewayConfig.ListenAddress(parsing: text) else {
                    throw reader.error(listeners.child(key), listeners.node(key), "must be IP:port or [IPv6]:port, got '\(text)'")
                }
                return address
            }
            config.listeners = .init(tls: try address("tls"), connect: try address("connect"), admin: try address("admin"),
                                     http: try address("http"))
            try listeners.finish()
            if config.listeners.tls == nil && config.listeners.connect == nil && config.listeners.http == nil {
                throw reader.error("spec.listeners", listeners.node, "at least one of tls, connect and http is required")
            }
            // Two listeners on one port of one address (or of every address) cannot both bind.
            let named = [("tls", config.listeners.tls), ("connect", config.listeners.connect), ("http", config.listeners.http),
                         ("admin", config.listeners.admin)].compactMap { name, address in address.map { (name, $0) } }
            for (index, (name, address)) in named.enumerated() where address.port != 0 {
                if let (other, otherAddress) = named[..<index].first(where: { $0.1.port == address.port && Self.bindTogetherFails($0.1.host, address.host) }) {
                    throw reader.error(listeners.child(name), listeners.node(name),
                                       "\(address) takes the port of the \(other) listener (\(otherAddress)); each listener needs its own")
                }
            }
        }

        if let tls = try spec.fields("tls") {
            config.tls.upstreamPort = try tls.int("upstreamPort", in: 1...65535) ?? config.tls.upstreamPort
            config.tls.allowECH = try tls.bool("allowECH") ?? false
            config.tls.maxClientHelloBytes = try tls.int("maxClientHelloBytes", in: 1024...(1 << 20)) ?? config.tls.maxClientHelloBytes
            config.tls.dataPlane = try dataPlane(tls, "spec.tls.dataPlane") ?? config.tls.dataPlane
            try tls.finish()
        }

        if let connect = try spec.fields("connect") {
            config.connect.dataPlane = try dataPlane(connect, "spec.connect.dataPlane") ?? config.connect.dataPlane
            try connect.finish()
        }

        if let transparent = try spec.fields("transparent") {
            config.transparent.addressMismatch = try transparent.enumeration("addressMismatch", GatewayConfig.TransparentSettings.AddressMismatch.self)
                ?? config.transparent.addressMismatch
            try transparent.finish()
        }

        if let resolver = try spec.fields("resolver") {
            if let staticHosts = try resolver.fields("static") {
                var spelled: [HostPattern: String] = [:]
                for (key, value) in staticHosts.values {
                    staticHosts.used.insert(key)
                    let path = staticHosts.child(key)
                    let pattern: HostPattern
                    do { pattern = try HostPattern(parsing: key) } catch {
                        throw reader.error(path, value, "'\(key)' is not a host name or *.suffix pattern")
                    }
                    // Names are case-insensitive: two spellings of one would leave which list wins to
                    // the map's order.
                    if let earlier = spelled[pattern] {
                        throw reader.error(path, value, "'\(key)' is the same name as '\(earlier)', listed already (names ignore case)")
                    }
                    spelled[pattern] = key
                    guard let list = value.sequence, !list.isEmpty else {
                        throw reader.error(path, value, "must be a non-empty list of IP addresses")
                    }
                    var addresses: [IPAddress] = []
                    for (index, element) in list.enumerated() {
                        let text = try reader.string(element, "\(path)[\(index)]")
                        guard let ip = IPAddress(parsing: text) else {
                            throw reader.error("\(path)[\(index)]", element, "'\(text)' is not an IP address")
                        }
                        addresses.append(ip)
                    }
                    config.staticHosts.append((pattern, addresses))
                }
            }
            config.systemResolver = try resolver.bool("system") ?? true
            if let text = try resolver.string("cacheTTL") {
                guard let ttl = DurationSyntax.parse(text) else {
                    throw reader.error("spec.resolver.cacheTTL", resolver.node("cacheTTL"), "must be a duration such as 0s, 5s or 1m, got '\(text)'")
                }
                config.resolverCacheTTL = ttl
            }
            try resolver.finish()
        }

        if let destinations = try spec.fields("destinations") {
            for (path, node) in try destinations.list("allowPrivate") {
                config.allowPrivate.append(try ConfigLoader.cidr(try reader.string(node, path), path: path, node: node, reader: reader))
            }
            for (path, node) in try destinations.list("block") {
                config.extraBlocked.append(try ConfigLoader.cidr(try reader.string(node, path), path: path, node: node, reader: reader))
            }
            try destinations.finish()
        }

        config.unknownSources = try spec.enumeration("unknownSources", GatewayConfig.UnknownSources.self) ?? .deny

        if let limits = try spec.fields("limits") {
            config.limits.maxConnections = try limits.int("maxConnections", in: 1...1_000_000) ?? config.limits.maxConnections
            config.limits.maxConnectionsPerSource = try limits.int("maxConnectionsPerSource", in: 1...1_000_000)
            config.limits.handshakeTimeout = try limits.duration("handshakeTimeout") ?? config.limits.handshakeTimeout
            config.limits.connectTimeout = try limits.duration("connectTimeout") ?? config.limits.connectTimeout
            config.limits.idleTimeout = try limits.duration("idleTimeout") ?? config.limits.idleTimeout
            config.limits.drainTimeout = try limits.duration("drainTimeout") ?? config.limits.drainTimeout
            config.limits.maxConnectHeadBytes = try limits.int("maxConnectHeadBytes", in: 512...65536) ?? config.limits.maxConnectHeadBytes
            config.limits.upstreamResponseTimeout = try limits.duration("upstreamResponseTimeout") ?? config.limits.upstreamResponseTimeout
            try limits.finish()
        }

        if let kubernetes = try spec.fields("kubernetes") {
            if let staleness = try kubernetes.duration("maxStaleness") {
                let minimum = GatewayConfig.KubernetesSettings.minimumStaleness
                guard staleness >= minimum else {
                    throw reader.error(kubernetes.child("maxStaleness"), kubernetes.node("maxStaleness"),
                                       "must be at least \(DurationSyntax.format(minimum)) (a brief API restart must not stop all egress), got '\(DurationSyntax.format(staleness))'")
                }
                config.kubernetes.maxStaleness = staleness
            }
            try kubernetes.finish()
        }

        if let reload = try spec.fields("reload") {
            config.reload.liveConnections = try reload.enumeration("liveConnections", GatewayConfig.ReloadSettings.LiveConnections.self)
                ?? config.reload.liveConnections
            try reload.finish()
        }

        if let admin = try spec.fields("admin") {
            config.admin.tokenFile = try admin.string("tokenFile")
            for (index, host) in try admin.stringList("hosts").enumerated() {
                // A name, or `*.svc.DOMAIN` for every Service name of a cluster domain other than
                // cluster.local. No other wildcard: under `*.co.uk` or `*.github.io` anyone can
                // register a name, which is what DNS rebinding needs.
                var name = host.lowercased().hasSuffix(".") ? String(host.lowercased().dropLast()) : host.lowercased()
                let wildcard = name.hasPrefix("*.")
                if wildcard { name.removeFirst(2) }
                if let problem = ConfigLoader.dnsLabelProblem(name, maxLength: 253, allowDots: true) {
                    throw reader.error("spec.admin.hosts[\(index)]", admin.node("hosts"), problem)
                }
                if wildcard && !(name.hasPrefix("svc.") && name.dropFirst(4).contains(".")) {
                    throw reader.error("spec.admin.hosts[\(index)]", admin.node("hosts"),
                                       "'\(host)': the only wildcard is *.svc.CLUSTER-DOMAIN, as in *.svc.k8s.example.com "
                                       + "(under other suffixes anyone may register names); list other names one by one")
                }
                config.admin.hosts.append(wildcard ? "*." + name : name)
            }
            try admin.finish()
        }

        if let flows = try spec.fields("flows") {
            config.flows.maxEntries = try flows.int("maxEntries", in: 100...10_000_000) ?? config.flows.maxEntries
            try flows.finish()
        }

        if let signals = try spec.fields("signals") {
            func toggle(_ key: String) throws(ConfigError) -> YAMLReader.Fields? {
                guard let fields = try signals.fields(key) else { return nil }
                return fields
            }
            if let f = try toggle("newDestination") {
                config.signals.newDestination = try f.bool("enabled") ?? true
                try f.finish()
            }
            if let f = try toggle("denyBurst") {
                config.signals.denyBurst = try f.bool("enabled") ?? true
                config.signals.denyBurstThreshold = try f.int("threshold", in: 2...100_000) ?? config.signals.denyBurstThreshold
                config.signals.denyBurstWindow = try f.duration("window") ?? config.signals.denyBurstWindow
                try f.finish()
            }
            if let f = try toggle("generatedName") {
                config.signals.generatedName = try f.bool("enabled") ?? true
                config.signals.generatedNameMinLength = try f.int("minLength", in: 6...63) ?? config.signals.generatedNameMinLength
                if let text = try f.string("minEntropy") {
                    guard let value = Double(text), value > 0, value <= 6 else {
                        throw reader.error("spec.signals.generatedName.minEntropy", f.node("minEntropy"), "must be bits per character between 0 and 6, got '\(text)'")
                    }
                    config.signals.generatedNameMinEntropy = value
                }
                try f.finish()
            }
            if let f = try toggle("uploadHeavy") {
                config.signals.uploadHeavy = try f.bool("enabled") ?? true
                config.signals.uploadHeavyMiB = try f.int("minMiB", in: 1...1_000_000) ?? config.signals.uploadHeavyMiB
                config.signals.uploadHeavyRatio = try f.int("ratio", in: 1...1_000_000) ?? config.signals.uploadHeavyRatio
                try f.finish()
            }
            if let f = try toggle("addressMismatch") {
                config.signals.addressMismatch = try f.bool("enabled") ?? true
                try f.finish()
            }
            if let f = try toggle("guardRefused") {
                config.signals.guardRefused = try f.bool("enabled") ?? true
                try f.finish()
            }
            try signals.finish()
        }

        if let logging = try spec.fields("logging") {
            if let access = try logging.fields("accessLog") {
                let file = try access.string("file")
                config.logging.accessLogFile = (file == "-" || file == "stdout") ? nil : file
                config.logging.includePath = try access.bool("includePath") ?? false
                config.logging.interimInterval = try access.duration("interimInterval", allowZero: true) ?? config.logging.interimInterval
                config.logging.onWriteFailure = try access.enumeration("onWriteFailure", GatewayConfig.Logging.OnWriteFailure.self)
                    ?? config.logging.onWriteFailure
                try access.finish()
            }
            try logging.finish()
        }
        return config
    }
}
