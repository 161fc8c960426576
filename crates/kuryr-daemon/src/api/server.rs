//! HTTP/1.1 servers: the CNI API on a unix socket (root peers only, checked with
//! SO_PEERCRED), and the health (`/ready`, `/alive`) and metrics (`/metrics`) servers on TCP.
//!
//! The CNI socket is guarded so that no client can hold up the ADDs of others ([`SocketLimits`],
//! from `[cni_daemon]`): a peer whose uid is not allowed is answered 403 (code 115) before its
//! body is read; a body over the size limit is 413 (code 117), refused from its
//! `Content-Length` without reading it, or once the limit is crossed when chunked; one request
//! per connection, whose head and body must arrive within the request timeout (a client that
//! connects and sends nothing, or a byte now and then, is cut off: head by hyper's header
//! timer, body by the same deadline, 408 code 5); and at most `max_connections` connections
//! are served at once: one more is answered 503 (code 11, try again later) at once, without
//! waiting for a slot, so the accept loop never blocks.

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
use hyper_util::rt::{TokioIo, TokioTimer};
use kuryr_cni_api::{CniError, CniResponse, ReadyResponse};
use kuryr_core::config::CniDaemonConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::routes::{self, Route};
use crate::cni::Cni;
use crate::error::codes;
use crate::health::Health;
use crate::metrics::Metrics;

/// Default largest request body (a CNI config with a big prevResult fits easily).
pub const MAX_BODY: usize = 1 << 20;
/// How long in-flight requests may finish after shutdown was asked for.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the health and metrics servers give a client to send its request head.
pub const TCP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the CNI socket accepts; see the module docs and `[cni_daemon] socket_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketLimits {
    /// SO_PEERCRED uids served (root only by default).
    pub allowed_uids: Vec<u32>,
    /// Largest request body.
    pub max_body: usize,
    /// Head and body of the request must have arrived this long after the connection.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            allowed_uids: vec![0],
            max_body: MAX_BODY,
            request_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

impl SocketLimits {
    pub fn from_config(c: &CniDaemonConfig) -> Self {
        SocketLimits {
            allowed_uids: c.socket_allowed_uids.clone(),
            max_body: c.socket_max_request_bytes,
            request_timeout: c.socket_request_timeout,
            max_connections: c.socket_max_connections,
        }
    }
}

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

fn too_large(max: usize, what: String) -> HttpResponse {
    cni_error(
        413,
        &CniError::new(
            codes::KURYR_REQUEST_TOO_LARGE,
            format!("request body larger than {max} bytes"),
            format!("{what}; [cni_daemon] socket_max_request_bytes = {max}"),
        ),
    )
}

/// The body, at most `max` bytes, fully arrived by `deadline`.
async fn read_body(
    req: Request<Incoming>,
    max: usize,
    deadline: Instant,
) -> Result<Bytes, HttpResponse> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max as u64) {
        return Err(too_large(max, format!("Content-Length is {n}")));
    }
    match tokio::time::timeout_at(deadline, Limited::new(req.into_body(), max).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(too_large(max, "the body went past it".into()))
        }
        Ok(Err(e)) => Err(cni_error(
            400,
            &CniError::io_failure("cannot read the request body", e.to_string()),
        )),
        Err(_) => Err(cni_error(
            408,
            &CniError::io_failure(
                "the request body did not arrive in time",
                "[cni_daemon] socket_request_timeout after the connection",
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

/// One request on the CNI socket. `peer_uid` comes from SO_PEERCRED; the request must have
/// arrived by `deadline`.
pub async fn handle_cni(
    req: Request<Incoming>,
    cni: Arc<Cni>,
    peer_uid: Option<u32>,
    limits: &SocketLimits,
    deadline: Instant,
) -> HttpResponse {
    if !peer_uid.is_some_and(|u| limits.allowed_uids.contains(&u)) {
        tracing::warn!(
            ?peer_uid,
            "rejecting a peer on the CNI socket that is not allowed"
        );
        let e = CniError::new(
            codes::KURYR_FORBIDDEN,
            if limits.allowed_uids == [0] {
                "kuryr-daemon only serves root".to_owned()
            } else {
                format!(
                    "kuryr-daemon only serves uids {:?} ([cni_daemon] socket_allowed_uids)",
                    limits.allowed_uids
                )
            },
            format!(
                "peer uid {}",
                peer_uid.map_or("unknown".into(), |u| u.to_string())
            ),
        );
        return cni_error(403, &e);
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let body = match read_body(req, limits.max_body, deadline).await {
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

/// Serves one connection: one request (no keep-alive), whose head must arrive within
/// `header_timeout`.
async fn serve_conn<S>(
    io: S,
    header_timeout: Duration,
    svc: impl hyper::service::Service<Request<Incoming>, Response = HttpResponse, Error = Infallible>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Err(e) = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// How many connections over the limit are answered at once; more are closed unanswered.
const MAX_REFUSALS: usize = 64;
/// How long answering one connection over the limit may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `seen` holds a whole request head and the `Content-Length` body after it (a
/// chunked or unframed body counts as whole once the head is there).
fn request_complete(seen: &[u8]) -> bool {
    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&seen[..end]);
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    seen.len() >= end + 4 + length.min(MAX_BODY)
}

/// Answers a connection over the limit: 503, code 11, without a slot. The request is read
/// first (up to 64 KiB) and the client's close awaited: closing a unix socket with unread
/// data resets it, and the client would lose the answer.
async fn refuse_busy(mut stream: UnixStream, limit: usize) {
    let body = CniError::try_again_later(
        "kuryr-daemon is serving too many connections",
        format!("[cni_daemon] socket_max_connections = {limit}; retry"),
    )
    .to_json();
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut seen = Vec::new();
        while !request_complete(&seen) && seen.len() < 64 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        if stream.write_all(msg.as_bytes()).await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
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
    limits: SocketLimits,
) {
    let mut conns = JoinSet::new();
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    loop {
        tokio::select! {
            _ = crate::daemon::stopped(&mut shutdown) => break,
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(limit = limits.max_connections, "too many connections on the CNI socket; refusing one");
                        // Answered by a bounded number of tasks; beyond them, closed at once.
                        if let Ok(r) = refusals.clone().try_acquire_owned() {
                            let limit = limits.max_connections;
                            conns.spawn(async move {
                                refuse_busy(stream, limit).await;
                                drop(r);
                            });
                        }
                        continue;
                    };
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    let deadline = Instant::now() + limits.request_timeout;
                    let (cni, limits) = (cni.clone(), limits.clone());
                    let header_timeout = limits.request_timeout;
                    conns.spawn(async move {
                        serve_conn(stream, header_timeout, service_fn(move |req| {
                            let (cni, limits) = (cni.clone(), limits.clone());
                            async move {
                                Ok::<_, Infallible>(handle_cni(req, cni, uid, &limits, deadline).await)
                            }
                        }))
                        .await;
                        drop(slot);
                    });
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
                    conns.spawn(serve_conn(stream, TCP_HEADER_TIMEOUT, service_fn(move |req: Request<Incoming>| {
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
