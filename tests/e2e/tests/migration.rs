//! The drop-in claim, proven against the real upstream release (issue 16), both ways.
//!
//! Forward (`upstream_to_kuryr_rs_in_place_under_load`): upstream kuryr-kubernetes 10.0.0
//! (`hack/upstream/upstream`) wires pods and a Service on the stack; a ping and an HTTP probe
//! through the Service run throughout; upstream is stopped and its CNI files removed; kuryr-rs is
//! deployed the way the README's migration guide says: its CRDs applied, then in-cluster from the
//! rendered manifests with the same kuryr.conf (the images `deploy/images/build.sh` makes, imported
//! into containerd). Then every old pod keeps its Neutron port,
//! address and KuryrPort (upstream's os-vif status, adopted), the Octavia load balancer is
//! adopted (same id), the probes lose at most what was sent while no daemon ran, an old pod's DEL
//! works through kuryr-rs (its OVS port goes), new pods and scaling work, and deleting everything
//! leaves nothing in Neutron or Octavia; uninstalling kuryr-rs leaves no conflist, kuryr-cni or
//! kuryr process on the node.
//!
//! Back (`kuryr_rs_to_upstream_rollback_under_load`): the same with the roles swapped, the way the
//! README's rollback says: kuryr-rs (in-cluster, warm pools on) wires the pods and the Service from
//! its pool; the user's step 1 turns pools off (`vif_pool_driver = noop`, the controller restarted)
//! and kuryr-rs drains them (the node's pool KuryrPort, every free pool port in Neutron and its OVS
//! port go; the pods keep theirs); kuryr-rs's DaemonSet and Deployment are deleted, upstream's
//! CRDs are put back (`kubectl replace`) and upstream starts; upstream reads kuryr-rs's KuryrPorts
//! (with its own code: `hack/upstream/read-vifs`; its controller logs no handler failure) and
//! KuryrLoadBalancer (same load balancer), DELs an old kuryr-rs pod, wires new ones.
//!
//! Both record the probe loss and the window without a daemon in bench/results/migration.json
//! (`kuryr-bench record`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kuryr_core::names::{pool_kuryrport_name, DEVICE_OWNER, POOL_NAMESPACE};
use kuryr_core::vif::{host_ifname, StoredForm, Vif, SUBNET_ID_KEY};
use kuryr_e2e::deploy::{
    images_built_once, kjson, kuryr_processes, pod_ready, pods, repo, wait_for_no_host_kuryr,
    wait_rolled_out, Deployed, InCluster, CNI_BIN,
};
use kuryr_e2e::kuryr::{self, web_deployment, Namespace};
use kuryr_e2e::{kubectl, must, node_lock, openstack, run, stack_env, wait_for, workspace_bin};
use serde_json::{json, Value};

/// `hack/upstream/upstream CMD`; `down` on drop (also when the test fails).
struct Upstream;

impl Upstream {
    fn cmd(args: &[&str]) -> String {
        must(Command::new(repo().join("hack/upstream/upstream")).args(args))
    }
    fn up() -> Upstream {
        Upstream::cmd(&["up"]);
        Upstream
    }

    /// `hack/upstream/upstream env`: its venv, CRDs, logs.
    fn env() -> BTreeMap<String, String> {
        Upstream::cmd(&["env"])
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Upstream's own reading of VIFs (`hack/upstream/read-vifs` with its venv's python, see
    /// there): `input` is {label: VIF primitive} or a KuryrPort List; label → result.
    fn read_vifs(input: &Value) -> serde_json::Map<String, Value> {
        let python = format!("{}/bin/python3", Upstream::env()["UPSTREAM_VENV"]);
        let mut child = Command::new(python)
            .arg(repo().join("hack/upstream/read-vifs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start read-vifs");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(input.to_string().as_bytes())
                .expect("write VIFs to read-vifs");
        }
        let out = child.wait_with_output().expect("read-vifs");
        assert!(
            out.status.success(),
            "read-vifs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("read-vifs printed a JSON object")
    }

    /// The sizes of upstream's controller and daemon logs (appended to across runs).
    fn log_sizes() -> [u64; 2] {
        let env = Upstream::env();
        LOGS.map(|k| std::fs::metadata(&env[k]).map_or(0, |m| m.len()))
    }

    /// The lines of upstream's controller and daemon logs since `from` ([`Upstream::log_sizes`])
    /// that say a handler failed.
    fn handler_failures(from: [u64; 2]) -> Vec<String> {
        let env = Upstream::env();
        let mut out = Vec::new();
        for (k, from) in LOGS.iter().zip(from) {
            let text = std::fs::read(&env[*k]).unwrap_or_default();
            let text =
                String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned();
            out.extend(
                text.lines()
                    .filter(|l| {
                        ["Failed to handle event", "handler unhealthy", "Traceback"]
                            .iter()
                            .any(|m| l.contains(m))
                    })
                    .map(|l| format!("{k}: {l}")),
            );
        }
        out
    }
}

/// `hack/upstream/upstream env` keys of upstream's logs.
const LOGS: [&str; 2] = ["UPSTREAM_CONTROLLER_LOG", "UPSTREAM_DAEMON_LOG"];

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = run(Command::new(repo().join("hack/upstream/upstream")).arg("down"));
    }
}

