//! `chaos`: a time-bounded, seeded chaos soak of kuryr-rs on the local stack (issue 15).
//!
//! kuryr-rs's release binaries run as the node's CNI (`hack/kuryr-services`, as
//! `compare-upstream` runs them): one kuryr-daemon and **two kuryr-controller replicas with Lease
//! leader election**, warm pools on, every OpenStack call through the fault proxy
//! ([`crate::proxy`]: kuryr.conf's `auth_url` names it, Keystone's catalog is rewritten to it).
//! For `--duration`:
//!
//! * a **churn driver** creates and deletes busybox pods through kubelet in several namespaces
//!   (at most `--max-pods` alive), scales a Deployment up and down and creates/deletes a
//!   ClusterIP Service selecting it (kuryr-rs makes an Octavia load balancer for it);
//! * a **fault schedule**, drawn from `--seed` (printed first, so a failure can be replayed),
//!   at random moments: kill -9 of the controller replica holding the Lease, kill -9 of the
//!   daemon, kill -9 of ovs-vswitchd and of ovn-controller (the stack's supervisor restarts them
//!   all; each kill is announced in `$STATE/expected-kills`), restarts (SIGTERM) of
//!   kube-apiserver, Neutron's and Octavia's API processes, and fault windows of the proxy
//!   (30 % 503/500 for a minute, 5 s latency, connection resets, 409 on port creates).
//!
//! Then, bounded by `--converge-timeout` and re-evaluated on every pod event (or every 5 s), the
//! **invariants**, each naming the objects that break it: the Neutron ports of this run's cluster
//! are exactly the ports KuryrPorts list (pool included), none lost, none twice; every OVS port
//! `tap…` on br-int and every host `tap…` device has an owner; every attachment record has its
//! pod; every Octavia load balancer of the cluster has its KuryrLoadBalancer and every Service its
//! ACTIVE load balancer; every pod is Running and Ready, has the address its KuryrPort says and
//! answers a ping from another pod. Then the namespaces are deleted and the same invariants must
//! hold with nothing left (no finalizer stuck, no port, tap, record or load balancer left).
//! Objects that existed before the run (other clusters' ports, taps, records) are not judged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use kuryr_core::crd::{KuryrLoadBalancer, KuryrPort};
use kuryr_core::names::{cluster_tag, pool_kuryrport_name, DEVICE_OWNER, POOL_NAMESPACE};
use kuryr_openstack::neutron::{FixedIpRequest, Port, PortCreate, TagResource};
use kuryr_openstack::octavia::LoadBalancer;
use kuryr_openstack::{Neutron, Octavia, Query, Service as OsService};
use kuryr_ovsdb::Ovs;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::compare::{self, Side};
use crate::proxy::{self, Fault, Proxy, Upstream};
use crate::results::Run;
use crate::rng::Rng;
use crate::stack::{self, kube_client, stack_env, state_file, TAG};
use crate::stats::Metric;

pub const DESC: &str = "Chaos soak of kuryr-rs (release, host services: one daemon, two controller replicas with Lease \
leader election, warm pools) on the local stack: a churn driver (pods through kubelet in several namespaces, a Deployment \
scaled up and down, a ClusterIP Service with an Octavia load balancer created and deleted) under a seeded fault schedule \
(kill -9 of the controller leader, the daemon, ovs-vswitchd, ovn-controller; restarts of kube-apiserver, Neutron's and \
Octavia's API; an OpenStack fault proxy injecting 503/500, 5 s latency, connection resets and 409 on port creates). Then \
the invariants, with the offending objects named: Neutron ports of the cluster == KuryrPorts' ports + pool ports, no OVS \
port, veth, attachment record or Octavia load balancer without an owner, every pod Running with its address and answering \
a ping from another pod; and after deleting the namespaces, nothing left and no finalizer stuck. Goals: leaked_objects 0, \
pods_without_network 0.";

/// Where the daemon keeps its attachment records (hack/kuryr-services runs it with the default).
const ATTACHMENTS_DIR: &str = "/var/lib/kuryr/attachments";
/// The Lease the controller replicas elect their leader with (kuryr-controller's defaults).
const LEASE_NS: &str = "kube-system";
const LEASE_NAME: &str = "kuryr-controller";
/// Label on everything the run creates (value: the run id).
const RUN_LABEL: &str = "kuryr-bench-chaos";

pub struct Opts {
    pub release_dir: PathBuf,
    pub duration: Duration,
    pub seed: u64,
    /// Mean time between two faults (each gap is drawn from 0.5–1.5 × this).
    pub mean_gap: Duration,
    /// Pods alive at once at most (standalone + Deployment + the probe).
    pub max_pods: usize,
    pub namespaces: usize,
    pub converge_timeout: Duration,
    pub pools: bool,
    /// Fault kinds the schedule draws from.
    pub faults: Vec<FaultKind>,
    /// Creates a Neutron port with the cluster's tag and no owner halfway through (to show that
    /// the invariants catch a leak).
    pub inject_orphan: bool,
}

/// `3m`, `90s`, `1h`, `1h30m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return Ok(Duration::from_secs_f64(n));
    }
    let (mut total, mut num) = (0.0f64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num
            .parse()
            .map_err(|_| anyhow!("duration {s:?}: a number must come before {c:?}"))?;
        total += n * match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            _ => bail!("duration {s:?}: unknown unit {c:?} (s, m, h)"),
        };
        num.clear();
    }
    if !num.is_empty() {
        bail!("duration {s:?}: {num} has no unit (s, m, h)");
    }
    Ok(Duration::from_secs_f64(total))
}

// ------------------------------------------------------------------------------ faults

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    ControllerLeaderKill,
    DaemonKill,
    VswitchdKill,
    OvnControllerKill,
    ApiserverRestart,
    NeutronRestart,
    OctaviaRestart,
    ProxyErrors,
    ProxyLatency,
    ProxyResets,
    ProxyPortConflict,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::ControllerLeaderKill,
        FaultKind::DaemonKill,
        FaultKind::VswitchdKill,
        FaultKind::OvnControllerKill,
        FaultKind::ApiserverRestart,
        FaultKind::NeutronRestart,
        FaultKind::OctaviaRestart,
        FaultKind::ProxyErrors,
        FaultKind::ProxyLatency,
        FaultKind::ProxyResets,
        FaultKind::ProxyPortConflict,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ControllerLeaderKill => "controller_leader_kill",
            FaultKind::DaemonKill => "daemon_kill",
            FaultKind::VswitchdKill => "vswitchd_kill",
            FaultKind::OvnControllerKill => "ovn_controller_kill",
            FaultKind::ApiserverRestart => "apiserver_restart",
            FaultKind::NeutronRestart => "neutron_restart",
            FaultKind::OctaviaRestart => "octavia_restart",
            FaultKind::ProxyErrors => "proxy_errors",
            FaultKind::ProxyLatency => "proxy_latency",
            FaultKind::ProxyResets => "proxy_resets",
            FaultKind::ProxyPortConflict => "proxy_port_conflict",
        }
    }

    pub fn parse(s: &str) -> Result<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s || k.name().replace('_', "-") == s)
            .ok_or_else(|| {
                anyhow!(
                    "unknown fault {s:?} (one of {})",
                    FaultKind::ALL.map(FaultKind::name).join(", ")
                )
            })
    }

    /// How many of each kind a bag of the schedule holds: the cheap faults more often than the
    /// restarts of whole API services (a Neutron restart takes the stack ~30 s).
    fn weight(self) -> usize {
        match self {
            FaultKind::ControllerLeaderKill | FaultKind::DaemonKill => 3,
            FaultKind::VswitchdKill
            | FaultKind::OvnControllerKill
            | FaultKind::ProxyErrors
            | FaultKind::ProxyResets => 2,
            _ => 1,
        }
    }

    /// The stack service (supervisor name) a process fault hits; `None` for proxy windows.
    fn service(self) -> Option<&'static str> {
        Some(match self {
            FaultKind::DaemonKill => "kuryr-daemon",
            FaultKind::VswitchdKill => "ovs-vswitchd",
            FaultKind::OvnControllerKill => "ovn-controller",
            FaultKind::ApiserverRestart => "kube-apiserver",
            FaultKind::NeutronRestart => "neutron-api",
            FaultKind::OctaviaRestart => "octavia-api",
            // The replica holding the Lease, found when the fault fires.
            FaultKind::ControllerLeaderKill => "kuryr-controller",
            _ => return None,
        })
    }

    /// The proxy window of a proxy fault, and how long it stays open.
    fn window(self) -> Option<(Fault, Duration)> {
        Some(match self {
            FaultKind::ProxyErrors => (Fault::Errors(0.3), Duration::from_secs(60)),
            FaultKind::ProxyLatency => (
                Fault::Latency(Duration::from_secs(5)),
                Duration::from_secs(30),
            ),
            FaultKind::ProxyResets => (Fault::Resets(0.2), Duration::from_secs(45)),
            FaultKind::ProxyPortConflict => (Fault::PortConflict(0.3), Duration::from_secs(60)),
            _ => return None,
        })
    }
}

