//! The shim against a test double of kuryr-daemon's API: every verb x every version,
//! HTTP framing, prevResult merge, daemon errors, deadlines, unreachable daemon, DEL queue.

mod common;

use std::time::Duration;

use common::{attachment_env, conf, run, DaemonDouble, Reply, TempDir};
use kuryr_cni_api::DelQueueEntry;
use serde_json::{json, Value};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// What the double returns for ADD (1.1.0 internal form).
const DAEMON_RESULT: &str = r#"{"result":{"interfaces":[{"name":"tap90c45da1-2d","mac":"fa:16:3e:11:22:33","mtu":1450},{"name":"eth0","mac":"fa:16:3e:11:22:33","mtu":1450,"sandbox":"/var/run/netns/cni-1"}],"ips":[{"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"interface":1,"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1","mtu":1400}],"dns":{"nameservers":["10.0.0.2"]}}}"#;

/// The exact stdout for DAEMON_RESULT in each version.
fn expected_add_stdout(version: &str) -> String {
    let out = match version {
        "0.3.0" | "0.3.1" | "0.4.0" => format!(
            r#"{{"cniVersion":"{version}","interfaces":[{{"name":"tap90c45da1-2d","mac":"fa:16:3e:11:22:33"}},{{"name":"eth0","mac":"fa:16:3e:11:22:33","sandbox":"/var/run/netns/cni-1"}}],"ips":[{{"version":"4","interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"}},{{"version":"6","interface":1,"address":"fd00::5/64"}}],"routes":[{{"dst":"0.0.0.0/0","gw":"10.0.0.1"}}],"dns":{{"nameservers":["10.0.0.2"]}}}}"#
        ),
        "1.0.0" => r#"{"cniVersion":"1.0.0","interfaces":[{"name":"tap90c45da1-2d","mac":"fa:16:3e:11:22:33"},{"name":"eth0","mac":"fa:16:3e:11:22:33","sandbox":"/var/run/netns/cni-1"}],"ips":[{"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"interface":1,"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}],"dns":{"nameservers":["10.0.0.2"]}}"#.to_owned(),
        "1.1.0" => r#"{"cniVersion":"1.1.0","interfaces":[{"name":"tap90c45da1-2d","mac":"fa:16:3e:11:22:33","mtu":1450},{"name":"eth0","mac":"fa:16:3e:11:22:33","mtu":1450,"sandbox":"/var/run/netns/cni-1"}],"ips":[{"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"interface":1,"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1","mtu":1400}],"dns":{"nameservers":["10.0.0.2"]}}"#.to_owned(),
        other => panic!("no expectation for {other}"),
    };
    format!("{out}\n")
}

fn env_for(cmd: &str) -> Vec<(&str, &str)> {
    match cmd {
        // GC/STATUS carry no attachment (libcni sets only CNI_COMMAND, CNI_PATH).
        "GC" | "STATUS" => vec![("CNI_COMMAND", cmd), ("CNI_PATH", "/opt/cni/bin")],
        _ => attachment_env(cmd, "/var/run/netns/cni-1"),
    }
}

fn allowed(cmd: &str, version: &str) -> bool {
    match cmd {
        "ADD" | "DEL" => true,
        "CHECK" => version >= "0.4.0",
        _ => version == "1.1.0",
    }
}

