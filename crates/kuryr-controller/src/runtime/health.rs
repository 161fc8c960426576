//! `/alive` and `/ready` (`[health_server] port`, 8082) and the tiny HTTP server that also serves
//! `/metrics`.
//!
//! * `/alive` fails only when something is wedged: a component stopped (a controller loop or the
//!   activator ended), a heartbeat is overdue, or a watch has failed without a single success
//!   for longer than [`WATCH_FAILING_LIMIT`]. Transient OpenStack errors never fail it (upstream
//!   restarted the controller on those, leaking ports).
//! * `/ready` additionally needs the caches synced and a Keystone token. The token check is a
//!   background task reading the session's cached token (refreshed only near expiry), so a
//!   probe never calls OpenStack.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A watch that keeps failing this long without any success makes `/alive` fail.
pub const WATCH_FAILING_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Beat {
    last: Instant,
    max_silence: Duration,
}

#[derive(Debug, Default)]
struct State {
    dead: BTreeMap<String, String>,
    beats: BTreeMap<&'static str, Beat>,
    /// Watch name → (first error since the last success, message).
    watch_failing: BTreeMap<&'static str, (Instant, String)>,
    synced: bool,
    keystone: Option<Result<(), String>>,
    /// Warm pools on and this replica leads: whether they were rebuilt from Neutron yet.
    pools_recovered: Option<bool>,
}

/// Shared health state.
#[derive(Clone, Debug, Default)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// A component that must run forever has stopped.
    pub fn dead(&self, component: &str, why: &str) {
        tracing::error!(component, why, "component stopped; /alive now fails");
        self.with(|s| s.dead.insert(component.to_string(), why.to_string()));
    }

    /// A periodic component is alive; it must beat again within `max_silence`.
    pub fn beat(&self, component: &'static str, max_silence: Duration) {
        self.with(|s| s.beats.insert(component, Beat { last: Instant::now(), max_silence }));
    }

    /// A watch stream delivered an event.
    pub fn watch_ok(&self, watch: &'static str) {
        self.with(|s| s.watch_failing.remove(watch));
    }

    /// A watch stream reported an error (it retries with back-off by itself).
    pub fn watch_err(&self, watch: &'static str, msg: String) {
        self.with(|s| {
            let e = s.watch_failing.entry(watch).or_insert_with(|| (Instant::now(), String::new()));
            e.1 = msg;
        });
    }

    /// The reflector caches have their initial lists.
    pub fn set_synced(&self) {
        self.with(|s| s.synced = true);
    }

    /// Result of the latest Keystone token check.
    pub fn set_keystone(&self, r: Result<(), String>) {
        self.with(|s| s.keystone = Some(r));
    }

    /// `Ok(())` or the reasons the process is wedged.
    pub fn alive(&self) -> Result<(), String> {
        self.with(|s| {
            let now = Instant::now();
            let mut why: Vec<String> = s.dead.iter().map(|(c, w)| format!("{c} stopped: {w}")).collect();
            for (c, b) in &s.beats {
                let silent = now.saturating_duration_since(b.last);
                if silent > b.max_silence {
                    why.push(format!("{c} silent for {silent:?}"));
                }
            }
            for (w, (since, msg)) in &s.watch_failing {
                let failing = now.saturating_duration_since(*since);
                if failing > WATCH_FAILING_LIMIT {
                    why.push(format!("watch {w} failing for {failing:?}: {msg}"));
                }
            }
            if why.is_empty() {
                Ok(())
            } else {
                Err(why.join("; "))
            }
        })
    }

    /// Warm pools: `Some(false)` while the leader rebuilds them from Neutron, `Some(true)` once
    /// it has, `None` when there is nothing to wait for (no pools, or not leading).
    pub fn set_pools_recovered(&self, recovered: Option<bool>) {
        self.with(|s| s.pools_recovered = recovered);
    }

    /// `Ok(())` or why the controller cannot serve yet.
    pub fn ready(&self) -> Result<(), String> {
        self.alive()?;
        self.with(|s| {
            if !s.synced {
                return Err("caches not synced yet".to_string());
            }
            if s.pools_recovered == Some(false) {
                return Err("warm pools not recovered from Neutron yet".to_string());
            }
            match &s.keystone {
                None => Err("no Keystone token yet".to_string()),
                Some(Err(e)) => Err(format!("keystone: {e}")),
                Some(Ok(())) => Ok(()),
            }
        })
    }
}

/// One HTTP answer.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

/// Routes of the health port.
pub fn health_routes(health: &Health, path: &str) -> Reply {
    let r = match path {
        "/alive" | "/healthz" | "/livez" => health.alive(),
        "/ready" | "/readyz" => health.ready(),
        _ => return Reply::text(404, "not found\n"),
    };
    match r {
        Ok(()) => Reply::text(200, "ok\n"),
        Err(e) => Reply::text(500, format!("{e}\n")),
    }
}

/// Serves GET requests with `route(path)` on `addr` (port 0 = any) until the task is dropped.
/// Returns the bound address and the server task.
pub async fn serve(
    addr: SocketAddr,
    route: Arc<dyn Fn(&str) -> Reply + Send + Sync>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let route = route.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let route = route.clone();
                    async move {
                        let reply = route(req.uri().path());
                        let resp = Response::builder()
                            .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                            .header("content-type", reply.content_type)
                            .body(Full::new(Bytes::from(reply.body)));
                        resp.map_err(|e| std::io::Error::other(e.to_string()))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await {
                    tracing::debug!(error = %e, "health/metrics connection ended with an error");
                }
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_and_ready() {
        let h = Health::new();
        assert!(h.alive().is_ok());
        assert_eq!(h.ready(), Err("caches not synced yet".into()));
        h.set_synced();
        h.set_pools_recovered(Some(false));
        assert_eq!(h.ready(), Err("warm pools not recovered from Neutron yet".into()));
        h.set_pools_recovered(Some(true));
        assert_eq!(h.ready(), Err("no Keystone token yet".into()));
        h.set_keystone(Err("HTTP 401".into()));
        assert!(h.ready().expect_err("keystone").contains("HTTP 401"));
        h.set_keystone(Ok(()));
        assert!(h.ready().is_ok());
        assert_eq!(health_routes(&h, "/ready").status, 200);
        assert_eq!(health_routes(&h, "/nope").status, 404);

        h.beat("activator", Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.alive().expect_err("silent").contains("activator silent"));
        h.beat("activator", Duration::from_secs(60));
        assert!(h.alive().is_ok());

        h.watch_err("pods", "connection refused".into());
        assert!(h.alive().is_ok(), "a short watch failure is not wedging");
        h.watch_ok("pods");

        h.dead("pod-controller", "stream ended");
        assert!(h.alive().expect_err("dead").contains("pod-controller stopped"));
        assert_eq!(health_routes(&h, "/alive").status, 500);
        assert_eq!(health_routes(&h, "/ready").status, 500);
    }

    #[tokio::test]
    async fn serves_http() {
        let h = Health::new();
        let hh = h.clone();
        let (addr, task) = serve("127.0.0.1:0".parse().expect("addr"), Arc::new(move |p: &str| health_routes(&hh, p))).await.expect("bind");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("ok\n"), "{out}");
        task.abort();
    }
}
