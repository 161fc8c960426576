//! `controller-burst`: the real kuryr-controller (release binary) on the local stack, a burst of
//! N pods created at once, without and with a warm pool. Per pod: pod created → KuryrPort VIF
//! written, and → VIF active where the port is already ACTIVE (pool ports a kuryr-daemon
//! pre-plugged). Also Neutron calls per pod (the controller's own request counter) and the
//! controller's RSS.
//!
//! The pods are bound to the stack's node but use a RuntimeClass whose handler containerd does
//! not have, so kubelet never creates their sandboxes (no CNI ADD, no containers): only the
//! controller's work is measured.

use crate::guard;
use crate::prom::Scrape;
use crate::results::Run;
use crate::stack::{kube_client, neutron, stack_env, state_file};
use crate::stats::Metric;
use anyhow::{bail, Context as _, Result};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use kuryr_core::crd::KuryrPort;
use kuryr_core::names::{pool_kuryrport_name, DEVICE_OWNER, POOL_NAMESPACE};
use kuryr_openstack::Query;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = "kuryr-bench";
const RUNTIME_CLASS: &str = "kuryr-bench-none";

pub struct Opts {
    pub controller_bin: PathBuf,
    pub pods: usize,
    /// Free ports the warm pool is filled to before the burst.
    pub pool_size: usize,
    pub timeout: Duration,
}

pub(crate) struct Controller {
    child: Child,
    metrics: String,
}

impl Controller {
    pub(crate) fn start(
        bin: &Path,
        conf: &Path,
        ns: &str,
        log: &Path,
        metrics_port: u16,
    ) -> Result<Controller> {
        if !bin.is_file() {
            bail!(
                "{} does not exist (build it: see hack/bench)",
                bin.display()
            );
        }
        let logf = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .arg("--config-file")
            .arg(conf)
            .arg("--kubeconfig")
            .arg(state_file("kubeconfig"))
            .args([
                "--watch-namespace",
                ns,
                "--cluster-name",
                CLUSTER,
                "--gc-interval-seconds",
                "0",
            ])
            .args(["--health-addr", "127.0.0.1:0"])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Controller {
            child,
            metrics: format!("127.0.0.1:{metrics_port}"),
        })
    }

    pub(crate) async fn scrape(&self) -> Result<Scrape> {
        let (code, text) = crate::http::tcp_get(&self.metrics, "/metrics").await?;
        if code != 200 {
            bail!("GET /metrics: HTTP {code}");
        }
        Ok(Scrape::parse(&text))
    }

    pub(crate) fn rss_kib(&self, field: &str) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub(crate) fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn pod(ns: &str, name: &str, node: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"kuryr-bench": "true"}},
        "spec": {
            "nodeName": node, "runtimeClassName": RUNTIME_CLASS,
            "tolerations": [{"operator": "Exists"}], "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never"}]
        }
    }))?)
}

/// Sum of `kuryr_openstack_requests_total` samples (all services, methods, statuses).
fn os_requests(s: &Scrape) -> f64 {
    s.0.iter()
        .filter(|(k, _)| k.starts_with("kuryr_openstack_requests_total"))
        .map(|(_, v)| v)
        .sum()
}

