//! `kuryr-bench daemon-add` (and `rss`): the real kuryr-daemon binary serving CNI ADD/DEL
//! for pods whose VIF is already present and active, on the local stack.
//!
//! Per run: start the daemon (temp socket/state dir, `--no-conflist`, made-up node name),
//! measure its idle RSS; create N = sequential + concurrent never-scheduled hostNetwork Pods,
//! N Neutron ports in one bulk POST bound to the stack host, N KuryrPorts whose status holds
//! the typed VIF with `active: true`, N network namespaces; then ADD the first `sequential`
//! pods one after the other and the remaining `concurrent` ones all at once, timing each
//! request on the client side (connect to response), and reading the daemon's own stage
//! histograms from /metrics; check that every port is on br-int with its iface-id and that
//! Neutron (OVN) reports it ACTIVE; DEL everything (timed the same way); stop the daemon;
//! remove every object (also on failure or Ctrl-C).
//!
//! What an ADD measures here is the daemon's own work: look-up of the KuryrPort in its watch
//! cache, record the attachment, veth pair + move into the netns, OVSDB add-port, L3 config
//! in the netns, and answer (vswitchd's attach and the announcements run after the answer);
//! no controller or Neutron wait.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use crate::daemon::Daemon;
use crate::guard;
use crate::http;
use crate::prom::Scrape;
use crate::results::Run;
use crate::stack::{self, BenchPod, Stack};
use crate::stats::Metric;

pub struct Opts {
    pub daemon_bin: PathBuf,
    pub sequential: usize,
    pub concurrent: usize,
    pub controller_wait: Duration,
    pub controller_poll: Duration,
    /// Pause before the idle RSS reading and after creating the objects (watch delivery).
    pub settle: Duration,
    pub rss_samples: usize,
    /// How long to wait for Neutron to report the plugged ports ACTIVE (a check, not timed).
    pub active_wait: Duration,
}

/// ADD/DEL latency targets (issue 3).
const ADD_TARGET: [(&str, f64); 2] = [("p50", 20.0), ("p99", 100.0)];
/// RSS target (issue 3), compared with the largest sample.
const RSS_TARGET: [(&str, f64); 1] = [("max", 30.0)];

fn run_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:06x}{:04x}",
        secs & 0xff_ffff,
        std::process::id() & 0xffff
    )
}

fn request(cmd: &str, p: &BenchPod, ns: &str) -> Value {
    json!({
        "command": cmd,
        "container_id": p.container_id,
        "netns": p.netns_path.display().to_string(),
        "ifname": "eth0",
        "args": format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}", p.name, p.container_id, p.uid),
        "path": "/opt/cni/bin",
        "config": {"cniVersion": "1.1.0", "name": "kuryr", "type": "kuryr-cni", "timeout_seconds": 120}
    })
}