/// A command running inside a pod (`kubectl exec`), its output read line by line as it comes.
struct Probe {
    child: Child,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl Probe {
    fn start(ns: &str, pod: &str, script: &str) -> Probe {
        let mut child = kubectl()
            .args(["exec", "-n", ns, pod, "--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the probe");
        let out = child.stdout.take().expect("probe stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), l)).is_err() {
                    break;
                }
            }
        });
        Probe {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn drain(&mut self) -> &[(Instant, String)] {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    /// Waits until `n` more lines matching `ok` arrived.
    fn wait_more(&mut self, what: &str, n: usize, ok: impl Fn(&str) -> bool) {
        let start = self.drain().iter().filter(|(_, l)| ok(l)).count();
        wait_for(
            what,
            Duration::from_secs(120),
            Duration::from_millis(200),
            || (self.drain().iter().filter(|(_, l)| ok(l)).count() >= start + n).then_some(()),
        );
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ping replies as sequence numbers, from busybox ping's `64 bytes from …: seq=N ttl=…`.
fn ping_seq(l: &str) -> Option<u64> {
    l.split_whitespace()
        .find_map(|w| w.strip_prefix("seq="))
        .and_then(|s| s.parse().ok())
}

/// Sequence numbers below the last reply that got none (losses the probe saw end to end).
fn ping_lost(lines: &[(Instant, String)]) -> u64 {
    let seqs: std::collections::BTreeSet<u64> =
        lines.iter().filter_map(|(_, l)| ping_seq(l)).collect();
    match seqs.last() {
        Some(&last) => last + 1 - seqs.len() as u64,
        None => panic!("the ping probe got no reply at all"),
    }
}

fn neutron_port(id: &str) -> Option<Value> {
    let out = run(openstack("kuryr").args(["port", "show", id, "-f", "json"]));
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("port JSON"))
}

fn lb_exists(id: &str) -> bool {
    run(openstack("kuryr").args(["loadbalancer", "show", id, "-f", "value", "-c", "id"]))
        .status
        .success()
}

fn http_script(vip: &str) -> String {
    format!(
        "while :; do if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 {vip} 80 | grep -q web; \
         then echo ok; else echo fail; fi; sleep 0.5; done"
    )
}

fn pod_json(ns: &str, name: &str) -> Value {
    kjson(kubectl().args(["get", "pod", "-n", ns, name, "-o", "json"]))
}

fn kuryrport(ns: &str, name: &str) -> Value {
    kjson(kubectl().args([
        "get",
        "kuryrports.openstack.org",
        "-n",
        ns,
        name,
        "-o",
        "json",
    ]))
}

fn all_kuryrports() -> Value {
    kjson(kubectl().args(["get", "kuryrports.openstack.org", "-A", "-o", "json"]))
}

/// A KuryrPort's eth0 VIF as stored, and as read (either form).
fn kp_vif(kp: &Value) -> (Value, Vif) {
    let stored = kp["status"]["vifs"]["eth0"]["vif"].clone();
    let vif = kuryr::vif_of(kp).unwrap_or_else(|| {
        panic!(
            "KuryrPort {}: no readable VIF: {stored}",
            kp["metadata"]["name"]
        )
    });
    (stored, vif)
}

/// The Service's KuryrLoadBalancer `<ns>/web`, if it exists.
fn klb(ns: &str) -> Option<Value> {
    let out = run(kubectl().args([
        "get",
        "kuryrloadbalancers.openstack.org",
        "-n",
        ns,
        "web",
        "-o",
        "json",
    ]));
    serde_json::from_slice(&out.stdout).ok()
}

/// Who wired the pods of a [`Workload`]; both store upstream's os-vif form, only kuryr-rs adds
/// the subnet id ([`SUBNET_ID_KEY`]).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wirer {
    Upstream,
    KuryrRs,
}

impl Wirer {
    fn check(self, what: &str, stored: &Value) {
        assert_eq!(
            StoredForm::of(stored),
            StoredForm::OsVif,
            "{what}: not os-vif: {stored}"
        );
        let subnet = &stored["versioned_object.data"]["network"]["versioned_object.data"]
            ["subnets"]["versioned_object.data"]["objects"][0]["versioned_object.data"];
        assert_eq!(
            subnet.get(SUBNET_ID_KEY).is_some(),
            self == Wirer::KuryrRs,
            "{what}: not written by {self:?}: {stored}"
        );
    }
}

/// A pod wired before the swap: where it is, its address and Neutron port.
#[derive(Clone, Debug)]
struct OldPod {
    ns: String,
    name: String,
    ip: String,
    port: String,
}

/// A busybox pod that sleeps.
fn sleeper(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c",
             "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}})
}

/// What both tests run: in namespace `a` a Deployment `web` (2 pods) and its Service (Octavia),
/// in `b` the pods `client` (the probes run in it) and `idle`.
struct Workload {
    a: Namespace,
    b: Namespace,
}

impl Workload {
    fn create(prefix: &str) -> Workload {
        let w = Workload {
            a: Namespace::create(&format!("{prefix}-a")),
            b: Namespace::create(&format!("{prefix}-b")),
        };
        w.a.apply_json("web", &web_deployment(&w.a.0, 2));
        w.a.apply_json(
            "svc",
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": w.a.0},
                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        );
        for name in ["client", "idle"] {
            w.b.apply_json(name, &sleeper(&w.b.0, name));
        }
        for ns in [&w.a.0, &w.b.0] {
            must(kubectl().args([
                "wait",
                "-n",
                ns,
                "--for=condition=Ready",
                "pod",
                "--all",
                "--timeout=240s",
            ]));
        }
        w
    }

    /// The 4 pods and their ports, each KuryrPort checked to be `wirer`'s.
    fn old_pods(&self, wirer: Wirer) -> Vec<OldPod> {
        let mut old = Vec::new();
        for (ns, sel) in [(&self.a.0, "app=web"), (&self.b.0, "")] {
            for p in pods(ns, sel) {
                let name = p["metadata"]["name"].as_str().expect("name").to_owned();
                let (stored, vif) = kp_vif(&kuryrport(ns, &name));
                wirer.check(&format!("{ns}/{name}"), &stored);
                let ip = p["status"]["podIP"].as_str().expect("podIP").to_owned();
                old.push(OldPod {
                    ns: ns.clone(),
                    name,
                    ip,
                    port: vif.port_id,
                });
            }
        }
        assert_eq!(old.len(), 4, "4 pods wired by {wirer:?}: {old:?}");
        old
    }

    /// The load balancer's id once the KuryrLoadBalancer lists both members.
    fn wait_lb(&self) -> String {
        wait_for(
            "the load balancer for the Service",
            Duration::from_secs(240),
            Duration::from_secs(1),
            || {
                let klb = klb(&self.a.0)?;
                let members = klb["status"]["members"].as_array().map_or(0, Vec::len);
                (members == 2).then(|| {
                    klb["status"]["loadbalancer"]["id"]
                        .as_str()
                        .map(str::to_owned)
                })?
            },
        )
    }

    fn vip(&self) -> String {
        must(kubectl().args([
            "get",
            "svc",
            "-n",
            &self.a.0,
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]))
    }
}

/// Both tests' before and after: the [`Workload`] wired by one implementation, with its load
/// balancer and the probes running; after the swap, the DEL of an old pod through the other one,
/// and the deletion of everything.
struct Scene {
    w: Workload,
    old: Vec<OldPod>,
    lb_id: String,
    vip: String,
    /// The web pod the ping probe targets.
    target: OldPod,
}

impl Scene {
    /// Creates the workload (namespaces `<prefix>-a`, `<prefix>-b`) under `wirer` and starts the
    /// probes once its load balancer has both members.
    fn set_up(prefix: &str, wirer: Wirer) -> (Scene, Probes) {
        let w = Workload::create(prefix);
        let old = w.old_pods(wirer);
        let lb_id = w.wait_lb();
        let vip = w.vip();
        let target = old
            .iter()
            .find(|o| o.ns == w.a.0)
            .expect("a web pod")
            .clone();
        let probes = Probes::start(&w, &target, &vip, &format!("{wirer:?}"));
        let scene = Scene {
            w,
            old,
            lb_id,
            vip,
            target,
        };
        (scene, probes)
    }

    /// Scales web to 3 ([`scale_and_reach`]); the new pod's name.
    fn scale_and_reach(&self) -> String {
        scale_and_reach(&self.w, &self.old, &self.vip)
    }

    /// Deletes the old web pod the ping does not target ([`delete_old_pod`]).
    fn delete_old_pod(&self) {
        let victim = self
            .old
            .iter()
            .filter(|o| o.ns == self.w.a.0)
            .find(|o| o.name != self.target.name)
            .expect("second web pod");
        delete_old_pod(victim);
    }

    /// Deletes everything ([`delete_all`]): the old pods' ports and `new_pod`'s go, and the load
    /// balancer.
    fn delete_all(&self, new_pod: &str) {
        let mut ports: Vec<String> = self.old.iter().map(|o| o.port.clone()).collect();
        ports.push(kp_vif(&kuryrport(&self.w.a.0, new_pod)).1.port_id);
        delete_all(&self.w, &ports, &self.lb_id);
    }
}

/// The ping (every 200 ms to a web pod) and the HTTP probe (every 500 ms through the VIP), both
/// from `client`.
struct Probes {
    ping: Probe,
    http: Probe,
}

impl Probes {
    fn start(w: &Workload, target: &OldPod, vip: &str, under: &str) -> Probes {
        let mut p = Probes {
            ping: Probe::start(&w.b.0, "client", &format!("ping -i 0.2 -W 1 {}", target.ip)),
            http: Probe::start(&w.b.0, "client", &http_script(vip)),
        };
        p.ping
            .wait_more(&format!("ping replies under {under}"), 10, |l| {
                ping_seq(l).is_some()
            });
        p.http
            .wait_more(&format!("HTTP answers under {under}"), 4, |l| l == "ok");
        p
    }

    fn wait_more(&mut self, under: &str) {
        self.ping
            .wait_more(&format!("ping replies under {under}"), 15, |l| {
                ping_seq(l).is_some()
            });
        self.http
            .wait_more(&format!("HTTP answers under {under}"), 6, |l| l == "ok");
    }

    /// Pings lost, and HTTP failures during the swap (`window` from `stopped`, no daemon) and
    /// after it (the DEL of an old member pod, scaling); at most the pings sent during the window
    /// may be lost.
    fn finish(mut self, stopped: Instant, window: Duration) -> ProbeLoss {
        self.ping
            .wait_more("ping replies at the end", 5, |l| ping_seq(l).is_some());
        let lost = ping_lost(self.ping.drain());
        let fails: Vec<f64> = self
            .http
            .drain()
            .iter()
            .filter(|(_, l)| l == "fail")
            .map(|(t, _)| t.saturating_duration_since(stopped).as_secs_f64())
            .collect();
        let in_window = fails.iter().filter(|t| **t <= window.as_secs_f64()).count();
        let sent_in_window = (window.as_secs_f64() / 0.2).ceil() as u64;
        eprintln!(
            "swap window {window:?}: ping lost {lost} (sent in the window ≈ {sent_in_window}); \
             HTTP failures at {fails:.1?} s after the stop ({in_window} in the window)"
        );
        assert!(
            lost <= sent_in_window,
            "the probe lost {lost} pings, more than the {sent_in_window} sent while no daemon ran"
        );
        ProbeLoss {
            lost,
            http_in_window: in_window,
            http_later: fails.len() - in_window,
            window,
        }
    }
}

/// What [`Probes::finish`] measured.
struct ProbeLoss {
    lost: u64,
    http_in_window: usize,
    http_later: usize,
    window: Duration,
}

/// Every old pod keeps its port (same id, address, ACTIVE) and address.
fn assert_pods_kept(old: &[OldPod]) {
    for o in old {
        let (ns, name, port) = (&o.ns, &o.name, &o.port);
        let (_, vif) = kp_vif(&kuryrport(ns, name));
        assert_eq!(
            &vif.port_id, port,
            "{ns}/{name}: the KuryrPort's port changed"
        );
        let np = neutron_port(port)
            .unwrap_or_else(|| panic!("{ns}/{name}: Neutron port {port} is gone"));
        assert!(
            np["fixed_ips"].to_string().contains(o.ip.as_str()),
            "{ns}/{name}: port {port} lost {}: {np}",
            o.ip
        );
        assert_eq!(np["status"], "ACTIVE", "{ns}/{name}: port {port}: {np}");
        assert_eq!(
            pod_json(ns, name)["status"]["podIP"],
            json!(o.ip),
            "{ns}/{name} changed its address"
        );
    }
}

/// The Service still has `lb_id`, and it is the only load balancer of that name.
fn assert_lb_kept(w: &Workload, lb_id: &str) {
    let klb = klb(&w.a.0).expect("the KuryrLoadBalancer");
    assert_eq!(
        klb["status"]["loadbalancer"]["id"],
        json!(lb_id),
        "the load balancer was re-created: {}",
        klb["status"]
    );
    let named = must(openstack("kuryr").args([
        "loadbalancer",
        "list",
        "--name",
        &format!("{}/web", w.a.0),
        "-f",
        "value",
        "-c",
        "id",
    ]));
    assert_eq!(
        named.split_whitespace().collect::<Vec<_>>(),
        vec![lb_id],
        "one load balancer for the Service"
    );
}

/// Scales `web` to 3: the new pod gets Ready, answers a ping, and the Service reaches it (a new
/// member). Returns its name.
fn scale_and_reach(w: &Workload, old: &[OldPod], vip: &str) -> String {
    must(kubectl().args(["scale", "-n", &w.a.0, "deployment/web", "--replicas=3"]));
    let new_pod = wait_for(
        "a third web pod Ready",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || {
            pods(&w.a.0, "app=web").into_iter().find(|p| {
                pod_ready(p)
                    && !old
                        .iter()
                        .any(|o| Some(o.name.as_str()) == p["metadata"]["name"].as_str())
            })
        },
    );
    let new_name = new_pod["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let new_ip = new_pod["status"]["podIP"]
        .as_str()
        .expect("podIP")
        .to_owned();
    must(kubectl().args([
        "exec", "-n", &w.b.0, "client", "--", "ping", "-c", "2", "-W", "2", &new_ip,
    ]));
    wait_for(
        "the Service answering from the new pod",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || {
            let out = run(kubectl().args([
                "exec",
                "-n",
                &w.b.0,
                "client",
                "--",
                "sh",
                "-c",
                &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 {vip} 80"),
            ]));
            String::from_utf8_lossy(&out.stdout)
                .contains(new_name.as_str())
                .then_some(())
        },
    );
    new_name
}

/// Deletes an old pod: the DEL (by the other implementation than the one that wired it) removes
/// its OVS port, the finalizer its Neutron port.
fn delete_old_pod(victim: &OldPod) {
    let tap = host_ifname(&victim.port);
    must(kubectl().args([
        "delete",
        "pod",
        "-n",
        &victim.ns,
        &victim.name,
        "--wait=true",
        "--timeout=120s",
    ]));
    wait_for(
        "the old pod's OVS port to go",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || (!ovs_has(&tap)).then_some(()),
    );
    wait_for(
        "the old pod's Neutron port to go",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || neutron_port(&victim.port).is_none().then_some(()),
    );
}

/// Deletes both namespaces: no finalizer stuck, the load balancer and every port in `ports` gone.
fn delete_all(w: &Workload, ports: &[String], lb_id: &str) {
    for ns in [&w.a.0, &w.b.0] {
        must(kubectl().args(["delete", "namespace", ns, "--wait=true", "--timeout=180s"]));
    }
    wait_for(
        "the load balancer to go",
        Duration::from_secs(180),
        Duration::from_secs(1),
        || (!lb_exists(lb_id)).then_some(()),
    );
    for p in ports {
        assert!(
            neutron_port(p).is_none(),
            "Neutron port {p} is left after the namespaces were deleted"
        );
    }
}

/// KuryrPorts (`<namespace>/<name>`) with a VIF in the legacy kuryr-rs/v1 form, and
/// KuryrLoadBalancer members (`<namespace>/<name>: <member>`) named otherwise than upstream's
/// `<namespace>/<name>:<port>` (its KuryrLoadBalancer handler fails with `IndexError` on others).
fn not_upstream_readable() -> Vec<String> {
    let mut out = Vec::new();
    let kps = all_kuryrports();
    let items = |list: &Value| -> Vec<Value> {
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("kubectl get -o json printed no item list: {list}"))
    };
    for kp in items(&kps) {
        let legacy = kp["status"]["vifs"]
            .as_object()
            .into_iter()
            .flatten()
            .any(|(_, e)| StoredForm::of(&e["vif"]) == StoredForm::Legacy);
        if legacy {
            out.push(format!(
                "{}/{}",
                kp["metadata"]["namespace"], kp["metadata"]["name"]
            ));
        }
    }
    let klbs = kjson(kubectl().args([
        "get",
        "kuryrloadbalancers.openstack.org",
        "-A",
        "-o",
        "json",
    ]));
    for klb in items(&klbs) {
        for m in klb["status"]["members"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default();
            if name.split('/').nth(1).is_none() {
                out.push(format!(
                    "{}/{}: {name}",
                    klb["metadata"]["namespace"], klb["metadata"]["name"]
                ));
            }
        }
    }
    out
}

/// With kuryr-rs running: it has rewritten what an earlier release left in forms upstream cannot
/// read ([`not_upstream_readable`]), and upstream reads every KuryrPort of the cluster.
fn wait_cluster_upstream_readable() {
    wait_for(
        "no KuryrPort VIF or KuryrLoadBalancer member left in a form upstream cannot read",
        Duration::from_secs(180),
        Duration::from_secs(1),
        || not_upstream_readable().is_empty().then_some(()),
    );
    let read = Upstream::read_vifs(&all_kuryrports());
    let failed: Vec<(&String, &Value)> = read
        .iter()
        .filter(|(_, r)| r.get("error").is_some())
        .collect();
    assert!(
        failed.is_empty(),
        "upstream cannot read these KuryrPorts: {failed:?}"
    );
}

/// The results of both directions share bench/results/migration.json.
const RESULTS_DESCRIPTION: &str = "In-place migration between upstream kuryr-kubernetes 10.0.0 and \
kuryr-rs under load, both ways (e2e tests upstream_to_kuryr_rs_in_place_under_load: migration_*, \
and kuryr_rs_to_upstream_rollback_under_load: rollback_*): 4 pods and a Service wired by one, a ping \
every 200 ms between pods and an HTTP request every 500 ms through the Service's Octavia VIP while it \
stops and the other starts; lost = pings never answered; window = the one stopped → the other's \
daemon (and, back, controller) ready. Params: kuryr_rs = how kuryr-rs ran (host processes before \
the param existed, in-cluster = the rendered manifests' DaemonSet and Deployment); pools = warm pools \
of kuryr-rs before the rollback";

/// `kuryr-bench record` into bench/results/migration.json; `extra`: more `--metric` values.
fn record(prefix: &str, loss: &ProbeLoss, extra: &[String], params: &[&str], checks: &[&str]) {
    let metrics = [
        format!(
            "{prefix}_probe_lost_packets={}:count:pings lost through the swap",
            loss.lost
        ),
        format!(
            "{prefix}_http_failures={}:count:HTTP requests through the VIP that failed during the swap",
            loss.http_in_window
        ),
        format!(
            "{prefix}_http_failures_later={}:count:HTTP requests through the VIP that failed after \
             the swap (an old member pod deleted, scaling)",
            loss.http_later
        ),
        format!(
            "{prefix}_no_daemon_window={:.3}:s:one stopped → the other ready",
            loss.window.as_secs_f64()
        ),
    ];
    let mut cmd = Command::new(workspace_bin("kuryr-bench"));
    cmd.args([
        "record",
        "--results-dir",
        &repo().join("bench/results").display().to_string(),
        "--benchmark",
        "migration",
        "--description",
        RESULTS_DESCRIPTION,
    ]);
    for m in metrics.iter().chain(extra) {
        cmd.args(["--metric", m]);
    }
    for (flag, values) in [("--param", params), ("--check", checks)] {
        for v in values {
            cmd.args([flag, v]);
        }
    }
    eprintln!("{}", must(&mut cmd));
}

/// `--field-manager` of the tests' `kubectl apply` of kuryr-rs.
const MANAGER: &str = "kuryr-e2e-migration";

/// kuryr-rs in-cluster ([`InCluster`]): its CRDs applied, then the rest; uninstalled on drop.
/// Returns once the daemon is ready (rolled out, its conflist written, the node Ready): the end
/// of the window without a daemon. The controller is not waited for.
fn deploy_kuryr_rs(tag: &str, extra_conf: &str, extra_objects: &[Value]) -> Deployed {
    let ic = InCluster::render(tag, MANAGER, extra_conf, extra_objects);
    ic.apply_crds();
    let k = Deployed(ic);
    k.0.apply();
    if let Err(why) = wait_rolled_out("daemonset/kuryr-daemon", "daemon", Duration::from_secs(180))
    {
        kuryr_e2e::deploy::explain("daemon");
        panic!("kuryr-rs's daemon did not become ready: {why}");
    }
    wait_for(
        "the kuryr conflist",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || std::path::Path::new(kuryr::CONFLIST).exists().then_some(()),
    );
    must(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        "node",
        &stack_env()["STACK_HOST"],
    ]));
    k
}

