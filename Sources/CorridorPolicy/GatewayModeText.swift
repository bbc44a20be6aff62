/// How the gateway's mode is said to operators: the same sentence in the startup log,
/// `corridor check`, `/readyz` and the docs.
public enum GatewayModeText {
    public static let auditWarning = "the gateway is in Audit mode (spec.mode: Audit): connections the policy would refuse are let through "
        + "(resolved, vetted and dialled) and recorded as decision audit; only destination guards refuse"
}