/// The fault schedule of `seed`: `(offset from the start, kind)`, gaps of 0.5–1.5 × `mean_gap`,
/// the last one at least 10 s before the end; kinds drawn from shuffled bags holding every
/// allowed kind (by weight), so that a long run sees every kind.
pub fn schedule(
    seed: u64,
    duration: Duration,
    mean_gap: Duration,
    kinds: &[FaultKind],
) -> Vec<(Duration, FaultKind)> {
    let mut rng = Rng::new(seed);
    let end = duration.saturating_sub(Duration::from_secs(10));
    let mut out = Vec::new();
    let mut bag: Vec<FaultKind> = Vec::new();
    if kinds.is_empty() {
        return out;
    }
    let mut t = mean_gap.mul_f64(rng.range_f64(0.3, 1.0));
    while t < end {
        if bag.is_empty() {
            bag = kinds
                .iter()
                .flat_map(|k| std::iter::repeat_n(*k, k.weight()))
                .collect();
            rng.shuffle(&mut bag);
        }
        if let Some(k) = bag.pop() {
            out.push((t, k));
        }
        t += mean_gap.mul_f64(rng.range_f64(0.5, 1.5));
    }
    out
}

/// What one fault did.
#[derive(Clone, Debug, serde::Serialize)]
struct FaultRecord {
    n: usize,
    kind: &'static str,
    /// Seconds after the start of the schedule.
    at_s: f64,
    /// The service (and pid) or the proxy window.
    target: String,
    /// Fault → the service answers again (or the window closed), seconds.
    recovered_s: Option<f64>,
    /// Controller leader kills: kill → the other replica holds the Lease, seconds.
    failover_s: Option<f64>,
    /// Why it was not injected, or what did not recover.
    error: Option<String>,
    #[serde(skip)]
    injected: bool,
    #[serde(skip)]
    ended: Option<Instant>,
}

/// Everything the fault tasks need.
struct Env {
    client: Client,
    proxy: Arc<Proxy>,
    /// Origins of the real Neutron and Octavia (what their restarts are checked against).
    neutron_origin: String,
    octavia_origin: String,
    seed: u64,
    http: reqwest::Client,
}

fn pid_of(service: &str) -> Option<u32> {
    let p = std::fs::read_to_string(state_file(&format!("pids/{service}.pid"))).ok()?;
    let pid: u32 = p.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .context("run kill")?;
    if !st.success() {
        bail!("kill {sig} {pid}: {st}");
    }
    Ok(())
}

/// Polls `f` every 200 ms until it is true or `limit` passed: the time it took.
async fn until<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    loop {
        if f().await {
            return Some(t.elapsed());
        }
        if t.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn http_ok(http: &reqwest::Client, url: &str) -> bool {
    http.get(url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// The Lease holder: (identity, our service name it stands for).
async fn lease_holder(client: &Client) -> Result<(String, String)> {
    let l = Api::<Lease>::namespaced(client.clone(), LEASE_NS)
        .get(LEASE_NAME)
        .await
        .context("read the controllers' Lease")?;
    let id = l
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .context("the Lease has no holder")?;
    // hack/kuryr-services sets POD_NAME = the service name; the identity is `<POD_NAME>_<hex>`.
    let svc = id
        .rsplit_once('_')
        .map(|(a, _)| a)
        .unwrap_or(&id)
        .to_owned();
    if !svc.starts_with("kuryr-controller") {
        bail!("the Lease is held by {id:?}, not by a replica of this run");
    }
    Ok((id, svc))
}

const RECOVERY_LIMIT: Duration = Duration::from_secs(180);

async fn inject(env: &Env, n: usize, kind: FaultKind, at: Duration) -> FaultRecord {
    let mut r = FaultRecord {
        n,
        kind: kind.name(),
        at_s: (at.as_secs_f64() * 10.0).round() / 10.0,
        target: String::new(),
        recovered_s: None,
        failover_s: None,
        error: None,
        injected: false,
        ended: None,
    };
    if let Some((fault, length)) = kind.window() {
        env.proxy.open(fault, length);
        r.target = format!("proxy window {fault:?} for {length:?}");
        r.injected = true;
        tokio::time::sleep(length).await;
        r.recovered_s = Some(length.as_secs_f64());
        r.ended = Some(Instant::now());
        return r;
    }
    let why = format!("kuryr-bench chaos seed={} fault #{n}", env.seed);
    let (service, old_leader) = if kind == FaultKind::ControllerLeaderKill {
        match lease_holder(&env.client).await {
            Ok((id, svc)) => (svc, Some(id)),
            Err(e) => {
                r.error = Some(format!("not injected: {e:#}"));
                return r;
            }
        }
    } else {
        (kind.service().unwrap_or_default().to_owned(), None)
    };
    let Some(pid) = pid_of(&service) else {
        r.error = Some(format!("not injected: {service} is not running"));
        return r;
    };
    let sig = match kind {
        FaultKind::ApiserverRestart | FaultKind::NeutronRestart | FaultKind::OctaviaRestart => {
            "-TERM"
        }
        _ => "-KILL",
    };
    if let Err(e) = kuryr_test_support::announce_kill(&service, &why) {
        r.error = Some(format!("not injected: announce the kill: {e}"));
        return r;
    }
    if let Err(e) = signal(pid, sig) {
        r.error = Some(format!("not injected: {e:#}"));
        return r;
    }
    let t0 = Instant::now();
    r.injected = true;
    r.target = format!("{service} pid {pid} ({sig})");
    let svc: &str = &service;
    let restarted = move || async move { pid_of(svc).is_some_and(|p| p != pid) };
    let back = match kind {
        FaultKind::ControllerLeaderKill => {
            let old = old_leader.unwrap_or_default();
            let old: &str = &old;
            let fo = until(RECOVERY_LIMIT, move || async move {
                lease_holder(&env.client)
                    .await
                    .is_ok_and(|(id, _)| id != old)
            })
            .await;
            r.failover_s = fo.map(|d| d.as_secs_f64());
            let up = until(RECOVERY_LIMIT, restarted).await;
            fo.and(up).map(|_| t0.elapsed())
        }
        FaultKind::DaemonKill => {
            until(RECOVERY_LIMIT, move || async move {
                restarted().await && http_ok(&env.http, "http://127.0.0.1:8090/ready").await
            })
            .await
        }
        FaultKind::VswitchdKill => {
            until(RECOVERY_LIMIT, move || async move {
                restarted().await
                    && Command::new("ovs-appctl")
                        .args([
                            "-t",
                            "/var/run/openvswitch/ovs-vswitchd.ctl",
                            "-T",
                            "3",
                            "version",
                        ])
                        .output()
                        .is_ok_and(|o| o.status.success())
            })
            .await
        }
        FaultKind::ApiserverRestart => {
            until(RECOVERY_LIMIT, move || async move {
                restarted().await && env.client.apiserver_version().await.is_ok()
            })
            .await
        }
        FaultKind::NeutronRestart => {
            until(RECOVERY_LIMIT, move || async move {
                restarted().await && http_ok(&env.http, &format!("{}/", env.neutron_origin)).await
            })
            .await
        }
        FaultKind::OctaviaRestart => {
            until(RECOVERY_LIMIT, move || async move {
                restarted().await && http_ok(&env.http, &format!("{}/", env.octavia_origin)).await
            })
            .await
        }
        _ => until(RECOVERY_LIMIT, restarted).await,
    };
    match back {
        Some(d) => r.recovered_s = Some((d.as_secs_f64() * 10.0).round() / 10.0),
        None => {
            r.error = Some(format!(
                "{service} did not recover within {RECOVERY_LIMIT:?}"
            ))
        }
    }
    r.ended = Some(Instant::now());
    r
}

/// Runs the schedule: each fault at its time, one at a time per service (a fault of a service
/// still recovering from the previous one waits for it).
async fn run_faults(
    env: Arc<Env>,
    sched: Vec<(Duration, FaultKind)>,
    start: Instant,
) -> Vec<FaultRecord> {
    let locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = Arc::default();
    let mut tasks = Vec::new();
    for (n, (at, kind)) in sched.into_iter().enumerate() {
        tokio::time::sleep_until((start + at).into()).await;
        let key = kind
            .service()
            .map(|s| s.to_owned())
            .unwrap_or_else(|| kind.name().to_owned());
        let lock = locked(&locks).entry(key).or_default().clone();
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            let _held = lock.lock().await;
            let r = inject(&env, n + 1, kind, start.elapsed()).await;
            eprintln!(
                "[chaos +{:.0}s] fault #{} {}: {}{}{}",
                start.elapsed().as_secs_f64(),
                r.n,
                r.kind,
                r.target,
                r.recovered_s
                    .map(|s| format!(", recovered in {s:.1} s"))
                    .unwrap_or_default(),
                r.error
                    .as_ref()
                    .map(|e| format!(" — {e}"))
                    .unwrap_or_default()
            );
            r
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    out
}

// ------------------------------------------------------------------------------ churn

#[derive(Default, Debug, serde::Serialize)]
struct ChurnStats {
    pods_created: usize,
    pods_deleted: usize,
    deployment_scales: usize,
    deployment_pods_max: usize,
    services_created: usize,
    services_deleted: usize,
    api_errors: usize,
    first_errors: Vec<String>,
    /// Pods (standalone, the Deployment's, the probe) seen by the watch: their UIDs.
    #[serde(skip)]
    seen: std::collections::HashSet<String>,
    #[serde(skip)]
    ready_ms: Vec<f64>,
}

impl ChurnStats {
    fn error(&mut self, what: String) {
        self.api_errors += 1;
        if self.first_errors.len() < 20 {
            self.first_errors.push(what);
        }
    }
}

struct Cluster {
    client: Client,
    run: String,
    namespaces: Vec<String>,
}

impl Cluster {
    fn labels(&self) -> Value {
        json!({RUN_LABEL: self.run, TAG: "true"})
    }

    fn pod(&self, ns: &str, name: &str) -> Result<Pod> {
        let mut v = compare::busybox(ns, name);
        v["metadata"]["labels"] = self.labels();
        Ok(serde_json::from_value(v)?)
    }

    fn deployment(&self) -> Result<Deployment> {
        let mut pod = compare::busybox(&self.namespaces[0], "x");
        let mut labels = self.labels();
        labels["app"] = json!("web");
        Ok(serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": self.namespaces[0], "labels": self.labels()},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": labels}, "spec": pod["spec"].take()}}
        }))?)
    }

    fn service(&self) -> Result<Service> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": self.namespaces[0], "labels": self.labels()},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        }))?)
    }

    fn pods_selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.run)
    }
}