/// Waits until kuryr-rs's controller Deployment is rolled out.
fn wait_controller() {
    if let Err(why) = wait_rolled_out(
        "deployment/kuryr-controller",
        "controller",
        Duration::from_secs(180),
    ) {
        kuryr_e2e::deploy::explain("controller");
        panic!("kuryr-rs's controller did not become ready: {why}");
    }
}

/// Uninstalls kuryr-rs ([`Deployed`]'s drop): then no kuryr-rs pod, no kuryr process, no
/// conflist and no kuryr-cni are left on the node, as the next tests expect.
fn uninstall(k: Deployed) {
    drop(k);
    let left = pods(
        kuryr_e2e::deploy::NAMESPACE,
        "app.kubernetes.io/name=kuryr-rs",
    );
    assert!(left.is_empty(), "kuryr-rs pods left: {left:?}");
    assert_eq!(kuryr_processes(), vec![], "kuryr processes left");
    for f in [kuryr::CONFLIST, CNI_BIN] {
        assert!(
            !std::path::Path::new(f).exists(),
            "{f} left after uninstalling"
        );
    }
}

/// Warm pools on, small (a refill is one bulk of 4), as in the rollback test.
const POOLS_ON: &str =
    "[kubernetes]\nvif_pool_driver = neutron\n[vif_pool]\nports_pool_min = 4\nports_pool_batch = 4\n";
