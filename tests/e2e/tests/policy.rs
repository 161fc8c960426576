//! NetworkPolicy on the real stack (issue 14): kuryr-controller with the pod and policy handlers
//! and kuryr-daemon run as host services, kubelet creates busybox pods, Neutron (ML2/OVN)
//! enforces the security groups and address groups the controller makes. Every check is real
//! TCP traffic between pods (`nc`; busybox-static's wget crashes here), polled until the wanted
//! outcome (no fixed sleeps), and each convergence time is printed.
//!
//! Covered, in one namespace `A` (server side) and one `B` (labelled `team=b`):
//! default deny ingress (and a pod created under it is denied at once: its port is created with
//! the policy's groups); allow from a podSelector (by number, then edited in place to a named
//! port); from a namespaceSelector; ipBlock with except; a pod relabelled into and out of the
//! allowed set (time to converge printed); egress deny, then allow to a podSelector; deletion
//! restoring access; afterwards no security group or address group of the policies is left in
//! Neutron and the pods' ports are back on the default group.

use kuryr_e2e::deploy::kjson;
use kuryr_e2e::kuryr::{self, ConfigFile, Namespace};
use kuryr_e2e::vm::Cloud;
use kuryr_e2e::{kubectl, must, run, stack_env, wait_for, Proc};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long a policy change may take to show in traffic before the test fails (the goal is
/// sub-second; the printed times are what to look at).
const CONVERGE: Duration = Duration::from_secs(30);

/// One test at a time owns the node's kuryr-daemon (the conflist): hack/test runs two at once.
fn node_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

struct Setup {
    _conf: ConfigFile,
    daemon: Proc,
    controller: Proc,
}

fn start(cloud: &Cloud) -> Setup {
    start_with(cloud, "", "")
}

/// [`start`] with more handlers (e.g. `,service,endpoints,kuryrloadbalancer`) and more
/// `[kubernetes]` options.
fn start_with(cloud: &Cloud, more_handlers: &str, more_options: &str) -> Setup {
    let env = stack_env();
    // The node reaches pods from its address on the pod network (its Neutron port: kubelet
    // probes) and from the external network: both are infrastructure, allowed under any policy.
    let ext = cloud
        .rt
        .block_on(cloud.neutron.get_subnet(&env["EXT_SUBNET_ID"]))
        .expect("external subnet");
    let node_ip = std::fs::read_to_string(kuryr_e2e::state_dir().join("node-port.env"))
        .expect("node-port.env (hack/stack/node-port.sh)")
        .lines()
        .find_map(|l| l.strip_prefix("NODE_PORT_IP=").map(str::to_string))
        .expect("NODE_PORT_IP");
    let conf = kuryr::config_with(
        "np",
        &format!(
            "[kubernetes]\nenabled_handlers = vif,kuryrport,policy,kuryrnetworkpolicy{more_handlers}\n\
             endpoints_driver_octavia_provider = ovn\n{more_options}\
             [network_policy]\nallow_cidrs = {},{node_ip}/32\n",
            ext.cidr
        ),
    );
    let mut daemon = kuryr::spawn_daemon(&conf.0, &[]);
    let controller = kuryr::spawn_controller_with(
        &conf.0,
        &[
            "--health-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    kuryr::wait_daemon_ready(&mut daemon);
    Setup {
        _conf: conf,
        daemon,
        controller,
    }
}

/// A busybox pod serving its hostname over HTTP on 8080 (container port named `http`) and 9090
/// (unnamed).
fn server(ns: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "mkdir -p /www && hostname > /www/index.html && httpd -p 9090 -h /www && exec httpd -f -p 8080 -h /www"],
                "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9090}]
            }]
        }
    })
}

fn client(ns: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]
        }
    })
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn pod_ip(ns: &str, pod: &str) -> String {
    kjson(kubectl().args(["get", "pod", "-n", ns, pod, "-o", "json"]))["status"]["podIP"]
        .as_str()
        .expect("podIP")
        .to_string()
}

fn wait_ready(ns: &str) {
    let out = run(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=120s",
        "-n",
        ns,
        "pod",
        "--all",
    ]));
    if !out.status.success() {
        let d = run(kubectl().args(["describe", "pods", "-n", ns]));
        panic!(
            "pods of {ns} not Ready: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&d.stdout)
        );
    }
}

/// Whether `ns/from` gets an HTTP answer from `ip:port` (one connection, 1 s timeout).
fn reach(ns: &str, from: &str, ip: &str, port: u16) -> bool {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 {ip} {port}");
    exec_out(ns, from, &script).contains("200 OK")
}

/// What `script` run in `ns/pod` printed (its failure is in what it printed, or did not); a
/// failed `kubectl exec` panics ([`kuryr_e2e::exec_probe`]), it is no "denied".
fn exec_out(ns: &str, pod: &str, script: &str) -> String {
    kuryr_e2e::exec_probe(ns, pod, script).1
}

