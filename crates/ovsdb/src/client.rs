//! Async JSON-RPC connection to ovsdb-server: one reader task, one writer task,
//! requests matched to responses by id, server `echo` answered automatically.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::framing::JsonFramer;
use crate::monitor::{parse_table_updates, Monitor, MonitorRequest};
use crate::op::{parse_transact_result, OpResult, Operation};

/// Default per-call deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
type BoxStream = Box<dyn Stream>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Pending {
    method: String,
    tx: oneshot::Sender<Result<Json>>,
}

/// State shared between the handle and the I/O tasks.
#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<u64, Pending>>,
    monitors: Mutex<HashMap<String, mpsc::UnboundedSender<Json>>>,
    closed: AtomicBool,
    echoes: AtomicU64,
}

impl Shared {
    /// Mark closed and fail everything outstanding.
    fn close(&self, why: &str) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            debug!(reason = why, "ovsdb connection closed");
        }
        let drained: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in drained {
            let _ = p.tx.send(Err(Error::Disconnected));
        }
        lock(&self.monitors).clear();
    }

    fn dispatch(&self, msg: Json, out: &mpsc::UnboundedSender<Vec<u8>>) {
        let id = msg.get("id").filter(|i| !i.is_null());
        if let Some(method) = msg.get("method").and_then(Json::as_str) {
            let params = msg.get("params").cloned().unwrap_or(Json::Null);
            match (method, id) {
                ("echo", Some(id)) => {
                    debug!("answering ovsdb echo");
                    self.echoes.fetch_add(1, Ordering::Relaxed);
                    send_json(out, &json!({"id": id, "result": params, "error": null}));
                }
                ("update" | "update2" | "update3", _) => {
                    let mon = match params.get(0) {
                        Some(Json::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => return,
                    };
                    // update3 carries the last transaction id before the updates.
                    let idx = if method == "update3" { 2 } else { 1 };
                    let upd = params.get(idx).cloned().unwrap_or(Json::Null);
                    debug!(monitor = %mon, "ovsdb update notification");
                    if let Some(tx) = lock(&self.monitors).get(&mon) {
                        let _ = tx.send(upd);
                    }
                }
                (_, Some(id)) => {
                    debug!(method, "rejecting unknown ovsdb request");
                    send_json(
                        out,
                        &json!({"id": id, "result": null, "error": "unknown method"}),
                    );
                }
                _ => debug!(method, "ignoring ovsdb notification"),
            }
            return;
        }
        let Some(id) = id.and_then(Json::as_u64) else {
            debug!(%msg, "ignoring ovsdb message without usable id");
            return;
        };
        let Some(p) = lock(&self.pending).remove(&id) else {
            debug!(id, "ignoring ovsdb response nobody waits for");
            return;
        };
        let res = match msg.get("error").filter(|e| !e.is_null()) {
            Some(err) => Err(Error::Rpc {
                method: p.method,
                error: err.to_string(),
            }),
            None => Ok(msg.get("result").cloned().unwrap_or(Json::Null)),
        };
        let _ = p.tx.send(res);
    }
}

fn send_json(out: &mpsc::UnboundedSender<Vec<u8>>, v: &Json) -> bool {
    match serde_json::to_vec(v) {
        Ok(b) => out.send(b).is_ok(),
        Err(_) => false,
    }
}

async fn read_loop(
    mut rd: ReadHalf<BoxStream>,
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
) {
    let mut framer = JsonFramer::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => return shared.close("eof"),
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "ovsdb read failed");
                return shared.close("read error");
            }
        };
        framer.push(&buf[..n]);
        loop {
            match framer.next_value() {
                Ok(Some(msg)) => shared.dispatch(msg, &out),
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "ovsdb stream corrupt, closing");
                    return shared.close("protocol error");
                }
            }
        }
    }
}

async fn write_loop(
    mut wr: WriteHalf<BoxStream>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(bytes) = rx.recv().await {
        let res = async {
            wr.write_all(&bytes).await?;
            wr.flush().await
        }
        .await;
        if let Err(e) = res {
            warn!(error = %e, "ovsdb write failed");
            shared.close("write error");
            return;
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU64,
    timeout: Duration,
    endpoint: String,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.close("client dropped");
    }
}

/// Removes a pending entry if the call is abandoned (timeout or dropped future).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
    }
}