/// The README's rollback step 1.
const POOLS_OFF: &str = "[kubernetes]\nvif_pool_driver = noop\n";

/// The namespace of the pool KuryrPorts, which the chart adds with pools on (the controller may
/// not create namespaces).
fn pool_namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": POOL_NAMESPACE, "labels": {"app.kubernetes.io/part-of": "kuryr-rs"}}})
}

/// The pool KuryrPort of `node`, if it exists.
fn pool_kuryrport(node: &str) -> Option<Value> {
    let out = run(kubectl().args([
        "get",
        "kuryrports.openstack.org",
        "-n",
        POOL_NAMESPACE,
        &pool_kuryrport_name(node),
        "-o",
        "json",
    ]));
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("KuryrPort JSON"))
}

/// The port ids `node`'s pool KuryrPort publishes (free pool ports the daemon pre-plugs).
fn published(node: &str) -> std::collections::BTreeSet<String> {
    pool_kuryrport(node)
        .and_then(|kp| {
            kp["status"]["vifs"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
        })
        .unwrap_or_default()
}

/// Neutron ports still stamped as `node`'s free pool ports (name `kuryr-pool/<node>`, kuryr's
/// device owner, no device) that no pod's KuryrPort records.
fn free_pool_ports(node: &str) -> Vec<String> {
    let ports: Value = serde_json::from_str(&must(openstack("kuryr").args([
        "port",
        "list",
        "--device-owner",
        DEVICE_OWNER,
        "--name",
        &format!("kuryr-pool/{node}"),
        "-f",
        "json",
        "-c",
        "ID",
        "-c",
        "Device ID",
    ])))
    .expect("port list JSON");
    let recorded = all_kuryrports().to_string();
    ports
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["Device ID"].as_str().unwrap_or_default().is_empty())
        .filter_map(|p| p["ID"].as_str())
        .filter(|id| !recorded.contains(id))
        .map(str::to_owned)
        .collect()
}