/// Latencies of successful requests, the number of failures and the first failure.
#[derive(Default)]
struct Timed {
    ok: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

impl Timed {
    fn push(&mut self, took: Duration, r: Result<(u16, Value)>) {
        match r {
            Ok((200, _)) => self.ok.push(took),
            Ok((st, body)) => {
                self.errors += 1;
                self.first_error
                    .get_or_insert_with(|| format!("HTTP {st}: {body}"));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn metric(&self, what: &str) -> Metric {
        let ms: Vec<f64> = self.ok.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Metric::from_durations(&self.ok, what)
            .with_errors(self.errors)
            .keep_samples(&ms)
    }

    /// Mean (ms) of the first and of the last `k` samples.
    fn ends(&self, k: usize) -> Option<(f64, f64)> {
        if self.ok.len() < 2 * k || k == 0 {
            return None;
        }
        let mean =
            |s: &[Duration]| s.iter().map(|d| d.as_secs_f64() * 1e3).sum::<f64>() / s.len() as f64;
        let r = |x: f64| (x * 100.0).round() / 100.0;
        Some((
            r(mean(&self.ok[..k])),
            r(mean(&self.ok[self.ok.len() - k..])),
        ))
    }
}

async fn sequential(sock: &Path, cmd: &str, pods: &[BenchPod], ns: &str) -> Timed {
    let mut t = Timed::default();
    for p in pods {
        let req = request(cmd, p, ns);
        let started = Instant::now();
        let r = http::cni(sock, &req).await;
        t.push(started.elapsed(), r);
    }
    t
}

/// All requests released together (a barrier), each timed on its own.
async fn concurrent(sock: &Path, cmd: &str, pods: &[BenchPod], ns: &str) -> Timed {
    let barrier = Arc::new(tokio::sync::Barrier::new(pods.len().max(1)));
    let tasks: Vec<_> = pods
        .iter()
        .map(|p| {
            let (req, sock, barrier) = (request(cmd, p, ns), sock.to_owned(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let r = http::cni(&sock, &req).await;
                (started.elapsed(), r)
            })
        })
        .collect();
    let mut t = Timed::default();
    for task in tasks {
        match task.await {
            Ok((took, r)) => t.push(took, r),
            Err(e) => t.push(Duration::ZERO, Err(anyhow!("task: {e}"))),
        }
    }
    t
}

/// The CPU a concurrent ADD phase used, and the p50 floor it implies on this machine.
fn floor_metric(add: &mut Run, phase: &str, u: &crate::cpu::Usage, requests: usize) {
    let ncpu = crate::cpu::ncpu();
    add.checks[format!("cpu_add_{phase}")] = u.to_json(requests, ncpu);
    add.metric(
        &format!("add_{phase}_p50_floor"),
        Metric::from_samples(
            &[u.p50_floor_ms(ncpu)],
            "ms",
            &format!(
                "lowest p50 any scheduler could give these {requests} simultaneous ADDs on {ncpu} CPUs, from the machine CPU \
                 (above idle) the phase used: daemon, kernel, ovs-vswitchd, ovsdb-server, ovn-controller, API server \
                 (checks cpu_add_{phase} split it by process)"
            ),
        ),
    );
}

struct Phase {
    name: &'static str,
    before: Scrape,
    after: Scrape,
    cpu: Duration,
    requests: usize,
}

fn daemon_side(run: &mut Run, ph: &Phase, verb: &str) {
    let hist = |s: &Scrape, name: &str, labels: &[(&str, &str)]| s.histogram(name, labels);
    let req = "kuryr_cni_request_duration_seconds";
    let d = hist(&ph.after, req, &[("command", verb), ("error", "false")]).minus(&hist(
        &ph.before,
        req,
        &[("command", verb), ("error", "false")],
    ));
    run.metric(
        &format!("daemon_{}_{}", verb.to_lowercase(), ph.name),
        d.to_metric(&format!("{verb}, {}, as the daemon times it", ph.name)),
    );
    if verb == "ADD" {
        for stage in ["wait_vif", "plug", "move", "l3", "wait_active"] {
            let st = "kuryr_cni_stage_duration_seconds";
            let h = hist(&ph.after, st, &[("stage", stage)]).minus(&hist(
                &ph.before,
                st,
                &[("stage", stage)],
            ));
            if h.count > 0.0 {
                run.metric(
                    &format!("daemon_stage_{stage}_{}", ph.name),
                    h.to_metric(&format!("ADD stage {stage}, {}", ph.name)),
                );
            }
        }
    }
    if ph.requests > 0 {
        run.checks[format!("daemon_cpu_ms_per_{}_{}", verb.to_lowercase(), ph.name)] =
            json!((ph.cpu.as_secs_f64() * 1e3 / ph.requests as f64 * 100.0).round() / 100.0);
    }
}

async fn rss_metric(d: &Daemon, o: &Opts, rss: &mut Run, name: &str, what: &str) -> Result<f64> {
    let (v, hwm) = d
        .sample_rss(o.rss_samples, Duration::from_millis(200))
        .await?;
    rss.metric(
        name,
        Metric::from_samples(&v, "MiB", what).with_target(&RSS_TARGET),
    );
    Ok(hwm)
}

/// Runs the benchmark; `(latency run, rss run)`.
pub async fn run(o: &Opts, repo: &Path) -> Result<(Run, Run)> {
    let mut add = Run::start(repo);
    let mut rss = Run::start(repo);
    let env = stack::stack_env()?;
    let bridge = env
        .get("OVS_BRIDGE")
        .cloned()
        .unwrap_or_else(|| "br-int".into());

    let (wait, poll) = (o.controller_wait, o.controller_poll);
    let (still, waited) =
        tokio::task::spawn_blocking(move || guard::wait_for_no_controller(wait, poll)).await?;
    for r in [&mut add, &mut rss] {
        if waited >= Duration::from_secs(1) {
            r.note(format!(
                "waited {} s for kuryr-controller processes to exit",
                waited.as_secs()
            ));
        }
        if !still.is_empty() {
            r.note(format!(
                "a kuryr-controller was still running after {} s and may have touched the benchmark's objects: {}",
                waited.as_secs(),
                still.join("; ")
            ));
        }
    }
    let _lock = lock()?;

    let pre = stack::sweep(&bridge).await;
    if !pre.is_empty() {
        add.note(format!(
            "removed leftovers of an earlier run first: {}",
            serde_json::to_string(&pre)?
        ));
    }
    let id = run_id();
    let st = Stack::connect(&id).await?;
    let tmp = tempfile::Builder::new()
        .prefix("kbench-daemon-")
        .tempdir()?;
    eprintln!(
        "daemon-add: run {id}, node {}, namespace {}, {} sequential + {} concurrent pods",
        st.node, st.ns, o.sequential, o.concurrent
    );

    let result = tokio::select! {
        r = body(o, &st, tmp.path(), &mut add, &mut rss) => r,
        _ = interrupted() => Err(anyhow!("interrupted")),
    };
    if result.is_err() || std::env::var_os("KURYR_BENCH_KEEP_LOG").is_some() {
        // Keep the daemon's log for the post-mortem (or when asked to).
        let keep = std::env::temp_dir().join(format!("kbench-daemon-{id}.log"));
        if std::fs::copy(tmp.path().join("kuryr-daemon.log"), &keep).is_ok() {
            eprintln!("kuryr-daemon log kept in {}", keep.display());
        }
    }
    eprintln!("daemon-add: cleaning up");
    let post = stack::sweep(&bridge).await;
    add.checks["cleanup"] = serde_json::to_value(&post)?;
    if !post.errors.is_empty() {
        add.note(format!("cleanup errors: {}", post.errors.join("; ")));
    }
    let after = guard::running_controllers();
    if !after.is_empty() {
        for r in [&mut add, &mut rss] {
            r.note(format!(
                "a kuryr-controller was running at the end of the run: {}",
                after.join("; ")
            ));
        }
    }
    result?;
    Ok((add, rss))
}

async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("interrupted: stopping and cleaning up");
}

/// One benchmark at a time on this machine (the sweep removes every `kuryr-bench` object).
pub fn lock() -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = "/run/lock/kuryr-bench.lock";
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open {path}"))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| anyhow!("another kuryr-bench holds {path} ({e})"))
}

async fn body(o: &Opts, st: &Stack, dir: &Path, add: &mut Run, rss: &mut Run) -> Result<()> {
    let n = o.sequential + o.concurrent;
    let params = json!({
        "daemon_bin": o.daemon_bin.display().to_string(),
        "sequential": o.sequential,
        "concurrent": o.concurrent,
        "settle_s": o.settle.as_secs_f64(),
        "rss_samples": o.rss_samples,
        "node": st.node,
        "namespace": st.ns,
        "binding": "ovs (veth + OVSDB add-port on br-int)",
        "vif": "present and active before ADD",
        "client": "HTTP/1.1 over the daemon's unix socket, one connection per request (as kuryr-cni)",
    });
    add.params = params.clone();
    rss.params = params;

    let pool_netns = format!("{}pool-{}", stack::NETNS_PREFIX, st.run_id);
    let mut d = Daemon::start(&o.daemon_bin, dir, &st.node, &pool_netns).await?;
    add.checks["daemon_ready_ms"] = json!(d.ready_after.as_millis() as u64);
    tokio::time::sleep(o.settle).await;
    rss_metric(
        &d,
        o,
        rss,
        "rss_idle",
        "VmRSS after start-up, ready and idle (no pods)",
    )
    .await?;

    // The controller's and the runtime's part.
    let t = Instant::now();
    st.create_namespace().await?;
    let mut pods = st.create_pods(0, n).await?;
    let t_pods = t.elapsed();
    let t2 = Instant::now();
    st.create_ports(&mut pods).await?;
    let t_ports = t2.elapsed();
    st.create_kuryrports(&pods).await?;
    st.create_netns(&pods)?;
    add.checks["setup_s"] = json!({
        "total": round1(t.elapsed()),
        "pods": round1(t_pods),
        "neutron_bulk_create": round1(t_ports),
    });
    eprintln!(
        "daemon-add: {n} pods, ports, KuryrPorts and netns created in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(o.settle).await;
    rss_metric(
        &d,
        o,
        rss,
        "rss_loaded",
        &format!("VmRSS with {n} KuryrPorts in the watch cache, before any ADD"),
    )
    .await?;

    let (seq_pods, conc_pods) = pods.split_at(o.sequential);
    let sock = d.socket.clone();
    let ns = st.ns.clone();

    // What the machine burns with nothing asked of it (subtracted from the phases' CPU).
    let idle = crate::cpu::idle_baseline(Duration::from_secs(3)).await?;
    add.checks["machine_idle_cpu_ms_per_s"] = json!((idle * 10.0).round() / 10.0);

    // ADD, sequential.
    let m0 = d.scrape().await?;
    let c0 = d.cpu_time()?;
    let u0 = crate::cpu::Snapshot::take()?;
    let seq_add = sequential(&sock, "ADD", seq_pods, &ns).await;
    let u1 = crate::cpu::Snapshot::take()?;
    let m1 = d.scrape().await?;
    let c1 = d.cpu_time()?;
    add.checks["cpu_add_sequential"] = u0
        .until(&u1, idle)
        .to_json(o.sequential, crate::cpu::ncpu());
    eprintln!(
        "daemon-add: {} sequential ADDs done ({} failed)",
        seq_add.ok.len(),
        seq_add.errors
    );
    rss_metric(
        &d,
        o,
        rss,
        "rss_after_sequential",
        &format!("VmRSS after {} sequential ADDs", o.sequential),
    )
    .await?;
    if let Some(first) = seq_add.ok.first() {
        add.checks["first_add_ms"] = json!((first.as_secs_f64() * 1e5).round() / 100.0);
    }

    // ADD, concurrent.
    let m2a = d.scrape().await?;
    let c2a = d.cpu_time()?;
    let u2a = crate::cpu::Snapshot::take()?;
    let conc_add = concurrent(&sock, "ADD", conc_pods, &ns).await;
    let u2 = crate::cpu::Snapshot::take()?;
    let m2 = d.scrape().await?;
    let c2 = d.cpu_time()?;
    floor_metric(add, "concurrent", &u2a.until(&u2, idle), o.concurrent);
    eprintln!(
        "daemon-add: {} concurrent ADDs done ({} failed)",
        conc_add.ok.len(),
        conc_add.errors
    );
    rss_metric(
        &d,
        o,
        rss,
        "rss_after_concurrent",
        &format!(
            "VmRSS after {} more, concurrent ADDs ({} pods attached)",
            o.concurrent, n
        ),
    )
    .await?;

    // Are they really plugged, and does OVN claim them?
    let taps: Vec<(String, String)> = pods
        .iter()
        .filter_map(|p| {
            p.vif
                .as_ref()
                .map(|v| (v.host_ifname.clone(), v.port_id.clone()))
        })
        .collect();
    let bridge = st
        .env
        .get("OVS_BRIDGE")
        .cloned()
        .unwrap_or_else(|| "br-int".into());
    add.checks["ovs_plugged_after_add"] =
        json!(format!("{}/{n}", stack::plugged(&bridge, &taps).await?));
    let ids: Vec<String> = taps.iter().map(|t| t.1.clone()).collect();
    let t = Instant::now();
    let active = loop {
        let a = st.active_ports(&ids).await?;
        if a == ids.len() || t.elapsed() > o.active_wait {
            break a;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    add.checks["neutron_active_after_add"] = json!(format!("{active}/{n}"));
    add.checks["neutron_all_active_within_s"] = json!(round1(t.elapsed()));
    if active < n {
        add.note(format!(
            "only {active} of {n} ports went ACTIVE within {} s",
            o.active_wait.as_secs()
        ));
    }

    // DEL: the sequential pods one by one, the concurrent ones at once.
    let m3a = d.scrape().await?;
    let c3a = d.cpu_time()?;
    let seq_del = sequential(&sock, "DEL", seq_pods, &ns).await;
    let m3 = d.scrape().await?;
    let c3 = d.cpu_time()?;
    let conc_del = concurrent(&sock, "DEL", conc_pods, &ns).await;
    let m4 = d.scrape().await?;
    let c4 = d.cpu_time()?;
    eprintln!(
        "daemon-add: DELs done ({} + {} failed)",
        seq_del.errors, conc_del.errors
    );
    let hwm = rss_metric(&d, o, rss, "rss_after_del", "VmRSS after DEL of every pod").await?;
    rss.metric(
        "vmhwm",
        Metric::from_samples(&[hwm], "MiB", "VmHWM (peak RSS) over the whole run")
            .with_target(&RSS_TARGET),
    );
    add.checks["ovs_plugged_after_del"] =
        json!(format!("{}/{n}", stack::plugged(&bridge, &taps).await?));
    let veths_left = taps
        .iter()
        .filter(|(t, _)| Path::new("/sys/class/net").join(t).exists())
        .count();
    add.checks["host_veths_left_after_del"] = json!(veths_left);

    record_phases(add, o, None, [&seq_add, &conc_add, &seq_del, &conc_del]);
    add.metric(
        "del_sequential",
        seq_del.metric("DEL latency, client side, one after the other"),
    );
    add.metric(
        "del_concurrent",
        conc_del.metric("DEL latency, client side, released at once"),
    );
    add.note(
        "daemon_* metrics come from the daemon's /metrics histograms (difference of the scrapes \
         around each phase): their percentiles are interpolated inside its buckets (1, 2.5, 5, 10, 25, 50, \
         100, 250, 500 ms, …) like histogram_quantile, so anything under 5 ms reads as 2.5/4.5/4.95; \
         their mean is exact",
    );
    if let Some((first, last)) = seq_add.ends(20) {
        add.checks["add_sequential_mean_ms_first20_last20"] = json!([first, last]);
    }
    for (ph, verb) in [
        (
            Phase {
                name: "sequential",
                before: m0,
                after: m1,
                cpu: c1 - c0,
                requests: o.sequential,
            },
            "ADD",
        ),
        (
            Phase {
                name: "concurrent",
                before: m2a,
                after: m2,
                cpu: c2 - c2a,
                requests: o.concurrent,
            },
            "ADD",
        ),
        (
            Phase {
                name: "sequential",
                before: m3a,
                after: m3.clone(),
                cpu: c3 - c3a,
                requests: o.sequential,
            },
            "DEL",
        ),
        (
            Phase {
                name: "concurrent",
                before: m3,
                after: m4,
                cpu: c4 - c3,
                requests: o.concurrent,
            },
            "DEL",
        ),
    ] {
        daemon_side(add, &ph, verb);
    }

    if std::env::var("KURYR_BENCH_PREPLUGGED").map_or(true, |v| v != "0") {
        preplugged(o, st, &d, &pool_netns, n, idle, add).await?;
    }

    let status = d.stop()?;
    add.checks["daemon_exit"] = json!(status);
    Ok(())
}

/// Names of the pre-plugged pod ends present in the holding netns.
fn held_names(pool_netns: &str) -> Result<std::collections::HashSet<String>> {
    let ns = kuryr_netplumb::Netns::open_named(pool_netns)
        .with_context(|| format!("open the holding netns {pool_netns}"))?;
    let links = ns
        .with_netlink(async |nl| nl.links().await)
        .context("list the holding netns")?;
    Ok(links
        .into_iter()
        .filter(|l| l.name.starts_with("kp") && l.admin_up)
        .map(|l| l.name)
        .collect())
}

fn held_name(port_id: &str) -> String {
    format!("kp{}", port_id.chars().take(11).collect::<String>())
}

/// The pre-plugged variant (`KURYR_BENCH_PREPLUGGED=0` skips it): `n` more pods whose ports
/// are first published in the node's pool KuryrPort, pre-plugged by the daemon into its
/// holding netns and ACTIVE in Neutron before any ADD; then, as the controller does when pods
/// claim them, each pod's KuryrPort gets its VIF (active) and the ports leave the pool; then
/// the same sequential and concurrent ADDs and DELs as the plain variant. An ADD here only
/// moves the held interface into the pod netns and configures L3 (no veth, no OVSDB).
async fn preplugged(
    o: &Opts,
    st: &Stack,
    d: &Daemon,
    pool_netns: &str,
    first: usize,
    idle_cpu_ms_per_s: f64,
    add: &mut Run,
) -> Result<()> {
    let n = o.sequential + o.concurrent;
    let t = Instant::now();
    let mut pods = st.create_pods(first, n).await?;
    st.create_ports(&mut pods).await?;
    st.create_netns(&pods)?;
    let ids: Vec<String> = pods
        .iter()
        .filter_map(|p| p.vif.as_ref().map(|v| v.port_id.clone()))
        .collect();
    let pool = st.create_pool_kuryrport(&pods).await?;
    let t_pool = Instant::now();
    let want: Vec<String> = ids.iter().map(|i| held_name(i)).collect();
    let held_after = loop {
        let h = held_names(pool_netns)?;
        let have = want.iter().filter(|w| h.contains(*w)).count();
        if have == n {
            break t_pool.elapsed();
        }
        if t_pool.elapsed() > o.active_wait {
            return Err(anyhow!(
                "only {have} of {n} pool ports pre-plugged after {} s",
                o.active_wait.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let active_after = loop {
        let a = st.active_ports(&ids).await?;
        if a == n {
            break t_pool.elapsed();
        }
        if t_pool.elapsed() > o.active_wait {
            return Err(anyhow!(
                "only {a} of {n} pre-plugged ports ACTIVE after {} s",
                o.active_wait.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "daemon-add preplugged: {n} pool ports pre-plugged in {:.1} s, all ACTIVE after {:.1} s",
        held_after.as_secs_f64(),
        active_after.as_secs_f64()
    );
    // Claim: the pods' KuryrPorts get the VIFs (active), then the ports leave the pool.
    st.create_kuryrports(&pods).await?;
    st.remove_from_pool(&pool, &pods).await?;
    add.checks["preplugged_setup_s"] = json!({
        "total": round1(t.elapsed()),
        "pool_to_all_preplugged": round1(held_after),
        "pool_to_all_active": round1(active_after),
    });
    tokio::time::sleep(o.settle).await;
    let still = held_names(pool_netns)?;
    add.checks["preplugged_held_before_add"] = json!(format!(
        "{}/{n}",
        want.iter().filter(|w| still.contains(*w)).count()
    ));

    let (seq_pods, conc_pods) = pods.split_at(o.sequential);
    let sock = d.socket.clone();
    let ns = st.ns.clone();
    let path_count =
        |s: &Scrape, path: &str| s.value("kuryr_cni_add_path_total", &[("path", path)]);
    let m0 = d.scrape().await?;
    let c0 = d.cpu_time()?;
    let seq_add = sequential(&sock, "ADD", seq_pods, &ns).await;
    let m1 = d.scrape().await?;
    let c1 = d.cpu_time()?;
    let u1 = crate::cpu::Snapshot::take()?;
    let conc_add = concurrent(&sock, "ADD", conc_pods, &ns).await;
    let u2 = crate::cpu::Snapshot::take()?;
    let m2 = d.scrape().await?;
    let c2 = d.cpu_time()?;
    floor_metric(
        add,
        "concurrent_preplugged",
        &u1.until(&u2, idle_cpu_ms_per_s),
        o.concurrent,
    );
    eprintln!(
        "daemon-add preplugged: {} sequential + {} concurrent ADDs done ({} + {} failed)",
        seq_add.ok.len(),
        conc_add.ok.len(),
        seq_add.errors,
        conc_add.errors
    );
    add.checks["preplugged_add_path"] = json!({
        "preplugged": path_count(&m2, "preplugged") - path_count(&m0, "preplugged"),
        "plug": path_count(&m2, "plug") - path_count(&m0, "plug"),
    });
    let seq_del = sequential(&sock, "DEL", seq_pods, &ns).await;
    let conc_del = concurrent(&sock, "DEL", conc_pods, &ns).await;
    let left = held_names(pool_netns)?;
    add.checks["preplugged_held_after_del"] = json!(left.len());
    record_phases(
        add,
        o,
        Some("preplugged"),
        [&seq_add, &conc_add, &seq_del, &conc_del],
    );
    for (name, before, after, cpu, requests) in [
        (
            "sequential_preplugged",
            m0,
            m1.clone(),
            c1 - c0,
            o.sequential,
        ),
        ("concurrent_preplugged", m1, m2, c2 - c1, o.concurrent),
    ] {
        daemon_side(
            add,
            &Phase {
                name,
                before,
                after,
                cpu,
                requests,
            },
            "ADD",
        );
    }
    Ok(())
}

/// Notes the failures of the four phases (ADD and DEL, sequential and concurrent) of a variant
/// and records its two ADD latencies against the target. `variant`: `None` for the plain run,
/// `Some("preplugged")` for the warm-pool one (suffix of names and labels).
fn record_phases(
    add: &mut Run,
    o: &Opts,
    variant: Option<&str>,
    [seq_add, conc_add, seq_del, conc_del]: [&Timed; 4],
) {
    let label = variant.map(|v| format!(" {v}")).unwrap_or_default();
    for (name, t) in [
        ("ADD sequential", seq_add),
        ("ADD concurrent", conc_add),
        ("DEL sequential", seq_del),
        ("DEL concurrent", conc_del),
    ] {
        if let Some(e) = &t.first_error {
            add.note(format!("{name}{label}: {} failed; first: {e}", t.errors));
        }
    }
    let suffix = variant.map(|v| format!("_{v}")).unwrap_or_default();
    let how = if variant.is_some() {
        ", ports pre-plugged (warm pool)"
    } else {
        ""
    };
    for (phase, t, what) in [
        (
            "sequential",
            seq_add,
            format!("{} pods one after the other", o.sequential),
        ),
        (
            "concurrent",
            conc_add,
            format!("{} pods released at once", o.concurrent),
        ),
    ] {
        add.metric(
            &format!("add_{phase}{suffix}"),
            t.metric(&format!("ADD latency, client side, {what}{how}"))
                .with_target(&ADD_TARGET),
        );
    }
}

fn round1(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}
