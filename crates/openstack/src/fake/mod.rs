//! Tiny scripted HTTP/1.1 server on 127.0.0.1: this crate's tests use it for error paths real
//! services cannot produce on demand (5xx, hangs, 401 then 200, garbage bodies); other crates'
//! tests (the controller's reconciler tests) get it through the `test-support` feature, as an
//! in-process Keystone + Neutron + Octavia double. Test code only: it panics when it cannot bind.
//! [`security`] is a stateful Neutron for security groups, rules and address groups on top of it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::config::CloudConfig;
use serde_json::json;

pub mod security;

pub use security::SecuritySim;

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn is_auth(&self) -> bool {
        self.path() == "/v3/auth/tokens"
    }
}

/// What to answer.
pub enum Reply {
    Json(u16, String),
    WithHeaders(u16, Vec<(&'static str, String)>, String),
    /// Headers promise more body than is sent, then the connection closes.
    Truncated(u16),
    /// Never answer.
    Hang,
    Delayed(Duration, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply::Json(status, body.into())
    }

    /// A Keystone token (`secret`) whose catalog points at `base`.
    pub fn token(base: &str, secret: &str) -> Reply {
        Self::token_with_dates(
            base,
            secret,
            "2024-05-01T12:00:00.000000Z",
            "2024-05-01T13:00:00.000000Z",
        )
    }

    pub fn token_with_dates(base: &str, secret: &str, issued: &str, expires: &str) -> Reply {
        Reply::WithHeaders(
            201,
            vec![("X-Subject-Token", secret.to_owned())],
            token_body(base, issued, expires),
        )
    }
}

/// A realistic Keystone token response, with `base` as every endpoint URL.
pub fn token_body(base: &str, issued_at: &str, expires_at: &str) -> String {
    json!({"token": {
        "methods": ["application_credential"],
        "user": {"domain": {"id": "default", "name": "Default"},
                 "id": "8a3c5b9e0f7d4c2ba1e6d5f4c3b2a190", "name": "kuryr",
                 "password_expires_at": null},
        "audit_ids": ["nC1Kd0ZrQ7ShmKx5Rr0b2A"],
        "expires_at": expires_at,
        "issued_at": issued_at,
        "project": {"domain": {"id": "default", "name": "Default"},
                    "id": "5e1a9b0c7d3f4e2a8b6c5d4e3f2a1b0c", "name": "k8s"},
        "is_domain": false,
        "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "service"}],
        "application_credential": {"id": "ac1", "name": "kuryr", "restricted": true},
        "catalog": [
            {"endpoints": [
                {"id": "e1", "interface": "internal", "region_id": "RegionOne", "url": format!("{base}/internal-net"), "region": "RegionOne"},
                {"id": "e2", "interface": "public", "region_id": "RegionOne", "url": base, "region": "RegionOne"},
                {"id": "e3", "interface": "public", "region_id": "RegionTwo", "url": "http://192.0.2.1:9696", "region": "RegionTwo"}],
             "id": "s1", "type": "network", "name": "neutron"},
            {"endpoints": [
                {"id": "e4", "interface": "public", "region_id": "RegionOne", "url": base, "region": "RegionOne"}],
             "id": "s2", "type": "load-balancer", "name": "octavia"},
            {"endpoints": [
                {"id": "e5", "interface": "public", "region_id": "RegionOne", "url": "http://127.0.0.1:5000/v3/", "region": "RegionOne"}],
             "id": "s3", "type": "identity", "name": "keystone"}
        ]
    }})
    .to_string()
}

type Handler = dyn Fn(&Seen, &str) -> Reply + Send + Sync;

pub struct Fake {
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    /// Starts the server; `handler(request, base_url)` picks each reply.
    pub async fn start<F>(handler: F) -> Fake
    where
        F: Fn(&Seen, &str) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s2, b2) = (seen.clone(), base.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s3, b3, h3) = (s2.clone(), b2.clone(), handler.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &s3, &b3, &*h3).await;
                });
            }
        });
        Fake { base, seen, task }
    }

    /// An application-credential cloud pointing at this fake.
    pub fn cloud(&self) -> CloudConfig {
        CloudConfig::application_credential(format!("{}/v3", self.base), "ac", "sec")
            .with_region("RegionOne")
            .with_timeout(Duration::from_secs(2))
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn auth_calls(&self) -> usize {
        self.seen().iter().filter(|s| s.is_auth()).count()
    }

    pub fn calls(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path() == path).count()
    }
}