/// The rollback's step 1 with warm pools on: `vif_pool_driver = noop` in the ConfigMap and the
/// Secret, the controller restarted; it drains the pools: the node's pool KuryrPort goes, every
/// free pool port (`free`, those published just before) goes from Neutron and from OVS (the
/// daemon unplugs what it pre-plugged), and no free pool port is left. Returns how long the drain
/// took from the restart.
fn pools_off_and_drained(
    k: &Deployed,
    node: &str,
    free: &std::collections::BTreeSet<String>,
) -> Duration {
    k.0.reconfigure(POOLS_OFF);
    let t = Instant::now();
    must(kubectl().args([
        "rollout",
        "restart",
        "-n",
        kuryr_e2e::deploy::NAMESPACE,
        "deployment/kuryr-controller",
    ]));
    wait_controller();
    wait_for(
        "the node's pool KuryrPort to go",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || pool_kuryrport(node).is_none().then_some(()),
    );
    // One OVSDB and one Neutron listing per round, whatever the pool's size (the pool may have
    // adopted many free ports an earlier run left).
    wait_for(
        "the drained pool ports' OVS ports to go",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let ifaces = must(Command::new("ovs-vsctl").args([
                "--format=csv",
                "--columns=name",
                "list",
                "Interface",
            ]));
            (!free.iter().any(|id| ifaces.contains(&host_ifname(id)))).then_some(())
        },
    );
    wait_for(
        "the free pool ports to go from Neutron",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            let ids = must(openstack("kuryr").args([
                "port",
                "list",
                "--device-owner",
                DEVICE_OWNER,
                "-f",
                "value",
                "-c",
                "ID",
            ]));
            (!free.iter().any(|id| ids.contains(id.as_str()))).then_some(())
        },
    );
    let took = t.elapsed();
    let left = free_pool_ports(node);
    assert!(
        left.is_empty(),
        "free pool ports left after the drain: {left:?}"
    );
    took
}