#[test]
fn every_verb_in_every_version() {
    for cmd in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
        for version in VERSIONS {
            let dir = TempDir::new("matrix");
            let sock = dir.join("d.sock");
            let stdin = conf(version, &sock, &dir.join("q"), "");
            if !allowed(cmd, version) {
                // Rejected before any connection is made.
                let v = run(&env_for(cmd), &stdin).expect_error(1);
                assert_eq!(v["cniVersion"], version, "{cmd} {version}");
                assert_eq!(v["msg"], format!("config version does not allow {cmd}"));
                continue;
            }
            let reply = if cmd == "ADD" {
                DAEMON_RESULT.to_owned()
            } else {
                r#"{"result":null}"#.to_owned()
            };
            let daemon = DaemonDouble::start(&sock, vec![Reply::Length(200, reply)]);
            let r = run(&env_for(cmd), &stdin);
            let captured = daemon.captured();
            assert_eq!(r.code, 0, "{cmd} {version}: {}", r.stdout);
            if cmd == "ADD" {
                assert_eq!(r.stdout, expected_add_stdout(version), "{cmd} {version}");
            } else {
                assert_eq!(r.stdout, "", "{cmd} {version}");
            }
            assert_eq!(captured.len(), 1);
            let req = captured[0].json();
            assert_eq!(req["command"], cmd);
            assert_eq!(
                req["config"],
                serde_json::from_str::<Value>(&stdin).unwrap(),
                "config forwarded verbatim"
            );
            if cmd == "GC" || cmd == "STATUS" {
                assert_eq!(
                    (req["container_id"].as_str(), req["ifname"].as_str()),
                    (Some(""), Some(""))
                );
            } else {
                assert_eq!(req["container_id"], "90c45da12e2d4f6a");
                assert_eq!(req["netns"], "/var/run/netns/cni-1");
                assert_eq!(req["ifname"], "eth0");
                assert!(req["args"].as_str().unwrap().contains("K8S_POD_NAME=pod-a"));
            }
            assert_eq!(
                req["path"],
                if cmd == "GC" || cmd == "STATUS" {
                    "/opt/cni/bin"
                } else {
                    "/opt/cni/bin:/usr/lib/cni"
                }
            );
        }
    }
}

#[test]
fn request_framing() {
    let dir = TempDir::new("framing");
    let sock = dir.join("d.sock");
    let daemon = DaemonDouble::start(&sock, vec![Reply::Length(200, DAEMON_RESULT.into())]);
    let stdin = conf("1.0.0", &sock, &dir.join("q"), "");
    let r = run(&attachment_env("ADD", "/var/run/netns/cni-1"), &stdin);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let c = &daemon.captured()[0];
    assert_eq!(c.request_line, "POST /v1/cni HTTP/1.1");
    assert_eq!(c.header("host"), Some("kuryr-daemon"));
    assert_eq!(c.header("content-type"), Some("application/json"));
    assert_eq!(c.header("connection"), Some("close"));
    assert_eq!(
        c.header("content-length"),
        Some(c.body.len().to_string().as_str())
    );
    assert!(c.header("user-agent").unwrap().starts_with("kuryr-cni/"));
    let keys: Vec<String> = c.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
}

#[test]
fn response_framings() {
    let replies = vec![
        ("chunked 1", Reply::Chunked(200, DAEMON_RESULT.into(), 1)),
        ("chunked 7", Reply::Chunked(200, DAEMON_RESULT.into(), 7)),
        ("chunked 64", Reply::Chunked(200, DAEMON_RESULT.into(), 64)),
        (
            "chunked whole",
            Reply::Chunked(200, DAEMON_RESULT.into(), 100_000),
        ),
        ("until close", Reply::UntilClose(200, DAEMON_RESULT.into())),
        (
            "100-continue",
            Reply::Continue(Box::new(Reply::Length(200, DAEMON_RESULT.into()))),
        ),
        (
            "pretty body",
            Reply::Length(
                200,
                format!("\n  {}\n", DAEMON_RESULT.replace(",\"", ",\n  \"")),
            ),
        ),
    ];
    for (name, reply) in replies {
        let dir = TempDir::new("framings");
        let sock = dir.join("d.sock");
        let daemon = DaemonDouble::start(&sock, vec![reply]);
        let r = run(
            &attachment_env("ADD", "/var/run/netns/cni-1"),
            &conf("0.4.0", &sock, &dir.join("q"), ""),
        );
        daemon.captured();
        assert_eq!(r.code, 0, "{name}: {}", r.stdout);
        assert_eq!(r.stdout, expected_add_stdout("0.4.0"), "{name}");
    }
}