/// Pod created (by this driver) → first seen Ready; every pod event wakes the convergence wait.
fn watch_pods(
    cl: &Cluster,
    created: Arc<Mutex<HashMap<String, Instant>>>,
    stats: Arc<Mutex<ChurnStats>>,
    events: Arc<Notify>,
) {
    let api: Api<Pod> = Api::all(cl.client.clone());
    let cfg = watcher::Config::default().labels(&cl.pods_selector());
    tokio::spawn(async move {
        let mut s = watcher(api, cfg)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(ev) = s.next().await {
            let Ok(p) = ev else { continue };
            events.notify_waiters();
            if let Some(uid) = &p.metadata.uid {
                locked(&stats).seen.insert(uid.clone());
            }
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready {
                let key = format!(
                    "{}/{}",
                    p.metadata.namespace.unwrap_or_default(),
                    p.metadata.name.unwrap_or_default()
                );
                let t = locked(&created).remove(&key);
                if let Some(t) = t {
                    locked(&stats)
                        .ready_ms
                        .push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    });
}

/// The mutex's value, also after a panic elsewhere poisoned it (the stats stay readable).
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates and deletes pods, scales the Deployment and toggles the Service until `end`.
async fn churn(
    cl: &Cluster,
    o: &Opts,
    end: Instant,
    created: Arc<Mutex<HashMap<String, Instant>>>,
    stats: Arc<Mutex<ChurnStats>>,
    orphan: Option<(Instant, &Neutron, &HashMap<String, String>, &str)>,
) -> Option<String> {
    let mut rng = Rng::new(o.seed ^ 0x00c4_a05c_4a05);
    let max_deploy = (o.max_pods / 3).clamp(1, 8);
    let max_standalone = o.max_pods.saturating_sub(max_deploy + 1).max(1);
    let mut alive: Vec<(String, String, Instant)> = Vec::new();
    let mut next_pod = 0usize;
    let mut next_scale = Instant::now() + Duration::from_secs(10);
    let mut next_svc = Instant::now() + Duration::from_secs(5);
    let mut svc_up = false;
    let mut orphan_port = None;
    let mut orphan = orphan;
    let err = |e: String| locked(&stats).error(e);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs_f64(rng.range_f64(0.8, 2.5))).await;
        let now = Instant::now();
        if let Some((at, n, env, tag)) = orphan {
            if now >= at {
                orphan = None;
                match make_orphan(n, env, tag).await {
                    Ok(id) => {
                        eprintln!("[chaos] --inject-orphan: created Neutron port {id} (tag {tag}, no owner)");
                        orphan_port = Some(id);
                    }
                    Err(e) => err(format!("inject orphan: {e:#}")),
                }
            }
        }
        let want_create =
            alive.len() < max_standalone && (alive.len() < max_standalone / 2 || rng.chance(0.5));
        if want_create {
            let ns = cl.namespaces[next_pod % cl.namespaces.len()].clone();
            let name = format!("c{next_pod}");
            next_pod += 1;
            let api: Api<Pod> = Api::namespaced(cl.client.clone(), &ns);
            let pod = match cl.pod(&ns, &name) {
                Ok(p) => p,
                Err(e) => {
                    err(format!("pod spec {ns}/{name}: {e:#}"));
                    continue;
                }
            };
            locked(&created).insert(format!("{ns}/{name}"), Instant::now());
            match api.create(&PostParams::default(), &pod).await {
                Ok(_) => {
                    locked(&stats).pods_created += 1;
                    alive.push((ns, name, Instant::now()));
                }
                Err(e) => {
                    locked(&created).remove(&format!("{ns}/{name}"));
                    err(format!("create pod {ns}/{name}: {e}"));
                }
            }
        } else if !alive.is_empty() {
            // A random pod that had some time to start (else the oldest).
            let old: Vec<usize> = (0..alive.len())
                .filter(|&i| alive[i].2.elapsed() > Duration::from_secs(15))
                .collect();
            let i = if old.is_empty() {
                0
            } else {
                old[rng.below(old.len())]
            };
            let (ns, name, _) = alive[i].clone();
            let api: Api<Pod> = Api::namespaced(cl.client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    locked(&stats).pods_deleted += 1;
                    alive.remove(i);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    alive.remove(i);
                }
                Err(e) => err(format!("delete pod {ns}/{name}: {e}")),
            }
        }
        if now >= next_scale {
            next_scale = now + Duration::from_secs_f64(rng.range_f64(15.0, 35.0));
            let n = rng.below(max_deploy + 1);
            let api: Api<Deployment> = Api::namespaced(cl.client.clone(), &cl.namespaces[0]);
            match api
                .patch_scale(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": n}})),
                )
                .await
            {
                Ok(_) => {
                    let mut s = locked(&stats);
                    s.deployment_scales += 1;
                    s.deployment_pods_max = s.deployment_pods_max.max(n);
                }
                Err(e) => err(format!("scale deployment web to {n}: {e}")),
            }
        }
        if now >= next_svc {
            next_svc = now + Duration::from_secs_f64(rng.range_f64(30.0, 60.0));
            let api: Api<Service> = Api::namespaced(cl.client.clone(), &cl.namespaces[0]);
            if svc_up {
                match api.delete("web", &DeleteParams::default()).await {
                    Ok(_) => {
                        svc_up = false;
                        locked(&stats).services_deleted += 1;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => svc_up = false,
                    Err(e) => err(format!("delete service web: {e}")),
                }
            } else {
                let svc = match cl.service() {
                    Ok(s) => s,
                    Err(e) => {
                        err(format!("service spec: {e:#}"));
                        continue;
                    }
                };
                match api.create(&PostParams::default(), &svc).await {
                    Ok(_) => {
                        svc_up = true;
                        locked(&stats).services_created += 1;
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => svc_up = true,
                    Err(e) => err(format!("create service web: {e}")),
                }
            }
        }
    }
    orphan_port
}

/// A Neutron port on the pod network carrying the cluster's tag, that nothing owns (GC leaves
/// it alone: its description does not name the cluster).
async fn make_orphan(n: &Neutron, env: &HashMap<String, String>, tag: &str) -> Result<String> {
    let p = n
        .create_port(&PortCreate {
            network_id: env["POD_NET_ID"].clone(),
            name: "chaos-injected-orphan".into(),
            fixed_ips: Some(vec![FixedIpRequest::subnet(env["POD_SUBNET_ID"].clone())]),
            device_owner: DEVICE_OWNER.into(),
            device_id: "chaos-injected-orphan".into(),
            ..Default::default()
        })
        .await
        .context("create the orphan port")?;
    n.add_tag(TagResource::Port, &p.id, tag)
        .await
        .context("tag the orphan port")?;
    Ok(p.id)
}

// ------------------------------------------------------------------------------ invariants

/// What existed before the run (not judged).
#[derive(Default)]
struct Baseline {
    ovs_taps: BTreeSet<String>,
    host_taps: BTreeSet<String>,
    records: BTreeSet<String>,
}

fn host_taps() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tap"))
        .collect()
}

/// Attachment records: (file name, record).
fn records() -> Vec<(String, Value)> {
    std::fs::read_dir(ATTACHMENTS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                return None;
            }
            let v = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((name, v))
        })
        .collect()
}

