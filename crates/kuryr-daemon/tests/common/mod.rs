//! Helpers shared by the integration tests: a minimal HTTP/1.1 client for the daemon's unix
//! socket (what kuryr-cni does), CNI request bodies, unique names.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A name unique to this test process (`<prefix><pid>-<n>`).
pub fn unique(prefix: &str) -> String {
    kuryr_test_support::unique(prefix)
}

/// One HTTP request over the unix socket; returns (status, parsed JSON body or Null).
pub async fn http(sock: &Path, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    let mut s = UnixStream::connect(sock)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: kuryr-daemon\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(body).await.expect("write body");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read response");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let v = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or(Value::String(body.into()))
    };
    (status, v)
}

/// POST /v1/cni.
pub async fn cni(sock: &Path, req: &Value) -> (u16, Value) {
    let b = serde_json::to_vec(req).expect("json");
    http(sock, "POST", "/v1/cni", Some(&b)).await
}

/// The stdin config kuryr-cni forwards.
pub fn netconf() -> Value {
    json!({"cniVersion": "1.1.0", "name": "kuryr", "type": "kuryr-cni", "timeout_seconds": 120})
}

/// `CNI_ARGS` as containerd sets them.
pub fn pod_args(ns: &str, name: &str, uid: &str, cid: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={uid}")
}

pub fn request(command: &str, cid: &str, netns: &str, ifname: &str, args: &str) -> Value {
    json!({"command": command, "container_id": cid, "netns": netns, "ifname": ifname, "args": args,
           "path": "/opt/cni/bin", "config": netconf()})
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes (test-side only).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plain GET over TCP (health/metrics); returns (status, body).
pub async fn http_tcp(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    (
        head.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status"),
        body.to_owned(),
    )
}

/// Daemon options for a test daemon under `dir` (socket, records, queue; no conflist, no OVSDB,
/// health and metrics on ephemeral ports) with `config` as its kuryr.conf text.
pub fn daemon_options(dir: &Path, node: &str, config: &str) -> kuryr_daemon::DaemonOptions {
    let config = kuryr_core::config::Config::parse(config, kuryr_core::config::Role::Daemon)
        .expect("config");
    kuryr_daemon::DaemonOptions {
        config,
        node_name: node.into(),
        socket_path: dir.join("run/kuryr-daemon.sock"),
        attachments_dir: dir.join("attachments"),
        del_queue_dir: dir.join("del-queue"),
        conflist: None,
        install_cni: None,
        install_plugins: None,
        chain_caps: None,
        health_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
        ovsdb_endpoint: format!("unix:{}", dir.join("no-ovsdb.sock").display()),
        probe_interval: Duration::from_millis(200),
        failure_window: Duration::from_secs(300),
        pool_netns: None,
    }
}

/// A Kubernetes client for an API server that is never there.
pub fn dead_client() -> kube::Client {
    let cfg = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
    kube::Client::try_from(cfg).expect("client")
}
