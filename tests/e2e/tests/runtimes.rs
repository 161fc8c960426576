//! Standalone containers on the real stack: containers that are not Kubernetes pods get Neutron
//! ports through kuryr-rs too. podman 4 (CNI backend) and `ctr run --cni` (containerd 1.6) call
//! kuryr-cni from /opt/cni/bin with the conflist the daemon writes to /etc/cni/net.d (network
//! name `kuryr`), but without `K8S_POD_NAMESPACE`: podman sends `K8S_POD_NAME=<container name>`,
//! ctr nothing (its CNI_CONTAINERID is `<containerd namespace>-<container id>`). The daemon wires
//! them from the KuryrPort `<[cni_daemon] standalone_namespace>/<name or id>` that the test
//! creates first (label `kuryr.openstack.org/standalone: "true"`, no Pod), and kuryr-controller
//! gives that KuryrPort its Neutron port as it does for pods.
//!
//! Each test runs its own kuryr-daemon and kuryr-controller (host processes) with a kuryr.conf
//! whose standalone namespace is a fresh one, and removes what it made (containers, KuryrPorts,
//! Neutron ports, the namespaces, the containerd namespace and the images it loaded) even when
//! it fails. The tests of this file run one at a time (one daemon per node).
//!
//! This VM's hard limits (nofile, nproc) are lower than podman's defaults and podman drops
//! CAP_NET_RAW, so the containers get `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024
//! --cap-add NET_RAW` (for busybox ping).
//!
//! Run: `cargo test -p kuryr-e2e --test runtimes -- --ignored`

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kuryr_core::names::{DEVICE_OWNER, NODE_NAME_LABEL, STANDALONE_LABEL};
use kuryr_core::vif::host_ifname;
use kuryr_e2e::kuryr::{self, ConfigFile, Kuryr, Namespace};
use kuryr_e2e::vm::Cloud;
use kuryr_e2e::{kubectl, must, run, stack_env, text, unique, wait_for, Proc};

const IMAGE: &str = "localhost/kuryr/busybox:1.35";
/// The stack's containerd (hack/stack/k8s.sh).
const CONTAINERD_SOCK: &str = "/run/containerd/containerd.sock";
/// Limits and capabilities podman needs on this VM (see the module docs).
const PODMAN_RUN: &[&str] = &[
    "run",
    "-d",
    "--network",
    "kuryr",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--cap-add",
    "NET_RAW",
];

/// One test at a time: each runs the node's kuryr-daemon.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn podman() -> Command {
    Command::new("podman")
}

fn ctr(namespace: &str) -> Command {
    let mut c = Command::new("ctr");
    c.args(["--address", CONTAINERD_SOCK, "-n", namespace]);
    c
}

/// The OCI archive hack/stack/images.sh built (there is no registry).
fn image_archive() -> PathBuf {
    let cache = std::env::var_os("KURYR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kuryr-rs"));
    cache.join("images/busybox.tar")
}

fn fresh_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("uuid")
        .trim()
        .to_string()
}

