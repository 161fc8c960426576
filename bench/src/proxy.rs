//! The OpenStack fault proxy of `kuryr-bench chaos`: one HTTP listener per upstream (Keystone,
//! Neutron, Octavia) between kuryr-rs and the stack's APIs. kuryr.conf's `auth_url` points at the
//! Keystone listener, and the catalog in Keystone's answers is rewritten so that every Neutron and
//! Octavia URL names this proxy: everything kuryr-rs says to OpenStack passes through it.
//!
//! While a fault window is open, requests are answered with injected faults at the window's
//! rate: `503`/`500` instead of the upstream's answer, added latency before forwarding, a
//! connection closed without an answer (what a reset looks like to the client), `409 Conflict`
//! on Neutron port creates. Every injected fault is counted by kind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::rng::Rng;

/// Which API a listener stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Upstream {
    Keystone,
    Neutron,
    Octavia,
}

/// A fault a window injects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// This share of requests (to every upstream) answered 503 or 500 (half each).
    Errors(f64),
    /// Every request waits this long before it is forwarded.
    Latency(Duration),
    /// This share of requests: the connection is closed without an answer.
    Resets(f64),
    /// This share of Neutron port creates (`POST …/ports`) answered 409 Conflict.
    PortConflict(f64),
}

struct Window {
    fault: Fault,
    until: Instant,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    errors: AtomicU64,
    latency: AtomicU64,
    resets: AtomicU64,
    port_conflict: AtomicU64,
    upstream_failed: AtomicU64,
}

struct Shared {
    http: reqwest::Client,
    windows: Mutex<Vec<Window>>,
    rng: Mutex<Rng>,
    counters: Counters,
    /// (upstream origin, proxy origin): rewritten in Keystone's answers.
    rewrites: Vec<(String, String)>,
}

/// The running proxy (its tasks end with the runtime).
pub struct Proxy {
    shared: Arc<Shared>,
    origins: BTreeMap<Upstream, String>,
}

/// `scheme://host:port` of a URL (what the catalog's endpoint URLs start with).
pub fn origin(url: &str) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("{url:?} is not an absolute URL"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    Ok(format!("{scheme}://{host}"))
}

impl Proxy {
    /// Listens on an ephemeral 127.0.0.1 port for each `(upstream, upstream origin)`.
    pub async fn start(upstreams: &[(Upstream, String)], seed: u64) -> Result<Proxy> {
        let mut listeners = Vec::new();
        let mut rewrites = Vec::new();
        let mut origins = BTreeMap::new();
        for (u, target) in upstreams {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("fault proxy: listen on 127.0.0.1")?;
            let mine = format!("http://{}", l.local_addr()?);
            rewrites.push((target.clone(), mine.clone()));
            origins.insert(*u, mine);
            listeners.push((*u, target.clone(), l));
        }
        let shared = Arc::new(Shared {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(300))
                .build()
                .context("fault proxy: HTTP client")?,
            windows: Mutex::new(Vec::new()),
            rng: Mutex::new(Rng::new(seed ^ 0x005e_ed0f_fa17)),
            counters: Counters::default(),
            rewrites,
        });
        for (u, target, l) in listeners {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = l.accept().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let (shared, target) = (shared.clone(), target.clone());
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            handle(shared.clone(), u, target.clone(), req)
                        });
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    });
                }
            });
        }
        Ok(Proxy { shared, origins })
    }

    /// The proxy's origin (`http://127.0.0.1:PORT`) standing for `u`.
    pub fn origin_of(&self, u: Upstream) -> Option<&str> {
        self.origins.get(&u).map(String::as_str)
    }

    /// Opens a fault window for `length` from now.
    pub fn open(&self, fault: Fault, length: Duration) {
        let mut w = self
            .shared
            .windows
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        w.retain(|x| x.until > now);
        w.push(Window {
            fault,
            until: now + length,
        });
    }

    /// Faults injected so far, by kind, and the requests forwarded.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let c = &self.shared.counters;
        [
            ("forwarded", &c.forwarded),
            ("errors", &c.errors),
            ("latency", &c.latency),
            ("resets", &c.resets),
            ("port_conflict", &c.port_conflict),
            ("upstream_failed", &c.upstream_failed),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
        .collect()
    }
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// What the open windows do to this request.
enum Decision {
    Forward { delay: Duration },
    Answer(StatusCode, &'static str),
    Reset,
}

fn decide(shared: &Shared, u: Upstream, method: &hyper::Method, path: &str) -> Decision {
    let now = Instant::now();
    let faults: Vec<Fault> = {
        let w = shared.windows.lock().unwrap_or_else(|e| e.into_inner());
        w.iter()
            .filter(|x| x.until > now)
            .map(|x| x.fault)
            .collect()
    };
    let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
    let c = &shared.counters;
    let mut delay = Duration::ZERO;
    for f in faults {
        match f {
            Fault::Errors(rate) if rng.chance(rate) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                return if rng.chance(0.5) {
                    Decision::Answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"message": "kuryr-bench chaos: injected 503"}"#,
                    )
                } else {
                    Decision::Answer(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        r#"{"message": "kuryr-bench chaos: injected 500"}"#,
                    )
                };
            }
            Fault::Resets(rate) if rng.chance(rate) => {
                c.resets.fetch_add(1, Ordering::Relaxed);
                return Decision::Reset;
            }
            Fault::PortConflict(rate)
                if u == Upstream::Neutron
                    && method == hyper::Method::POST
                    && path.trim_end_matches('/').ends_with("/ports")
                    && rng.chance(rate) =>
            {
                c.port_conflict.fetch_add(1, Ordering::Relaxed);
                return Decision::Answer(
                    StatusCode::CONFLICT,
                    r#"{"NeutronError": {"type": "IpAddressAlreadyAllocated", "message": "kuryr-bench chaos: injected 409", "detail": ""}}"#,
                );
            }
            Fault::Latency(d) => {
                c.latency.fetch_add(1, Ordering::Relaxed);
                delay = delay.max(d);
            }
            _ => {}
        }
    }
    Decision::Forward { delay }
}

