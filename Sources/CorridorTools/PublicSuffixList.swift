import Foundation

/// Which names are public suffixes (`com`, `co.uk`) or multi-tenant parents (`s3.amazonaws.com`,
/// `github.io`): names under which a wildcard would let a workload reach anyone's site or bucket,
/// an exfiltration channel. `corridor learn` never proposes a wildcard under one.
///
/// The rules come from the Public Suffix List (publicsuffix.org, ICANN and private sections; the
/// Debian package `publicsuffix` installs it at ``systemPath``) when it is there, and always from a
/// built-in list of multi-tenant hosting and storage parents, which covers every name under them
/// too (`s3.eu-west-1.amazonaws.com`, a dotted bucket's `foo.s3.amazonaws.com`). Without the file,
/// every single-label name and the built-in list count as public suffixes, and ``hasList`` is
/// false: `corridor learn` then proposes no wildcard at all.
public struct PublicSuffixList: Sendable {
    public static let systemPath = "/usr/share/publicsuffix/public_suffix_list.dat"

    /// Hosting and storage parents under which every tenant gets names (kept even when the PSL
    /// file lists some of them).
    public static let multiTenantParents: Set<String> = [
        "s3.amazonaws.com", "amazonaws.com", "cloudfront.net", "elasticbeanstalk.com", "awsapps.com",
        "blob.core.windows.net", "core.windows.net", "azurewebsites.net", "cloudapp.net", "azureedge.net", "trafficmanager.net",
        "storage.googleapis.com", "googleapis.com", "appspot.com", "googleusercontent.com", "firebaseapp.com", "web.app", "run.app",
        "cloudfunctions.net", "blogspot.com",
        "github.io", "githubusercontent.com", "gitlab.io", "herokuapp.com", "herokudns.com", "netlify.app", "vercel.app", "pages.dev",
        "workers.dev", "r2.dev", "fly.dev", "onrender.com", "glitch.me", "repl.co", "ngrok.io", "ngrok-free.app", "trycloudflare.com",
        "digitaloceanspaces.com", "ondigitalocean.app", "fastly.net", "akamaized.net", "wpengine.com", "myshopify.com", "azurefd.net",
    ]

    private var rules: Set<String> = []
    private var wildcards: Set<String> = []
    private var exceptions: Set<String> = []
    /// Where the rules came from, for the output's header.
    public private(set) var origin: String
    /// Whether the Public Suffix List was read (else only the built-in list is known).
    public private(set) var hasList = false

    /// Reads `path` (the PSL format); nil `path` takes ``systemPath`` if it exists. Throws if a
    /// path given explicitly cannot be read.
    public init(path: String? = nil) throws {
        let file = path ?? (FileManager.default.fileExists(atPath: Self.systemPath) ? Self.systemPath : nil)
        guard let file else {
            origin = "built-in multi-tenant list (no Public Suffix List at \(Self.systemPath))"
            return
        }
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw AccessLogReader.Failure(description: "--public-suffix-list: cannot read \(file): \(error.localizedDescription)")
        }
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.split(whereSeparator: \.isWhitespace).first.map(String.init) ?? ""
            if line.isEmpty || line.hasPrefix("//") { continue }
            let rule = line.lowercased()
            if rule.hasPrefix("!") { exceptions.insert(String(rule.dropFirst())) } else if rule.hasPrefix("*.") { wildcards.insert(String(rule.dropFirst(2))) } else { rules.insert(rule) }
        }
        origin = "Public Suffix List \(file) (\(rules.count + wildcards.count) rules) and the built-in multi-tenant list"
        hasList = true
    }

    /// Whether a wildcard directly under `name` (`*.name`) would reach names anyone can register.
    public func isPublic(_ name: String) -> Bool {
        let name = name.lowercased()
        if !name.contains(".") { return true }
        // A multi-tenant parent, or any name under one: a region's or a bucket's names are the
        // tenants' too (`*.s3.eu-west-1.amazonaws.com` reaches every bucket there).
        var ancestor = Substring(name)
        while true {
            if Self.multiTenantParents.contains(String(ancestor)) { return true }
            guard let dot = ancestor.firstIndex(of: ".") else { break }
            ancestor = ancestor[ancestor.index(after: dot)...]
        }
        if exceptions.contains(name) { return false }
        if rules.contains(name) { return true }
        if let dot = name.firstIndex(of: "."), wildcards.contains(String(name[name.index(after: dot)...])) { return true }
        return false
    }
}