fn ovs_ports() -> Vec<String> {
    must(Command::new("ovs-vsctl").args(["list-ports", "br-int"]))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The IPv4 address on eth0 from `ip -4 -o addr show eth0` output.
fn eth0_ip(out: &str) -> Option<IpAddr> {
    let mut words = out.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next()?.split('/').next()?.parse().ok()
}

/// KuryrPort `ns/name` (`None`: it does not exist; any other kubectl failure panics).
fn get_kuryrport(ns: &str, name: &str) -> Option<serde_json::Value> {
    kuryr_e2e::unless_not_found(kubectl().args(["get", "kuryrport", "-n", ns, name, "-o", "json"]))
        .map(|o| serde_json::from_str(&o).expect("kuryrport json"))
}

/// Everything one test makes; [`Drop`] removes it in a safe order: containers first (their DEL
/// needs the daemon), then KuryrPorts (their finalizer needs the controller), then the
/// controller and daemon stop, then the namespaces go.
struct Fixture {
    /// The standalone namespace of this test's kuryr.conf.
    ns: String,
    host: String,
    cloud: Cloud,
    kuryr: Kuryr,
    podman: Vec<String>,
    podman_image_loaded: bool,
    /// containerd namespace (created on first use) and the `ctr run` processes in it.
    ctr_ns: Option<String>,
    ctr_runs: Vec<(String, Proc)>,
    /// KuryrPorts made: (name, spec.podUid).
    kps: Vec<(String, String)>,
    _namespace: Namespace,
    _conf: ConfigFile,
}

impl Fixture {
    /// A fresh standalone namespace, kuryr.conf with it (plus `extra`), kuryr started.
    fn new(tag: &str, extra: &str) -> Fixture {
        let namespace = Namespace::create("kst-sa-");
        let ns = namespace.0.clone();
        let conf = kuryr::config_with(
            tag,
            &format!("[cni_daemon]\nstandalone_namespace = {ns}\n{extra}"),
        );
        let kuryr = kuryr::start_with_config(&conf.0, &[]);
        Fixture {
            ns,
            host: stack_env()["STACK_HOST"].clone(),
            cloud: Cloud::connect(),
            kuryr,
            podman: Vec::new(),
            podman_image_loaded: false,
            ctr_ns: None,
            ctr_runs: Vec::new(),
            kps: Vec::new(),
            _namespace: namespace,
            _conf: conf,
        }
    }

    /// Creates a standalone container's KuryrPort as an operator would; returns its podUid.
    fn create_kuryrport(&mut self, name: &str) -> String {
        let uid = fresh_uuid();
        let kp = serde_json::json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
            "metadata": {"name": name, "namespace": self.ns,
                         "labels": {STANDALONE_LABEL: "true", NODE_NAME_LABEL: self.host}},
            "spec": {"podUid": uid, "podNodeName": self.host}
        });
        let path = std::env::temp_dir().join(format!("{}-{name}.json", self.ns));
        std::fs::write(&path, kp.to_string()).expect("manifest");
        self.kps.push((name.to_string(), uid.clone()));
        must(kubectl().arg("create").arg("-f").arg(&path));
        let _ = std::fs::remove_file(&path);
        uid
    }

    fn kuryrport(&self, name: &str) -> Option<serde_json::Value> {
        get_kuryrport(&self.ns, name)
    }

    /// Waits until the controller wrote the KuryrPort's VIF; returns its port id.
    fn wait_vif(&mut self, name: &str) -> String {
        let ns = self.ns.clone();
        let controller = &mut self.kuryr.controller;
        wait_for(
            &format!("KuryrPort {ns}/{name} to get its VIF"),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                assert!(
                    controller.alive(),
                    "kuryr-controller exited:\n{}",
                    controller.log_tail(40)
                );
                let kp = get_kuryrport(&ns, name)?;
                kuryr::vif_of(&kp).map(|v| v.port_id)
            },
        )
    }

    fn ensure_podman_image(&mut self) {
        if !run(podman().args(["image", "exists", IMAGE]))
            .status
            .success()
        {
            must(podman().arg("load").arg("-i").arg(image_archive()));
            self.podman_image_loaded = true;
        }
    }

    /// `podman run -d --network kuryr --name <name> ... <args>`; the output (it may fail).
    fn podman_run(&mut self, name: &str, args: &[&str]) -> Output {
        self.ensure_podman_image();
        self.podman.push(name.to_string());
        run(podman()
            .args(PODMAN_RUN)
            .args(["--name", name, "--hostname", name, IMAGE])
            .args(args))
    }

    fn podman_exec(&self, name: &str, cmd: &[&str]) -> Output {
        run(podman().args(["exec", name]).args(cmd))
    }

    fn podman_ip(&self, name: &str) -> IpAddr {
        let out = self.podman_exec(name, &["ip", "-4", "-o", "addr", "show", "eth0"]);
        eth0_ip(&text(&out)).unwrap_or_else(|| panic!("no IPv4 on eth0 of {name}: {}", text(&out)))
    }

    /// The containerd namespace of this test, with the image imported.
    fn ctr_namespace(&mut self) -> String {
        if let Some(ns) = &self.ctr_ns {
            return ns.clone();
        }
        let ns = unique("kst-ctr-");
        self.ctr_ns = Some(ns.clone());
        must(
            ctr(&ns)
                .args(["images", "import", "--all-platforms"])
                .arg(image_archive()),
        );
        ns
    }

    /// `ctr run --cni --rm <image> <id> sleep 3600` in the background (not detached: ctr does
    /// the CNI DEL when the task ends); returns once the task runs (the ADD is done by then).
    fn ctr_run(&mut self, id: &str) {
        let ns = self.ctr_namespace();
        let proc = Proc::spawn(
            &format!("ctr-run-{id}"),
            ctr(&ns).args(["run", "--cni", "--rm", IMAGE, id, "sleep", "3600"]),
        );
        self.ctr_runs.push((id.to_string(), proc));
        let (_, proc) = self.ctr_runs.last_mut().expect("just pushed");
        wait_for(
            &format!("ctr task {id} to run"),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                assert!(proc.alive(), "ctr run {id} exited:\n{}", proc.log_tail(20));
                let tasks = stdout(&run(ctr(&ns).args(["tasks", "ls"])));
                tasks
                    .lines()
                    .any(|l| l.starts_with(&format!("{id} ")) && l.contains("RUNNING"))
                    .then_some(())
            },
        );
    }

    fn ctr_exec(&self, id: &str, cmd: &[&str]) -> Output {
        let ns = self.ctr_ns.clone().expect("ctr namespace");
        run(ctr(&ns)
            .args(["tasks", "exec", "--exec-id", &unique("exec-"), id])
            .args(cmd))
    }

    /// Kills the task; `ctr run` then does the CNI DEL and removes the container.
    fn ctr_stop(&mut self, id: &str) {
        let Some(i) = self.ctr_runs.iter().position(|(c, _)| c == id) else {
            return;
        };
        let (_, mut proc) = self.ctr_runs.remove(i);
        let ns = self.ctr_ns.clone().expect("ctr namespace");
        let _ = run(ctr(&ns).args(["tasks", "kill", "-s", "KILL", id]));
        let end = Instant::now() + Duration::from_secs(20);
        while proc.alive() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(proc);
        let _ = run(ctr(&ns).args(["containers", "rm", id]));
    }

    /// Pings `to` from inside a container (`exec` prefix) until it answers; how long it took.
    fn ping_until(&self, what: &str, exec: &dyn Fn(&[&str]) -> Output, to: IpAddr) -> Duration {
        let t = Instant::now();
        let to = to.to_string();
        let mut last = String::new();
        while t.elapsed() < Duration::from_secs(30) {
            let o = exec(&["ping", "-c", "1", "-W", "1", &to]);
            if o.status.success() {
                return t.elapsed();
            }
            last = text(&o);
        }
        panic!("{what}: no answer from {to} within 30 s: {last}");
    }

    /// The one Neutron port stamped with `uid`, checked against what kuryr promises.
    fn neutron_port(&self, uid: &str) -> kuryr_openstack::neutron::Port {
        let ports = self.cloud.ports_of_device(uid);
        assert_eq!(
            ports.len(),
            1,
            "exactly one Neutron port for device {uid}: {ports:?}"
        );
        let p = ports.into_iter().next().expect("one port");
        assert_eq!(p.binding_host_id, self.host, "{p:?}");
        assert_eq!(p.device_owner, DEVICE_OWNER, "{p:?}");
        p
    }

    /// Deletes a KuryrPort and waits until it and its Neutron port are gone.
    fn delete_kuryrport(&mut self, name: &str) {
        let uid = self
            .kps
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, u)| u.clone())
            .expect("a KuryrPort of this test");
        must(kubectl().args([
            "delete",
            "kuryrport",
            "-n",
            &self.ns,
            name,
            "--wait=true",
            "--timeout=60s",
        ]));
        wait_for(
            &format!(
                "the Neutron port of KuryrPort {}/{name} to be deleted",
                self.ns
            ),
            Duration::from_secs(30),
            Duration::from_millis(250),
            || self.cloud.ports_of_device(&uid).is_empty().then_some(()),
        );
        self.kps.retain(|(n, _)| n != name);
    }

    fn controller_log(&self) -> String {
        self.kuryr.controller.log_tail(30)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Containers while the daemon runs (their DEL unplugs them).
        for name in std::mem::take(&mut self.podman) {
            let _ = run(podman().args(["rm", "-f", "-t", "0", &name]));
        }
        for id in self
            .ctr_runs
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>()
        {
            self.ctr_stop(&id);
        }
        if let Some(ns) = self.ctr_ns.take() {
            // Containers ctr left behind (a failed `ctr run` leaves its task CREATED).
            let ids = stdout(&run(ctr(&ns).args(["containers", "ls", "-q"])));
            for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = run(ctr(&ns).args(["tasks", "kill", "-s", "KILL", id]));
                let _ = run(ctr(&ns).args(["tasks", "delete", "-f", id]));
                let _ = run(ctr(&ns).args(["containers", "rm", id]));
            }
            let _ = run(ctr(&ns).args(["images", "rm", IMAGE]));
            // The image's snapshot and blobs go too, or the namespace cannot be removed.
            let snaps = stdout(&run(ctr(&ns).args(["snapshots", "ls"])));
            for key in snaps
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
            {
                let _ = run(ctr(&ns).args(["snapshots", "rm", key]));
            }
            let blobs = stdout(&run(ctr(&ns).args(["content", "ls", "-q"])));
            for digest in blobs.lines().filter(|l| l.starts_with("sha256:")) {
                let _ = run(ctr(&ns).args(["content", "rm", digest]));
            }
            let o = run(Command::new("ctr").args([
                "--address",
                CONTAINERD_SOCK,
                "namespaces",
                "rm",
                &ns,
            ]));
            if !o.status.success() {
                eprintln!(
                    "cleanup: containerd namespace {ns} not removed: {}",
                    text(&o)
                );
            }
        }
        if self.podman_image_loaded {
            let _ = run(podman().args(["rmi", IMAGE]));
        }
        // KuryrPorts while the controller runs (their finalizer releases the ports). Nothing
        // here may panic (a panic while unwinding aborts): without the stack there is nothing
        // left to clean (`stack down` removed it all).
        if !self.kps.is_empty() && kuryr_e2e::state_dir().join("stack.env").exists() {
            let names: Vec<String> = self.kps.iter().map(|(n, _)| n.clone()).collect();
            let _ = run(kubectl()
                .args([
                    "delete",
                    "kuryrport",
                    "-n",
                    &self.ns,
                    "--wait=true",
                    "--timeout=30s",
                ])
                .args(&names));
            // Still there (controller gone)? Drop the finalizer; the ports are deleted below.
            for n in &names {
                let _ = run(kubectl().args([
                    "patch",
                    "kuryrport",
                    "-n",
                    &self.ns,
                    n,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]));
            }
            for (_, uid) in std::mem::take(&mut self.kps) {
                let q = kuryr_openstack::Query::new().eq("device_id", &uid);
                let ports = match self.cloud.rt.block_on(self.cloud.neutron.list_ports(&q)) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("cleanup: cannot list the ports of {uid}: {e}");
                        continue;
                    }
                };
                for p in ports {
                    eprintln!("cleanup: deleting leftover Neutron port {} ({uid})", p.id);
                    let _ = self
                        .cloud
                        .rt
                        .block_on(self.cloud.neutron.delete_port(&p.id));
                }
            }
        }
        // Then the fields: kuryr stops (conflist removed), the namespace and kuryr.conf go.
    }
}