/// Headers that describe one hop's connection or body framing (not forwarded).
fn hop_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "accept-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
    )
}

async fn handle(
    shared: Arc<Shared>,
    u: Upstream,
    target: String,
    req: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let delay = match decide(&shared, u, &parts.method, parts.uri.path()) {
        Decision::Answer(status, text) => return Ok(reply(status, text)),
        // An error from the service makes hyper close the connection without an answer.
        Decision::Reset => return Err(std::io::Error::other("kuryr-bench chaos: injected reset")),
        Decision::Forward { delay } => delay,
    };
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut out = shared
        .http
        .request(parts.method.clone(), format!("{target}{path}"));
    for (k, v) in &parts.headers {
        if !hop_header(k.as_str()) {
            out = out.header(k, v);
        }
    }
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            shared
                .counters
                .upstream_failed
                .fetch_add(1, Ordering::Relaxed);
            return Ok(reply(
                StatusCode::BAD_GATEWAY,
                &serde_json::json!({"message": format!("kuryr-bench chaos proxy: upstream {target}: {e}")}).to_string(),
            ));
        }
    };
    shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    if u == Upstream::Keystone {
        // The catalog (and version links) name the proxy instead of the real APIs.
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        for (from, to) in &shared.rewrites {
            text = text.replace(from.as_str(), to);
        }
        bytes = Bytes::from(text);
    }
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    for (k, v) in &headers {
        if !hop_header(k.as_str()) {
            r.headers_mut().append(k, v.clone());
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[test]
    fn origins() {
        assert_eq!(
            origin("http://127.0.0.1:5000/v3").unwrap(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            origin("https://n.example:9696").unwrap(),
            "https://n.example:9696"
        );
        assert!(origin("127.0.0.1:9696").is_err());
    }

    /// The proxy forwards, rewrites Keystone's catalog and injects what its windows say.
    #[tokio::test]
    async fn forwards_rewrites_and_injects() {
        // A tiny upstream that echoes the catalog URL it was configured with.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = format!("http://{}", l.local_addr().unwrap());
        let body = format!(r#"{{"catalog": [{{"url": "{up}/v2.0"}}]}}"#);
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let p = Proxy::start(
            &[
                (Upstream::Keystone, up.clone()),
                (Upstream::Neutron, up.clone()),
            ],
            7,
        )
        .await
        .unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let ks = p.origin_of(Upstream::Keystone).unwrap().to_owned();
        let ne = p.origin_of(Upstream::Neutron).unwrap().to_owned();
        let text = http
            .get(format!("{ks}/v3/auth/tokens"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(&format!("{ne}/v2.0")) || text.contains(&format!("{ks}/v2.0")),
            "catalog not rewritten: {text}"
        );
        assert!(!text.contains(&up), "upstream URL left in {text}");
        // Every port create answered 409 while the window is open; other requests pass.
        p.open(Fault::PortConflict(1.0), Duration::from_secs(60));
        let r = http
            .post(format!("{ne}/v2.0/ports"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        let r = http.get(format!("{ne}/v2.0/ports")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        p.open(Fault::Errors(1.0), Duration::from_secs(60));
        let r = http.get(format!("{ne}/v2.0/ports")).send().await.unwrap();
        assert!(r.status() == 503 || r.status() == 500, "{}", r.status());
        let c = p.counts();
        assert_eq!((c["port_conflict"], c["errors"]), (1, 1), "{c:?}");
        // Resets: the connection ends without an answer.
        p.shared.windows.lock().unwrap().clear();
        p.open(Fault::Resets(1.0), Duration::from_secs(60));
        assert!(http.get(format!("{ne}/x")).send().await.is_err());
        assert_eq!(p.counts()["resets"], 1);
    }
}