/// Whether OVS has an Interface named `name`.
fn ovs_has(name: &str) -> bool {
    let out =
        run(Command::new("ovs-vsctl").args(["--if-exists", "get", "Interface", name, "name"]));
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

#[test]
#[ignore = "needs the local stack (hack/test)"]
fn upstream_to_kuryr_rs_in_place_under_load() {
    let t0 = Instant::now();
    let _node = node_lock();
    images_built_once();
    wait_for_no_host_kuryr(Duration::from_secs(60));
    // A migration starts from a cluster upstream runs. Earlier tests (and hack/demo) left pods
    // and Services kuryr-rs wired (CoreDNS, default/kubernetes), maybe by an earlier release in
    // forms upstream's handlers die of (a legacy VIF: KeyError 'versioned_object.namespace'; a
    // member named `<address>:<port>`: IndexError): kuryr-rs rewrites those in upstream's forms,
    // and upstream adopts them.
    {
        let _k = kuryr::start(&[]);
        wait_cluster_upstream_readable();
    }
    let _upstream = Upstream::up();
    let (sc, mut probes) = Scene::set_up("mig", Wirer::Upstream);

    // The swap, as the README says: upstream's daemon and controller stop, its CNI files go;
    // kuryr-rs's CRDs are applied and kuryr-rs is deployed in-cluster with the same kuryr.conf.
    let stopped = Instant::now();
    Upstream::cmd(&["stop"]);
    let k = deploy_kuryr_rs("migration", "", &[]);
    let window = stopped.elapsed();
    wait_controller();
    probes.wait_more("kuryr-rs");

    assert_pods_kept(&sc.old);
    assert_lb_kept(&sc.w, &sc.lb_id);
    let new_name = sc.scale_and_reach();
    // DEL of an old pod (wired by upstream) through kuryr-rs.
    sc.delete_old_pod();
    let loss = probes.finish(stopped, window);

    // Everything deleted through kuryr-rs: nothing left in Neutron/Octavia; then kuryr-rs
    // uninstalled, nothing of it left on the node.
    sc.delete_all(&new_name);
    uninstall(k);
    record(
        "migration",
        &loss,
        &[],
        &["kuryr_rs=in-cluster"],
        &["pods_adopted=4", "lb_adopted=true"],
    );
    eprintln!(
        "upstream_to_kuryr_rs_in_place_under_load took {:.1?}",
        t0.elapsed()
    );
}

/// What kuryr-rs writes for every binding kind is what upstream reads: its own deserializer
/// (os-vif's `obj_from_primitive`, kuryr's VIF classes registered) accepts each, picks the binding
/// driver upstream's CNI daemon would use, and serializes it back to exactly what kuryr-rs wrote
/// (every field read, with the same value) minus kuryr-rs's extra subnet id. The legacy typed form
/// fails there as upstream's handler did. Needs only upstream's venv (`upstream install`).
#[test]
#[ignore = "needs upstream's venv (hack/upstream/upstream install; hack/test)"]
fn upstream_reads_kuryr_rs_vifs() {
    Upstream::cmd(&["install"]);
    let mut input = serde_json::Map::new();
    for v in kuryr_core::vif::examples() {
        input.insert(v.binding.kind().to_owned(), v.to_status_value());
    }
    let [ovs, ..] = kuryr_core::vif::examples();
    let mut legacy = serde_json::to_value(&ovs).expect("typed form");
    legacy["format"] = json!(kuryr_core::vif::LEGACY_FORMAT);
    input.insert("legacy".into(), legacy);
    let read = Upstream::read_vifs(&Value::Object(input.clone()));
    for (kind, class, driver) in [
        ("ovs", "VIFOpenVSwitch", "VIFOpenVSwitchDriver"),
        ("hybrid", "VIFBridge", "BridgeDriver"),
        ("nested-vlan", "VIFVlanNested", "VlanDriver"),
        ("nested-macvlan", "VIFMacvlanNested", "MacvlanDriver"),
    ] {
        let r = &read[kind];
        assert_eq!(
            (&r["class"], &r["binding_driver"]),
            (&json!(class), &json!(driver)),
            "{kind}: {r}"
        );
        let mut written = input[kind].clone();
        for s in written["versioned_object.data"]["network"]["versioned_object.data"]["subnets"]
            ["versioned_object.data"]["objects"]
            .as_array_mut()
            .expect("subnets")
        {
            s["versioned_object.data"]
                .as_object_mut()
                .map(|d| d.remove(SUBNET_ID_KEY));
        }
        assert_eq!(
            r["primitive"], written,
            "{kind}: upstream read something else"
        );
        assert_eq!(
            Vif::from_status_value(&r["primitive"])
                .ok()
                .map(|v| v.binding.kind()),
            Some(kind)
        );
    }
    let err = read["legacy"]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("versioned_object.namespace"),
        "the legacy form: {}",
        read["legacy"]
    );
}

