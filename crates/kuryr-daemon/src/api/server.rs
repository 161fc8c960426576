//! HTTP/1.1 servers: the CNI API on a unix socket (root peers only, checked with
//! SO_PEERCRED), and the health (`/ready`, `/alive`) and metrics (`/metrics`) servers on TCP.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kuryr_cni_api::{CniError, CniResponse, ReadyResponse};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::routes::{self, Route};
use crate::cni::Cni;
use crate::error::codes;
use crate::health::Health;
use crate::metrics::Metrics;

/// Largest request body accepted (a CNI config with a big prevResult fits easily).
pub const MAX_BODY: usize = 1 << 20;
/// How long in-flight requests may finish after shutdown was asked for.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub type HttpResponse = Response<Full<Bytes>>;

fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json(status: u16, body: String) -> HttpResponse {
    response(status, "application/json", body)
}

fn cni_error(status: u16, e: &CniError) -> HttpResponse {
    json(status, e.to_json())
}

/// Binds the CNI socket: parent directory created, a stale socket file removed (but not a
/// socket another daemon still serves on, nor a non-socket file), mode 0600.
pub async fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is served by another process (another kuryr-daemon?)",
                        path.display()
                    ),
                ));
            }
            tracing::info!(socket = %path.display(), "removing stale socket");
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Only root may connect; the peer check below is the second line of defence.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, HttpResponse> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(cni_error(
            400,
            &CniError::io_failure(
                "cannot read the request body",
                format!("{e} (at most {MAX_BODY} bytes)"),
            ),
        )),
    }
}

fn ready_response(health: &Health) -> HttpResponse {
    let reasons = health.not_ready_reasons();
    let ready = reasons.is_empty();
    let body = ReadyResponse {
        ready,
        reason: (!ready).then(|| reasons.join("; ")),
    };
    json(
        if ready { 200 } else { 503 },
        serde_json::to_string(&body).unwrap_or_default(),
    )
}

/// One request on the CNI socket. `peer_uid` comes from SO_PEERCRED.
pub async fn handle_cni(
    req: Request<Incoming>,
    cni: Arc<Cni>,
    peer_uid: Option<u32>,
) -> HttpResponse {
    if peer_uid != Some(0) {
        tracing::warn!(?peer_uid, "rejecting a non-root peer on the CNI socket");
        let e = CniError::new(
            codes::KURYR_FORBIDDEN,
            "kuryr-daemon only serves root",
            format!(
                "peer uid {}",
                peer_uid.map_or("unknown".into(), |u| u.to_string())
            ),
        );
        return cni_error(403, &e);
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match routes::parse(&method, &path, &body) {
        Err(r) => cni_error(r.status, &r.error),
        Ok(Route::Ready) => ready_response(&cni.health),
        Ok(Route::Cni(cmd)) => {
            // Runs to completion even if the shim gives up and closes the connection:
            // half-done wiring would otherwise depend on when the client left.
            let task = tokio::spawn(async move { cni.execute(cmd).await });
            match task.await {
                Ok(Ok(result)) => json(200, CniResponse { result }.to_json()),
                Ok(Err(e)) => cni_error(e.http_status(), &e.to_cni_error()),
                Err(e) => cni_error(
                    500,
                    &CniError::internal("request task failed", e.to_string()),
                ),
            }
        }
    }
}

async fn serve_conn<S>(
    io: S,
    svc: impl hyper::service::Service<Request<Incoming>, Response = HttpResponse, Error = Infallible>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

async fn drain(mut conns: JoinSet<()>) {
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            left = conns.len(),
            "requests still running at shutdown; aborting them"
        );
        conns.abort_all();
    }
}

/// Serves the CNI API until `shutdown` turns true, then lets in-flight requests finish.
pub async fn serve_unix(
    listener: UnixListener,
    cni: Arc<Cni>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = crate::daemon::stopped(&mut shutdown) => break,
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    let cni = cni.clone();
                    conns.spawn(serve_conn(stream, service_fn(move |req| {
                        let cni = cni.clone();
                        async move { Ok::<_, Infallible>(handle_cni(req, cni, uid).await) }
                    })));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the CNI socket failed");
                    // e.g. EMFILE: give the system a moment instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
        while conns.try_join_next().is_some() {}
    }
    drain(conns).await;
}

/// What a TCP server serves.
#[derive(Clone, Debug)]
pub enum Site {
    /// `/ready`, `/alive`, `/health` (problems with pods' networking that are neither: stale
    /// OVS ports the daemon could not repair, vswitchd down).
    Health(Arc<Health>),
    /// `/metrics`.
    Metrics(Metrics),
}

fn handle_site(site: &Site, method: &str, path: &str) -> HttpResponse {
    if method != "GET" && method != "HEAD" {
        return response(405, "text/plain", "method not allowed\n");
    }
    match (site, path) {
        (Site::Health(h), "/ready") => {
            let r = h.not_ready_reasons();
            if r.is_empty() {
                response(200, "text/plain", "ok\n")
            } else {
                response(503, "text/plain", format!("not ready: {}\n", r.join("; ")))
            }
        }
        (Site::Health(h), "/alive") => {
            let r = h.not_alive_reasons();
            if r.is_empty() {
                response(200, "text/plain", "ok\n")
            } else {
                response(500, "text/plain", format!("not alive: {}\n", r.join("; ")))
            }
        }
        (Site::Health(h), "/health") => {
            let r = h.degraded_reasons();
            if r.is_empty() {
                response(200, "text/plain", "ok\n")
            } else {
                response(503, "text/plain", format!("degraded: {}\n", r.join("; ")))
            }
        }
        (Site::Metrics(m), "/metrics") => response(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            m.encode(),
        ),
        _ => response(404, "text/plain", "not found\n"),
    }
}

/// Serves health or metrics on TCP until `shutdown` turns true.
pub async fn serve_tcp(listener: TcpListener, site: Site, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = crate::daemon::stopped(&mut shutdown) => break,
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let site = site.clone();
                    conns.spawn(serve_conn(stream, service_fn(move |req: Request<Incoming>| {
                        let r = handle_site(&site, req.method().as_str(), req.uri().path());
                        async move { Ok::<_, Infallible>(r) }
                    })));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}
