//! What a real node survives, the stack and kuryr-rs survive (issue 18): ovs-vswitchd killed
//! with -9 while pods talk, pod to pod and pod to a Service (an Octavia/OVN load balancer, so
//! through the userspace conntrack's NAT, where vswitchd 3.1 once aborted). The stack's
//! supervisor restarts it (with the crash recorded), both kinds of traffic come back once it is
//! up, a pod created during the outage gets a working network, every pod then reaches every
//! other, and no other crash happened meanwhile.

use kuryr_e2e::kuryr::{self, Kuryr, Namespace};
use kuryr_e2e::{kubectl, must, run, state_dir};
use std::process::Output;
use std::time::{Duration, Instant};

fn pod_manifest(ns: &str, name: &str) -> serde_json::Value {
    kuryr::web_pod(ns, name, "kst-ovs")
}

fn pod_ip(ns: &str, pod: &str) -> String {
    must(kubectl().args([
        "get",
        "pod",
        "-n",
        ns,
        pod,
        "-o",
        "jsonpath={.status.podIP}",
    ]))
    .trim()
    .to_string()
}

fn exec(ns: &str, pod: &str, cmd: &[&str]) -> Output {
    run(kubectl().args(["exec", "-n", ns, pod, "--"]).args(cmd))
}

/// `n` HTTP/1.0 requests from `pod` to `ip:80`, `pause` seconds apart, each a new connection
/// (busybox nc: busybox-static's wget crashes here): the answering backend's hostname, or `FAIL`.
fn http_answers(ns: &str, pod: &str, ip: &str, n: usize, pause: f32) -> Vec<String> {
    let script = format!(
        "for i in $(seq {n}); do r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 {ip} 80 | tail -n 1); echo \"${{r:-FAIL}}\"; sleep {pause}; done"
    );
    must(kubectl().args(["exec", "-n", ns, pod, "--", "sh", "-c", &script]))
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `(transmitted, received)` from ping's summary line.
fn ping_counts(out: &Output) -> (u32, u32) {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default();
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn pods_survive_an_ovs_vswitchd_kill_9() {
    let Kuryr {
        mut daemon,
        controller: _controller,
    } = kuryr::start(&[]);
    let ns = Namespace::create("kst-ovs-");
    for n in ["a", "b"] {
        ns.apply_json(n, &pod_manifest(&ns.0, n));
    }
    // A Service over a and b (and c, later), and a client of it.
    ns.apply_json("d", &kuryr::web_pod(&ns.0, "d", "kst-ovs-client"));
    ns.apply_json(
        "svc",
        &serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns.0},
                            "spec": {"selector": {"app": "kst-ovs"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    must(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=120s",
        "-n",
        &ns.0,
        "pod",
        "--all",
    ]));
    let (ip_a, ip_b) = (pod_ip(&ns.0, "a"), pod_ip(&ns.0, "b"));
    let vip = must(kubectl().args([
        "get",
        "svc",
        "-n",
        &ns.0,
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]))
    .trim()
    .to_string();
    kuryr_e2e::wait_for(
        "the Service to answer from both backends",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let got = http_answers(&ns.0, "d", &vip, 6, 0.0);
            let hosts: std::collections::BTreeSet<&String> =
                got.iter().filter(|g| *g != "FAIL").collect();
            (hosts.len() == 2).then_some(())
        },
    );
    let before = exec(&ns.0, "a", &["ping", "-c", "3", "-W", "2", &ip_b]);
    assert!(
        before.status.success(),
        "a -> b before the kill: {}",
        String::from_utf8_lossy(&before.stdout)
    );

    // 30 s of pings a -> b (5 per second) across the kill.
    let pinger = {
        let (ns, ip_b) = (ns.0.clone(), ip_b.clone());
        std::thread::spawn(move || {
            exec(
                &ns,
                "a",
                &["ping", "-c", "150", "-i", "0.2", "-W", "1", &ip_b],
            )
        })
    };
    // ~30 s of connections d -> Service (each a new connection through OVN's load balancer NAT).
    let clients = {
        let (ns, vip) = (ns.0.clone(), vip.clone());
        std::thread::spawn(move || http_answers(&ns, "d", &vip, 120, 0.2))
    };
    // Pacing of the traffic probes: 3 s of traffic before the kill.
    std::thread::sleep(Duration::from_secs(3));
    let crashes_before = std::fs::read_to_string(state_dir().join("crashes"))
        .unwrap_or_default()
        .lines()
        .count();
    let killed_at = Instant::now();
    let old = kuryr_e2e::kill_vswitchd("e2e ovs_restart: kill -9 under pod traffic");
    // A pod created during the outage: its ADD must not fail (the port goes into OVSDB; vswitchd
    // attaches it once back) or fail retryably and be retried by kubelet.
    ns.apply_json("c", &pod_manifest(&ns.0, "c"));

    let back = kuryr_e2e::wait_vswitchd_restarted(old);
    let outage = killed_at.elapsed();
    eprintln!("ovs-vswitchd {old} killed, {back} answering {outage:?} later");
    let crashes = std::fs::read_to_string(state_dir().join("crashes")).unwrap_or_default();
    let new: Vec<&str> = crashes.lines().skip(crashes_before).collect();
    assert!(
        new.iter()
            .any(|l| l.contains("ovs-vswitchd killed by SIGKILL")),
        "the supervisor recorded no ovs-vswitchd crash: {new:?}"
    );

    let answers = clients.join().expect("client");
    let failed = answers.iter().filter(|a| *a == "FAIL").count();
    eprintln!(
        "d -> Service {vip} across the kill: {}/{} connections answered",
        answers.len() - failed,
        answers.len()
    );
    assert!(
        answers.len() >= 110,
        "the Service client did not run: {answers:?}"
    );
    assert!(
        answers.iter().rev().take(10).all(|a| a != "FAIL"),
        "Service traffic did not come back after the restart (last 10 connections): {answers:?}"
    );
    assert!(
        failed <= answers.len() / 2,
        "more than half of the Service connections failed: {answers:?}"
    );
    let ping = pinger.join().expect("pinger");
    let (sent, got) = ping_counts(&ping);
    eprintln!("a -> b across the kill: {got}/{sent} replies (outage {outage:?})");
    assert!(
        sent >= 140,
        "ping did not run: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // Traffic came back: the last pings were answered (ping prints one line per reply).
    let text = String::from_utf8_lossy(&ping.stdout);
    let last_seq = text
        .lines()
        .filter_map(|l| {
            l.split("seq=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse::<u32>().ok())
        })
        .max()
        .unwrap_or(0);
    assert!(
        last_seq >= 140,
        "a -> b traffic did not come back after the restart (last reply seq {last_seq}):\n{text}"
    );
    assert!(
        got >= sent / 2,
        "more than half of the pings lost ({got}/{sent}): the outage lasted too long\n{text}"
    );

    must(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=120s",
        "-n",
        &ns.0,
        "pod",
        "c",
    ]));
    let ip_c = pod_ip(&ns.0, "c");
    for (from, to) in [
        ("a", &ip_b),
        ("b", &ip_a),
        ("c", &ip_a),
        ("a", &ip_c),
        ("b", &ip_c),
    ] {
        let p = exec(&ns.0, from, &["ping", "-c", "3", "-W", "2", to]);
        assert!(
            p.status.success(),
            "{from} -> {to} after the restart: {}",
            String::from_utf8_lossy(&p.stdout)
        );
    }
    let got = http_answers(&ns.0, "c", &vip, 6, 0.0);
    assert!(
        got.iter().all(|g| g != "FAIL"),
        "c (created during the outage) -> Service: {got:?}"
    );
    let crashes = std::fs::read_to_string(state_dir().join("crashes")).unwrap_or_default();
    let others: Vec<&str> = crashes
        .lines()
        .skip(crashes_before)
        .filter(|l| !l.contains("ovs-vswitchd killed by SIGKILL"))
        .collect();
    assert!(
        others.is_empty(),
        "services crashed during the test besides the deliberate kill: {others:?}"
    );
    assert!(
        daemon.alive(),
        "kuryr-daemon died with vswitchd:\n{}",
        daemon.log_tail(40)
    );
}