/// Cheaply clonable handle to one ovsdb-server connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Client {
    /// Connect to `endpoint` (`unix:PATH`, `tcp:HOST:PORT` or a path); `timeout` bounds connect and each call.
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Client> {
        let ep = Endpoint::parse(endpoint)?;
        let name = ep.to_string();
        debug!(endpoint = %name, "connecting to ovsdb");
        let fut = async {
            match &ep {
                Endpoint::Unix(p) => UnixStream::connect(p)
                    .await
                    .map(|s| Box::new(s) as BoxStream),
                Endpoint::Tcp(a) => {
                    let s = TcpStream::connect(a.as_str()).await?;
                    s.set_nodelay(true)?;
                    Ok(Box::new(s) as BoxStream)
                }
            }
        };
        let stream = match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(Error::Connect {
                    endpoint: name,
                    source,
                })
            }
            Err(_) => {
                let source = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                );
                return Err(Error::Connect {
                    endpoint: name,
                    source,
                });
            }
        };
        Ok(Client::from_stream(stream, name, timeout))
    }

    /// Wrap an already connected stream (must be called inside a tokio runtime).
    pub fn from_stream<S>(stream: S, endpoint: String, timeout: Duration) -> Client
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (rd, wr) = tokio::io::split(Box::new(stream) as BoxStream);
        let shared = Arc::new(Shared::default());
        let (out, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(rd, shared.clone(), out.clone()));
        let writer = tokio::spawn(write_loop(wr, rx, shared.clone()));
        Client {
            inner: Arc::new(Inner {
                shared,
                out,
                next_id: AtomicU64::new(1),
                timeout,
                endpoint,
                tasks: [reader, writer],
            }),
        }
    }

    /// The endpoint this client is connected to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Default per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// True once the connection is gone; a new client must be connected.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(Ordering::SeqCst)
    }

    /// Number of server `echo` (inactivity probe) requests answered so far.
    pub fn echoes_answered(&self) -> u64 {
        self.inner.shared.echoes.load(Ordering::Relaxed)
    }

    /// Raw JSON-RPC call with the default deadline.
    pub async fn call(&self, method: &str, params: Json) -> Result<Json> {
        self.call_timeout(method, params, self.inner.timeout).await
    }

    /// Raw JSON-RPC call with an explicit deadline.
    pub async fn call_timeout(
        &self,
        method: &str,
        params: Json,
        timeout: Duration,
    ) -> Result<Json> {
        let shared = &*self.inner.shared;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&shared.pending).insert(
            id,
            Pending {
                method: method.to_owned(),
                tx,
            },
        );
        let _guard = PendingGuard { shared, id };
        // Checked after inserting so a concurrent close() cannot strand us.
        if self.is_closed() {
            return Err(Error::Disconnected);
        }
        debug!(id, method, "ovsdb request");
        if !send_json(
            &self.inner.out,
            &json!({"id": id, "method": method, "params": params}),
        ) {
            return Err(Error::Disconnected);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(res)) => {
                debug!(id, method, ok = res.is_ok(), "ovsdb response");
                res
            }
            Ok(Err(_)) => Err(Error::Disconnected),
            Err(_) => Err(Error::Timeout {
                method: method.to_owned(),
                timeout,
            }),
        }
    }

    /// Send a request whose answer is ignored.
    fn send_detached(&self, method: &str, params: Json) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = send_json(
            &self.inner.out,
            &json!({"id": id, "method": method, "params": params}),
        );
    }

    /// `list_dbs`
    pub async fn list_dbs(&self) -> Result<Vec<String>> {
        let r = self.call("list_dbs", json!([])).await?;
        r.as_array()
            .and_then(|a| a.iter().map(|d| d.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| Error::Protocol(format!("bad list_dbs result {r}")))
    }

    /// `get_schema` (raw JSON schema).
    pub async fn get_schema(&self, db: &str) -> Result<Json> {
        self.call("get_schema", json!([db])).await
    }

    /// `echo` round trip (liveness check).
    pub async fn echo(&self) -> Result<()> {
        let r = self.call("echo", json!(["kuryr"])).await?;
        if r == json!(["kuryr"]) {
            Ok(())
        } else {
            Err(Error::Protocol(format!("bad echo reply {r}")))
        }
    }

    /// `transact` with the default deadline. A deadline hit does not roll back a commit in flight.
    pub async fn transact(&self, db: &str, ops: &[Operation]) -> Result<Vec<OpResult>> {
        self.transact_timeout(db, ops, self.inner.timeout).await
    }

    /// `transact` with an explicit deadline.
    pub async fn transact_timeout(
        &self,
        db: &str,
        ops: &[Operation],
        timeout: Duration,
    ) -> Result<Vec<OpResult>> {
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(json!(db));
        params.extend(ops.iter().map(Operation::to_json));
        let r = self
            .call_timeout("transact", Json::Array(params), timeout)
            .await?;
        parse_transact_result(ops, &r)
    }

    /// Start a `monitor`; updates are queued from the moment the request is sent.
    pub async fn monitor(&self, db: &str, requests: &[MonitorRequest]) -> Result<Monitor> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = format!("kuryr-mon-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.shared.monitors).insert(id.clone(), tx);
        let res = self
            .call(
                "monitor",
                json!([db, id, MonitorRequest::requests_json(requests)]),
            )
            .await
            .and_then(|r| parse_table_updates(&r));
        match res {
            Ok(initial) => Ok(Monitor {
                client: self.clone(),
                id,
                initial,
                rx,
            }),
            Err(e) => {
                lock(&self.inner.shared.monitors).remove(&id);
                Err(e)
            }
        }
    }

    /// Forget a monitor locally and cancel it on the server (best effort).
    pub(crate) fn cancel_monitor(&self, id: &str) {
        lock(&self.inner.shared.monitors).remove(id);
        if !self.is_closed() {
            debug!(monitor = id, "cancelling ovsdb monitor");
            self.send_detached("monitor_cancel", json!([id]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncBufReadExt, BufReader};

    /// A scripted peer on an in-memory pipe: checks echo handling and id matching
    /// with out-of-order replies split across writes.
    #[tokio::test]
    async fn echo_and_out_of_order_responses() {
        let (a, b) = duplex(4096);
        let client = Client::from_stream(a, "test".into(), Duration::from_secs(5));
        let (rd, mut wr) = tokio::io::split(b);
        let peer = tokio::spawn(async move {
            let mut framer = JsonFramer::default();
            let mut rd = BufReader::new(rd);
            let mut reqs = Vec::new();
            while reqs.len() < 2 {
                let buf = rd.fill_buf().await.expect("read");
                let n = buf.len();
                framer.push(buf);
                rd.consume(n);
                while let Some(v) = framer.next_value().expect("json") {
                    reqs.push(v);
                }
            }
            // Server-initiated echo, then answers in reverse order, split mid-message.
            let mut out = br#"{"id":"echo","method":"echo","params":[]}"#.to_vec();
            for r in reqs.iter().rev() {
                out.extend(
                    serde_json::to_vec(
                        &json!({"id": r["id"], "result": r["method"], "error": null}),
                    )
                    .expect("ser"),
                );
            }
            let (x, y) = out.split_at(out.len() / 2 + 3);
            wr.write_all(x).await.expect("write");
            tokio::time::sleep(Duration::from_millis(20)).await;
            wr.write_all(y).await.expect("write");
            // Expect the echo reply.
            let mut got = None;
            while got.is_none() {
                let buf = rd.fill_buf().await.expect("read");
                let n = buf.len();
                framer.push(buf);
                rd.consume(n);
                got = framer.next_value().expect("json");
            }
            got
        });
        let (r1, r2) = tokio::join!(
            client.call("first", json!([])),
            client.call("second", json!([]))
        );
        assert_eq!(r1.expect("first"), json!("first"));
        assert_eq!(r2.expect("second"), json!("second"));
        let echo_reply = peer.await.expect("peer").expect("echo reply");
        assert_eq!(
            echo_reply,
            json!({"id": "echo", "result": [], "error": null})
        );
        assert_eq!(client.echoes_answered(), 1);
    }

    #[tokio::test]
    async fn rpc_error_timeout_and_disconnect() {
        let (a, b) = duplex(4096);
        let client = Client::from_stream(a, "test".into(), Duration::from_millis(200));
        let (rd, mut wr) = tokio::io::split(b);
        let mut lines = BufReader::new(rd);
        // Peer answers the first request with an error, ignores the second, then hangs up.
        let peer = tokio::spawn(async move {
            let mut framer = JsonFramer::default();
            let mut seen = 0;
            while seen < 2 {
                let buf = lines.fill_buf().await.expect("read");
                let n = buf.len();
                framer.push(buf);
                lines.consume(n);
                while let Some(v) = framer.next_value().expect("json") {
                    seen += 1;
                    if seen == 1 {
                        let e = json!({"id": v["id"], "result": null, "error": {"error": "unknown method"}});
                        wr.write_all(&serde_json::to_vec(&e).expect("ser"))
                            .await
                            .expect("write");
                    }
                }
            }
            // Outlive the client's 200 ms deadline, then hang up.
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(wr);
            drop(lines);
        });
        let err = client
            .call("bogus", json!([]))
            .await
            .expect_err("rpc error");
        assert!(
            matches!(&err, Error::Rpc { method, .. } if method == "bogus"),
            "{err}"
        );
        let err = client.call("slow", json!([])).await.expect_err("timeout");
        assert!(
            matches!(&err, Error::Timeout { method, .. } if method == "slow"),
            "{err}"
        );
        peer.await.expect("peer");
        tokio::time::timeout(Duration::from_secs(5), async {
            while !client.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("closed after peer hung up");
        assert!(matches!(
            client.call("after", json!([])).await,
            Err(Error::Disconnected)
        ));
    }
}
