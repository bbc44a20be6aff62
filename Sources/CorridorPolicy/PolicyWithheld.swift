/// Why a Kubernetes-mode gateway denies every connection instead of deciding: what it knows from
/// the API is missing or no longer trusted. The decision's reason and the hint say which.
public enum PolicyWithheld: Sendable, Equatable {
    /// Before the first full sync of the API.
    case awaitingSync
    /// The list/watch of `resources` (plurals: `pods`, ...) has brought nothing current (no list,
    /// event or bookmark) for longer than `spec.kubernetes.maxStaleness` (`limit`).
    case stale(resources: [String], limit: Duration)

    /// The reason every decision gives.
    public var reason: String {
        switch self {
        case .awaitingSync:
            "the policy has not been synced from the Kubernetes API yet (every connection is denied until it is)"
        case .stale(let resources, let limit):
            "the Kubernetes API has sent nothing current about \(resources.joined(separator: ", ")) for over \(DurationSyntax.format(limit)) "
                + "(spec.kubernetes.maxStaleness): identities and policy may be stale, so every connection is denied until the watches list again"
        }
    }

    /// What to do about it: nothing in the policy.
    public var hint: String {
        switch self {
        case .awaitingSync:
            "wait until the policy is synced from the Kubernetes API (/readyz says ready); no policy change is needed"
        case .stale:
            "restore the gateway's access to the Kubernetes API (see corridor_kubernetes_watch_up and the gateway's log); no policy change is needed"
        }
    }
}