// ------------------------------------------------------------------------------------- tests

/// Two podman containers get their Neutron ports (bound here, ACTIVE), ping each other and talk
/// TCP; `podman rm` unplugs the OVS port but the Neutron port stays until the KuryrPort goes.
#[test]
#[ignore = "needs the local stack (hack/stack/stack up) and podman"]
fn podman_containers_get_neutron_ports_and_talk() {
    let _serial = serial();
    let mut f = Fixture::new("podman", "");
    let (a, b) = (unique("web-a-"), unique("web-b-"));

    // The operator's step: one KuryrPort per container; the controller makes the ports.
    let t = Instant::now();
    let uid_a = f.create_kuryrport(&a);
    let uid_b = f.create_kuryrport(&b);
    let port_a = f.wait_vif(&a);
    let port_b = f.wait_vif(&b);
    eprintln!("KuryrPorts created -> both VIFs written: {:?}", t.elapsed());
    let pa = f.neutron_port(&uid_a);
    assert_eq!(pa.id, port_a);
    assert!(pa.name.ends_with(&format!("/{a}")), "{pa:?}");
    assert!(pa.description.contains("standalone container"), "{pa:?}");

    // podman run returns once the ADD is done, i.e. the port is plugged and ACTIVE.
    let t = Instant::now();
    let serve = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";
    let o = f.podman_run(&a, &["sh", "-c", serve]);
    let run_a = t.elapsed();
    assert!(
        o.status.success(),
        "podman run {a}: {}\ndaemon:\n{}",
        text(&o),
        f.kuryr.daemon.log_tail(30)
    );
    let gw: IpAddr = stack_env()["POD_GW"].parse().expect("gateway");
    let ping_gw = f.ping_until(&format!("{a} -> gateway"), &|c| f.podman_exec(&a, c), gw) + run_a;
    eprintln!("podman run {a}: {run_a:?}; run -> ping to the router {gw} working: {ping_gw:?}");

    let t = Instant::now();
    let o = f.podman_run(&b, &["sleep", "3600"]);
    let run_b = t.elapsed();
    assert!(o.status.success(), "podman run {b}: {}", text(&o));
    let (ip_a, ip_b) = (f.podman_ip(&a), f.podman_ip(&b));
    let ping_ab = f.ping_until(&format!("{b} -> {a}"), &|c| f.podman_exec(&b, c), ip_a) + run_b;
    eprintln!("podman run {b}: {run_b:?}; run -> ping to {a} working: {ping_ab:?}");
    f.ping_until(&format!("{a} -> {b}"), &|c| f.podman_exec(&a, c), ip_b);

    // The ports: ACTIVE, bound to this node, the containers' addresses; the KuryrPorts say so.
    for (name, uid, port, ip) in [(&a, &uid_a, &port_a, ip_a), (&b, &uid_b, &port_b, ip_b)] {
        let p = f.neutron_port(uid);
        assert_eq!(&p.id, port);
        assert_eq!(p.status, "ACTIVE", "{p:?}");
        assert_eq!(
            p.ip(),
            Some(ip.to_string().as_str()),
            "{name}: container IP is the port's"
        );
        let kp = f.kuryrport(name).expect("KuryrPort");
        let entry: kuryr_core::crd::VifEntry =
            serde_json::from_value(kp["status"]["vifs"]["eth0"].clone())
                .expect("the KuryrPort's eth0 entry");
        assert!(entry.vif().expect("its VIF parses").active, "{kp}");
        assert!(
            ovs_ports().contains(&host_ifname(port)),
            "OVS port of {name} missing"
        );
    }

    // TCP (busybox nc; its wget crashes in static builds).
    let get = f.podman_exec(
        &b,
        &[
            "sh",
            "-c",
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip_a} 8080"),
        ],
    );
    let body = text(&get);
    assert!(
        body.contains("200 OK") && body.contains(&a),
        "{b} -> {a}:8080 over TCP: {body}"
    );

    // podman rm: DEL unplugs the OVS port; the Neutron port belongs to the KuryrPort and stays.
    must(podman().args(["rm", "-f", "-t", "0", &a]));
    f.podman.retain(|n| n != &a);
    let tap = host_ifname(&port_a);
    assert!(
        !ovs_ports().contains(&tap),
        "OVS port {tap} left after podman rm"
    );
    assert_eq!(
        f.neutron_port(&uid_a).id,
        port_a,
        "the Neutron port must stay until the KuryrPort is deleted"
    );
    assert!(f.kuryrport(&a).is_some(), "the KuryrPort must stay");

    // Deleting the KuryrPort releases the port.
    let t = Instant::now();
    f.delete_kuryrport(&a);
    eprintln!("KuryrPort deleted -> Neutron port gone: {:?}", t.elapsed());
    assert!(
        f.neutron_port(&uid_b).status == "ACTIVE",
        "the other container's port is untouched"
    );
    assert!(
        f.kuryr.daemon.alive() && f.kuryr.controller.alive(),
        "kuryr crashed:\n{}",
        f.controller_log()
    );
}