/// Polls until `ns/from` → `ip:port` is `want` (reachable or not); returns how long it took.
fn converge(what: &str, ns: &str, from: &str, ip: &str, port: u16, want: bool) -> Duration {
    let t0 = Instant::now();
    wait_for(what, CONVERGE, Duration::from_millis(50), || {
        (reach(ns, from, ip, port) == want).then_some(())
    });
    let took = t0.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

fn check(what: &str, ns: &str, from: &str, ip: &str, port: u16, want: bool) {
    assert_eq!(
        reach(ns, from, ip, port),
        want,
        "{what}: {ns}/{from} -> {ip}:{port} should be {}",
        if want { "allowed" } else { "denied" }
    );
}

fn label(ns: &str, pod: &str, kv: &str) {
    must(kubectl().args(["label", "pod", "-n", ns, pod, kv, "--overwrite"]));
}

fn delete_policy(ns: &str, name: &str) {
    must(kubectl().args([
        "delete",
        "networkpolicy",
        "-n",
        ns,
        name,
        "--wait=true",
        "--timeout=60s",
    ]));
}

/// Security groups and address groups whose description names a policy of `ns`.
fn neutron_leftovers(cloud: &Cloud, ns: &str) -> Vec<String> {
    let owner = format!(", {ns}/");
    let q = kuryr_openstack::Query::new();
    let sgs = cloud
        .rt
        .block_on(cloud.neutron.list_security_groups(&q))
        .expect("list security groups");
    let ags = cloud
        .rt
        .block_on(cloud.neutron.list_address_groups(&q))
        .expect("list address groups");
    sgs.iter()
        .filter(|g| g.description.contains(&owner))
        .map(|g| format!("security group {} {}", g.id, g.name))
        .chain(
            ags.iter()
                .filter(|g| g.description.contains(&owner))
                .map(|g| format!("address group {} {}", g.id, g.name)),
        )
        .collect()
}

#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn network_policies_are_enforced_by_neutron_and_converge_fast() {
    let _node = node_lock();
    let cloud = Cloud::connect();
    let s = start(&cloud);
    let env = stack_env();
    let a = Namespace::create("kst-np-a-");
    let b = Namespace::create("kst-np-b-");
    must(kubectl().args(["label", "namespace", &b.0, "team=b"]));
    let (na, nb) = (a.0.clone(), b.0.clone());
    a.apply_json("server", &server(&na, "server", json!({"app": "server"})));
    a.apply_json(
        "client-a",
        &client(&na, "client-a", json!({"role": "client"})),
    );
    a.apply_json("other-a", &client(&na, "other-a", json!({"role": "other"})));
    b.apply_json(
        "client-b",
        &client(&nb, "client-b", json!({"role": "client"})),
    );
    b.apply_json(
        "server-b",
        &server(&nb, "server-b", json!({"app": "server-b"})),
    );
    wait_ready(&na);
    wait_ready(&nb);
    let srv = pod_ip(&na, "server");
    let srv_b = pod_ip(&nb, "server-b");
    let other_ip = pod_ip(&na, "other-a");

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // No policy: everything open.
        check("no policy", &na, "client-a", &srv, 8080, true);
        check("no policy", &na, "other-a", &srv, 8080, true);
        check("no policy", &nb, "client-b", &srv, 9090, true);

        // Default deny ingress in A.
        a.apply_json(
            "deny",
            &policy(
                &na,
                "deny",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            ),
        );
        converge("default deny ingress", &na, "other-a", &srv, 8080, false);
        check("default deny ingress", &na, "client-a", &srv, 8080, false);
        check("default deny ingress", &nb, "client-b", &srv, 8080, false);
        // Egress stays open (the policy is ingress-only).
        check(
            "default deny ingress leaves egress",
            &na,
            "client-a",
            &srv_b,
            8080,
            true,
        );
        // A pod created now is never open: its port is created with the policy's groups.
        a.apply_json("late", &server(&na, "late", json!({"app": "late"})));
        must(kubectl().args([
            "wait",
            "--for=condition=Ready",
            "--timeout=120s",
            "-n",
            &na,
            "pod/late",
        ]));
        let late = pod_ip(&na, "late");
        check(
            "a new pod under default deny, at once",
            &na,
            "other-a",
            &late,
            8080,
            false,
        );
        let late_uid = kjson(kubectl().args(["get", "pod", "-n", &na, "late", "-o", "json"]))
            ["metadata"]["uid"]
            .as_str()
            .expect("uid")
            .to_string();
        let late_port = cloud.ports_of_device(&late_uid);
        assert_eq!(late_port.len(), 1, "{late_port:?}");
        assert!(
            !late_port[0].security_groups.contains(&env["POD_SG_ID"]),
            "the new pod's port carries the default (open) group: {:?}",
            late_port[0].security_groups
        );

        // Allow from a podSelector, by port number.
        let allow = |ports: Value| {
            policy(
                &na,
                "allow-client",
                json!({"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": ports}]}),
            )
        };
        a.apply_json("allow-client", &allow(json!([{"port": 9090}])));
        converge(
            "allow from podSelector (9090)",
            &na,
            "client-a",
            &srv,
            9090,
            true,
        );
        check(
            "podSelector: other port",
            &na,
            "client-a",
            &srv,
            8080,
            false,
        );
        check("podSelector: other pod", &na, "other-a", &srv, 9090, false);
        check(
            "podSelector: other namespace",
            &nb,
            "client-b",
            &srv,
            9090,
            false,
        );

        // Edited in place to the named port `http` (8080).
        a.apply_json("allow-client", &allow(json!([{"port": "http"}])));
        converge(
            "named port after an edit in place",
            &na,
            "client-a",
            &srv,
            8080,
            true,
        );
        converge(
            "the old port closed by the edit",
            &na,
            "client-a",
            &srv,
            9090,
            false,
        );

        // From a namespaceSelector.
        a.apply_json(
            "allow-team-b",
            &policy(
                &na,
                "allow-team-b",
                json!({"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]}),
            ),
        );
        converge(
            "allow from namespaceSelector",
            &nb,
            "client-b",
            &srv,
            9090,
            true,
        );
        check(
            "namespaceSelector: not A's pods",
            &na,
            "other-a",
            &srv,
            9090,
            false,
        );
        // The namespace losing its label loses the access.
        must(kubectl().args(["label", "namespace", &nb, "team=c", "--overwrite"]));
        converge(
            "namespace relabelled out",
            &nb,
            "client-b",
            &srv,
            9090,
            false,
        );
        must(kubectl().args(["label", "namespace", &nb, "team=b", "--overwrite"]));
        converge(
            "namespace relabelled back",
            &nb,
            "client-b",
            &srv,
            9090,
            true,
        );
        delete_policy(&na, "allow-team-b");
        converge(
            "namespaceSelector policy deleted",
            &nb,
            "client-b",
            &srv,
            9090,
            false,
        );

        // ipBlock with except: the pod network but other-a.
        a.apply_json(
            "allow-block",
            &policy(
                &na,
                "allow-block",
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                       "ingress": [{"from": [{"ipBlock": {"cidr": env["POD_CIDR"], "except": [format!("{other_ip}/32")]}}]}]}),
            ),
        );
        converge("allow from ipBlock", &nb, "client-b", &srv, 9090, true);
        check("ipBlock except", &na, "other-a", &srv, 9090, false);
        delete_policy(&na, "allow-block");
        converge("ipBlock policy deleted", &nb, "client-b", &srv, 9090, false);

        // A pod relabelled into the allowed set and out again.
        label(&na, "other-a", "role=client");
        let into = converge(
            "pod relabelled into the allowed set",
            &na,
            "other-a",
            &srv,
            8080,
            true,
        );
        label(&na, "other-a", "role=other");
        let out = converge(
            "pod relabelled out of the allowed set",
            &na,
            "other-a",
            &srv,
            8080,
            false,
        );
        eprintln!("label change → enforced: into {into:?}, out of {out:?} (each includes one probe, up to 1 s when denied)");

        // Egress: client-a may send nowhere, then only to the server.
        let egress = |rules: Value| {
            policy(
                &na,
                "egress",
                json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"], "egress": rules}),
            )
        };
        a.apply_json("egress", &egress(json!([])));
        converge("egress deny", &na, "client-a", &srv_b, 8080, false);
        check(
            "egress deny: to A's server too",
            &na,
            "client-a",
            &srv,
            8080,
            false,
        );
        a.apply_json(
            "egress",
            &egress(json!([{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}], "ports": [{"port": 8080}]}])),
        );
        converge(
            "egress allow to a podSelector",
            &na,
            "client-a",
            &srv,
            8080,
            true,
        );
        check(
            "egress allow: elsewhere still denied",
            &na,
            "client-a",
            &srv_b,
            8080,
            false,
        );
        check(
            "egress policy does not touch other-a",
            &na,
            "other-a",
            &srv_b,
            8080,
            true,
        );

        // Deleting every policy restores access.
        let t0 = Instant::now();
        must(kubectl().args([
            "delete",
            "networkpolicy",
            "--all",
            "-n",
            &na,
            "--wait=true",
            "--timeout=60s",
        ]));
        converge(
            "policies deleted: ingress open again",
            &na,
            "other-a",
            &srv,
            8080,
            true,
        );
        converge(
            "policies deleted: egress open again",
            &na,
            "client-a",
            &srv_b,
            8080,
            true,
        );
        converge(
            "policies deleted: the late pod open",
            &na,
            "other-a",
            &late,
            8080,
            true,
        );
        eprintln!("all policies deleted → open: {:?}", t0.elapsed());
        check("policies deleted", &nb, "client-b", &srv, 9090, true);

        // Nothing left: KuryrNetworkPolicies, Neutron groups and address groups; default group on the ports.
        knps_gone(&na);
        let left = neutron_leftovers(&cloud, &na);
        assert!(
            left.is_empty(),
            "left in Neutron after the policies were deleted: {left:?}"
        );
        for pod in ["server", "client-a", "other-a", "late"] {
            let uid = kjson(kubectl().args(["get", "pod", "-n", &na, pod, "-o", "json"]))
                ["metadata"]["uid"]
                .as_str()
                .expect("uid")
                .to_string();
            let ports = cloud.ports_of_device(&uid);
            assert_eq!(ports.len(), 1, "{pod}: {ports:?}");
            assert_eq!(
                ports[0].security_groups,
                [env["POD_SG_ID"].clone()],
                "{pod}'s port is back on the default group"
            );
        }
    }));
    finish(s, result, [a, b]);
}

