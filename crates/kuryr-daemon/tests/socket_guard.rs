//! The CNI socket under clients that misbehave (issue 15), end to end on a temp socket and
//! without a cluster (the API server is a dead port, OVSDB a missing socket): impossible
//! requests fail at once, oversized bodies are 413, clients that send nothing or trickle
//! are cut off, connections over the limit are refused at once, and none of it holds up the
//! requests of other clients. The socket serves the test's own uid (`[cni_daemon]
//! socket_allowed_uids`), so these run as any user; the refusal of a peer that is not allowed
//! needs root to become `nobody` and is #[ignore]d (hack/test runs it as root).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{cni, daemon_options, dead_client, pod_args, request};
use kuryr_daemon::{Daemon, DaemonOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The uid this test runs as (the owner of a directory it just made).
fn my_uid(dir: &Path) -> u32 {
    std::fs::metadata(dir).expect("stat").uid()
}

fn options(dir: &Path, cni_daemon: &str) -> DaemonOptions {
    daemon_options(
        dir,
        "kd-guard-node",
        &format!("[cni_daemon]\n{cni_daemon}\n"),
    )
}

/// A daemon serving this test's uid, with `extra` lines in `[cni_daemon]`.
async fn start(dir: &Path, extra: &str) -> (Daemon, PathBuf) {
    let uid = my_uid(dir);
    let d = Daemon::start(
        options(dir, &format!("socket_allowed_uids = {uid}\n{extra}")),
        dead_client(),
    )
    .await
    .expect("daemon starts");
    let sock = d.socket_path().to_path_buf();
    (d, sock)
}

/// Sends `raw` and reads until the server closes: (status, JSON body) or `None` when the
/// server closed without answering. Bounded by `within` (a hang fails the test).
async fn exchange(sock: &Path, raw: &[u8], within: Duration) -> Option<(u16, Value)> {
    let mut s = UnixStream::connect(sock).await.expect("connect");
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no answer within {within:?} to {:?}",
                String::from_utf8_lossy(raw)
            )
        })
        .ok()?;
    parse_response(&out)
}

fn parse_response(out: &[u8]) -> Option<(u16, Value)> {
    let text = String::from_utf8_lossy(out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    ))
}

fn status_request() -> Vec<u8> {
    let b = serde_json::to_vec(&request("STATUS", "", "", "", "")).expect("json");
    let mut r = format!(
        "POST /v1/cni HTTP/1.1\r\nHost: kuryr-daemon\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        b.len()
    )
    .into_bytes();
    r.extend_from_slice(&b);
    r
}

/// STATUS answers at once: 503 code 50 (this daemon is never ready), i.e. it was parsed and
/// executed, not refused.
async fn assert_served_fast(sock: &Path, what: &str) {
    let t = Instant::now();
    let (status, body) = exchange(sock, &status_request(), Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("{what}: closed without an answer"));
    assert_eq!(
        (status, body["code"].as_u64()),
        (503, Some(50)),
        "{what}: {body}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "{what}: STATUS took {:?}",
        t.elapsed()
    );
}

/// An ADD into a netns that does not exist fails at once with code 4 naming the path, though
/// the daemon would wait 30 s for the pod's VIF (it used to wait that out first, then time out
/// with code 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_into_a_missing_netns_fails_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let (d, sock) = start(dir.path(), "vif_annotation_timeout = 30").await;
    let missing = format!("/run/netns/kuryr-test-missing-{}", std::process::id());
    let not_a_netns = dir.path().join("plain-file");
    std::fs::write(&not_a_netns, b"").expect("file");
    for (netns, piece) in [
        (missing.as_str(), "No such file or directory"),
        (not_a_netns.to_str().expect("utf-8"), "not a namespace file"),
    ] {
        let t = Instant::now();
        let (status, body) = cni(
            &sock,
            &request(
                "ADD",
                "nscid",
                netns,
                "eth0",
                &pod_args("ns1", "web-0", "u1", "nscid"),
            ),
        )
        .await;
        let took = t.elapsed();
        assert_eq!(
            (status, body["code"].as_u64()),
            (400, Some(4)),
            "{netns}: {body}"
        );
        assert_eq!(
            body["msg"],
            format!("cannot open CNI_NETNS {netns}"),
            "{body}"
        );
        assert!(
            body["details"].as_str().expect("details").contains(piece),
            "{body}"
        );
        assert!(took < Duration::from_secs(2), "{netns}: ADD took {took:?}");
    }
    // Nothing was recorded for the failed ADDs: a DEL of them is a no-op success.
    let (status, _) = cni(&sock, &request("DEL", "nscid", "", "eth0", "")).await;
    assert_eq!(status, 200);
    d.shutdown().await;
}