/// A `ctr run --cni` container (its own containerd namespace) gets its port and talks to a podman
/// container; ending the task unplugs it.
#[test]
#[ignore = "needs the local stack (hack/stack/stack up), podman and ctr"]
fn ctr_run_cni_container_gets_a_port_and_talks_to_podman() {
    let _serial = serial();
    let mut f = Fixture::new("ctr", "");
    let ctr_ns = f.ctr_namespace();
    let id = unique("c-");
    // ctr passes CNI_CONTAINERID = <namespace>-<id>: that is the KuryrPort's name.
    let kp_name = format!("{ctr_ns}-{id}");
    let peer = unique("peer-");
    let uid = f.create_kuryrport(&kp_name);
    let uid_peer = f.create_kuryrport(&peer);
    let port = f.wait_vif(&kp_name);
    f.wait_vif(&peer);

    let o = f.podman_run(&peer, &["sleep", "3600"]);
    assert!(o.status.success(), "podman run {peer}: {}", text(&o));
    let t = Instant::now();
    f.ctr_run(&id);
    let up = t.elapsed();
    let p = f.neutron_port(&uid);
    assert_eq!(
        (p.id.as_str(), p.status.as_str()),
        (port.as_str(), "ACTIVE"),
        "{p:?}"
    );
    let ip_ctr = eth0_ip(&text(
        &f.ctr_exec(&id, &["ip", "-4", "-o", "addr", "show", "eth0"]),
    ))
    .expect("ctr container IPv4");
    assert_eq!(p.ip(), Some(ip_ctr.to_string().as_str()));
    let ip_peer = f.podman_ip(&peer);
    let ping = f.ping_until("ctr -> podman", &|c| f.ctr_exec(&id, c), ip_peer) + up;
    eprintln!("ctr run -> task running: {up:?}; -> ping to the podman container working: {ping:?}");
    f.ping_until("podman -> ctr", &|c| f.podman_exec(&peer, c), ip_ctr);
    assert_eq!(f.neutron_port(&uid_peer).status, "ACTIVE");

    // The task ends: ctr run does the DEL.
    let tap = host_ifname(&port);
    assert!(ovs_ports().contains(&tap));
    f.ctr_stop(&id);
    wait_for(
        "the ctr container's OVS port to go",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (!ovs_ports().contains(&tap)).then_some(()),
    );
    assert_eq!(
        f.neutron_port(&uid).id,
        port,
        "the Neutron port stays with the KuryrPort"
    );
    f.delete_kuryrport(&kp_name);
    assert!(
        f.kuryr.daemon.alive() && f.kuryr.controller.alive(),
        "kuryr crashed:\n{}",
        f.controller_log()
    );
}