/// The end of a policy test: on failure the KuryrNetworkPolicies and the controller's log, then
/// the panic again; otherwise kuryr must still run. The pods and then the namespaces go while the
/// controller still runs (their finalizers are its), then the controller and the daemon.
fn finish(mut s: Setup, result: std::thread::Result<()>, namespaces: [Namespace; 2]) {
    if result.is_err() {
        let knp = run(kubectl().args(["get", "kuryrnetworkpolicies", "-A", "-o", "yaml"]));
        eprintln!(
            "KuryrNetworkPolicies:\n{}",
            String::from_utf8_lossy(&knp.stdout)
        );
        eprintln!("controller:\n{}", s.controller.log_tail(80));
    } else {
        assert!(s.daemon.alive() && s.controller.alive(), "kuryr crashed");
    }
    for ns in &namespaces {
        let _ = run(kubectl().args([
            "delete",
            "pods",
            "--all",
            "-n",
            &ns.0,
            "--wait=true",
            "--timeout=60s",
        ]));
    }
    // The namespaces too while the controller runs: with namespace networks their KuryrNetworks'
    // finalizers (network, subnet, router interface) are its.
    for ns in &namespaces {
        let _ = run(kubectl().args([
            "delete",
            "namespace",
            &ns.0,
            "--wait=true",
            "--timeout=120s",
        ]));
    }
    drop(namespaces);
    s.controller.stop();
    s.daemon.stop();
    // A failed test cleaned up like a passing one first (the finalizers of its pods, KuryrPorts
    // and KuryrNetworkPolicies are the controller's: without it the namespaces stay Terminating).
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Waits until `ns` has no KuryrNetworkPolicy left.
fn knps_gone(ns: &str) {
    wait_for(
        "KuryrNetworkPolicies gone",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let k = kjson(kubectl().args(["get", "kuryrnetworkpolicies", "-n", ns, "-o", "json"]));
            k["items"]
                .as_array()
                .is_some_and(|a| a.is_empty())
                .then_some(())
        },
    );
}

