//! TLS failures told apart from other transport errors. A server certificate that no trusted
//! CA vouches for (or that is not for the server's address) is a configuration problem — the
//! CA bundle kuryr-rs was given, or the server's certificate — that no retry fixes, unlike an
//! API server that is not up yet; the binaries name it and stop instead of retrying forever.

use std::error::Error;

/// A TLS failure found in an error's chain of causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    /// The server's certificate was refused (unknown issuer, wrong name, expired, ...), as
    /// opposed to another handshake failure.
    pub certificate: bool,
    /// rustls' description, e.g. `invalid peer certificate: UnknownIssuer`.
    pub detail: String,
}

impl TlsFailure {
    /// "TLS certificate verification failed" or "TLS handshake failed".
    pub fn what(&self) -> &'static str {
        if self.certificate {
            "TLS certificate verification failed"
        } else {
            "TLS handshake failed"
        }
    }

    /// Why `component` (kuryr-controller, kuryr-daemon) cannot use the API server at `server`:
    /// what failed, rustls' detail, and where the CA it checked against comes from.
    pub fn api_server_error(&self, component: &str, server: &str) -> String {
        format!(
            "the API server {server}: {}: {} (the CA {component} was given — kubeconfig \
             certificate-authority, [kubernetes] ssl_ca_crt_file or the service account's ca.crt — \
             must be the one that signed the API server's certificate)",
            self.what(),
            self.detail
        )
    }
}

/// The TLS failure behind `err`, if its chain of causes holds one: rustls' error, also inside
/// `io::Error`s (hyper wraps one io::Error in another, and `io::Error::source` skips what it
/// wraps).
pub fn failure(err: &(dyn Error + 'static)) -> Option<TlsFailure> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = rustls_error(e) {
            return Some(TlsFailure {
                certificate: matches!(r, rustls::Error::InvalidCertificate(_)),
                detail: r.to_string(),
            });
        }
        cur = e.source();
    }
    None
}

/// `e` itself, or what the io::Errors around it wrap, as rustls' error.
fn rustls_error<'a>(mut e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn finds_rustls_inside_io_errors_and_nothing_elsewhere() {
        // As hyper-util hands it over: io::Error(Other, io::Error(InvalidData, rustls::Error)).
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, cert);
        let e = Outer(std::io::Error::other(inner));
        assert_eq!(
            failure(&e),
            Some(TlsFailure {
                certificate: true,
                detail: "invalid peer certificate: UnknownIssuer".into()
            })
        );
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        let e = Outer(std::io::Error::new(std::io::ErrorKind::InvalidData, alert));
        assert!(
            matches!(
                failure(&e),
                Some(TlsFailure {
                    certificate: false,
                    ..
                })
            ),
            "{:?}",
            failure(&e)
        );
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(failure(&e), None);
    }
}