/// Per-(method, path) request counts, for the notes.
fn os_requests_by_call(before: &Scrape, after: &Scrape) -> Vec<(String, f64)> {
    let mut by: HashMap<String, f64> = HashMap::new();
    for (k, v) in after
        .0
        .iter()
        .filter(|(k, _)| k.starts_with("kuryr_openstack_requests_total{"))
    {
        let d = v - before.0.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            let label = |name: &str| {
                k.split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
                    .to_string()
            };
            *by.entry(format!("{} {}", label("method"), label("path")))
                .or_default() += d;
        }
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

struct Variant {
    vif: Vec<Duration>,
    active: Vec<Duration>,
    burst_total: Duration,
    calls: f64,
    calls_by: Vec<(String, f64)>,
    rss_mib: f64,
    hwm_mib: f64,
    missing: usize,
}

async fn ensure_runtime_class(client: &Client) -> Result<()> {
    let api: Api<RuntimeClass> = Api::all(client.clone());
    let rc: RuntimeClass = serde_json::from_value(
        json!({"metadata": {"name": RUNTIME_CLASS}, "handler": RUNTIME_CLASS}),
    )?;
    match api.create(&PostParams::default(), &rc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn clear_pool(client: &Client, node: &str) -> Result<usize> {
    let n = neutron().await?;
    let mut deleted = 0;
    for p in n
        .list_ports(&Query::new().eq("device_owner", DEVICE_OWNER))
        .await?
    {
        if kuryr_core::names::is_pool_port_description(&p.description, CLUSTER)
            && n.delete_port(&p.id).await?
        {
            deleted += 1;
        }
    }
    let api: Api<KuryrPort> = Api::namespaced(client.clone(), POOL_NAMESPACE);
    let _ = api
        .delete(&pool_kuryrport_name(node), &DeleteParams::default())
        .await;
    Ok(deleted)
}

async fn published(client: &Client, node: &str) -> usize {
    let api: Api<KuryrPort> = Api::namespaced(client.clone(), POOL_NAMESPACE);
    match api.get_opt(&pool_kuryrport_name(node)).await {
        Ok(Some(kp)) => kp.status.map(|s| s.vifs.len()).unwrap_or(0),
        _ => 0,
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn variant(
    o: &Opts,
    client: &Client,
    node: &str,
    run_id: &str,
    pool: bool,
    dir: &Path,
) -> Result<Variant> {
    let ns = format!(
        "kbench-burst-{run_id}-{}",
        if pool { "pool" } else { "nopool" }
    );
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": ns, "labels": {"kuryr-bench": "true"}}}),
        )?,
    )
    .await?;
    let mut conf = std::fs::read_to_string(state_file("kuryr.conf"))?;
    if pool {
        // kuryr.conf sections merge and a repeated option wins: appending overrides.
        let n = o.pool_size;
        conf.push_str(&format!(
            "\n[kubernetes]\nvif_pool_driver = neutron\n[vif_pool]\nports_pool_min = {n}\nports_pool_batch = {n}\nports_pool_max = 0\n"
        ));
    }
    let conf_path = dir.join(format!("{ns}.conf"));
    std::fs::write(&conf_path, conf)?;
    let ctl = Controller::start(
        &o.controller_bin,
        &conf_path,
        &ns,
        &dir.join(format!("{ns}-controller.log")),
        free_port()?,
    )?;
    let r = measure(o, client, node, &ns, pool, &ctl).await;
    // Pods go first (the controller releases or recycles their ports), then the controller.
    let _ = nss.delete(&ns, &DeleteParams::default()).await;
    let gone = wait_until(
        "the burst namespace deleted",
        Duration::from_secs(300),
        || async { matches!(nss.get_opt(&ns).await, Ok(None)) },
    )
    .await;
    ctl.stop();
    gone?;
    r
}

async fn measure(
    o: &Opts,
    client: &Client,
    node: &str,
    ns: &str,
    pool: bool,
    ctl: &Controller,
) -> Result<Variant> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let kps: Api<KuryrPort> = Api::namespaced(client.clone(), ns);
    wait_until(
        "the controller's metrics",
        Duration::from_secs(60),
        || async { ctl.scrape().await.is_ok() },
    )
    .await?;
    // Warm-up pod: the caches (subnet, network) fill; with a pool, its miss fills the pool.
    pods.create(&PostParams::default(), &pod(ns, "warmup", node)?)
        .await?;
    wait_until("the warm-up pod's VIF", o.timeout, || async {
        matches!(kps.get_opt("warmup").await, Ok(Some(kp)) if kp.status.as_ref().is_some_and(|s| s.default_vif().is_some()))
    })
    .await?;
    if pool {
        wait_until(
            &format!("{} pool ports published", o.pool_size),
            o.timeout,
            || async { published(client, node).await >= o.pool_size },
        )
        .await?;
    }
    let before = ctl.scrape().await?;

    // The watch first, then the burst.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch_api = kps.clone();
    let watch = tokio::spawn(async move {
        let mut s = watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(ev) = s.next().await {
            if let Ok(watcher::Event::Apply(kp) | watcher::Event::InitApply(kp)) = ev {
                let vif = kp
                    .status
                    .as_ref()
                    .and_then(|s| s.default_vif())
                    .and_then(|(_, v)| v.ok());
                if let Some(v) = vif {
                    let name = kp.metadata.name.clone().unwrap_or_default();
                    let _ = tx.send((name, v.active, Instant::now()));
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let mut created: HashMap<String, Instant> = HashMap::new();
    let creates = futures_util::future::join_all((0..o.pods).map(|i| {
        let pods = pods.clone();
        async move {
            let name = format!("burst-{i:03}");
            let p = pod(ns, &name, node)?;
            let at = Instant::now();
            pods.create(&PostParams::default(), &p).await?;
            Ok::<_, anyhow::Error>((name, at))
        }
    }))
    .await;
    for c in creates {
        let (name, at) = c?;
        created.insert(name, at);
    }
    let (mut vif_at, mut active_at): (HashMap<String, Instant>, HashMap<String, Instant>) =
        (HashMap::new(), HashMap::new());
    let deadline = tokio::time::Instant::now() + o.timeout;
    while vif_at.len() < o.pods {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, active, at)))
                if created.contains_key(&name) || name.starts_with("burst-") =>
            {
                vif_at.entry(name.clone()).or_insert(at);
                if active {
                    active_at.entry(name).or_insert(at);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let burst_total = t0.elapsed();
    // Let the activations of a pool run settle for the call count (nothing else is pending).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = ctl.scrape().await?;
    watch.abort();
    let since = |m: &HashMap<String, Instant>| -> Vec<Duration> {
        m.iter()
            .filter_map(|(n, at)| created.get(n).map(|c| at.saturating_duration_since(*c)))
            .collect()
    };
    Ok(Variant {
        vif: since(&vif_at),
        active: since(&active_at),
        burst_total,
        calls: os_requests(&after) - os_requests(&before),
        calls_by: os_requests_by_call(&before, &after),
        rss_mib: ctl.rss_kib("VmRSS:").unwrap_or(0.0) / 1024.0,
        hwm_mib: ctl.rss_kib("VmHWM:").unwrap_or(0.0) / 1024.0,
        missing: o.pods.saturating_sub(vif_at.len()),
    })
}

pub async fn run(o: &Opts, repo: &Path) -> Result<Run> {
    let _lock = crate::daemonadd::lock()?;
    let (others, waited) =
        guard::wait_for_no_controller(Duration::from_secs(900), Duration::from_secs(30));
    let mut run = Run::start(repo);
    if !others.is_empty() {
        run.note(format!(
            "other kuryr-controllers were still running after {waited:?}: {others:?}"
        ));
    }
    let env = stack_env()?;
    let node = env
        .get("STACK_HOST")
        .cloned()
        .unwrap_or_else(|| "vm".into());
    let client = kube_client().await?;
    ensure_runtime_class(&client).await?;
    let cleared = clear_pool(&client, &node).await?;
    if cleared > 0 {
        run.note(format!("removed {cleared} pool ports of an earlier run"));
    }
    let dir = tempfile::Builder::new().prefix("kbench-burst-").tempdir()?;
    let run_id = format!("{}", std::process::id());
    let n = o.pods as f64;
    for pool in [false, true] {
        let label = if pool { "pool" } else { "nopool" };
        let v = variant(o, &client, &node, &run_id, pool, dir.path()).await;
        let v = match v {
            Ok(v) => v,
            Err(e) => {
                let _ = clear_pool(&client, &node).await;
                let keep = std::env::temp_dir().join(format!("kbench-burst-{run_id}-logs"));
                let _ = std::fs::create_dir_all(&keep);
                for e in std::fs::read_dir(dir.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                }
                return Err(e.context(format!("variant {label} (logs kept in {})", keep.display())));
            }
        };
        run.metric(
            &format!("burst_{label}_pod_to_vif"),
            Metric::from_durations(
                &v.vif,
                &format!(
                    "{} pods created at once → their KuryrPort has the VIF (controller only; {})",
                    o.pods,
                    if pool {
                        format!("warm pool of {} pre-filled", o.pool_size)
                    } else {
                        "no pool".into()
                    }
                ),
            )
            .with_errors(v.missing),
        );
        if !v.active.is_empty() {
            run.metric(
                &format!("burst_{label}_pod_to_active"),
                Metric::from_durations(&v.active, "pod created → KuryrPort VIF active (port already ACTIVE: pre-plugged by a kuryr-daemon)"),
            );
        }
        run.metric(
            &format!("burst_{label}_total"),
            Metric::from_samples(
                &[v.burst_total.as_secs_f64() * 1000.0],
                "ms",
                "first create → last VIF written",
            ),
        );
        run.metric(
            &format!("burst_{label}_neutron_calls_per_pod"),
            Metric::from_samples(
                &[v.calls / n],
                "calls",
                "OpenStack requests the controller made during the burst, per pod",
            ),
        );
        run.metric(
            &format!("burst_{label}_controller_rss"),
            Metric::from_samples(&[v.rss_mib], "MiB", "controller VmRSS after the burst"),
        );
        run.metric(
            &format!("burst_{label}_controller_hwm"),
            Metric::from_samples(
                &[v.hwm_mib],
                "MiB",
                "controller peak RSS (VmHWM) of the run",
            ),
        );
        run.note(format!(
            "{label}: {} of {} pods got a VIF, {} active at once; calls: {}",
            v.vif.len(),
            o.pods,
            v.active.len(),
            v.calls_by
                .iter()
                .map(|(k, c)| format!("{k} ×{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if pool {
            let _ = clear_pool(&client, &node).await;
        }
    }
    let _ = Api::<RuntimeClass>::all(client.clone())
        .delete(RUNTIME_CLASS, &DeleteParams::default())
        .await;
    Ok(run)
}