/// A busybox pod serving HTTP on 8080 and 9090; container port `web` is `web` (8080 or 9090),
/// so a named port means a different number on different pods.
fn server_named(ns: &str, name: &str, labels: Value, web: u16) -> Value {
    let other = if web == 8080 { 9090 } else { 8080 };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "mkdir -p /www && hostname > /www/index.html && httpd -p 9090 -h /www && exec httpd -f -p 8080 -h /www"],
                "ports": [{"name": "web", "containerPort": web}, {"containerPort": other}]
            }]
        }
    })
}

/// A UDP echo server (`pong <datagram>`) on `port` in `ns/pod`'s netns, run by the host's
/// python3 (busybox has no UDP server); killed on drop.
struct UdpEcho(std::process::Child);

impl UdpEcho {
    fn start(ns: &str, pod: &str, port: u16) -> UdpEcho {
        let pid = kuryr_e2e::pod_pid(ns, pod);
        let code = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\nwhile True:\n d,a=s.recvfrom(512)\n s.sendto(b'pong '+d,a)\n"
        );
        let child = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "python3", "-c", &code])
            .spawn()
            .expect("spawn the UDP echo server");
        UdpEcho(child)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `ns/from` gets an answer from the UDP echo at `ip:port`: one datagram sent from the
/// pod's netns by the host's python3 (busybox's nc has no UDP), 1 s for the answer.
fn reach_udp(ns: &str, from: &str, ip: &str, port: u16) -> bool {
    let pid = kuryr_e2e::pod_pid(ns, from);
    let code = format!(
        "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(1)\ns.sendto(b'ping',('{ip}',{port}))\ntry:\n sys.exit(0 if s.recv(512)==b'pong ping' else 3)\nexcept OSError:\n sys.exit(3)\n"
    );
    // 0: answered; 3: no (right) answer; anything else: the probe itself failed.
    let out = run(std::process::Command::new("nsenter").args([
        "-t",
        &pid.to_string(),
        "-n",
        "python3",
        "-c",
        &code,
    ]));
    match out.status.code() {
        Some(0) => true,
        Some(3) => false,
        _ => panic!(
            "UDP probe {ns}/{from} -> {ip}:{port} did not run ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Whether this host (the node) gets an HTTP answer from `ip:port`.
fn reach_from_host(ip: &str, port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(addr) = format!("{ip}:{port}").parse::<std::net::SocketAddr>() else {
        return false;
    };
    let Ok(mut c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out.contains("200 OK")
}

/// Polls `probe` until it is `want` (within [`CONVERGE`]); prints how long it took.
fn converge_with(what: &str, want: bool, probe: impl Fn() -> bool) -> Duration {
    let t0 = Instant::now();
    wait_for(what, CONVERGE, Duration::from_millis(50), || {
        (probe() == want).then_some(())
    });
    let took = t0.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

/// The rest of the reachability matrix (issue 14), each cell real traffic that can fail: both
/// selectors in one peer, `endPort`, a named port that is a different number on each selected
/// pod, two overlapping policies (union, and one deleted), UDP, through a Service's Octavia VIP
/// (the OVN provider keeps the client's address, so the backend's policy decides), and from the
/// node (allowed through `[network_policy] allow_cidrs`, so kubelet probes keep working).
#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn network_policy_matrix_selectors_ports_udp_service_vip_and_host() {
    policy_matrix(",service,endpoints,kuryrloadbalancer", "");
}

/// The same matrix with the namespace subnet driver: each namespace on its own Neutron network
/// and subnet (from the `kuryr-namespaces` pool, routed by `kuryr-router`), so every peer across
/// namespaces is routed and the Service's members are on two other subnets than its VIP.
#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn network_policy_matrix_with_namespace_networks() {
    policy_matrix(
        ",service,endpoints,kuryrloadbalancer,namespace,kuryrnetwork",
        "pod_subnets_driver = namespace\n",
    );
}

fn policy_matrix(handlers: &str, options: &str) {
    let _node = node_lock();
    let cloud = Cloud::connect();
    let s = start_with(&cloud, handlers, options);
    let a = Namespace::create("kst-npm-a-");
    let b = Namespace::create("kst-npm-b-");
    must(kubectl().args(["label", "namespace", &b.0, "team=b"]));
    let (na, nb) = (a.0.clone(), b.0.clone());
    a.apply_json(
        "s1",
        &server_named(&na, "s1", json!({"app": "server"}), 8080),
    );
    a.apply_json(
        "s2",
        &server_named(&na, "s2", json!({"app": "server"}), 9090),
    );
    a.apply_json(
        "client-a",
        &client(&na, "client-a", json!({"role": "client"})),
    );
    a.apply_json("other-a", &client(&na, "other-a", json!({"role": "other"})));
    b.apply_json(
        "client-b",
        &client(&nb, "client-b", json!({"role": "client"})),
    );
    b.apply_json("plain-b", &client(&nb, "plain-b", json!({"role": "other"})));
    wait_ready(&na);
    wait_ready(&nb);
    let (s1, s2) = (pod_ip(&na, "s1"), pod_ip(&na, "s2"));
    let _udp = UdpEcho::start(&na, "s1", 5353);

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "the UDP echo to answer",
            CONVERGE,
            Duration::from_millis(200),
            || reach_udp(&na, "client-a", &s1, 5353).then_some(()),
        );
        check("no policy: other-a", &na, "other-a", &s1, 8080, true);
        a.apply_json(
            "deny",
            &policy(
                &na,
                "deny",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            ),
        );
        converge("default deny ingress", &na, "other-a", &s1, 8080, false);
        assert!(
            !reach_udp(&na, "client-a", &s1, 5353),
            "UDP open under default deny"
        );

        // The node still reaches the pods (allow_cidrs).
        converge_with("from the node under default deny", true, || {
            reach_from_host(&s1, 8080)
        });

        // namespaceSelector and podSelector in one peer: both must match.
        a.apply_json(
            "both",
            &policy(
                &na,
                "both",
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}},
                                              "podSelector": {"matchLabels": {"role": "client"}}}],
                                    "ports": [{"port": 8080}]}]}),
            ),
        );
        converge(
            "both selectors: client in team=b",
            &nb,
            "client-b",
            &s1,
            8080,
            true,
        );
        check(
            "both selectors: other pod in team=b",
            &nb,
            "plain-b",
            &s1,
            8080,
            false,
        );
        check(
            "both selectors: client in A",
            &na,
            "client-a",
            &s1,
            8080,
            false,
        );
        delete_policy(&na, "both");
        converge("both selectors deleted", &nb, "client-b", &s1, 8080, false);

        // endPort: 9000-9100 opens 9090, not 8080.
        a.apply_json(
            "range",
            &policy(
                &na,
                "range",
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                    "ports": [{"protocol": "TCP", "port": 9000, "endPort": 9100}]}]}),
            ),
        );
        converge("endPort range: 9090", &na, "client-a", &s1, 9090, true);
        check(
            "endPort range: 8080 outside",
            &na,
            "client-a",
            &s1,
            8080,
            false,
        );
        delete_policy(&na, "range");
        converge("endPort policy deleted", &na, "client-a", &s1, 9090, false);

        // A named port: `web` is 8080 on s1 and 9090 on s2.
        a.apply_json(
            "named",
            &policy(
                &na,
                "named",
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                    "ports": [{"port": "web"}]}]}),
            ),
        );
        converge("named port on s1 (8080)", &na, "client-a", &s1, 8080, true);
        converge("named port on s2 (9090)", &na, "client-a", &s2, 9090, true);
        check(
            "named port: s1's 9090 is not web",
            &na,
            "client-a",
            &s1,
            9090,
            false,
        );
        check(
            "named port: s2's 8080 is not web",
            &na,
            "client-a",
            &s2,
            8080,
            false,
        );

        // A second policy over the same pods: the union; deleting one keeps the other.
        a.apply_json(
            "other-9090",
            &policy(
                &na,
                "other-9090",
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "other"}}}],
                                    "ports": [{"port": 9090}]}]}),
            ),
        );
        converge("overlap: other-a to 9090", &na, "other-a", &s1, 9090, true);
        check("overlap: other-a to 8080", &na, "other-a", &s1, 8080, false);
        check(
            "overlap: client-a keeps web",
            &na,
            "client-a",
            &s1,
            8080,
            true,
        );
        check(
            "overlap: client-a not 9090 on s1",
            &na,
            "client-a",
            &s1,
            9090,
            false,
        );
        delete_policy(&na, "named");
        converge("overlap: named deleted", &na, "client-a", &s1, 8080, false);
        check(
            "overlap: the other policy stays",
            &na,
            "other-a",
            &s1,
            9090,
            true,
        );
        delete_policy(&na, "other-9090");

        // UDP.
        a.apply_json(
            "udp",
            &policy(
                &na,
                "udp",
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                    "ports": [{"protocol": "UDP", "port": 5353}]}]}),
            ),
        );
        converge_with("UDP allowed from client-a", true, || {
            reach_udp(&na, "client-a", &s1, 5353)
        });
        assert!(!reach_udp(&na, "other-a", &s1, 5353), "UDP open to other-a");
        check("UDP policy opens no TCP", &na, "client-a", &s1, 8080, false);
        delete_policy(&na, "udp");
        converge_with("UDP policy deleted", false, || {
            reach_udp(&na, "client-a", &s1, 5353)
        });

        // Through a Service VIP: the backends' policy decides, by the client's own address.
        a.apply_json(
            "web",
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": na},
                    "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        );
        a.apply_json(
            "svc-allow",
            &policy(
                &na,
                "svc-allow",
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                    "ports": [{"port": 8080}]}]}),
            ),
        );
        let vip = kjson(kubectl().args(["get", "service", "-n", &na, "web", "-o", "json"]))["spec"]
            ["clusterIP"]
            .as_str()
            .expect("clusterIP")
            .to_string();
        let t = Instant::now();
        wait_for(
            "the Service VIP to answer client-a",
            Duration::from_secs(120),
            Duration::from_millis(200),
            || reach(&na, "client-a", &vip, 80).then_some(()),
        );
        eprintln!(
            "Service VIP answered client-a {:?} after the Service was created",
            t.elapsed()
        );
        for _ in 0..3 {
            check(
                "through the VIP: other-a denied by the backends' policy",
                &na,
                "other-a",
                &vip,
                80,
                false,
            );
            check(
                "through the VIP: client-a allowed",
                &na,
                "client-a",
                &vip,
                80,
                true,
            );
        }
        must(kubectl().args([
            "delete",
            "service",
            "-n",
            &na,
            "web",
            "--wait=true",
            "--timeout=120s",
        ]));

        must(kubectl().args([
            "delete",
            "networkpolicy",
            "--all",
            "-n",
            &na,
            "--wait=true",
            "--timeout=60s",
        ]));
        converge("all deleted: open again", &na, "other-a", &s1, 8080, true);
        assert!(reach_udp(&na, "other-a", &s1, 5353), "UDP not open again");
        knps_gone(&na);

        egress_deny_but_dns_and_api(&a, &s1);
        knps_gone(&na);
        let left = neutron_leftovers(&cloud, &na);
        assert!(left.is_empty(), "left in Neutron: {left:?}");
    }));
    finish(s, result, [a, b]);
}

