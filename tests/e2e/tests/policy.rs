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

struct Setup {
    _conf: ConfigFile,
    daemon: Proc,
    controller: Proc,
}

fn start(cloud: &Cloud) -> Setup {
    let env = stack_env();
    // The node reaches pods from the external network (kubelet probes): the Infra group's CIDR.
    let ext = cloud
        .rt
        .block_on(cloud.neutron.get_subnet(&env["EXT_SUBNET_ID"]))
        .expect("external subnet");
    let conf = kuryr::config_with(
        "np",
        &format!(
            "[kubernetes]\nenabled_handlers = vif,kuryrport,policy,kuryrnetworkpolicy\n\
             [network_policy]\nallow_cidrs = {}\n",
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
    let out = run(kubectl().args(["exec", "-n", ns, from, "--", "sh", "-c", &script]));
    String::from_utf8_lossy(&out.stdout).contains("200 OK")
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
    let cloud = Cloud::connect();
    let mut s = start(&cloud);
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
        wait_for(
            "KuryrNetworkPolicies gone",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let k =
                    kjson(kubectl().args(["get", "kuryrnetworkpolicies", "-n", &na, "-o", "json"]));
                k["items"]
                    .as_array()
                    .is_some_and(|a| a.is_empty())
                    .then_some(())
            },
        );
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
    if let Err(e) = result {
        let knp = run(kubectl().args(["get", "kuryrnetworkpolicies", "-A", "-o", "yaml"]));
        eprintln!(
            "KuryrNetworkPolicies:\n{}",
            String::from_utf8_lossy(&knp.stdout)
        );
        eprintln!("controller:\n{}", s.controller.log_tail(80));
        std::panic::resume_unwind(e);
    }
    assert!(s.daemon.alive() && s.controller.alive(), "kuryr crashed");
    // The pods go while the controller still runs (their finalizers are its).
    for ns in [&na, &nb] {
        let _ = run(kubectl().args([
            "delete",
            "pods",
            "--all",
            "-n",
            ns,
            "--wait=true",
            "--timeout=60s",
        ]));
    }
    drop(a);
    drop(b);
    s.controller.stop();
    s.daemon.stop();
}