/// Bodies over the limit are 413 with a CNI error (code 117): declared by Content-Length
/// (refused before a byte of it is sent) or streamed chunked past the limit. One just under
/// the limit is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_413() {
    let dir = tempfile::tempdir().expect("tmp");
    let (d, sock) = start(dir.path(), "socket_max_request_bytes = 4096").await;

    // Declared: only the head is sent; the answer must not wait for the 10 MB.
    let head = b"POST /v1/cni HTTP/1.1\r\nHost: kuryr-daemon\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n";
    let t = Instant::now();
    let mut s = UnixStream::connect(&sock).await.expect("connect");
    s.write_all(head).await.expect("head");
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut out))
        .await
        .expect("413 without waiting for the body")
        .expect("read");
    let (status, body) = parse_response(&out[..n]).expect("response");
    assert_eq!((status, body["code"].as_u64()), (413, Some(117)), "{body}");
    assert!(
        body["msg"].as_str().expect("msg").contains("4096"),
        "{body}"
    );
    assert!(
        body["details"]
            .as_str()
            .expect("details")
            .contains("Content-Length is 10000000"),
        "{body}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );

    // Chunked past the limit.
    let chunk = "x".repeat(3000);
    let raw = format!(
        "POST /v1/cni HTTP/1.1\r\nHost: kuryr-daemon\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n{chunk}\r\n{n:x}\r\n{chunk}\r\n0\r\n\r\n",
        n = chunk.len()
    );
    let (status, body) = exchange(&sock, raw.as_bytes(), Duration::from_secs(5))
        .await
        .expect("answer");
    assert_eq!((status, body["code"].as_u64()), (413, Some(117)), "{body}");

    // Under the limit: served (padded STATUS request, ~4000 bytes).
    let mut req = request("STATUS", "", "", "", "");
    req["config"]["pad"] = Value::String("p".repeat(3800));
    let b = serde_json::to_vec(&req).expect("json");
    assert!(b.len() < 4096 && b.len() > 3800, "{}", b.len());
    let (status, body) = cni(&sock, &req).await;
    assert_eq!((status, body["code"].as_u64()), (503, Some(50)), "{body}");
    d.shutdown().await;
}

/// Clients that connect and send nothing, send the head a byte at a time, or trickle the
/// body, do not hold up others: while 40 of them hang on, other clients are answered at once;
/// each of them is cut off once the request timeout (2 s) has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_do_not_stall_others() {
    let dir = tempfile::tempdir().expect("tmp");
    let (d, sock) = start(dir.path(), "socket_request_timeout = 2").await;
    let started = Instant::now();

    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(UnixStream::connect(&sock).await.expect("connect idle"));
    }
    // Slow loris: the head, one byte every 200 ms (would take ~30 s).
    let head = String::from_utf8(status_request()).expect("utf-8");
    // Slow clients connected and sending (counted once their first bytes are written).
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut loris = Vec::new();
    for _ in 0..5 {
        let sock = sock.clone();
        let head = head.clone();
        let sending = sending.clone();
        loris.push(tokio::spawn(async move {
            let mut s = UnixStream::connect(&sock).await.expect("connect loris");
            for (i, b) in head.bytes().enumerate() {
                if s.write_all(&[b]).await.is_err() {
                    break;
                }
                if i == 0 {
                    sending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                // Pacing of the slow client (the point of it), no wait.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            out
        }));
    }
    // Body trickle: a complete head, then the body one byte every 200 ms.
    let mut trickle = Vec::new();
    for _ in 0..5 {
        let sock = sock.clone();
        let sending = sending.clone();
        trickle.push(tokio::spawn(async move {
            let mut s = UnixStream::connect(&sock).await.expect("connect trickle");
            s.write_all(
                b"POST /v1/cni HTTP/1.1\r\nHost: kuryr-daemon\r\nContent-Length: 100\r\n\r\n",
            )
            .await
            .expect("head");
            sending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut out = Vec::new();
            let mut buf = [0u8; 1024];
            for _ in 0..100 {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                    },
                    // Pacing of the trickle (one body byte per 200 ms), no wait.
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if s.write_all(b"{").await.is_err() { break; }
                    }
                }
            }
            let _ = s.read_to_end(&mut out).await;
            out
        }));
    }
    common::eventually(
        Duration::from_secs(10),
        "the 10 slow clients sending",
        || {
            let n = sending.load(std::sync::atomic::Ordering::SeqCst);
            async move { (n == 10).then_some(()) }
        },
    )
    .await;

    // Others are served at once meanwhile, ADD included (it fails on its netns at once).
    for i in 0..5 {
        assert_served_fast(&sock, &format!("STATUS {i} among idle clients")).await;
    }
    let t = Instant::now();
    let (status, body) = cni(
        &sock,
        &request(
            "ADD",
            "c9",
            "/run/netns/kuryr-test-nope",
            "eth0",
            &pod_args("ns", "p", "u", "c9"),
        ),
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(4)), "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "ADD took {:?}",
        t.elapsed()
    );

    // The idle ones are closed by the server after the request timeout, without an answer.
    for (i, mut s) in idle.into_iter().enumerate() {
        let mut out = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut out)).await;
        assert!(
            r.is_ok(),
            "idle connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "closed too early: {:?}",
        started.elapsed()
    );
    // The slow lorises are cut off in the head (no answer: hyper closes), well before
    // they would have finished.
    for l in loris {
        let out = tokio::time::timeout(Duration::from_secs(6), l)
            .await
            .expect("slow loris cut off")
            .expect("task");
        assert!(
            out.is_empty() || parse_response(&out).is_some_and(|(s, _)| s == 408),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }
    // The tricklers get 408 with a CNI error (code 5).
    for t in trickle {
        let out = tokio::time::timeout(Duration::from_secs(6), t)
            .await
            .expect("trickle cut off")
            .expect("task");
        let (status, body) = parse_response(&out)
            .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&out)));
        assert_eq!((status, body["code"].as_u64()), (408, Some(5)), "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_served_fast(&sock, "STATUS after the idle clients are gone").await;
    d.shutdown().await;
}