/// OVS ports `tap…` on the bridge: name → iface-id.
async fn ovs_taps(bridge: &str) -> Result<BTreeMap<String, Option<String>>> {
    let ovs = Ovs::connect_default().await.context("OVSDB")?;
    Ok(ovs
        .list_ports(bridge)
        .await
        .context("list the OVS ports of the bridge")?
        .into_iter()
        .filter(|p| p.name.starts_with("tap"))
        .map(|p| {
            let id = p
                .interfaces
                .iter()
                .find_map(|i| i.external_ids.get("iface-id").cloned());
            (p.name, id)
        })
        .collect())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Pods are alive: they must all be Running with network.
    Steady,
    /// The run's namespaces were deleted: nothing of them may be left.
    Teardown,
}

/// Broken invariants: name → offending objects.
type Violations = BTreeMap<&'static str, Vec<String>>;

struct Checker {
    client: Client,
    neutron: Neutron,
    octavia: Octavia,
    bridge: String,
    cluster: String,
    namespaces: Vec<String>,
    selector: String,
    baseline: Baseline,
    kubectl_env: HashMap<String, String>,
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

impl Checker {
    fn ours(&self, p: &Port) -> bool {
        p.tags.contains(&cluster_tag(&self.cluster))
            || p.description
                .contains(&format!("cluster {},", self.cluster))
    }

