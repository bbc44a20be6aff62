import CorridorPolicy

/// The slots a connection holds in the connection budgets while it is open.
struct AdmissionSlot: Sendable {
    /// The source whose per-source count the connection holds; nil when none is kept.
    var source: IPAddress?
}