/// Whether `ns/pod` resolves `kubernetes.default` through cluster DNS (the `kube-dns` Service's
/// ClusterIP, UDP).
fn resolves(ns: &str, pod: &str) -> bool {
    exec_out(
        ns,
        pod,
        "nslookup -timeout=1 kubernetes.default.svc.cluster.local",
    )
    .contains("10.96.0.1")
}

/// Whether `ns/pod` opens a TCP connection to the `kubernetes` Service (10.96.0.1:443).
fn reaches_api(ns: &str, pod: &str) -> bool {
    kuryr_e2e::exec_probe(ns, pod, "nc -w 1 10.96.0.1 443 </dev/null").0 == 0
}

/// Default deny egress for the clients of namespace `a`, except DNS (to the CoreDNS pods, by
/// namespace and pod selector) and the API server (its address as an ipBlock, port 6443). OVN
/// applies a port's egress rules before the load balancer translates a ClusterIP, so both go
/// through their Services' VIPs only if the policy allows the VIPs too.
fn egress_deny_but_dns_and_api(a: &Namespace, s1: &str) {
    let na = &a.0;
    let node_ip = std::fs::read_to_string(kuryr_e2e::state_dir().join("node-port.env"))
        .expect("node-port.env")
        .lines()
        .find_map(|l| l.strip_prefix("NODE_PORT_IP=").map(str::to_string))
        .expect("NODE_PORT_IP");
    assert!(
        resolves(na, "client-a") && reaches_api(na, "client-a"),
        "DNS and the API before any egress policy"
    );
    a.apply_json(
        "egress",
        &policy(
            na,
            "egress",
            json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                   "egress": [
                       {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                       {"to": [{"ipBlock": {"cidr": format!("{node_ip}/32")}}],
                        "ports": [{"protocol": "TCP", "port": 6443}]}]}),
        ),
    );
    converge(
        "egress deny: client-a -> s1",
        na,
        "client-a",
        s1,
        8080,
        false,
    );
    check(
        "egress deny does not select other-a",
        na,
        "other-a",
        s1,
        8080,
        true,
    );
    converge_with(
        "DNS through the kube-dns VIP under egress deny",
        true,
        || resolves(na, "client-a"),
    );
    converge_with("the kubernetes Service under egress deny", true, || {
        reaches_api(na, "client-a")
    });
    delete_policy(na, "egress");
    converge(
        "egress policy deleted: client-a -> s1",
        na,
        "client-a",
        s1,
        8080,
        true,
    );
}