    /// The invariants on the current state; `Err` when the state could not be read.
    async fn check(&self, phase: Phase, ping: bool) -> Result<Violations> {
        let mut v: Violations = BTreeMap::new();
        let mut add = |k: &'static str, s: String| v.entry(k).or_default().push(s);
        let kps = Api::<KuryrPort>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .context("list KuryrPorts")?
            .items;
        let ports: Vec<Port> = self
            .neutron
            .list_ports(&Query::new().eq("device_owner", DEVICE_OWNER).fields([
                "id",
                "name",
                "description",
                "device_id",
                "fixed_ips",
                "status",
                "tags",
            ]))
            .await
            .context("list Neutron ports")?
            .into_iter()
            .filter(|p| self.ours(p))
            .collect();
        let pods: Vec<Pod> = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default().labels(&self.selector))
            .await
            .context("list pods")?
            .items;
        // Ports KuryrPorts list: id → the KuryrPorts (ns/name) listing it.
        let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Default VIF address of each KuryrPort (ns/name → ip).
        let mut kp_ip: BTreeMap<String, (String, bool)> = BTreeMap::new();
        for kp in &kps {
            let key = format!(
                "{}/{}",
                kp.metadata.namespace.as_deref().unwrap_or(""),
                kp.metadata.name.as_deref().unwrap_or("")
            );
            for e in kp.status.iter().flat_map(|s| s.vifs.values()) {
                match e.vif() {
                    Ok(vif) => {
                        listed
                            .entry(vif.port_id.clone())
                            .or_default()
                            .push(key.clone());
                        if e.default {
                            let ip = vif.ips.first().map(|i| i.address.to_string());
                            kp_ip.insert(key.clone(), (ip.unwrap_or_default(), vif.active));
                        }
                    }
                    Err(err) => add("unreadable_vifs", format!("KuryrPort {key}: {err}")),
                }
            }
        }
        let in_neutron: BTreeSet<&str> = ports.iter().map(|p| p.id.as_str()).collect();
        // 1. Neutron ports of the cluster == ports KuryrPorts list.
        for p in &ports {
            if !listed.contains_key(&p.id) {
                add(
                    "orphan_ports",
                    format!(
                        "port {} ({:?}, device_id {:?}, status {}, {:?}): no KuryrPort lists it",
                        p.id, p.name, p.device_id, p.status, p.description
                    ),
                );
            }
        }
        for (id, by) in &listed {
            if by.len() > 1 {
                add(
                    "duplicate_ports",
                    format!("port {id} is listed by {}", by.join(", ")),
                );
            }
        }
        let mut by_device: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for p in ports.iter().filter(|p| !p.device_id.is_empty()) {
            by_device
                .entry(p.device_id.as_str())
                .or_default()
                .push(p.id.as_str());
        }
        for (dev, ids) in by_device.iter().filter(|(_, ids)| ids.len() > 1) {
            add(
                "duplicate_ports",
                format!("device_id {dev} has ports {}", ids.join(", ")),
            );
        }
        // Ports the run's KuryrPorts list that Neutron does not have (untagged ones are looked up).
        let ours_ns = |key: &str| {
            self.namespaces
                .iter()
                .any(|ns| key.starts_with(&format!("{ns}/")))
                || key.starts_with(&format!("{POOL_NAMESPACE}/"))
        };
        let unknown: Vec<&String> = listed
            .iter()
            .filter(|(id, by)| !in_neutron.contains(id.as_str()) && by.iter().any(|k| ours_ns(k)))
            .map(|(id, _)| id)
            .collect();
        if !unknown.is_empty() {
            let found: BTreeSet<String> = self
                .neutron
                .list_ports_by_id(&unknown, &["id"])
                .await
                .context("look up the listed ports")?
                .into_iter()
                .map(|p| p.id)
                .collect();
            for id in unknown.iter().filter(|id| !found.contains(id.as_str())) {
                add(
                    "lost_ports",
                    format!(
                        "port {id} (listed by {}) does not exist in Neutron",
                        listed[*id].join(", ")
                    ),
                );
            }
        }
        // 2. OVS ports and host veths with an owner.
        let taps = ovs_taps(&self.bridge).await?;
        for (tap, id) in taps
            .iter()
            .filter(|(t, _)| !self.baseline.ovs_taps.contains(*t))
        {
            match id {
                Some(id) if listed.contains_key(id) => {}
                Some(id) => add(
                    "ovs_ports_without_owner",
                    format!(
                        "OVS port {tap} on {} (iface-id {id}): no KuryrPort lists the port",
                        self.bridge
                    ),
                ),
                None => add(
                    "ovs_ports_without_owner",
                    format!("OVS port {tap} on {} has no iface-id", self.bridge),
                ),
            }
        }
        for t in host_taps()
            .difference(&self.baseline.host_taps)
            .filter(|t| !taps.contains_key(*t))
        {
            add(
                "veths_without_owner",
                format!("host device {t} is on no OVS bridge port"),
            );
        }
        // 3. Attachment records of the run's namespaces name a live pod.
        let live_uids: BTreeSet<String> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        for (file, r) in records()
            .iter()
            .filter(|(f, _)| !self.baseline.records.contains(f))
        {
            let ns = r["podNamespace"].as_str().unwrap_or("");
            let uid = r["podUid"].as_str().unwrap_or("");
            if self.namespaces.iter().any(|n| n == ns) && !live_uids.contains(uid) {
                add(
                    "attachments_without_pod",
                    format!(
                        "{ATTACHMENTS_DIR}/{file} ({ns}/{} uid {uid}, port {})",
                        r["podName"].as_str().unwrap_or(""),
                        r["interfaces"][0]["portId"].as_str().unwrap_or("?")
                    ),
                );
            }
        }
        // 4. Octavia load balancers of the cluster have their KuryrLoadBalancer, and Services
        //    their ACTIVE load balancer.
        let lbs: Vec<LoadBalancer> = self
            .octavia
            .list_load_balancers(&Query::new().tags([cluster_tag(&self.cluster)]))
            .await
            .context("list Octavia load balancers")?;
        let klbs = Api::<KuryrLoadBalancer>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .context("list KuryrLoadBalancers")?
            .items;
        let klb_lb: BTreeMap<String, String> = klbs
            .iter()
            .filter_map(|k| {
                let id = k
                    .status
                    .as_ref()?
                    .loadbalancer
                    .get("id")?
                    .as_str()?
                    .to_owned();
                Some((
                    format!(
                        "{}/{}",
                        k.metadata.namespace.as_deref().unwrap_or(""),
                        k.metadata.name.as_deref().unwrap_or("")
                    ),
                    id,
                ))
            })
            .collect();
        let owned: BTreeSet<&String> = klb_lb.values().collect();
        for lb in lbs.iter().filter(|lb| !owned.contains(&lb.id)) {
            add(
                "lbs_without_owner",
                format!(
                    "load balancer {} ({:?}, {}): no KuryrLoadBalancer names it",
                    lb.id, lb.name, lb.provisioning_status
                ),
            );
        }
        if phase == Phase::Steady {
            for ns in &self.namespaces {
                let svcs = Api::<Service>::namespaced(self.client.clone(), ns)
                    .list(&ListParams::default().labels(&self.selector))
                    .await
                    .context("list Services")?
                    .items;
                for s in svcs
                    .iter()
                    .filter(|s| s.metadata.deletion_timestamp.is_none())
                {
                    let key = format!("{ns}/{}", s.metadata.name.as_deref().unwrap_or(""));
                    match klb_lb.get(&key) {
                        None => add(
                            "services_without_lb",
                            format!(
                                "Service {key}: no KuryrLoadBalancer status names a load balancer"
                            ),
                        ),
                        Some(id) => match lbs.iter().find(|l| &l.id == id) {
                            Some(l) if l.provisioning_status == "ACTIVE" => {}
                            Some(l) => add(
                                "services_without_lb",
                                format!(
                                    "Service {key}: load balancer {id} is {}",
                                    l.provisioning_status
                                ),
                            ),
                            None => add(
                                "services_without_lb",
                                format!(
                                    "Service {key}: load balancer {id} does not exist in Octavia"
                                ),
                            ),
                        },
                    }
                }
            }
        }
        // 5. Pods: Running, Ready, with the address of their KuryrPort; none stuck deleting.
        let mut ping_targets: Vec<(String, String)> = Vec::new();
        let mut probe_ready = false;
        for p in &pods {
            let key = pod_key(p);
            if let Some(t) = &p.metadata.deletion_timestamp {
                let age = k8s_now_secs() - t.0.as_second();
                if phase == Phase::Teardown || age > 60 {
                    add(
                        "stuck_deleting",
                        format!(
                            "pod {key} deleting for {age} s (finalizers {:?})",
                            p.metadata.finalizers.clone().unwrap_or_default()
                        ),
                    );
                }
                continue;
            }
            if phase == Phase::Teardown {
                add("stuck_deleting", format!("pod {key} still exists"));
                continue;
            }
            let st = p.status.clone().unwrap_or_default();
            let phase_s = st.phase.clone().unwrap_or_default();
            let ready = st
                .conditions
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if phase_s != "Running" || !ready {
                let waiting = st
                    .container_statuses
                    .iter()
                    .flatten()
                    .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                    .collect::<Vec<_>>()
                    .join(",");
                add(
                    "pods_not_running",
                    format!("pod {key}: phase {phase_s}, ready {ready}, waiting {waiting:?}"),
                );
                continue;
            }
            let ip = st.pod_ip.clone().unwrap_or_default();
            match kp_ip.get(&key) {
                None => add(
                    "pods_without_address",
                    format!("pod {key} (IP {ip:?}): no KuryrPort with a default VIF"),
                ),
                Some((kip, _)) if kip != &ip || ip.is_empty() => add(
                    "pods_without_address",
                    format!("pod {key}: pod IP {ip:?}, its KuryrPort's VIF {kip:?}"),
                ),
                Some((_, false)) => add(
                    "pods_without_address",
                    format!("pod {key} ({ip}): its VIF is not active"),
                ),
                Some(_) => {
                    if p.metadata.name.as_deref() == Some("probe") {
                        probe_ready = true;
                    } else {
                        ping_targets.push((key, ip));
                    }
                }
            }
        }
        // 6. The pods answer a ping from the probe pod (only once everything else holds).
        if phase == Phase::Steady && ping && v.is_empty() {
            if !probe_ready {
                v.entry("pods_unreachable")
                    .or_default()
                    .push("the probe pod is not running with its address".into());
            } else if !ping_targets.is_empty() {
                for (key, ip) in self.ping(&ping_targets)? {
                    v.entry("pods_unreachable").or_default().push(format!(
                        "pod {key} ({ip}) does not answer a ping from pod {}/probe",
                        self.namespaces[0]
                    ));
                }
            }
        }
        // 7. After the teardown: the namespaces are gone (what holds them is named).
        if phase == Phase::Teardown {
            for ns in &self.namespaces {
                match Api::<Namespace>::all(self.client.clone()).get_opt(ns).await {
                    Ok(None) => {}
                    Ok(Some(n)) => {
                        let left = self.holding(ns).await;
                        v.entry("stuck_finalizers").or_default().push(format!(
                            "namespace {ns} ({}) still exists; left in it: {}",
                            n.status.and_then(|s| s.phase).unwrap_or_default(),
                            if left.is_empty() {
                                "nothing listed".into()
                            } else {
                                left.join(", ")
                            }
                        ));
                    }
                    Err(e) => bail!("read namespace {ns}: {e}"),
                }
            }
        }
        Ok(v)
    }