/// Without its KuryrPort a standalone ADD fails within `vif_annotation_timeout` with a CNI error
/// that names the KuryrPort to create; a name that cannot be a KuryrPort name fails at once.
#[test]
#[ignore = "needs the local stack (hack/stack/stack up), podman and ctr"]
fn standalone_add_without_kuryrport_fails_naming_it() {
    let _serial = serial();
    const TIMEOUT: u64 = 8;
    let mut f = Fixture::new("nokp", &format!("vif_annotation_timeout = {TIMEOUT}\n"));
    let ns = f.ns.clone();

    let name = unique("nokp-");
    let t = Instant::now();
    let o = f.podman_run(&name, &["sleep", "3600"]);
    let took = t.elapsed();
    let out = text(&o);
    eprintln!("podman run without a KuryrPort failed after {took:?}: {out}");
    assert!(!o.status.success(), "podman run must fail: {out}");
    assert!(
        took >= Duration::from_secs(TIMEOUT) && took < Duration::from_secs(TIMEOUT + 15),
        "failed after {took:?}, vif_annotation_timeout is {TIMEOUT} s"
    );
    let pieces = [
        format!("timed out after {TIMEOUT}s waiting for KuryrPort {ns}/{name}"),
        format!("KuryrPort {ns}/{name} does not exist on this node"),
        "must be created first".to_string(),
        STANDALONE_LABEL.to_string(),
    ];
    for piece in pieces {
        assert!(
            out.contains(&piece),
            "podman's error lacks {piece:?}: {out}"
        );
    }

    // A podman name that cannot be a KuryrPort name: refused at once (code 4).
    let bad = format!("Bad_{}", unique("n"));
    let t = Instant::now();
    let o = f.podman_run(&bad, &["sleep", "3600"]);
    let out = text(&o);
    assert!(!o.status.success(), "podman run {bad} must fail: {out}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        out.contains(&format!("K8S_POD_NAME {bad:?} cannot name its KuryrPort"))
            && out.contains("must be created first"),
        "{out}"
    );

    // ctr: same wait, same message, for <namespace>-<id>.
    let ctr_ns = f.ctr_namespace();
    let id = unique("c-");
    let t = Instant::now();
    let o = run(ctr(&ctr_ns).args(["run", "--cni", "--rm", IMAGE, &id, "true"]));
    let took = t.elapsed();
    let out = text(&o);
    assert!(!o.status.success(), "ctr run must fail: {out}");
    assert!(took < Duration::from_secs(TIMEOUT + 15), "took {took:?}");
    assert!(
        out.contains(&format!("KuryrPort {ns}/{ctr_ns}-{id} does not exist"))
            && out.contains("must be created first"),
        "{out}"
    );
    assert!(
        f.kuryr.daemon.alive(),
        "kuryr-daemon crashed:\n{}",
        f.kuryr.daemon.log_tail(30)
    );
}
