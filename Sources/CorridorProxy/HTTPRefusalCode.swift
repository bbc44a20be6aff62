import NIOHTTP1

/// Why the gateway answered a plain-HTTP request itself: the `Corridor-Reason` header of the
/// response, with the status it goes with.
enum HTTPRefusalCode: String, Sendable, CaseIterable {
    /// The request cannot be forwarded safely as it is (framing, target, Host, header bytes).
    case badRequest = "bad_request"
    /// The head has more header fields than ``HTTPRequestHeadCheck/maxHeaderFields``.
    case tooManyHeaderFields = "too_many_header_fields"
    /// A CONNECT request: tunnels are the connect listener's (RFC 9110 section 15.5.6).
    case methodNotAllowed = "method_not_allowed"
    /// A transfer coding other than chunked: in the request (501), or in the upstream's response (502).
    case unsupportedTransferCoding = "unsupported_transfer_coding"
    case policyDenied = "policy_denied"
    case destinationBlocked = "destination_blocked"
    case upstreamTLSUnavailable = "upstream_tls_unavailable"
    case upstreamTLSVerificationFailed = "upstream_tls_verification_failed"
    case upstreamTLSFailed = "upstream_tls_failed"
    case upstreamUnreachable = "upstream_unreachable"
    case upstreamClosed = "upstream_closed"
    case upstreamTimeout = "upstream_timeout"
    /// The request's body stood still for `limits.idleTimeout` before the upstream answered.
    case requestTimeout = "request_timeout"
}