    /// Objects left in a namespace being deleted, with their finalizers.
    async fn holding(&self, ns: &str) -> Vec<String> {
        let mut out = Vec::new();
        let lp = ListParams::default();
        macro_rules! each {
            ($t:ty, $kind:literal) => {
                if let Ok(l) = Api::<$t>::namespaced(self.client.clone(), ns)
                    .list(&lp)
                    .await
                {
                    for o in l.items {
                        out.push(format!(
                            "{} {} (finalizers {:?})",
                            $kind,
                            o.metadata.name.unwrap_or_default(),
                            o.metadata.finalizers.unwrap_or_default()
                        ));
                    }
                }
            };
        }
        each!(Pod, "Pod");
        each!(KuryrPort, "KuryrPort");
        each!(Service, "Service");
        each!(KuryrLoadBalancer, "KuryrLoadBalancer");
        out
    }

    /// One `kubectl exec` of the probe pod pinging every target (3 tries each): the targets that
    /// never answered.
    fn ping(&self, targets: &[(String, String)]) -> Result<Vec<(String, String)>> {
        let ips: Vec<&str> = targets.iter().map(|(_, ip)| ip.as_str()).collect();
        let script = format!(
            "for ip in {}; do ok=0; for i in 1 2 3; do if ping -c 1 -W 2 $ip >/dev/null 2>&1; then ok=1; break; fi; done; echo \"$ok $ip\"; done",
            ips.join(" ")
        );
        let out = compare::kubectl(&self.kubectl_env)
            .args([
                "exec",
                "-n",
                &self.namespaces[0],
                "probe",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .output()
            .context("kubectl exec the probe pod")?;
        if !out.status.success() {
            bail!(
                "kubectl exec the probe pod: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let ok: BTreeSet<&str> = text.lines().filter_map(|l| l.strip_prefix("1 ")).collect();
        Ok(targets
            .iter()
            .filter(|(_, ip)| !ok.contains(ip.as_str()))
            .cloned()
            .collect())
    }

    /// Re-checks until every invariant holds (woken by pod events, at least every 5 s) or
    /// `limit` passed: (when it held, the last violations).
    async fn converge(
        &self,
        phase: Phase,
        limit: Duration,
        events: &Notify,
    ) -> (Option<Instant>, Violations) {
        let end = Instant::now() + limit;
        let mut last: Violations;
        loop {
            let woken = events.notified();
            last = match self.check(phase, true).await {
                Ok(v) => v,
                Err(e) => [("state_unreadable", vec![format!("{e:#}")])].into(),
            };
            if last.is_empty() {
                return (Some(Instant::now()), last);
            }
            if Instant::now() > end {
                return (None, last);
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), woken).await;
        }
    }
}

fn k8s_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Invariants that count leaked objects (the rest count pods without network, or are stuck).
const LEAKS: [&str; 7] = [
    "orphan_ports",
    "duplicate_ports",
    "lost_ports",
    "ovs_ports_without_owner",
    "veths_without_owner",
    "attachments_without_pod",
    "lbs_without_owner",
];
const NO_NETWORK: [&str; 4] = [
    "pods_not_running",
    "pods_without_address",
    "pods_unreachable",
    "services_without_lb",
];

fn count(v: &Violations, names: &[&str]) -> usize {
    names.iter().map(|n| v.get(n).map_or(0, Vec::len)).sum()
}

fn print_violations(phase: &str, v: &Violations) {
    for (k, objs) in v {
        eprintln!("INVARIANT FAILED ({phase}): {k}: {} object(s)", objs.len());
        for o in objs {
            eprintln!("    {o}");
        }
    }
}

// ------------------------------------------------------------------------------ the run

/// `(service, how many times the supervisor restarted it)` since `epoch`.
fn restarts_since(epoch: u64) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in std::fs::read_to_string(state_file("crashes"))
        .unwrap_or_default()
        .lines()
    {
        let f: Vec<&str> = l.split_whitespace().collect();
        let e = f
            .last()
            .and_then(|x| x.strip_prefix("epoch="))
            .and_then(|x| x.parse::<u64>().ok());
        if let (Some(name), Some(e)) = (f.get(1), e) {
            if e >= epoch {
                *out.entry((*name).to_owned()).or_default() += 1;
            }
        }
    }
    out
}

fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn count_metric(n: usize, what: &str) -> Metric {
    Metric::from_samples(&[n as f64], "count", what)
}

pub async fn run(o: &Opts, repo: &Path) -> Result<Run> {
    for s in ["kuryr-daemon", "kuryr-controller", "kuryr-controller-2"] {
        if let Some(pid) = pid_of(s) {
            bail!("{s} already runs (pid {pid}): the chaos soak needs the node's CNI to itself (hack/kuryr-services down)");
        }
    }
    let mut run = Run::start(repo);
    let env = stack_env()?;
    let bridge = env
        .get("OVS_BRIDGE")
        .cloned()
        .unwrap_or_else(|| "br-int".into());
    let run_id = format!("{:x}", (o.seed ^ u64::from(std::process::id())) & 0xff_ffff);
    let cluster = format!("chaos-{run_id}");
    let sched = schedule(o.seed, o.duration, o.mean_gap, &o.faults);
    eprintln!(
        "[chaos] seed {} (replay: kuryr-bench chaos --seed {} --duration {}s --mean-gap {}s), run {run_id}, cluster {cluster}, {} faults scheduled:",
        o.seed,
        o.seed,
        o.duration.as_secs(),
        o.mean_gap.as_secs(),
        sched.len()
    );
    for (i, (t, k)) in sched.iter().enumerate() {
        eprintln!("    #{} +{:.1}s {}", i + 1, t.as_secs_f64(), k.name());
    }

    // The fault proxy in front of Keystone, Neutron and Octavia.
    let base =
        std::fs::read_to_string(state_file("kuryr.conf")).context("the stack's kuryr.conf")?;
    let auth_url = base
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "auth_url").then(|| v.trim().to_owned())
        })
        .context("kuryr.conf has no auth_url")?;
    let session = stack::session().await?;
    let neutron_url = session.endpoint(OsService::Network).await?;
    let octavia_url = session.endpoint(OsService::LoadBalancer).await?;
    let (ks_origin, ne_origin, oc_origin) = (
        proxy::origin(&auth_url)?,
        proxy::origin(&neutron_url)?,
        proxy::origin(&octavia_url)?,
    );
    let px = Arc::new(
        Proxy::start(
            &[
                (Upstream::Keystone, ks_origin.clone()),
                (Upstream::Neutron, ne_origin.clone()),
                (Upstream::Octavia, oc_origin.clone()),
            ],
            o.seed,
        )
        .await?,
    );
    let px_ks = px
        .origin_of(Upstream::Keystone)
        .context("proxy listener for Keystone")?
        .to_owned();
    let mut conf_text = base.replace(&auth_url, &auth_url.replace(&ks_origin, &px_ks));
    // Every port and load balancer of the run also carries the bench's tag (`kuryr-bench
    // cleanup` finds what a crashed run left).
    conf_text = conf_text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("resource_tags") {
                format!("{l},{TAG}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if o.pools {
        conf_text.push_str("\n[kubernetes]\nvif_pool_driver = neutron\n[vif_pool]\nports_pool_min = 8\nports_pool_max = 0\nports_pool_batch = 8\nports_pool_update_frequency = 20\n");
    }
    let conf = state_file(&format!("kuryr-chaos-{run_id}.conf"));
    std::fs::write(&conf, &conf_text).with_context(|| format!("write {}", conf.display()))?;

    let client = kube_client().await?;
    let neutron = Neutron::new(session.clone());
    let octavia = Octavia::new(session.clone());
    let namespaces: Vec<String> = (0..o.namespaces.max(1))
        .map(|i| format!("chaos-{run_id}-{i}"))
        .collect();
    let cl = Cluster {
        client: client.clone(),
        run: run_id.clone(),
        namespaces: namespaces.clone(),
    };
    let checker = Checker {
        client: client.clone(),
        neutron: neutron.clone(),
        octavia,
        bridge: bridge.clone(),
        cluster: cluster.clone(),
        namespaces: namespaces.clone(),
        selector: cl.pods_selector(),
        baseline: Baseline {
            ovs_taps: ovs_taps(&bridge).await?.into_keys().collect(),
            host_taps: host_taps(),
            records: records().into_iter().map(|(f, _)| f).collect(),
        },
        kubectl_env: env.clone(),
    };
    run.params = json!({
        "seed": o.seed, "duration_s": o.duration.as_secs(), "mean_gap_s": o.mean_gap.as_secs(),
        "max_pods": o.max_pods, "namespaces": o.namespaces, "pools": o.pools, "cluster": cluster,
        "controllers": 2, "inject_orphan": o.inject_orphan,
        "faults_allowed": o.faults.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "schedule": sched.iter().map(|(t, k)| json!([((t.as_secs_f64() * 10.0).round() / 10.0), k.name()])).collect::<Vec<_>>(),
        "release_dir": o.release_dir,
    });
    let epoch0 = now_epoch();
    eprintln!("[chaos] starting kuryr-rs (1 daemon, 2 controllers) through the fault proxy");
    let up = compare::kuryr_services_up(
        repo,
        &o.release_dir,
        &conf,
        &[
            ("KURYR_CONTROLLERS", "2"),
            ("KURYR_CLUSTER_NAME", &cluster),
            ("KURYR_CONTROLLER_ARGS", "--gc-interval-seconds 60"),
        ],
    );
    let result = match up {
        Ok(()) => {
            soak(
                o,
                &mut run,
                &cl,
                &checker,
                px.clone(),
                &env,
                &ne_origin,
                &oc_origin,
                &neutron,
                epoch0,
            )
            .await
        }
        Err(e) => Err(e.context("hack/kuryr-services up")),
    };
    if result.is_err() {
        // The soak stopped early: its namespaces go while the controllers still run (their
        // finalizers need them).
        let nss = Api::<Namespace>::all(client.clone());
        for ns in &namespaces {
            let _ = nss.delete(ns, &DeleteParams::default()).await;
        }
        let (nss, nsl) = (&nss, &namespaces);
        let gone = until(Duration::from_secs(120), move || async move {
            let mut left = 0;
            for ns in nsl {
                if !matches!(nss.get_opt(ns).await, Ok(None)) {
                    left += 1;
                }
            }
            left == 0
        })
        .await;
        if gone.is_none() {
            run.note("the run's namespaces were not gone 120 s after the early stop (kuryr-bench cleanup removes them)");
        }
    }

    // Teardown of what the run leaves outside its namespaces: the services, the pool's ports.
    let down = compare::side_down(repo, Side::KuryrRs);
    let mut swept = stack::Swept::default();
    match neutron
        .list_ports(&Query::new().eq("device_owner", DEVICE_OWNER).fields([
            "id",
            "name",
            "description",
            "tags",
        ]))
        .await
    {
        Ok(ports) => {
            let ours: Vec<Port> = ports
                .into_iter()
                .filter(|p| checker.ours(p) || p.name == "chaos-injected-orphan")
                .collect();
            let ids: Vec<String> = ours.iter().map(|p| p.id.clone()).collect();
            stack::remove_ports(&neutron, &bridge, &ours, &mut swept).await;
            if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                let vifs: serde_json::Map<String, Value> =
                    ids.iter().map(|i| (i.clone(), Value::Null)).collect();
                let _ = Api::<KuryrPort>::namespaced(client.clone(), POOL_NAMESPACE)
                    .patch_status(
                        &pool_kuryrport_name(host.trim()),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"vifs": vifs}})),
                    )
                    .await;
            }
        }
        Err(e) => swept.errors.push(format!("list the run's ports: {e}")),
    }
    let _ = std::fs::remove_file(&conf);
    run.checks["cleanup"] = json!(swept);
    if let Err(e) = down {
        run.note(format!("hack/kuryr-services down: {e:#}"));
    }
    let failed = result?;
    if !failed.is_empty() {
        run.note(format!("INVARIANTS FAILED: {}", failed.join("; ")));
    }
    run.checks["invariants_failed"] = json!(failed);
    Ok(run)
}