/// The pod's address of each family, from `status.podIPs`: (IPv4, IPv6).
fn pod_ips46(ns: &str, pod: &str) -> (String, String) {
    let p = kjson(kubectl().args(["get", "pod", "-n", ns, pod, "-o", "json"]));
    let ips: Vec<String> = p["status"]["podIPs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i["ip"].as_str().map(String::from))
        .collect();
    let v4 = ips.iter().find(|a| !a.contains(':')).cloned();
    let v6 = ips.iter().find(|a| a.contains(':')).cloned();
    match (v4, v6) {
        (Some(a), Some(b)) => (a, b),
        _ => panic!("{ns}/{pod} is not dual-stack: {ips:?}"),
    }
}

/// [`converge`] for both families at once: `from` → the target's IPv4 and IPv6 address on
/// `port` both become `want`.
fn converge46(what: &str, ns: &str, from: &str, to: &(String, String), port: u16, want: bool) {
    converge(&format!("{what} (IPv6)"), ns, from, &to.1, port, want);
    converge(&format!("{what} (IPv4)"), ns, from, &to.0, port, want);
}

/// [`check`] for both families.
fn check46(what: &str, ns: &str, from: &str, to: &(String, String), port: u16, want: bool) {
    check(&format!("{what} (IPv6)"), ns, from, &to.1, port, want);
    check(&format!("{what} (IPv4)"), ns, from, &to.0, port, want);
}

/// NetworkPolicies on dual-stack pods (kuryr.conf lists an IPv4 and an IPv6 pod subnet, so
/// every pod has an address of each family), every cell real TCP over IPv6 and IPv4 side by
/// side: default deny ingress (both families denied; the selected pods' egress stays open over
/// both); allow from a podSelector by port number, then edited in place to a named port; allow
/// from a namespaceSelector; an IPv6 ipBlock with `except` (the block admits IPv6 only, the
/// excepted pod is refused); default-deny egress allowing a podSelector, which also allows the
/// IPv6 ClusterIP of a Service backed by it (OVN checks egress before the load balancer); all
/// deleted → open again over both, and nothing left in Neutron.
#[test]
#[ignore = "needs the local stack (hack/stack/stack up)"]
fn dual_stack_network_policies_over_ipv6_and_ipv4() {
    let _node = node_lock();
    let cloud = Cloud::connect();
    let env = stack_env();
    let s = start_with(
        &cloud,
        ",service,endpoints,kuryrloadbalancer",
        &format!(
            "[neutron_defaults]\npod_subnets = {},{}\n",
            env["POD_SUBNET_ID"], env["POD_SUBNET6_ID"]
        ),
    );
    let a = Namespace::create("kst-np6-a-");
    let b = Namespace::create("kst-np6-b-");
    must(kubectl().args(["label", "namespace", &b.0, "team=b"]));
    let (na, nb) = (a.0.clone(), b.0.clone());
    a.apply_json("server", &server(&na, "server", json!({"app": "server"})));
    a.apply_json(
        "client-a",
        &client(&na, "client-a", json!({"role": "client"})),
    );
    a.apply_json("other-a", &client(&na, "other-a", json!({"role": "other"})));
    b.apply_json(
        "client-b",
        &client(&nb, "client-b", json!({"role": "client"})),
    );
    b.apply_json(
        "server-b",
        &server(&nb, "server-b", json!({"app": "server-b"})),
    );
    wait_ready(&na);
    wait_ready(&nb);
    let srv = pod_ips46(&na, "server");
    let srv_b = pod_ips46(&nb, "server-b");
    let client_a = pod_ips46(&na, "client-a");
    let other_a = pod_ips46(&na, "other-a");
    eprintln!("server {srv:?}, server-b {srv_b:?}, client-a {client_a:?}, other-a {other_a:?}");

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // No policy: everything open, over both families.
        check46("no policy", &na, "client-a", &srv, 8080, true);
        check46("no policy", &na, "other-a", &srv, 9090, true);
        check46("no policy", &nb, "client-b", &srv, 8080, true);

        // Default deny ingress in A.
        a.apply_json(
            "deny",
            &policy(
                &na,
                "deny",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            ),
        );
        converge46("default deny ingress", &na, "other-a", &srv, 8080, false);
        check46("default deny ingress", &na, "client-a", &srv, 8080, false);
        check46("default deny ingress", &nb, "client-b", &srv, 9090, false);
        // The selected pods' egress stays open over both families (an ingress-only policy).
        check46(
            "default deny ingress leaves egress",
            &na,
            "client-a",
            &srv_b,
            8080,
            true,
        );

        // Allow from a podSelector, by number; then edited in place to the named port.
        let allow = |ports: Value| {
            policy(
                &na,
                "allow-client",
                json!({"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": ports}]}),
            )
        };
        a.apply_json("allow-client", &allow(json!([{"port": 9090}])));
        converge46(
            "allow from podSelector (9090)",
            &na,
            "client-a",
            &srv,
            9090,
            true,
        );
        check46(
            "podSelector: other port",
            &na,
            "client-a",
            &srv,
            8080,
            false,
        );
        check46("podSelector: other pod", &na, "other-a", &srv, 9090, false);
        a.apply_json("allow-client", &allow(json!([{"port": "http"}])));
        converge46(
            "edited to the named port http (8080)",
            &na,
            "client-a",
            &srv,
            8080,
            true,
        );
        converge46("edited: 9090 no longer", &na, "client-a", &srv, 9090, false);

        // Allow from a namespaceSelector.
        check46(
            "before the namespace rule",
            &nb,
            "client-b",
            &srv,
            8080,
            false,
        );
        a.apply_json(
            "allow-ns",
            &policy(
                &na,
                "allow-ns",
                json!({"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "ports": [{"port": 8080}]}]}),
            ),
        );
        converge46(
            "allow from namespaceSelector",
            &nb,
            "client-b",
            &srv,
            8080,
            true,
        );
        check46(
            "namespaceSelector: not A's other pod",
            &na,
            "other-a",
            &srv,
            8080,
            false,
        );

        // An IPv6 ipBlock with except: the pod subnet's IPv6 range minus client-a's address,
        // on 9090. other-a gets in over IPv6 only; client-a (excepted) over neither.
        let v6_block = env["POD_CIDR6"].clone();
        a.apply_json(
            "allow-block6",
            &policy(
                &na,
                "allow-block6",
                json!({"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"ipBlock": {"cidr": v6_block, "except": [format!("{}/128", client_a.1)]}}],
                                    "ports": [{"port": 9090}]}]}),
            ),
        );
        converge(
            "IPv6 ipBlock admits other-a (IPv6)",
            &na,
            "other-a",
            &srv.1,
            9090,
            true,
        );
        check(
            "IPv6 ipBlock: not over IPv4",
            &na,
            "other-a",
            &srv.0,
            9090,
            false,
        );
        check46(
            "IPv6 ipBlock: client-a is excepted",
            &na,
            "client-a",
            &srv,
            9090,
            false,
        );
        check46("IPv6 ipBlock: only 9090", &na, "other-a", &srv, 8080, false);

        // Default-deny egress for client-a, allowing the server pods on 8080: also their
        // Service's IPv6 ClusterIP on its port 80 (targetPort 8080).
        a.apply_json(
            "web6",
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web6", "namespace": na},
                    "spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"], "selector": {"app": "server"},
                             "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        );
        let vip6 = kjson(kubectl().args(["get", "svc", "-n", &na, "web6", "-o", "json"]))["spec"]
            ["clusterIP"]
            .as_str()
            .expect("web6 ClusterIP")
            .to_string();
        assert!(vip6.contains(':'), "web6 is IPv6: {vip6}");
        // The Octavia load balancer first (no policy on the client yet).
        wait_for(
            "the IPv6 Service VIP answers",
            Duration::from_secs(120),
            Duration::from_millis(500),
            || reach(&na, "client-a", &vip6, 80).then_some(()),
        );
        a.apply_json(
            "egress",
            &policy(
                &na,
                "egress",
                json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                       "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}], "ports": [{"port": 8080}]}]}),
            ),
        );
        converge46(
            "egress deny: server-b refused",
            &na,
            "client-a",
            &srv_b,
            8080,
            false,
        );
        check46(
            "egress allow: the server on 8080",
            &na,
            "client-a",
            &srv,
            8080,
            true,
        );
        check46("egress allow: not 9090", &na, "client-a", &srv, 9090, false);
        check(
            "egress allow: the server's IPv6 ClusterIP",
            &na,
            "client-a",
            &vip6,
            80,
            true,
        );
        check46(
            "egress policy does not touch other-a",
            &na,
            "other-a",
            &srv_b,
            8080,
            true,
        );

        // Deleting every policy restores access over both families.
        let t0 = Instant::now();
        must(kubectl().args([
            "delete",
            "networkpolicy",
            "--all",
            "-n",
            &na,
            "--wait=true",
            "--timeout=60s",
        ]));
        converge46(
            "policies deleted: ingress open again",
            &na,
            "other-a",
            &srv,
            8080,
            true,
        );
        converge46(
            "policies deleted: egress open again",
            &na,
            "client-a",
            &srv_b,
            8080,
            true,
        );
        check46(
            "policies deleted: client-a on 9090",
            &na,
            "client-a",
            &srv,
            9090,
            true,
        );
        check46(
            "policies deleted: from B",
            &nb,
            "client-b",
            &srv,
            9090,
            true,
        );
        eprintln!(
            "all policies deleted → open over IPv6 and IPv4: {:?}",
            t0.elapsed()
        );
        knps_gone(&na);
        let left = neutron_leftovers(&cloud, &na);
        assert!(
            left.is_empty(),
            "left in Neutron after the policies were deleted: {left:?}"
        );
        for pod in ["server", "client-a", "other-a"] {
            let uid = kjson(kubectl().args(["get", "pod", "-n", &na, pod, "-o", "json"]))
                ["metadata"]["uid"]
                .as_str()
                .expect("uid")
                .to_string();
            let ports = cloud.ports_of_device(&uid);
            assert_eq!(ports.len(), 1, "{pod}: {ports:?}");
            assert_eq!(
                ports[0].fixed_ips.len(),
                2,
                "{pod}: one address per family: {ports:?}"
            );
            assert_eq!(
                ports[0].security_groups,
                [env["POD_SG_ID"].clone()],
                "{pod}'s port is back on the default group"
            );
        }
        must(kubectl().args([
            "delete",
            "svc",
            "-n",
            &na,
            "web6",
            "--wait=true",
            "--timeout=120s",
        ]));
    }));
    finish(s, result, [a, b]);
}
