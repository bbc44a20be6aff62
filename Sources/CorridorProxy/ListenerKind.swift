/// Which data-plane listener to bind: TLS passthrough (the SNI decides), the explicit CONNECT
/// proxy, or plain HTTP originated over TLS.
public enum ListenerKind: Sendable {
    case passthrough
    case connect
    /// Plain HTTP, originated over TLS.
    case http
}