/// The soak itself (services up): returns the broken invariants (empty: all held).
#[allow(clippy::too_many_arguments)]
async fn soak(
    o: &Opts,
    run: &mut Run,
    cl: &Cluster,
    checker: &Checker,
    px: Arc<Proxy>,
    env: &HashMap<String, String>,
    ne_origin: &str,
    oc_origin: &str,
    neutron: &Neutron,
    epoch0: u64,
) -> Result<Vec<String>> {
    let client = &cl.client;
    // The namespaces, the Deployment, the probe pod.
    for ns in &cl.namespaces {
        let n: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns, "labels": cl.labels()}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &n)
            .await
            .with_context(|| format!("create namespace {ns}"))?;
    }
    let ns0 = &cl.namespaces[0];
    Api::<Deployment>::namespaced(client.clone(), ns0)
        .create(&PostParams::default(), &cl.deployment()?)
        .await
        .context("create the Deployment")?;
    Api::<Pod>::namespaced(client.clone(), ns0)
        .create(&PostParams::default(), &cl.pod(ns0, "probe")?)
        .await
        .context("create the probe pod")?;
    let events = Arc::new(Notify::new());
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stats: Arc<Mutex<ChurnStats>> = Arc::default();
    watch_pods(cl, created.clone(), stats.clone(), events.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns0);
    let pods = &pods;
    let probe_up = until(Duration::from_secs(180), move || async move {
        pods.get("probe").await.is_ok_and(|p| {
            p.status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    })
    .await;
    let Some(probe_t) = probe_up else {
        bail!("the probe pod {ns0}/probe was not Ready within 180 s before any fault (is the node's CNI working?)");
    };
    eprintln!(
        "[chaos] probe pod Ready after {:.1} s; soak for {:?}",
        probe_t.as_secs_f64(),
        o.duration
    );

    // Churn and faults for the duration.
    let rss = compare::RssPeak::start(Side::KuryrRs);
    let usage0 = compare::side_usage(Side::KuryrRs);
    let start = Instant::now();
    let end = start + o.duration;
    let fenv = Arc::new(Env {
        client: client.clone(),
        proxy: px.clone(),
        neutron_origin: ne_origin.to_owned(),
        octavia_origin: oc_origin.to_owned(),
        seed: o.seed,
        http: reqwest::Client::builder().no_proxy().build()?,
    });
    let sched = schedule(o.seed, o.duration, o.mean_gap, &o.faults);
    let faults = tokio::spawn(run_faults(fenv, sched, start));
    let orphan_at = o.inject_orphan.then(|| start + o.duration / 2);
    let tag = cluster_tag(&checker.cluster);
    let orphan_port = churn(
        cl,
        o,
        end,
        created.clone(),
        stats.clone(),
        orphan_at.map(|at| (at, neutron, env, tag.as_str())),
    )
    .await;
    eprintln!(
        "[chaos +{:.0}s] churn stopped; waiting for the faults to end",
        start.elapsed().as_secs_f64()
    );
    let records = faults.await.context("the fault task")?;
    let peak = rss.finish();
    let usage1 = compare::side_usage(Side::KuryrRs);
    let last_fault_end = records
        .iter()
        .filter(|r| r.injected)
        .filter_map(|r| r.ended)
        .max()
        .unwrap_or(end);

    // Convergence, then the invariants.
    eprintln!(
        "[chaos +{:.0}s] converging (at most {:?})",
        start.elapsed().as_secs_f64(),
        o.converge_timeout
    );
    let (converged, steady) = checker
        .converge(Phase::Steady, o.converge_timeout, &events)
        .await;
    let converge_s = converged.map(|t| t.saturating_duration_since(last_fault_end).as_secs_f64());
    match converge_s {
        Some(s) => eprintln!("[chaos] converged {s:.1} s after the last fault ended"),
        None => print_violations("after the faults", &steady),
    }
    let pods_alive = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(&cl.pods_selector()))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0);

    // Teardown: delete the namespaces; nothing of them may be left.
    eprintln!("[chaos] deleting the namespaces; checking that nothing is left");
    for ns in &cl.namespaces {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(ns, &DeleteParams::default())
            .await;
    }
    let (torn, teardown) = checker
        .converge(Phase::Teardown, o.converge_timeout, &events)
        .await;
    let teardown_s = torn.map(|t| t.elapsed().as_secs_f64());
    if torn.is_none() {
        print_violations("after deleting the namespaces", &teardown);
    }

    // Results.
    let stats = std::mem::take(&mut *locked(&stats));
    let injected: Vec<&FaultRecord> = records.iter().filter(|r| r.injected).collect();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &injected {
        *by_kind.entry(r.kind).or_default() += 1;
    }
    run.metric(
        "faults_injected",
        count_metric(injected.len(), "faults injected (every kind)"),
    );
    for k in FaultKind::ALL {
        run.metric(
            &format!("faults_{}", k.name()),
            count_metric(
                by_kind.get(k.name()).copied().unwrap_or(0),
                &format!("{} faults injected", k.name()),
            ),
        );
    }
    let pc = px.counts();
    for (k, v) in &pc {
        run.metric(
            &format!("proxy_{k}"),
            count_metric(
                *v as usize,
                &format!("OpenStack requests through the fault proxy: {k}"),
            ),
        );
    }
    run.metric(
        "pods_churned",
        count_metric(stats.seen.len(), "pods that existed during the run (standalone, the Deployment's, the probe): distinct UIDs the watch saw"),
    );
    run.metric(
        "pod_ready",
        Metric::from_samples(
            &stats.ready_ms,
            "ms",
            "standalone pod created → Ready, under the faults",
        ),
    );
    let leaks = count(&steady, &LEAKS)
        + count(&teardown, &LEAKS)
        + teardown.get("stuck_finalizers").map_or(0, Vec::len)
        + teardown.get("stuck_deleting").map_or(0, Vec::len);
    run.metric(
        "leaked_objects",
        count_metric(leaks, "objects without an owner after convergence and after the teardown (ports, OVS ports, veths, attachment records, load balancers, stuck objects)")
            .with_target(&[("max", 0.0)]),
    );
    run.metric(
        "pods_without_network",
        count_metric(count(&steady, &NO_NETWORK), "pods (and Services) without network after convergence: not Running/Ready, wrong or no address, no ping answer, no ACTIVE load balancer")
            .with_target(&[("max", 0.0)]),
    );
    run.metric(
        "converge_after_last_fault",
        Metric::from_samples(
            &converge_s.map(|s| vec![s]).unwrap_or_default(),
            "s",
            "the last fault ended (service back, proxy window closed) → every invariant holds",
        )
        .with_errors(usize::from(converge_s.is_none())),
    );
    run.metric(
        "teardown_converged",
        Metric::from_samples(
            &teardown_s.map(|s| vec![s]).unwrap_or_default(),
            "s",
            "namespaces deleted → nothing of them left",
        )
        .with_errors(usize::from(teardown_s.is_none())),
    );
    let failover: Vec<f64> = injected.iter().filter_map(|r| r.failover_s).collect();
    run.metric(
        "leader_failover",
        Metric::from_samples(
            &failover,
            "s",
            "controller leader killed → the other replica holds the Lease",
        ),
    );
    for k in FaultKind::ALL.iter().filter(|k| k.service().is_some()) {
        let rec: Vec<f64> = injected
            .iter()
            .filter(|r| r.kind == k.name())
            .filter_map(|r| r.recovered_s)
            .collect();
        if !rec.is_empty() {
            run.metric(
                &format!("recovery_{}", k.name()),
                Metric::from_samples(
                    &rec,
                    "s",
                    &format!("{}: kill → the service answers again", k.name()),
                ),
            );
        }
    }
    for role in ["controller", "daemon"] {
        run.metric(
            &format!("{role}_rss_peak"),
            Metric::from_samples(
                &[peak.get(role).copied().unwrap_or(0) as f64 / 1024.0],
                "MiB",
                &format!(
                    "{role} peak RSS during the soak (all its processes{})",
                    if role == "controller" {
                        ": both replicas"
                    } else {
                        ""
                    }
                ),
            ),
        );
        let t = usage1
            .get(role)
            .map_or(0, |u| u.0)
            .saturating_sub(usage0.get(role).map_or(0, |u| u.0));
        run.metric(
            &format!("{role}_cpu"),
            Metric::from_samples(
                &[t as f64 / 100.0],
                "s",
                &format!("{role} CPU seconds over the soak (processes alive at its end)"),
            ),
        );
    }
    let restarts = restarts_since(epoch0);
    let mut ours: BTreeMap<String, usize> = BTreeMap::new();
    for r in &injected {
        if let Some(svc) = r.target.split_whitespace().next() {
            if !svc.starts_with("proxy") {
                *ours.entry(svc.to_owned()).or_default() += 1;
            }
        }
    }
    let unexpected: BTreeMap<String, usize> = restarts
        .iter()
        .map(|(s, n)| {
            (
                s.clone(),
                n.saturating_sub(ours.get(s).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let ctl: usize = restarts
        .iter()
        .filter(|(s, _)| s.starts_with("kuryr-controller"))
        .map(|(_, n)| n)
        .sum();
    run.metric(
        "controller_restarts",
        count_metric(
            ctl,
            "kuryr-controller restarts (both replicas; the supervisor's count)",
        ),
    );
    run.metric(
        "daemon_restarts",
        count_metric(
            restarts.get("kuryr-daemon").copied().unwrap_or(0),
            "kuryr-daemon restarts (the supervisor's count)",
        ),
    );
    run.metric(
        "unexpected_restarts",
        count_metric(
            unexpected.values().sum(),
            "stack and kuryr-rs services that exited without a deliberate kill",
        ),
    );
    if !unexpected.is_empty() {
        run.note(format!("services that exited without a deliberate kill: {unexpected:?} (see $STATE/log/crashes.log)"));
    }
    run.checks = json!({
        "faults": records, "proxy": pc, "churn": stats, "pods_alive_at_end": pods_alive,
        "restarts": restarts, "deliberate_kills": ours,
        "violations_after_faults": steady, "violations_after_teardown": teardown,
        "injected_orphan_port": orphan_port,
    });
    let mut failed: Vec<String> = Vec::new();
    for (phase, v) in [
        ("after the faults", &steady),
        ("after the teardown", &teardown),
    ] {
        for (k, objs) in v {
            failed.push(format!("{k} ({phase}): {}", objs.join(" | ")));
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("3m20").is_err());
    }

    #[test]
    fn fault_names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::parse(k.name()).unwrap(), k);
        }
        assert!(FaultKind::parse("nope").is_err());
    }

    #[test]
    fn schedule_is_replayable_bounded_and_covers_every_kind() {
        let d = Duration::from_secs(1800);
        let gap = Duration::from_secs(30);
        let a = schedule(7, d, gap, &FaultKind::ALL);
        assert_eq!(
            a,
            schedule(7, d, gap, &FaultKind::ALL),
            "same seed, same schedule"
        );
        assert_ne!(a, schedule(8, d, gap, &FaultKind::ALL));
        assert!((50..=80).contains(&a.len()), "{} faults in 30 min", a.len());
        assert!(a.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(a.iter().all(|(t, _)| *t < d - Duration::from_secs(10)));
        for k in FaultKind::ALL {
            assert!(a.iter().any(|(_, x)| *x == k), "{k:?} never scheduled");
        }
        let only = schedule(1, d, gap, &[FaultKind::DaemonKill]);
        assert!(only.iter().all(|(_, k)| *k == FaultKind::DaemonKill));
        assert!(schedule(1, d, gap, &[]).is_empty());
    }

    #[test]
    fn violation_counts() {
        let mut v: Violations = BTreeMap::new();
        v.insert("orphan_ports", vec!["a".into(), "b".into()]);
        v.insert("pods_unreachable", vec!["c".into()]);
        assert_eq!(count(&v, &LEAKS), 2);
        assert_eq!(count(&v, &NO_NETWORK), 1);
    }
}