async fn serve(
    mut stream: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    base: &str,
    handler: &Handler,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let req = Seen {
        method,
        target,
        headers,
        body,
    };
    seen.lock().unwrap().push(req.clone());
    let mut reply = handler(&req, base);
    while let Reply::Delayed(d, inner) = reply {
        tokio::time::sleep(d).await;
        reply = *inner;
    }
    let (status, extra, body, truncated) = match reply {
        Reply::Json(s, b) => (s, vec![], b, false),
        Reply::WithHeaders(s, h, b) => (s, h, b, false),
        Reply::Truncated(s) => (s, vec![], "{\"ports\": [".to_owned(), true),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        Reply::Delayed(..) => unreachable!(),
    };
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Whatever");
    let declared = if truncated {
        body.len() + 100
    } else {
        body.len()
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\nConnection: close\r\n"
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    stream.write_all(out.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// Counts calls per key, for scripting "first call fails, second succeeds".
#[derive(Default)]
pub struct Counter(AtomicUsize);

impl Counter {
    /// 1-based number of this call.
    pub fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RequestCounters;
    use crate::neutron::Neutron;
    use crate::octavia::{LbState, Octavia};
    use crate::{Error, Fault, Query, Service, Session, StatusCode};
    use std::time::Instant;

    const NOT_FOUND_PORT: &str = r#"{"NeutronError": {"type": "PortNotFound", "message": "Port 65c0ee9f could not be found.", "detail": ""}}"#;

    #[tokio::test]
    async fn service_503_is_openstack_fault() {
        let fake = Fake::start(|r, base| {
            if r.is_auth() {
                return Reply::token(base, "tok");
            }
            Reply::WithHeaders(
                503,
                vec![("X-Openstack-Request-Id", "req-1234".into())],
                r#"{"NeutronError": {"type": "ServiceUnavailable", "message": "The server is currently unavailable.", "detail": ""}}"#.into(),
            )
        })
        .await;
        let neutron = Neutron::new(Session::new(&fake.cloud()).unwrap());
        let e = neutron
            .list_ports(&Query::new().eq("device_owner", "compute:kuryr"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "neutron GET /v2.0/ports failed: HTTP 503 Service Unavailable: The server is currently unavailable."
        );
        assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(e.fault(), Fault::OpenStack);
        assert!(e.is_transient());
        match e {
            Error::Api {
                request_id,
                service,
                ..
            } => {
                assert_eq!(request_id.as_deref(), Some("req-1234"));
                assert_eq!(service, Service::Network);
            }
            other => panic!("{other:?}"),
        }
        let seen = fake.seen();
        let list = seen.iter().find(|s| s.path() == "/v2.0/ports").unwrap();
        assert_eq!(list.target, "/v2.0/ports?device_owner=compute%3Akuryr");
        assert_eq!(list.header("x-auth-token"), Some("tok"));
    }

    #[tokio::test]
    async fn hang_times_out_as_transport() {
        let fake = Fake::start(|r, base| {
            if r.is_auth() {
                Reply::token(base, "tok")
            } else {
                Reply::Hang
            }
        })
        .await;
        let cloud = fake.cloud().with_timeout(Duration::from_millis(300));
        let octavia = Octavia::new(Session::from_cloud(&cloud).await.unwrap());
        let started = Instant::now();
        let e = octavia.get_load_balancer("lb1").await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                Error::Transport {
                    service: Service::LoadBalancer,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(msg.contains("timed out after 300ms"), "{msg}");
        assert!(
            msg.contains(&format!("{}/v2/lbaas/loadbalancers/lb1", fake.base)),
            "{msg}"
        );
        assert_eq!(e.fault(), Fault::OpenStack);
        assert_eq!(e.status(), None);
    }

    #[tokio::test]
    async fn reauthenticates_once_on_401() {
        let auths = Arc::new(Counter::default());
        let a2 = auths.clone();
        let fake = Fake::start(move |r, base| {
            if r.is_auth() {
                return Reply::token(base, &format!("tok-{}", a2.next()));
            }
            // Only the second token is accepted (as if the first had been revoked).
            match r.header("x-auth-token") {
                Some("tok-2") => Reply::json(200, r#"{"networks": [{"id": "n1", "name": "pods"}]}"#),
                _ => Reply::json(401, r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#),
            }
        })
        .await;
        let counters = RequestCounters::new();
        let session = Session::builder(&fake.cloud())
            .metrics(counters.clone())
            .build()
            .unwrap();
        let nets = Neutron::new(session)
            .list_networks(&Query::new())
            .await
            .unwrap();
        assert_eq!(nets[0].name, "pods");
        assert_eq!(fake.auth_calls(), 2);
        assert_eq!(fake.calls("/v2.0/networks"), 2);
        let snap: Vec<(Service, u16)> = counters
            .snapshot()
            .iter()
            .map(|(k, v)| (k.service, k.status * v.count as u16))
            .collect();
        assert_eq!(
            snap,
            [
                (Service::Identity, 402),
                (Service::Network, 200),
                (Service::Network, 401)
            ]
        );
    }

    #[tokio::test]
    async fn persistent_401_is_returned_after_one_retry() {
        let fake = Fake::start(|r, base| {
            if r.is_auth() {
                return Reply::token(base, "tok");
            }
            Reply::json(401, r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#)
        })
        .await;
        let e = Neutron::new(Session::new(&fake.cloud()).unwrap())
            .get_port("p1")
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED));
        assert!(e.to_string().contains("neutron GET /v2.0/ports/p1 failed: HTTP 401 Unauthorized: The request you have made requires authentication."), "{e}");
        assert_eq!(fake.auth_calls(), 2);
        assert_eq!(fake.calls("/v2.0/ports/p1"), 2);
    }

    #[tokio::test]
    async fn malformed_bodies_are_decode_errors() {
        let fake = Fake::start(|r, base| match r.path() {
            "/v3/auth/tokens" => Reply::token(base, "tok"),
            "/v2.0/ports" => Reply::json(200, r#"{"ports": [{"id": "#),
            "/v2.0/networks" => Reply::json(200, "<html>proxy says hi</html>"),
            "/v2.0/subnets" => Reply::json(200, r#"{"networks": []}"#),
            _ => Reply::Truncated(200),
        })
        .await;
        let neutron = Neutron::new(Session::new(&fake.cloud()).unwrap());
        let e = neutron.list_ports(&Query::new()).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Decode {
                    status: StatusCode::OK,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.fault(), Fault::OpenStack);
        assert!(
            e.to_string()
                .starts_with("neutron GET /v2.0/ports: cannot decode response (HTTP 200 OK): "),
            "{e}"
        );
        let e = neutron.list_networks(&Query::new()).await.unwrap_err();
        assert!(e.to_string().contains("proxy says hi"), "{e}");
        let e = neutron.list_subnets(&Query::new()).await.unwrap_err();
        assert!(e.to_string().contains("no \"subnets\" key"), "{e}");
        let e = neutron.list_routers(&Query::new()).await.unwrap_err();
        assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn keystone_refusal_is_auth_error() {
        let fake = Fake::start(|_, _| {
            Reply::json(401, r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#)
        })
        .await;
        let e = Session::from_cloud(&fake.cloud()).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Auth {
                    status: StatusCode::UNAUTHORIZED,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.fault(), Fault::Kuryr);
        assert_eq!(
            e.to_string(),
            format!("keystone refused authentication at {}/v3/auth/tokens: HTTP 401 Unauthorized: The request you have made requires authentication.", fake.base)
        );
        let body: serde_json::Value = serde_json::from_slice(&fake.seen()[0].body).unwrap();
        assert_eq!(
            body["auth"]["identity"]["application_credential"]["id"],
            "ac"
        );
    }

    #[tokio::test]
    async fn keystone_without_subject_token_or_bad_body() {
        let n = Arc::new(Counter::default());
        let fake = Fake::start(move |_, _| match n.next() {
            1 => Reply::json(
                201,
                r#"{"token": {"expires_at": "2024-05-01T13:00:00Z", "catalog": []}}"#,
            ),
            2 => Reply::WithHeaders(
                201,
                vec![("X-Subject-Token", "t".into())],
                "{not json".into(),
            ),
            _ => Reply::WithHeaders(
                201,
                vec![("X-Subject-Token", "t".into())],
                r#"{"token": {"expires_at": "tomorrow"}}"#.into(),
            ),
        })
        .await;
        for want in [
            "no X-Subject-Token",
            "key must be a string",
            "bad token expires_at",
        ] {
            let e = Session::from_cloud(&fake.cloud()).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Decode {
                        service: Service::Identity,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[tokio::test]
    async fn connection_refused_is_transport() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let cloud = CloudConfig::application_credential(format!("http://{addr}/v3"), "ac", "sec");
        let e = Session::from_cloud(&cloud).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Transport {
                    service: Service::Identity,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("keystone POST http://{addr}/v3/auth/tokens: could not reach the service: connection failed")), "{msg}");
        assert_eq!(e.fault(), Fault::OpenStack);
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn token_is_cached_and_refresh_is_single_flight() {
        let fake = Fake::start(|r, base| {
            if r.is_auth() {
                return Reply::Delayed(
                    Duration::from_millis(100),
                    Box::new(Reply::token(base, "tok")),
                );
            }
            Reply::json(200, r#"{"ports": []}"#)
        })
        .await;
        let neutron = Neutron::new(Session::new(&fake.cloud()).unwrap());
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let n = neutron.clone();
                tokio::spawn(async move { n.list_ports(&Query::new()).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().unwrap().is_empty());
        }
        neutron.list_ports(&Query::new()).await.unwrap();
        assert_eq!(fake.auth_calls(), 1);
        assert_eq!(fake.calls("/v2.0/ports"), 17);
        let t = neutron.session().token().await.unwrap();
        assert_eq!(
            t.project_id.as_deref(),
            Some("5e1a9b0c7d3f4e2a8b6c5d4e3f2a1b0c")
        );
        assert_eq!(t.roles, ["member", "service"]);
        assert!(!t.needs_refresh());
        assert!(!format!("{t:?}").contains("tok"), "{t:?}");
        neutron.session().reauthenticate().await.unwrap();
        assert_eq!(fake.auth_calls(), 2);
    }

    #[tokio::test]
    async fn short_lived_token_is_refreshed() {
        let fake = Fake::start(|r, base| {
            if r.is_auth() {
                // Lifetime 0: stale as soon as it is issued.
                return Reply::token_with_dates(
                    base,
                    "tok",
                    "2024-05-01T12:00:00Z",
                    "2024-05-01T12:00:00Z",
                );
            }
            Reply::json(200, r#"{"networks": []}"#)
        })
        .await;
        let neutron = Neutron::new(Session::new(&fake.cloud()).unwrap());
        neutron.list_networks(&Query::new()).await.unwrap();
        neutron.list_networks(&Query::new()).await.unwrap();
        assert_eq!(fake.auth_calls(), 2);
    }

    #[tokio::test]
    async fn delete_404_is_success() {
        let fake = Fake::start(|r, base| match (r.method.as_str(), r.path()) {
            (_, "/v3/auth/tokens") => Reply::token(base, "tok"),
            ("DELETE", "/v2.0/ports/gone") => Reply::json(404, NOT_FOUND_PORT),
            ("DELETE", "/v2/lbaas/loadbalancers/gone") => Reply::json(404, r#"{"faultcode": "Client", "faultstring": "Load Balancer gone could not be found.", "debuginfo": null}"#),
            ("GET", "/v2.0/ports/gone") => Reply::json(404, NOT_FOUND_PORT),
            _ => Reply::json(500, "oops"),
        })
        .await;
        let session = Session::new(&fake.cloud()).unwrap();
        let neutron = Neutron::new(session.clone());
        assert!(!neutron.delete_port("gone").await.unwrap());
        assert!(!Octavia::new(session)
            .delete_load_balancer("gone", true)
            .await
            .unwrap());
        assert!(fake
            .seen()
            .iter()
            .any(|s| s.target == "/v2/lbaas/loadbalancers/gone?cascade=true"));
        let e = neutron.get_port("gone").await.unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "neutron GET /v2.0/ports/gone failed: HTTP 404 Not Found: Port 65c0ee9f could not be found.");
        let e = neutron.delete_network("x").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "neutron DELETE /v2.0/networks/x failed: HTTP 500 Internal Server Error: oops"
        );
    }

    #[tokio::test]
    async fn wait_for_lb_error_timeout_and_gone() {
        let polls = Arc::new(Counter::default());
        let p2 = polls.clone();
        let fake = Fake::start(move |r, base| {
            let lb = |status: &str| Reply::json(200, format!(r#"{{"loadbalancer": {{"id": "x", "provisioning_status": "{status}", "operating_status": "OFFLINE"}}}}"#));
            match r.path() {
                "/v3/auth/tokens" => Reply::token(base, "tok"),
                "/v2/lbaas/loadbalancers/err" => {
                    if p2.next() < 3 { lb("PENDING_CREATE") } else { lb("ERROR") }
                }
                "/v2/lbaas/loadbalancers/slow" => lb("PENDING_UPDATE"),
                "/v2/lbaas/loadbalancers/deleted" => lb("DELETED"),
                _ => Reply::json(404, r#"{"faultcode": "Client", "faultstring": "Load Balancer gone could not be found.", "debuginfo": null}"#),
            }
        })
        .await;
        let octavia = Octavia::new(Session::new(&fake.cloud()).unwrap());
        let far = tokio::time::Instant::now() + Duration::from_secs(10);
        let started = Instant::now();
        let e = octavia.wait_for_lb("err", far).await.unwrap_err();
        assert!(matches!(e, Error::Provisioning { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "octavia load balancer err went to provisioning_status ERROR"
        );
        assert_eq!(e.fault(), Fault::OpenStack);
        // 100 ms + 200 ms of backoff, then ERROR.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        let started = Instant::now();
        let e = octavia
            .wait_for_lb(
                "slow",
                tokio::time::Instant::now() + Duration::from_millis(400),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::WaitTimeout { .. }), "{e:?}");
        assert!(e.to_string().contains("last state: PENDING_UPDATE"), "{e}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert!(e.is_transient());

        assert_eq!(
            octavia.wait_for_lb("gone", far).await.unwrap(),
            LbState::Deleted
        );
        assert_eq!(
            octavia.wait_for_lb("deleted", far).await.unwrap(),
            LbState::Deleted
        );
    }

    #[tokio::test]
    async fn endpoint_selection() {
        let fake = Fake::start(|r, base| {
            if r.is_auth() {
                return Reply::token(base, "tok");
            }
            Reply::json(200, r#"{"networks": []}"#)
        })
        .await;
        let nowhere = fake.cloud().with_region("Nowhere");
        let e = Neutron::new(Session::new(&nowhere).unwrap())
            .list_networks(&Query::new())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NoEndpoint { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("no network endpoint for interface public in region Nowhere"),
            "{e}"
        );
        assert_eq!(e.fault(), Fault::Kuryr);

        // An override wins over the catalog (here: a path prefix on the same fake).
        let cloud = nowhere.with_endpoint_override("network", format!("{}/net", fake.base));
        let s = Session::new(&cloud).unwrap();
        assert_eq!(
            s.endpoint(Service::Network).await.unwrap(),
            format!("{}/net", fake.base)
        );
        Neutron::new(s).list_networks(&Query::new()).await.unwrap();
        assert_eq!(fake.calls("/net/v2.0/networks"), 1);
    }
}
