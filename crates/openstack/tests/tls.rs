//! TLS to OpenStack is verified by default, and a server certificate the configured CA does
//! not vouch for is refused at the first request (Keystone's `POST /v3/auth/tokens`) with an
//! error that says so and names the URL.
//!
//! The stack's Keystone speaks plain HTTP, so the server here is a small in-test HTTPS server
//! (tokio-rustls) with a certificate for 127.0.0.1 signed by a CA made for the test (openssl
//! CLI); it answers every request 401, so a request that got through TLS ends in
//! [`Error::Auth`] and is seen by the server.

use std::path::Path;
use std::sync::{Arc, Mutex};

use kuryr_openstack::{CloudConfig, Error, Service, Session};
use kuryr_test_support::certs::{make_ca, make_server_cert, openssl_available};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTPS server on 127.0.0.1 with the certificate `crt` (key `key`): records each request line it
/// receives and answers 401 with a Keystone-style error body.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(crt: &Path, key: &Path) -> Server {
    let certs = CertificateDer::pem_file_iter(crt)
        .expect("server.crt")
        .collect::<Result<Vec<_>, _>>()
        .expect("server.crt certificates");
    let key = PrivateKeyDer::from_pem_file(key).expect("server.key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}/v3", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to record.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let line = text.lines().next().unwrap_or_default().to_string();
                log.lock().expect("log").push(line);
                let body = r#"{"error": {"code": 401, "message": "test server: no such user"}}"#;
                let resp = format!(
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Server { url, seen, task }
}

/// clouds.yaml of one cloud `tls` at `url`, with `extra` lines (cacert, verify) in it.
fn cloud(dir: &Path, url: &str, extra: &str) -> CloudConfig {
    let path = dir.join("clouds.yaml");
    std::fs::write(
        &path,
        format!(
            "clouds:\n  tls:\n    auth_type: v3applicationcredential\n    auth:\n      \
             auth_url: {url}\n      application_credential_id: ac\n      \
             application_credential_secret: s\n{extra}"
        ),
    )
    .expect("write clouds.yaml");
    CloudConfig::from_clouds_yaml(&path, "tls").expect("clouds.yaml")
}

/// The TLS refusal: a transport error of the Keystone token request, at its URL, saying the
/// certificate was not verified.
fn assert_refused(what: &str, r: Result<Session, Error>, token_url: &str, server: &Server) {
    let e = match r {
        Ok(_) => panic!("{what}: authenticated against a server no configured CA vouches for"),
        Err(e) => e,
    };
    let msg = e.to_string();
    match &e {
        Error::Transport {
            service,
            url,
            reason,
            ..
        } => {
            assert_eq!(*service, Service::Identity, "{what}: {msg}");
            assert_eq!(url, token_url, "{what}: {msg}");
            assert!(
                reason.starts_with("TLS certificate verification failed"),
                "{what}: {msg}"
            );
            assert!(reason.contains("UnknownIssuer"), "{what}: {msg}");
        }
        other => panic!("{what}: not a TLS refusal: {other:?}"),
    }
    assert!(
        msg.starts_with(&format!("keystone POST {token_url}: ")),
        "{what}: {msg}"
    );
    assert!(
        server.seen.lock().expect("log").is_empty(),
        "{what}: a request got through"
    );
}

/// The request went through TLS: the server saw it and its 401 came back as Keystone's refusal.
fn assert_reached(what: &str, r: Result<Session, Error>, token_url: &str, server: &Server) {
    match r {
        Err(Error::Auth { url, status, .. }) => {
            assert_eq!(url, token_url, "{what}");
            assert_eq!(status.as_u16(), 401, "{what}");
        }
        Err(e) => panic!("{what}: did not reach the server: {e}"),
        Ok(_) => panic!("{what}: the test server issues no token"),
    }
    assert_eq!(
        server
            .seen
            .lock()
            .expect("log")
            .drain(..)
            .collect::<Vec<_>>(),
        ["POST /v3/auth/tokens HTTP/1.1"],
        "{what}"
    );
}

#[tokio::test]
async fn keystone_over_tls_is_verified_against_the_configured_ca() {
    if !openssl_available() {
        kuryr_test_support::skip!("no openssl CLI to make the test certificates");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_a = make_ca(dir.path(), "a");
    let ca_b = make_ca(dir.path(), "b");
    let (crt, key) = make_server_cert(dir.path(), "a", "127.0.0.1");
    let server = serve(&crt, &key).await;
    let token_url = format!("{}/auth/tokens", server.url);
    let connect = |c: CloudConfig| async move { Session::builder(&c).connect().await };

    // Another CA than the one that signed the server's certificate.
    let c = cloud(
        dir.path(),
        &server.url,
        &format!("    cacert: {}\n", ca_b.display()),
    );
    assert_eq!(c.cacert.as_deref(), Some(ca_b.as_path()));
    assert_refused("cacert = CA B", connect(c).await, &token_url, &server);

    // No CA configured: the system's roots do not know the test CA.
    let c = cloud(dir.path(), &server.url, "");
    assert!(!c.insecure && c.cacert.is_none(), "{c:?}");
    assert_refused("no cacert", connect(c).await, &token_url, &server);

    // The CA that signed it.
    let c = cloud(
        dir.path(),
        &server.url,
        &format!("    cacert: {}\n", ca_a.display()),
    );
    assert_reached("cacert = CA A", connect(c).await, &token_url, &server);

    // Verification off, only when asked for (clouds.yaml `verify: false`; kuryr.conf
    // `[neutron] insecure = true` sets the same flag).
    let c = cloud(dir.path(), &server.url, "    verify: false\n");
    assert!(c.insecure);
    assert_reached("verify: false", connect(c).await, &token_url, &server);
}
