//! One error type; every variant says which side is at fault.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::session::Service;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which side caused an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Our request or configuration was wrong (4xx, bad credentials, bad config).
    Kuryr,
    /// OpenStack failed, was unreachable, or answered something unusable.
    OpenStack,
}

/// Errors of the OpenStack client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// OpenStack answered with an HTTP error status.
    #[error("{service} {method} {path} failed: HTTP {status}: {message}")]
    Api {
        service: Service,
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
        /// `x-openstack-request-id`, for grepping the service logs.
        request_id: Option<String>,
    },
    /// The service could not be reached (connect refused, TLS, timeout, reset).
    #[error("{service} {method} {url}: could not reach the service: {reason}")]
    Transport {
        service: Service,
        method: Method,
        url: String,
        reason: String,
        #[source]
        source: reqwest::Error,
    },
    /// Keystone refused to issue a token.
    #[error("keystone refused authentication at {url}: HTTP {status}: {message}")]
    Auth {
        url: String,
        status: StatusCode,
        message: String,
    },
    /// OpenStack answered successfully but the body could not be understood.
    #[error("{service} {method} {path}: cannot decode response (HTTP {status}): {message}")]
    Decode {
        service: Service,
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    /// Missing or invalid configuration on our side.
    #[error("invalid OpenStack client configuration: {0}")]
    Config(String),
    /// The Keystone catalog has no endpoint for the service (e.g. a cloud without Octavia).
    #[error("no {service_type} endpoint for interface {interface} in region {region} in the Keystone catalog (services: {services})")]
    NoEndpoint {
        service_type: String,
        interface: String,
        region: String,
        services: String,
    },
    /// A resource went into a failed provisioning state (e.g. Octavia `ERROR`).
    #[error("{service} {resource} {id} went to provisioning_status {status}")]
    Provisioning {
        service: Service,
        resource: &'static str,
        id: String,
        status: String,
    },
    /// A wait loop ran past its deadline.
    #[error("timed out after {waited:?} waiting for {what} (last state: {last_state})")]
    WaitTimeout {
        what: String,
        waited: Duration,
        last_state: String,
    },
}

impl Error {
    /// The HTTP status OpenStack answered with, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. }
            | Error::Auth { status, .. }
            | Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// OpenStack said 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    /// OpenStack said 409.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { status, .. } if *status == StatusCode::CONFLICT)
    }

    /// Worth retrying later: unreachable service, 5xx, 429, or a wait that timed out.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::WaitTimeout { .. } => true,
            Error::Api { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Error::Auth { status, .. } => status.is_server_error(),
            _ => false,
        }
    }

    /// Which side is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Api { status, .. } | Error::Auth { status, .. } => {
                if status.is_server_error() {
                    Fault::OpenStack
                } else {
                    Fault::Kuryr
                }
            }
            Error::Config(_) | Error::NoEndpoint { .. } => Fault::Kuryr,
            Error::Transport { .. }
            | Error::Decode { .. }
            | Error::Provisioning { .. }
            | Error::WaitTimeout { .. } => Fault::OpenStack,
        }
    }
}

/// Best-effort human message from an OpenStack error body.
///
/// Understands Neutron `{"NeutronError":{"message"}}`, Octavia `{"faultstring"}` /
/// `{"description"}`, Keystone `{"error":{"message"}}`; falls back to the (trimmed) text.
pub(crate) fn error_message(body: &[u8], status: StatusCode) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let candidates = [
            v.pointer("/NeutronError/message"),
            v.pointer("/faultstring"),
            v.pointer("/description"),
            v.pointer("/error/message"),
            v.pointer("/message"),
            v.pointer("/badRequest/message"),
            v.pointer("/itemNotFound/message"),
            v.pointer("/title"),
        ];
        for c in candidates.into_iter().flatten() {
            match c {
                serde_json::Value::String(s) if !s.trim().is_empty() => return s.trim().to_owned(),
                serde_json::Value::Null => {}
                serde_json::Value::String(_) => {}
                other => return other.to_string(),
            }
        }
        // A NeutronError without message, or a plain string message.
        if let Some(s) = v.as_str() {
            return s.trim().to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status.canonical_reason().unwrap_or("no body").to_owned();
    }
    snippet(text, 300)
}