#[test]
fn add_chained_after_prev_result_merges_and_fixes_indices() {
    // prevResult as bridge returns it, in each version's shape.
    let prev_1x = r#"{"cniVersion":"VER","interfaces":[{"name":"cnitest0","mac":"be:3d:86:e8:df:62"},{"name":"vethfe6fda8b","mac":"be:3d:86:e8:df:62"},{"name":"eth0","mac":"86:68:87:7c:56:5a","sandbox":"/proc/2945/ns/net"}],"ips":[{"interface":2,"address":"10.123.45.20/24","gateway":"10.123.45.1"}],"dns":{}}"#;
    let prev_0x = r#"{"cniVersion":"VER","interfaces":[{"name":"cnitest0","mac":"be:3d:86:e8:df:62"},{"name":"vethfe6fda8b","mac":"be:3d:86:e8:df:62"},{"name":"eth0","mac":"86:68:87:7c:56:5a","sandbox":"/proc/2945/ns/net"}],"ips":[{"version":"4","interface":2,"address":"10.123.45.20/24","gateway":"10.123.45.1"}],"dns":{}}"#;
    for version in VERSIONS {
        let dir = TempDir::new("chain");
        let sock = dir.join("d.sock");
        let prev = if version < "1.0.0" { prev_0x } else { prev_1x }.replace("VER", version);
        let base = conf(version, &sock, &dir.join("q"), "");
        let stdin = format!(r#"{},"prevResult":{prev}}}"#, &base[..base.len() - 1]);
        let daemon = DaemonDouble::start(&sock, vec![Reply::Length(200, DAEMON_RESULT.into())]);
        let r = run(&attachment_env("ADD", "/var/run/netns/cni-1"), &stdin);
        let captured = daemon.captured();
        assert_eq!(r.code, 0, "{version}: {}", r.stdout);
        // prevResult reaches the daemon too, inside config.
        assert_eq!(
            captured[0].json()["config"]["prevResult"],
            serde_json::from_str::<Value>(&prev).unwrap()
        );
        let out = r.json();
        assert_eq!(out["cniVersion"], version);
        let names: Vec<&str> = out["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["cnitest0", "vethfe6fda8b", "eth0", "tap90c45da1-2d", "eth0"],
            "{version}"
        );
        let ips = out["ips"].as_array().unwrap();
        let idx: Vec<u64> = ips
            .iter()
            .map(|i| i["interface"].as_u64().unwrap())
            .collect();
        assert_eq!(idx, [2, 4, 4], "{version}: prev keeps 2, ours 1 -> 1+3");
        let addrs: Vec<&str> = ips.iter().map(|i| i["address"].as_str().unwrap()).collect();
        assert_eq!(addrs, ["10.123.45.20/24", "10.0.0.5/24", "fd00::5/64"]);
        if version < "1.0.0" {
            let fams: Vec<&str> = ips.iter().map(|i| i["version"].as_str().unwrap()).collect();
            assert_eq!(fams, ["4", "4", "6"]);
        } else {
            assert!(ips.iter().all(|i| i.get("version").is_none()), "{version}");
        }
        assert_eq!(out["dns"], json!({"nameservers": ["10.0.0.2"]}));
    }
    // Exact output once, for 1.0.0.
    let dir = TempDir::new("chain-exact");
    let sock = dir.join("d.sock");
    let base = conf("1.0.0", &sock, &dir.join("q"), "");
    let stdin = format!(
        r#"{},"prevResult":{}}}"#,
        &base[..base.len() - 1],
        prev_1x.replace("VER", "1.0.0")
    );
    let daemon = DaemonDouble::start(&sock, vec![Reply::Chunked(200, DAEMON_RESULT.into(), 13)]);
    let r = run(&attachment_env("ADD", "/var/run/netns/cni-1"), &stdin);
    daemon.captured();
    assert_eq!(
        r.stdout,
        "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"cnitest0\",\"mac\":\"be:3d:86:e8:df:62\"},{\"name\":\"vethfe6fda8b\",\"mac\":\"be:3d:86:e8:df:62\"},{\"name\":\"eth0\",\"mac\":\"86:68:87:7c:56:5a\",\"sandbox\":\"/proc/2945/ns/net\"},{\"name\":\"tap90c45da1-2d\",\"mac\":\"fa:16:3e:11:22:33\"},{\"name\":\"eth0\",\"mac\":\"fa:16:3e:11:22:33\",\"sandbox\":\"/var/run/netns/cni-1\"}],\"ips\":[{\"interface\":2,\"address\":\"10.123.45.20/24\",\"gateway\":\"10.123.45.1\"},{\"interface\":4,\"address\":\"10.0.0.5/24\",\"gateway\":\"10.0.0.1\"},{\"interface\":4,\"address\":\"fd00::5/64\"}],\"routes\":[{\"dst\":\"0.0.0.0/0\",\"gw\":\"10.0.0.1\"}],\"dns\":{\"nameservers\":[\"10.0.0.2\"]}}\n"
    );
}

/// (name, verb, reply, expected code, text expected in msg)
fn daemon_error_cases() -> Vec<(&'static str, &'static str, Reply, u64, &'static str)> {
    vec![
        (
            "CniError body printed as-is",
            "ADD",
            Reply::Length(503, r#"{"code":11,"msg":"port for pod cnitest/pod-a not active yet","details":"waited 60s"}"#.into()),
            11,
            "port for pod cnitest/pod-a not active yet",
        ),
        (
            "CniError body in chunks",
            "ADD",
            Reply::Chunked(500, r#"{"code":104,"msg":"binding failed","details":"binding:vif_type=binding_failed"}"#.into(), 9),
            104,
            "binding failed",
        ),
        ("CHECK error as-is", "CHECK", Reply::Length(500, r#"{"code":3,"msg":"no such pod"}"#.into()), 3, "no such pod"),
        ("non-CniError body", "ADD", Reply::Length(500, "Internal Server Error".into()), 101, "HTTP 500"),
        ("code 0 is not a CniError", "DEL", Reply::Length(400, r#"{"code":0,"msg":"x"}"#.into()), 101, "HTTP 400"),
        ("404 empty", "CHECK", Reply::Length(404, String::new()), 101, "HTTP 404"),
        ("2xx garbage", "ADD", Reply::Length(200, "<html>".into()), 100, "invalid ADD response"),
        ("2xx wrong shape", "ADD", Reply::Length(200, r#"{"result":[1]}"#.into()), 100, "invalid ADD response"),
        ("ADD without result", "ADD", Reply::Length(200, r#"{"result":null}"#.into()), 100, "no result for ADD"),
        ("ADD empty body", "ADD", Reply::Length(200, String::new()), 100, "no result for ADD"),
        (
            "invalid result",
            "ADD",
            Reply::Length(200, r#"{"result":{"ips":[{"address":"10.0.0.5"}]}}"#.into()),
            102,
            "invalid result",
        ),
        (
            "index out of range",
            "ADD",
            Reply::Length(200, r#"{"result":{"interfaces":[{"name":"eth0"}],"ips":[{"interface":3,"address":"10.0.0.5/24"}]}}"#.into()),
            102,
            "invalid result",
        ),
        ("not HTTP", "ADD", Reply::Raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()), 100, "invalid HTTP response"),
        ("bad chunk", "ADD", Reply::Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n".to_vec()), 100, "invalid HTTP response"),
        ("hangup on ADD", "ADD", Reply::Hangup, 11, "failed while waiting for the response"),
        ("hangup on CHECK", "CHECK", Reply::Hangup, 11, "failed while waiting for the response"),
        (
            "truncated body",
            "ADD",
            Reply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"result\"".to_vec()),
            11,
            "failed while reading the response body",
        ),
    ]
}

#[test]
fn daemon_errors() {
    for (name, cmd, reply, code, text) in daemon_error_cases() {
        let dir = TempDir::new("derr");
        let sock = dir.join("d.sock");
        let daemon = DaemonDouble::start(&sock, vec![reply]);
        let r = run(&env_for(cmd), &conf("1.0.0", &sock, &dir.join("q"), ""));
        daemon.captured();
        let v = r.expect_error(code);
        assert_eq!(v["cniVersion"], "1.0.0", "{name}");
        assert!(v["msg"].as_str().unwrap().contains(text), "{name}: {v}");
        if name.contains("as-is") || name.contains("chunks") {
            let body: Value = serde_json::from_str(
                match &daemon_error_cases()
                    .into_iter()
                    .find(|c| c.0 == name)
                    .unwrap()
                    .2
                {
                    Reply::Length(_, b) | Reply::Chunked(_, b, _) => b,
                    _ => unreachable!(),
                },
            )
            .unwrap();
            assert_eq!(
                v["details"],
                body.get("details").cloned().unwrap_or(Value::Null),
                "{name}"
            );
        }
        // A queued DEL would be a bug for any of these.
        assert!(!dir.join("q").exists(), "{name}");
    }
}

#[test]
fn deadline_waiting_for_the_answer() {
    let dir = TempDir::new("deadline");
    let sock = dir.join("d.sock");
    let daemon = DaemonDouble::start(
        &sock,
        vec![Reply::Delay(
            Duration::from_secs(3),
            Box::new(Reply::Length(200, DAEMON_RESULT.into())),
        )],
    );
    let r = run(
        &attachment_env("ADD", "/var/run/netns/cni-1"),
        &conf("1.0.0", &sock, &dir.join("q"), r#""timeout_seconds":0.5,"#),
    );
    let v = r.expect_error(11);
    assert_eq!(
        v["msg"],
        "kuryr-daemon did not complete ADD within 0.5s: timed out waiting for the response"
    );
    assert!(
        r.elapsed >= Duration::from_millis(450) && r.elapsed < Duration::from_millis(2500),
        "{:?}",
        r.elapsed
    );
    daemon.captured();
}

#[test]
fn deadline_while_reading_the_body() {
    let dir = TempDir::new("deadline-body");
    let sock = dir.join("d.sock");
    let daemon = DaemonDouble::start(&sock, vec![Reply::StallInBody(Duration::from_secs(3))]);
    let r = run(
        &attachment_env("ADD", "/var/run/netns/cni-1"),
        &conf("1.1.0", &sock, &dir.join("q"), r#""timeout_seconds":0.6,"#),
    );
    let v = r.expect_error(11);
    assert_eq!(
        v["msg"],
        "kuryr-daemon did not complete ADD within 0.6s: timed out reading the response body"
    );
    assert!(r.elapsed < Duration::from_millis(2500), "{:?}", r.elapsed);
    daemon.captured();
}

#[test]
fn del_deadline_is_not_queued() {
    let dir = TempDir::new("del-deadline");
    let sock = dir.join("d.sock");
    let daemon = DaemonDouble::start(
        &sock,
        vec![Reply::Delay(
            Duration::from_secs(2),
            Box::new(Reply::Length(200, "{}".into())),
        )],
    );
    let r = run(
        &attachment_env("DEL", ""),
        &conf("1.0.0", &sock, &dir.join("q"), r#""timeout_seconds":0.3,"#),
    );
    let v = r.expect_error(11);
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("did not complete DEL within 0.3s"),
        "{v}"
    );
    assert!(
        !dir.join("q").exists(),
        "a live daemon's DEL is retried by the runtime, not queued"
    );
    daemon.captured();
}

#[test]
fn add_when_daemon_is_unreachable_is_code_11() {
    let dir = TempDir::new("unreach");
    // Socket file missing.
    let sock = dir.join("missing.sock");
    let r = run(
        &attachment_env("ADD", "/var/run/netns/cni-1"),
        &conf("1.0.0", &sock, &dir.join("q"), ""),
    );
    let v = r.expect_error(11);
    assert_eq!(
        v["msg"],
        format!("kuryr-daemon unreachable at {}: No such file or directory (os error 2); is kuryr-daemon running?", sock.display())
    );
    assert_eq!(
        v["details"],
        "ADD of container 90c45da12e2d4f6a interface eth0 was not sent"
    );

    // Socket file present, nobody listening: ECONNREFUSED.
    let sock = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    for cmd in ["ADD", "CHECK", "GC"] {
        let r = run(&env_for(cmd), &conf("1.1.0", &sock, &dir.join("q"), ""));
        let v = r.expect_error(11);
        assert!(
            v["msg"].as_str().unwrap().contains("Connection refused"),
            "{cmd}: {v}"
        );
        assert!(v["msg"]
            .as_str()
            .unwrap()
            .ends_with("is kuryr-daemon running?"));
    }
    assert!(!dir.join("q").exists());
}

fn queue_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn del_when_daemon_is_unreachable_is_queued() {
    let dir = TempDir::new("delq");
    let sock = dir.join("missing.sock");
    let queue = dir.join("var/lib/kuryr/del-queue");
    // ctr / CRI RemovePodSandbox style: empty CNI_NETNS, prevResult present.
    let base = conf("1.0.0", &sock, &queue, "");
    let stdin = format!(
        r#"{},"prevResult":{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"/proc/1/ns/net"}}],"ips":[{{"interface":0,"address":"10.0.0.5/24"}}]}}}}"#,
        &base[..base.len() - 1]
    );
    let before = kuryr_now_ms();
    let r = run(&attachment_env("DEL", ""), &stdin);
    r.expect_silent_success();
    assert!(r.stderr.contains("DEL queued in"), "{}", r.stderr);
    assert_eq!(
        queue_files(&queue),
        ["90c45da12e2d4f6a@eth0.json"],
        "no temporary left behind"
    );
    let entry =
        DelQueueEntry::from_json(&std::fs::read(queue.join("90c45da12e2d4f6a@eth0.json")).unwrap())
            .unwrap();
    assert_eq!(entry.format, 1);
    assert!(entry.queued_at_unix_ms >= before && entry.queued_at_unix_ms <= kuryr_now_ms());
    assert!(
        entry.reason.contains("kuryr-daemon unreachable"),
        "{}",
        entry.reason
    );
    assert_eq!(entry.request.command, kuryr_cni_api::CniCommand::Del);
    assert_eq!(entry.request.container_id, "90c45da12e2d4f6a");
    assert_eq!(entry.request.netns, "");
    assert_eq!(entry.request.ifname, "eth0");
    assert!(entry.request.args.contains("K8S_POD_NAMESPACE=cnitest"));
    assert_eq!(
        entry.request.config,
        serde_json::from_str::<Value>(&stdin).unwrap()
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(queue.join("90c45da12e2d4f6a@eth0.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&queue).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    // The second DEL (CRI calls it twice, the second without prevResult) replaces the entry.
    let r = run(&attachment_env("DEL", ""), &base);
    r.expect_silent_success();
    assert_eq!(queue_files(&queue), ["90c45da12e2d4f6a@eth0.json"]);
    let entry =
        DelQueueEntry::from_json(&std::fs::read(queue.join("90c45da12e2d4f6a@eth0.json")).unwrap())
            .unwrap();
    assert!(entry.request.config.get("prevResult").is_none());

    // Another attachment gets its own file.
    let mut env = attachment_env("DEL", "/run/netns/x");
    env.retain(|(k, _)| *k != "CNI_IFNAME");
    env.push(("CNI_IFNAME", "net1"));
    run(&env, &base).expect_silent_success();
    assert_eq!(
        queue_files(&queue),
        ["90c45da12e2d4f6a@eth0.json", "90c45da12e2d4f6a@net1.json"]
    );
}

#[test]
fn del_when_daemon_hangs_up_is_queued() {
    let dir = TempDir::new("delq-hangup");
    let sock = dir.join("d.sock");
    let queue = dir.join("q");
    let daemon = DaemonDouble::start(&sock, vec![Reply::Hangup]);
    let r = run(
        &attachment_env("DEL", "/run/netns/x"),
        &conf("0.4.0", &sock, &queue, ""),
    );
    assert_eq!(daemon.captured().len(), 1, "the DEL was sent first");
    r.expect_silent_success();
    assert_eq!(queue_files(&queue), ["90c45da12e2d4f6a@eth0.json"]);
}

#[test]
fn del_that_cannot_be_queued_is_code_11() {
    let dir = TempDir::new("delq-fail");
    let r = run(
        &attachment_env("DEL", ""),
        &conf(
            "1.0.0",
            &dir.join("missing.sock"),
            std::path::Path::new("/dev/null/queue"),
            "",
        ),
    );
    let v = r.expect_error(11);
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("the DEL could not be queued in /dev/null/queue"),
        "{v}"
    );
}

#[test]
fn del_with_reachable_daemon_is_not_queued() {
    for reply in [
        Reply::Length(200, r#"{"result":null}"#.into()),
        Reply::Length(200, String::new()),
        Reply::Chunked(200, "{}".into(), 1),
    ] {
        let dir = TempDir::new("del-ok");
        let sock = dir.join("d.sock");
        let daemon = DaemonDouble::start(&sock, vec![reply]);
        run(
            &attachment_env("DEL", ""),
            &conf("0.3.1", &sock, &dir.join("q"), ""),
        )
        .expect_silent_success();
        daemon.captured();
        assert!(!dir.join("q").exists());
    }
}

#[test]
fn status() {
    let dir = TempDir::new("status");
    // Unreachable.
    let r = run(
        &env_for("STATUS"),
        &conf("1.1.0", &dir.join("missing.sock"), &dir.join("q"), ""),
    );
    let v = r.expect_error(50);
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .starts_with("kuryr-daemon unreachable at"),
        "{v}"
    );
    assert_eq!(v["cniVersion"], "1.1.0");

    // (reply, expected code: 0 = success)
    let cases = vec![
        (Reply::Length(200, r#"{"result":null}"#.into()), 0),
        (
            Reply::Length(503, r#"{"code":50,"msg":"no ports in pool"}"#.into()),
            50,
        ),
        (
            Reply::Length(
                503,
                r#"{"code":51,"msg":"OVS down","details":"existing pods degraded"}"#.into(),
            ),
            51,
        ),
        (Reply::Length(503, "not ready".into()), 50),
        (Reply::Raw(b"garbage\r\n\r\n".to_vec()), 50),
        (Reply::Hangup, 50),
        (
            Reply::Delay(
                Duration::from_secs(2),
                Box::new(Reply::Length(200, "{}".into())),
            ),
            50,
        ),
    ];
    for (reply, code) in cases {
        let dir = TempDir::new("status-case");
        let sock = dir.join("d.sock");
        let label = format!("{reply:?}");
        let daemon = DaemonDouble::start(&sock, vec![reply]);
        let r = run(
            &env_for("STATUS"),
            &conf(
                "1.1.0",
                &sock,
                &dir.join("q"),
                r#""status_timeout_seconds":0.4,"#,
            ),
        );
        daemon.captured();
        if code == 0 {
            r.expect_silent_success();
        } else {
            r.expect_error(code);
        }
        assert!(
            r.elapsed < Duration::from_millis(1800),
            "{label}: {:?}",
            r.elapsed
        );
    }
}

#[test]
fn gc_forwards_valid_attachments() {
    let dir = TempDir::new("gc");
    let sock = dir.join("d.sock");
    let base = conf("1.1.0", &sock, &dir.join("q"), "");
    let stdin = format!(
        r#"{},"cni.dev/valid-attachments":[{{"containerID":"c1","ifname":"eth0"}},{{"containerID":"c2","ifname":"eth0"}}]}}"#,
        &base[..base.len() - 1]
    );
    let daemon = DaemonDouble::start(&sock, vec![Reply::Length(200, "{}".into())]);
    run(&env_for("GC"), &stdin).expect_silent_success();
    let req = daemon.captured()[0].json();
    assert_eq!(req["command"], "GC");
    let parsed: kuryr_cni_api::CniRequest = serde_json::from_value(req).unwrap();
    assert_eq!(
        parsed.valid_attachments(),
        vec![("c1".into(), "eth0".into()), ("c2".into(), "eth0".into())]
    );
}

#[test]
fn log_file_gets_the_log_and_stdout_only_the_result() {
    let dir = TempDir::new("log");
    let sock = dir.join("d.sock");
    let log = dir.join("kuryr-cni.log");
    let extra = format!(r#""log_file":"{}","debug":true,"#, log.display());
    let daemon = DaemonDouble::start(&sock, vec![Reply::Length(200, DAEMON_RESULT.into())]);
    let r = run(
        &attachment_env("ADD", "/var/run/netns/cni-1"),
        &conf("1.1.0", &sock, &dir.join("q"), &extra),
    );
    daemon.captured();
    assert_eq!(r.stdout, expected_add_stdout("1.1.0"));
    assert_eq!(r.stderr, "");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("DEBUG ADD cid=90c45da12e2d4f6a ifname=eth0"),
        "{text}"
    );
    assert!(text.contains("POST /v1/cni"), "{text}");
    assert!(
        text.contains(
            "INFO ADD cid=90c45da12e2d4f6a ifname=eth0 netns=\"/var/run/netns/cni-1\": ok in"
        ),
        "{text}"
    );

    // Errors are logged too; an unwritable log file changes nothing.
    let r = run(
        &attachment_env("ADD", "/var/run/netns/cni-1"),
        &conf("1.1.0", &dir.join("none.sock"), &dir.join("q"), &extra),
    );
    r.expect_error(11);
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("ERROR ADD"),
        "error logged"
    );
    let r = run(
        &attachment_env("ADD", "/var/run/netns/cni-1"),
        &conf(
            "1.1.0",
            &dir.join("none.sock"),
            &dir.join("q"),
            r#""log_file":"/dev/null/x.log","#,
        ),
    );
    r.expect_error(11);
}

fn kuryr_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