#[test]
#[ignore = "needs the local stack (hack/test)"]
fn kuryr_rs_to_upstream_rollback_under_load() {
    let t0 = Instant::now();
    let _node = node_lock();
    images_built_once();
    wait_for_no_host_kuryr(Duration::from_secs(60));
    Upstream::cmd(&["install"]);
    let env = Upstream::env();
    let node = stack_env()["STACK_HOST"].clone();
    // kuryr-rs in-cluster with warm pools on.
    let k = deploy_kuryr_rs("rollback", POOLS_ON, &[pool_namespace()]);
    wait_controller();
    wait_cluster_upstream_readable();
    // A first pod finds the pool empty and gets it filled; the workload's pods take pool ports.
    let warm = Namespace::create("rb-w");
    warm.apply_json("warm", &sleeper(&warm.0, "warm"));
    must(kubectl().args([
        "wait",
        "-n",
        &warm.0,
        "--for=condition=Ready",
        "pod/warm",
        "--timeout=120s",
    ]));
    let pool = wait_for(
        "4 free pool ports published",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || Some(published(&node)).filter(|p| p.len() >= 4),
    );
    let (sc, mut probes) = Scene::set_up("rb", Wirer::KuryrRs);
    let from_pool: Vec<&OldPod> = sc.old.iter().filter(|o| pool.contains(&o.port)).collect();
    assert_eq!(
        from_pool.len(),
        sc.old.len(),
        "every pod took a pool port (pool {pool:?}): {:?}",
        sc.old
    );

    // Rollback step 1, pools off. The warm-up pod goes first: its port goes back to the pool.
    // The pool is then settled: the refill the workload's claims started (one bulk of 4: min and
    // batch are 4) and the recycled port are published, no refill is in flight.
    must(kubectl().args([
        "delete",
        "namespace",
        &warm.0,
        "--wait=true",
        "--timeout=120s",
    ]));
    let free = wait_for(
        "the pool refilled (4) and the warm-up pod's port back in it",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || {
            Some(published(&node))
                .filter(|p| p.len() >= 5 && !sc.old.iter().any(|o| p.contains(&o.port)))
        },
    );
    let drain = pools_off_and_drained(&k, &node, &free);
    eprintln!(
        "pools off: {} free pool ports drained {drain:.1?} after the controller's restart",
        free.len()
    );

    // Step 2 onwards: kuryr-rs's DaemonSet and controller Deployment are deleted (the daemon's
    // preStop removes its conflist and kuryr-cni), upstream's own CRDs are put back, upstream
    // starts.
    let log_from = Upstream::log_sizes();
    let stopped = Instant::now();
    let out = InCluster::delete(&["daemonset/kuryr-daemon", "deployment/kuryr-controller"]);
    assert!(
        out.status.success(),
        "deleting kuryr-rs's DaemonSet and Deployment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [kuryr::CONFLIST, CNI_BIN] {
        let _ = std::fs::remove_file(f);
    }
    must(kubectl().args(["replace", "-f", &env["UPSTREAM_CRDS"]]));
    let upstream = Upstream::up();
    let window = stopped.elapsed();
    probes.wait_more("upstream");

    assert_pods_kept(&sc.old);
    // A new pod under upstream: its KuryrPort handler runs (it had read every KuryrPort at start).
    let new_name = sc.scale_and_reach();
    // Upstream adopted the load balancer: same one, and it added the new pod as a member.
    assert_lb_kept(&sc.w, &sc.lb_id);
    let members = klb(&sc.w.a.0).expect("the KuryrLoadBalancer")["status"]["members"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        members, 3,
        "upstream's KuryrLoadBalancer handler added the new member"
    );
    // DEL of an old pod (wired by kuryr-rs) through upstream.
    sc.delete_old_pod();
    let loss = probes.finish(stopped, window);
    let failures = Upstream::handler_failures(log_from);
    assert!(
        failures.is_empty(),
        "upstream failed handling events:\n{}",
        failures.join("\n")
    );

    // Everything deleted through upstream: nothing kuryr-made left in Neutron/Octavia.
    sc.delete_all(&new_name);
    drop(upstream);
    uninstall(k);
    record(
        "rollback",
        &loss,
        &[format!(
            "rollback_pool_drain={:.3}:s:controller restarted with vif_pool_driver = noop → its pool \
             KuryrPort and free pool ports gone",
            drain.as_secs_f64()
        )],
        &["kuryr_rs=in-cluster", "pools=on (min 4, batch 4), drained before the rollback"],
        &[
            "pods_kept=4",
            "lb_adopted=true",
            "upstream_read_kuryrports=true",
            "pool_ports_taken=4",
            "pool_drained=true",
        ],
    );
    eprintln!(
        "kuryr_rs_to_upstream_rollback_under_load took {:.1?}",
        t0.elapsed()
    );
}