/// First `max` chars of `s`, on a char boundary, with an ellipsis if cut.
pub(crate) fn snippet(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Explains a reqwest failure in a few words, innermost cause last. A TLS failure is named as
/// such: a server certificate no trusted CA vouches for (`cafile` / `cacert` not set to the CA
/// that signed it, or a wrong certificate on the server) says "TLS certificate verification
/// failed", not merely that the connection failed.
pub(crate) fn transport_reason(e: &reqwest::Error, timeout: Duration) -> String {
    let mut causes = Vec::new();
    // Some(true): the peer's certificate was refused; Some(false): another TLS failure.
    let mut tls: Option<bool> = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !causes.contains(&s) {
            causes.push(s);
        }
        // rustls' error travels inside io::Errors (one in another), whose `source` skips what
        // they wrap: look inside.
        let mut inner = Some(c);
        while let Some(i) = inner {
            if let Some(r) = i.downcast_ref::<rustls::Error>() {
                let cert = matches!(r, rustls::Error::InvalidCertificate(_));
                tls = Some(tls.unwrap_or(false) || cert);
            }
            inner = i
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|e| e as &(dyn std::error::Error + 'static));
        }
        cur = c.source();
    }
    let head = match tls {
        Some(true) => "TLS certificate verification failed (no trusted CA vouches for the \
                       server's certificate: set [neutron] cafile / the cloud's cacert to the CA \
                       that signed it, or fix the server's certificate)"
            .to_owned(),
        Some(false) => "TLS handshake failed".to_owned(),
        None if e.is_timeout() => format!("timed out after {timeout:?}"),
        None if e.is_connect() => "connection failed".to_owned(),
        None if e.is_body() || e.is_decode() => {
            "connection broke while reading the response".to_owned()
        }
        None => "request failed".to_owned(),
    };
    if causes.is_empty() {
        head
    } else {
        format!("{head}: {}", causes.join(": "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutron_message() {
        let body = br#"{"NeutronError": {"type": "IpAddressAlreadyAllocated", "message": "IP address 10.0.0.5 already allocated in subnet 3c3f6f7a-0fd6-4bd5-8bc6-4b3a1c1f3a6e", "detail": ""}}"#;
        assert_eq!(
            error_message(body, StatusCode::CONFLICT),
            "IP address 10.0.0.5 already allocated in subnet 3c3f6f7a-0fd6-4bd5-8bc6-4b3a1c1f3a6e"
        );
    }

    #[test]
    fn octavia_messages() {
        let wsme = br#"{"faultcode": "Client", "faultstring": "Load Balancer 5f7c is immutable and cannot be updated.", "debuginfo": null}"#;
        assert_eq!(
            error_message(wsme, StatusCode::CONFLICT),
            "Load Balancer 5f7c is immutable and cannot be updated."
        );
        let pecan = br#"{"code": 404, "title": "Not Found", "description": "The resource could not be found."}"#;
        assert_eq!(
            error_message(pecan, StatusCode::NOT_FOUND),
            "The resource could not be found."
        );
    }

    #[test]
    fn keystone_message_and_fallbacks() {
        let ks = br#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#;
        assert_eq!(
            error_message(ks, StatusCode::UNAUTHORIZED),
            "The request you have made requires authentication."
        );
        assert_eq!(
            error_message(
                b"<html><body>502 Bad Gateway</body></html>",
                StatusCode::BAD_GATEWAY
            ),
            "<html><body>502 Bad Gateway</body></html>"
        );
        assert_eq!(
            error_message(b"", StatusCode::SERVICE_UNAVAILABLE),
            "Service Unavailable"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            error_message(long.as_bytes(), StatusCode::BAD_GATEWAY)
                .chars()
                .count(),
            301
        );
    }

    #[test]
    fn display_and_fault() {
        let e = Error::Api {
            service: Service::Network,
            method: Method::POST,
            path: "/v2.0/ports".into(),
            status: StatusCode::CONFLICT,
            message: "IP address 10.0.0.5 already allocated".into(),
            request_id: None,
        };
        assert_eq!(
            e.to_string(),
            "neutron POST /v2.0/ports failed: HTTP 409 Conflict: IP address 10.0.0.5 already allocated"
        );
        assert!(e.is_conflict());
        assert!(!e.is_not_found());
        assert_eq!(e.fault(), Fault::Kuryr);
        assert_eq!(e.status(), Some(StatusCode::CONFLICT));
        assert!(!e.is_transient());

        let e = Error::Api {
            service: Service::LoadBalancer,
            method: Method::GET,
            path: "/v2/lbaas/loadbalancers".into(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "down".into(),
            request_id: None,
        };
        assert_eq!(e.fault(), Fault::OpenStack);
        assert!(e.is_transient());
        assert!(e
            .to_string()
            .starts_with("octavia GET /v2/lbaas/loadbalancers failed: HTTP 503"));

        assert_eq!(Error::Config("x".into()).fault(), Fault::Kuryr);
        let e = Error::Auth {
            url: "http://k/v3/auth/tokens".into(),
            status: StatusCode::UNAUTHORIZED,
            message: "bad".into(),
        };
        assert_eq!(e.fault(), Fault::Kuryr);
        assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED));
    }
}
