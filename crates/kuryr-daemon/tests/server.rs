//! The daemon's socket API end to end, without the stack: the API server address is a dead
//! port and OVSDB a missing socket, so the daemon serves but is never ready. Needs root (the
//! socket only serves uid 0; the test runs requests as root and one as `nobody`), so plain `cargo
//! test` ignores it; hack/test runs it as root.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{cni, daemon_options, dead_client, http, http_tcp, pod_args, request};
use kuryr_daemon::{Daemon, DaemonOptions};
use serde_json::json;

fn options(dir: &Path) -> DaemonOptions {
    DaemonOptions {
        conflist: Some(kuryr_daemon::daemon::ConflistOptions {
            dir: dir.join("net.d"),
            name: "10-kuryr.conflist".into(),
            chain: vec![],
            timeout_seconds: 120.0,
            cni_version: "1.0.0".into(),
        }),
        ..daemon_options(
            dir,
            "kd-test-node",
            "[cni_daemon]\nvif_annotation_timeout = 1\n",
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: the socket serves only uid 0 (and the test switches to nobody); hack/test runs it as root"]
async fn socket_api_without_a_cluster() {
    let dir = tempfile::tempdir().expect("tmp");
    // A queued DEL from a previous run, a half-written queue file and garbage.
    let q = dir.path().join("del-queue");
    std::fs::create_dir_all(&q).expect("queue dir");
    let queued = kuryr_cni_api::DelQueueEntry::new(
        serde_json::from_value(request("DEL", "queuedcid", "", "eth0", "")).expect("request"),
        1,
        "connect: ENOENT",
    );
    std::fs::write(q.join(queued.file_name()), queued.to_json().expect("json"))
        .expect("write entry");
    std::fs::write(q.join(".x@eth0.json.tmp.1"), b"{").expect("tmp");
    std::fs::write(q.join("junk@eth0.json"), b"not json").expect("junk");
    // A stale socket file from a crashed daemon.
    let sock_dir = dir.path().join("run");
    std::fs::create_dir_all(&sock_dir).expect("run dir");
    drop(
        std::os::unix::net::UnixListener::bind(sock_dir.join("kuryr-daemon.sock"))
            .expect("stale socket"),
    );

    let d = Daemon::start(options(dir.path()), dead_client())
        .await
        .expect("daemon starts over a stale socket");
    assert_eq!(d.drained.executed, 1, "{:?}", d.drained);
    assert_eq!(d.drained.discarded, 1, "{:?}", d.drained);
    let left: Vec<String> = std::fs::read_dir(&q)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "queue not drained: {left:?}");

    let sock = d.socket_path().to_path_buf();
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    // A second daemon must not steal a live socket.
    let err = Daemon::start(options(dir.path()), dead_client())
        .await
        .expect_err("second daemon on a live socket");
    assert!(err.to_string().contains("another"), "{err}");

    // Not ready: caches never sync, the API server is unreachable, OVSDB is missing.
    let (status, body) = http(&sock, "GET", "/v1/ready", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert!(
        body["reason"]
            .as_str()
            .expect("reason")
            .contains("watch has not synced"),
        "{body}"
    );
    let (status, body) = cni(&sock, &request("STATUS", "", "", "", "")).await;
    assert_eq!((status, body["code"].as_u64()), (503, Some(50)), "{body}");
    let (status, _) = http_tcp(d.health_addr(), "/ready").await;
    assert_eq!(status, 503);
    assert!(
        d.conflist_path().is_none(),
        "conflist written while not ready"
    );
    assert!(!dir.path().join("net.d/10-kuryr.conflist").exists());

    // Parse errors.
    let (status, body) = http(&sock, "POST", "/v1/cni", Some(b"{nope")).await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(6)), "{body}");
    let (status, body) = cni(
        &sock,
        &request("ADD", "c1", "/run/netns/x", "eth0", "K8S_POD_NAMESPACE=ns1"),
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(110)), "{body}");
    // A standalone container (podman) whose name cannot be a KuryrPort name.
    let (status, body) = cni(
        &sock,
        &request(
            "ADD",
            "c1",
            "/run/netns/x",
            "eth0",
            "IgnoreUnknown=1;K8S_POD_NAME=happy_einstein",
        ),
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(4)), "{body}");
    assert!(
        body["details"]
            .as_str()
            .expect("details")
            .contains("must be created first"),
        "{body}"
    );
    let (status, body) = http(&sock, "GET", "/addNetwork", None).await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(101)), "{body}");

    // DEL of something never added succeeds, twice; CHECK of it is an error.
    for _ in 0..2 {
        let (status, body) = cni(&sock, &request("DEL", "nevercid", "", "eth0", "")).await;
        assert_eq!((status, &body), (200, &json!({"result": null})));
    }
    let (status, body) = cni(
        &sock,
        &request("CHECK", "nevercid", "/proc/self/ns/net", "eth0", ""),
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(114)), "{body}");

    // ADD cannot get a KuryrPort: code 11 after the (1 s) budget, naming what it waited for.
    let t = Instant::now();
    let (status, body) = cni(
        &sock,
        &request(
            "ADD",
            "addcid",
            "/proc/self/ns/net",
            "eth0",
            &pod_args("ns1", "web-0", "u1", "addcid"),
        ),
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (504, Some(11)), "{body}");
    let msg = body["msg"].as_str().expect("msg");
    assert!(
        msg.starts_with("timed out after 1s waiting for KuryrPort ns1/web-0"),
        "{msg}"
    );
    assert!(
        body["details"]
            .as_str()
            .expect("details")
            .contains("does not exist yet"),
        "{body}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );

    // A standalone container (ctr: no CNI_ARGS) without its KuryrPort: code 11 after the
    // budget, telling the user to create the KuryrPort.
    let t = Instant::now();
    let (status, body) = cni(
        &sock,
        &request("ADD", "default-ctr1", "/proc/self/ns/net", "eth0", ""),
    )
    .await;
    assert_eq!((status, body["code"].as_u64()), (504, Some(11)), "{body}");
    let msg = body["msg"].as_str().expect("msg");
    assert!(
        msg.starts_with("timed out after 1s waiting for KuryrPort kuryr-standalone/default-ctr1")
            && msg.contains("create the KuryrPort first")
            && !msg.contains("is kuryr-controller running"),
        "{msg}"
    );
    let details = body["details"].as_str().expect("details");
    assert!(
        details.contains("does not exist on this node")
            && details.contains("must be created first"),
        "{details}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );

    // A DEL for the same pod is not held up by an ADD that is waiting for its KuryrPort.
    let add_sock = sock.clone();
    let waiting = tokio::spawn(async move {
        cni(
            &add_sock,
            &request(
                "ADD",
                "addcid2",
                "/proc/self/ns/net",
                "eth0",
                &pod_args("ns1", "web-0", "u1", "addcid2"),
            ),
        )
        .await
    });
    // The DEL comes once the ADD is being served (waiting for its KuryrPort).
    common::eventually(Duration::from_secs(5), "the ADD in flight", || async {
        let (_, text) = http_tcp(d.metrics_addr(), "/metrics").await;
        text.contains(r#"kuryr_cni_requests_in_flight{command="ADD"} 1"#)
            .then_some(())
    })
    .await;
    let t = Instant::now();
    let (status, body) = cni(
        &sock,
        &request(
            "DEL",
            "oldcid",
            "",
            "eth0",
            &pod_args("ns1", "web-0", "u1", "oldcid"),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "DEL waited {:?} behind a waiting ADD",
        t.elapsed()
    );
    assert!(!waiting.is_finished(), "the ADD should still be waiting");
    assert_eq!(waiting.await.expect("ADD task").1["code"], 11);

    // Metrics count it; a timeout is not the daemon's fault, so it stays alive.
    let (_, metrics) = http_tcp(d.metrics_addr(), "/metrics").await;
    assert!(
        metrics.contains(r#"kuryr_cni_requests_total{command="ADD",result="11"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kuryr_cni_requests_total{command="DEL",result="ok"} 4"#),
        "{metrics}"
    );
    let (status, body) = http_tcp(d.health_addr(), "/alive").await;
    assert_eq!(status, 200, "{body}");

    // Non-root peers are refused (socket opened up so that the peer check is what refuses).
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
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
        .arg(&sock)
        .arg("http://kuryr-daemon/v1/ready")
        .output()
        .expect("setpriv + curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.ends_with("\n403"),
        "non-root peer not refused: {text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"code\":115"), "{text}");

    d.shutdown().await;
    assert!(!sock.exists(), "socket left after shutdown");
}