/// With the connection limit reached by idle clients, one more connection is answered 503
/// (code 11, try again later) at once rather than queued; once the idle ones are cut off,
/// requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let (d, sock) = start(
        dir.path(),
        "socket_max_connections = 8\nsocket_request_timeout = 2",
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(UnixStream::connect(&sock).await.expect("connect idle"));
    }
    // The daemon accepts them in the background: until it has all 8, one more is still served.
    let (status, body, took) = common::eventually(
        Duration::from_millis(1500),
        "a connection over the limit refused",
        || {
            let sock = sock.clone();
            async move {
                let t = Instant::now();
                let (status, body) = exchange(&sock, &status_request(), Duration::from_secs(3))
                    .await
                    .expect("an answer");
                (body["code"].as_u64() == Some(11)).then(|| (status, body, t.elapsed()))
            }
        },
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (503, Some(11)), "{body}");
    assert!(
        body["msg"]
            .as_str()
            .expect("msg")
            .contains("too many connections"),
        "{body}"
    );
    assert!(took < Duration::from_secs(1), "refusal took {took:?}");

    // The idle clients are cut off after 2 s; then requests are served again.
    let end = Instant::now() + Duration::from_secs(8);
    loop {
        let (status, body) = exchange(&sock, &status_request(), Duration::from_secs(3))
            .await
            .expect("an answer");
        if body["code"] == 50 {
            assert_eq!(status, 503);
            break;
        }
        assert_eq!(body["code"], 11, "{body}");
        assert!(
            Instant::now() < end,
            "still refused after the idle clients' timeout"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(idle);
    d.shutdown().await;
}

/// `setpriv` as `nobody` (65534) sending one request with curl: (HTTP status, JSON body).
fn request_as_nobody(sock: &Path) -> (u16, Value) {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(sock)
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(serde_json::to_string(&request("STATUS", "", "", "", "")).expect("json"))
        .arg("http://kuryr-daemon/v1/cni")
        .output()
        .expect("setpriv + curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or_else(|| {
        panic!(
            "curl output {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        status
            .parse()
            .unwrap_or_else(|_| panic!("status in {text:?}")),
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

/// A peer that is not root is refused with 403 and code 115 naming its uid (the socket file
/// is opened up so that the SO_PEERCRED check is what refuses); allowed by
/// `socket_allowed_uids`, the same peer is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: becomes nobody with setpriv; hack/test runs it as root"]
async fn peers_that_are_not_allowed_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let d = Daemon::start(options(dir.path(), ""), dead_client())
        .await
        .expect("daemon starts");
    let sock = d.socket_path().to_path_buf();
    std::fs::set_permissions(
        sock.parent().expect("dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (status, body) = request_as_nobody(&sock);
    assert_eq!((status, body["code"].as_u64()), (403, Some(115)), "{body}");
    assert_eq!(body["msg"], "kuryr-daemon only serves root", "{body}");
    assert_eq!(body["details"], "peer uid 65534", "{body}");
    // Root is served on the same socket.
    assert_served_fast(&sock, "root").await;
    d.shutdown().await;

    let dir2 = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir2.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let d = Daemon::start(
        options(dir2.path(), "socket_allowed_uids = 0, 65534"),
        dead_client(),
    )
    .await
    .expect("daemon starts");
    let sock = d.socket_path().to_path_buf();
    std::fs::set_permissions(
        sock.parent().expect("dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (status, body) = request_as_nobody(&sock);
    assert_eq!(
        (status, body["code"].as_u64()),
        (503, Some(50)),
        "allowed nobody is served: {body}"
    );
    d.shutdown().await;
}
