/// A suspicious-traffic signal: named in the access record (`"signals":[...]`), counted in
/// `corridor_signals_total{signal}`. Signals inform; policy still decides. Each has a rule, a
/// threshold where it takes one, and an off switch (`GatewayConfig spec.signals`; docs/resources.md).
public enum Signal: String, Sendable, CaseIterable {
    /// The workload reaches a destination it had not reached since the gateway started (within the
    /// flow table's bound).
    case newDestination = "new_destination"
    /// The workload had `threshold` or more denials within `window` (a scan, or a pod probing).
    case denyBurst = "deny_burst"
    /// The SNI or Host has a label that looks machine-made: DGA and DNS-tunnel shaped names.
    case generatedName = "generated_name"
    /// Bytes up at least `minMiB` and `ratio` times bytes down: the shape of exfiltration.
    case uploadHeavy = "upload_heavy"
    /// A transparent client dialled an address its SNI does not resolve to (SNI spoofing).
    case addressMismatch = "address_mismatch"
    /// An allowed name resolved into a blocked range (DNS rebinding, or a wrong record).
    case guardRefused = "guard_refused"
}
