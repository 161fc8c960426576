//! `compare-upstream`: the same workloads against upstream kuryr-kubernetes 10.0.0
//! (`hack/upstream/upstream`) and kuryr-rs (release binaries as host services,
//! `hack/kuryr-services`) on the same stack in one sitting, with the same kuryr.conf (the
//! stack's), pools off for both and then on for both; both sides, their ratio (upstream ÷
//! kuryr-rs: above 1 means kuryr-rs is ahead) and, as peer and limit, the reference `bridge`
//! plugin's ADD at the same concurrency and this machine's CPU floor per ADD.
//!
//! Rows, per side: pod created → Ready through kubelet/containerd (20 and 50 pods at once), the
//! CNI ADD as the runtime sees it (the runtime's exec of `kuryr-cni` timed by a wrapper:
//! sequential and within the 20-pod burst), Neutron requests per pod (Neutron's access log, by
//! user agent), controller and daemon peak RSS and CPU seconds over the bursts.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::results::Run;
use crate::stack::stack_env;
use crate::stats::Metric;

pub struct Opts {
    pub release_dir: PathBuf,
    pub pools: Vec<bool>,
    pub sequential: usize,
    pub bursts: Vec<usize>,
    pub timeout: Duration,
    pub sides: Vec<Side>,
    /// Appended to the kuryr.conf of both sides.
    pub extra_conf: String,
}

/// `upstream` / `kuryr-rs` (`kuryr_rs`), in the order given.
pub fn parse_sides(names: &[String]) -> Result<Vec<Side>> {
    names
        .iter()
        .map(|n| match n.as_str() {
            "upstream" => Ok(Side::Upstream),
            "kuryr-rs" | "kuryr_rs" => Ok(Side::KuryrRs),
            other => bail!("unknown side {other:?} (upstream, kuryr-rs)"),
        })
        .collect()
}

const CNI_BIN: &str = "/opt/cni/bin/kuryr-cni";
const CNI_REAL: &str = "/opt/cni/bin/kuryr-cni.bench-real";
const CNI_LOG: &str = "/run/kuryr-bench-cni.log";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Side {
    Upstream,
    KuryrRs,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Upstream => "upstream",
            Side::KuryrRs => "kuryr_rs",
        }
    }
    /// Neutron access-log user agent of the side's controller.
    fn agent(self) -> &'static str {
        match self {
            Side::Upstream => "\"kuryr-k8s-controller ",
            Side::KuryrRs => "\"kuryr-rs/",
        }
    }
    /// Role ("controller"/"daemon") of a process of this side, from its comm and cmdline.
    fn role(self, comm: &str, cmdline: &str) -> Option<&'static str> {
        match self {
            Side::KuryrRs => match comm {
                "kuryr-controlle" | "kuryr-controller" => Some("controller"),
                "kuryr-daemon" => Some("daemon"),
                _ => None,
            },
            Side::Upstream => {
                if cmdline.contains("kuryr-k8s-controller") {
                    Some("controller")
                } else if cmdline.starts_with("kuryr-daemon-netdev")
                    || cmdline.contains("hack/upstream/kuryr-daemon-netdev")
                    || (cmdline.contains("kuryr-upstream") && cmdline.contains("privsep-helper"))
                {
                    Some("daemon")
                } else {
                    None
                }
            }
        }
    }
}

pub(crate) fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn kubectl(env: &HashMap<String, String>) -> Command {
    let mut c = Command::new(Path::new(&env["K8S_BIN"]).join("kubectl"));
    c.env("KUBECONFIG", &env["KUBECONFIG"]);
    c
}

/// Brings one side up as the node's CNI (and, for kuryr-rs, with `conf`).
fn side_up(repo: &Path, o: &Opts, side: Side, pools: bool, conf: &Path) -> Result<()> {
    match side {
        Side::Upstream => {
            let mut c = Command::new(repo.join("hack/upstream/upstream"));
            c.arg("up");
            if pools {
                c.arg("--pools");
            }
            sh(&mut c)?;
        }
        Side::KuryrRs => kuryr_services_up(repo, &o.release_dir, conf, &[])?,
    }
    Ok(())
}

/// `hack/kuryr-services up`: kuryr-rs's release binaries from `release_dir` as the node's CNI
/// (host services under the stack's supervisor), with `conf`, no chained plugins, and `env`
/// (e.g. `KURYR_CONTROLLERS`).
pub(crate) fn kuryr_services_up(
    repo: &Path,
    release_dir: &Path,
    conf: &Path,
    env: &[(&str, &str)],
) -> Result<()> {
    let mut c = Command::new(repo.join("hack/kuryr-services"));
    c.arg("up")
        .arg(release_dir)
        .arg(release_dir.join("kuryr-cni"))
        .env("KURYR_CONF", conf)
        .env("KURYR_CHAIN", "");
    for (k, v) in env {
        c.env(k, v);
    }
    sh(&mut c).map(|_| ())
}

pub(crate) fn side_down(repo: &Path, side: Side) -> Result<()> {
    match side {
        Side::Upstream => {
            sh(Command::new(repo.join("hack/upstream/upstream")).arg("down")).map(|_| ())
        }
        Side::KuryrRs => sh(Command::new(repo.join("hack/kuryr-services")).arg("down")).map(|_| ()),
    }
}

/// Puts a timing wrapper in front of the side's kuryr-cni: the runtime's exec, as it sees it.
fn wrap_cni() -> Result<()> {
    std::fs::rename(CNI_BIN, CNI_REAL).context("move kuryr-cni aside")?;
    let script = format!(
        "#!/bin/sh\ns=$(date +%s%N)\n{CNI_REAL} \"$@\"\nrc=$?\necho \"$CNI_COMMAND $s $(date +%s%N) $rc\" >> {CNI_LOG}\nexit $rc\n"
    );
    std::fs::write(CNI_BIN, script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(CNI_BIN, std::fs::Permissions::from_mode(0o755))?;
    let _ = std::fs::remove_file(CNI_LOG);
    Ok(())
}

fn unwrap_cni() {
    if Path::new(CNI_REAL).exists() {
        let _ = std::fs::rename(CNI_REAL, CNI_BIN);
    }
}

/// ADD durations (ms) logged by the wrapper since `from` lines.
fn cni_adds(skip: usize) -> (Vec<f64>, usize) {
    let text = std::fs::read_to_string(CNI_LOG).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for l in lines.iter().skip(skip) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 4 && f[0] == "ADD" && f[3] == "0" {
            if let (Ok(s), Ok(e)) = (f[1].parse::<u128>(), f[2].parse::<u128>()) {
                out.push((e.saturating_sub(s)) as f64 / 1e6);
            }
        }
    }
    (out, lines.len())
}

fn neutron_calls(state: &Path, agent: &str) -> usize {
    std::fs::read_to_string(state.join("log/neutron-access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(agent))
        .count()
}

/// (role → (ticks, rss kB)) of the side's processes.
pub(crate) fn side_usage(side: Side) -> BTreeMap<&'static str, (u64, u64)> {
    let mut out: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let Some(role) = side.role(&stat[open + 1..close], &cmdline) else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let ticks = num(11) + num(12) + num(13) + num(14);
        let rss = std::fs::read_to_string(e.path().join("status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        let slot = out.entry(role).or_default();
        slot.0 += ticks;
        slot.1 += rss;
    }
    out
}

/// Samples the side's RSS every 250 ms while alive; returns the peak per role (kB).
pub(crate) struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    pub(crate) fn start(side: Side) -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for (role, (_, rss)) in side_usage(side) {
                    let mut m = p.lock().unwrap_or_else(|e| e.into_inner());
                    let e = m.entry(role).or_insert(0);
                    *e = (*e).max(rss);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        RssPeak {
            stop,
            peak,
            handle: Some(handle),
        }
    }
    pub(crate) fn finish(mut self) -> BTreeMap<&'static str, u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub(crate) fn busybox(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c",
             "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never", "command": ["sleep", "36000"]}]}})
}

/// Creates `names` at once (one `kubectl create`) and returns each pod's created → Ready (ms),
/// seen by a watch started before the create.
fn create_and_time(
    env: &HashMap<String, String>,
    ns: &str,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<f64>> {
    let mut watch = kubectl(env)
        .args(["get", "pods", "-n", ns, "-w", "-o"])
        .arg("jsonpath={.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = watch.stdout.take().context("watch stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), l)).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300)); // the watch is established
    let list = json!({"apiVersion": "v1", "kind": "List", "items": names.iter().map(|n| busybox(ns, n)).collect::<Vec<_>>()});
    let file = std::env::temp_dir().join(format!("kb-cmp-{ns}.json"));
    std::fs::write(&file, list.to_string())?;
    let t0 = Instant::now();
    sh(kubectl(env).arg("create").arg("-f").arg(&file))?;
    let mut ready: BTreeMap<String, f64> = BTreeMap::new();
    let end = t0 + timeout;
    while ready.len() < names.len() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = watch.kill();
            bail!(
                "{} of {} pods Ready after {timeout:?}",
                ready.len(),
                names.len()
            );
        }
        if let Ok((at, l)) = rx.recv_timeout(left) {
            if let Some((name, st)) = l.split_once(' ') {
                if st.trim() == "True" && names.iter().any(|n| n == name) {
                    ready
                        .entry(name.to_owned())
                        .or_insert_with(|| at.duration_since(t0).as_secs_f64() * 1e3);
                }
            }
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    Ok(ready.into_values().collect())
}

fn delete_ns(env: &HashMap<String, String>, ns: &str) -> Result<()> {
    sh(kubectl(env).args(["delete", "namespace", ns, "--wait=true", "--timeout=300s"])).map(|_| ())
}

struct SideResult {
    rows: BTreeMap<String, Metric>,
}

fn measure_side(
    repo: &Path,
    o: &Opts,
    side: Side,
    pools: bool,
    conf: &Path,
    tag: &str,
) -> Result<SideResult> {
    let env = stack_env()?;
    let state = PathBuf::from(&env["STACK_STATE"]);
    let mut rows = BTreeMap::new();
    side_up(repo, o, side, pools, conf)?;
    let r = (|| -> Result<()> {
        wrap_cni()?;
        if pools {
            // Let the pool fill (both sides fill to ports_pool_min in the background).
            std::thread::sleep(Duration::from_secs(30));
        }
        // Sequential: one pod at a time.
        let ns = format!("kb-cmp-{tag}-{}-seq", side.name().replace('_', "-"));
        sh(kubectl(&env).args(["create", "namespace", &ns]))?;
        let mut seq = Vec::new();
        let mut skip = 0;
        for i in 0..o.sequential {
            seq.extend(create_and_time(&env, &ns, &[format!("p{i}")], o.timeout)?);
        }
        let (adds, n) = cni_adds(skip);
        skip = n;
        rows.insert(
            "pod_ready_sequential".into(),
            Metric::from_samples(&seq, "ms", "pod created → Ready, one at a time"),
        );
        rows.insert(
            "cni_add_sequential".into(),
            Metric::from_samples(
                &adds,
                "ms",
                "the runtime's kuryr-cni ADD exec, one pod at a time",
            ),
        );
        delete_ns(&env, &ns)?;
        for &n in &o.bursts {
            let ns = format!("kb-cmp-{tag}-{}-b{n}", side.name().replace('_', "-"));
            sh(kubectl(&env).args(["create", "namespace", &ns]))?;
            let calls0 = neutron_calls(&state, side.agent());
            let usage0 = side_usage(side);
            let peak = RssPeak::start(side);
            let names: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
            let ready = create_and_time(&env, &ns, &names, o.timeout)?;
            let peak = peak.finish();
            let usage1 = side_usage(side);
            // Calls made for the burst: until the counter has been quiet for 5 s.
            let mut calls = neutron_calls(&state, side.agent());
            let mut quiet = Instant::now();
            while quiet.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(250));
                let c = neutron_calls(&state, side.agent());
                if c != calls {
                    (calls, quiet) = (c, Instant::now());
                }
            }
            let (adds, m) = cni_adds(skip);
            skip = m;
            rows.insert(
                format!("pod_ready_burst{n}"),
                Metric::from_samples(
                    &ready,
                    "ms",
                    &format!("pod created → Ready, {n} pods at once"),
                ),
            );
            if n == 20 {
                rows.insert(
                    "cni_add_concurrent".into(),
                    Metric::from_samples(
                        &adds,
                        "ms",
                        "the runtime's kuryr-cni ADD exec within the 20-pod burst",
                    ),
                );
            }
            let sfx = if n == 20 {
                String::new()
            } else {
                format!("_burst{n}")
            };
            rows.insert(
                format!("neutron_calls_per_pod{sfx}"),
                Metric::from_samples(
                    &[(calls - calls0) as f64 / n as f64],
                    "count",
                    &format!("Neutron requests by the controller per pod, {n}-pod burst"),
                ),
            );
            for role in ["controller", "daemon"] {
                let kb = peak.get(role).copied().unwrap_or(0);
                rows.insert(
                    format!("{role}_rss{sfx}"),
                    Metric::from_samples(
                        &[kb as f64 / 1024.0],
                        "MiB",
                        &format!("{role} peak RSS (all its processes) during the {n}-pod burst"),
                    ),
                );
                let t = usage1
                    .get(role)
                    .map_or(0, |u| u.0)
                    .saturating_sub(usage0.get(role).map_or(0, |u| u.0));
                rows.insert(format!("{role}_cpu{sfx}"), Metric::from_samples(&[t as f64 / 100.0], "s", &format!("{role} CPU seconds (user+system, reaped children included) over the {n}-pod burst")));
            }
            delete_ns(&env, &ns)?;
        }
        Ok(())
    })();
    unwrap_cni();
    let down = side_down(repo, side);
    r?;
    down?;
    Ok(SideResult { rows })
}

/// The reference `bridge` plugin (containernetworking/plugins) doing ADD in `n` fresh netns at
/// once (host-local IPAM): the peer every ADD figure reads against.
fn bridge_reference(n: usize, concurrent: bool) -> Result<Vec<f64>> {
    // The reference plugins the runtime has (the stack's, or Debian's containernetworking-plugins).
    let plugins = ["/opt/cni/bin", "/usr/lib/cni"]
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("bridge").exists() && d.join("host-local").exists())
        .context("no reference bridge + host-local plugins in /opt/cni/bin or /usr/lib/cni")?;
    let dir = tempfile::tempdir()?;
    let conf = json!({"cniVersion": "1.0.0", "name": "kb-bridge", "type": "bridge", "bridge": "kb-br0", "isGateway": true,
                      "ipam": {"type": "host-local", "subnet": "10.250.0.0/24", "dataDir": dir.path().join("ipam")}})
    .to_string();
    let names: Vec<String> = (0..n)
        .map(|i| format!("kb-br-{}-{i}", std::process::id()))
        .collect();
    for nsn in &names {
        sh(Command::new("ip").args(["netns", "add", nsn]))?;
    }
    let run_one = |nsn: &str, cmd: &str| -> Result<f64> {
        let t = Instant::now();
        let mut c = Command::new(plugins.join("bridge"))
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", nsn)
            .env("CNI_NETNS", format!("/run/netns/{nsn}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &plugins)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        use std::io::Write;
        c.stdin
            .take()
            .context("stdin")?
            .write_all(conf.as_bytes())?;
        let st = c.wait()?;
        if !st.success() {
            bail!("bridge {cmd} in {nsn}: {st}");
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let res: Result<Vec<f64>> = if concurrent {
        std::thread::scope(|s| {
            let hs: Vec<_> = names
                .iter()
                .map(|nsn| s.spawn(|| run_one(nsn, "ADD")))
                .collect();
            hs.into_iter()
                .map(|h| h.join().map_err(|_| anyhow::anyhow!("thread"))?)
                .collect()
        })
    } else {
        names.iter().map(|nsn| run_one(nsn, "ADD")).collect()
    };
    for nsn in &names {
        let _ = run_one(nsn, "DEL");
        let _ = Command::new("ip").args(["netns", "del", nsn]).status();
    }
    let _ = Command::new("ip").args(["link", "del", "kb-br0"]).status();
    res
}

pub fn run(o: &Opts, repo: &Path) -> Result<Run> {
    let mut run = Run::start(repo);
    let env = stack_env()?;
    let state = PathBuf::from(&env["STACK_STATE"]);
    run.params = json!({"pools": o.pools, "sequential": o.sequential, "bursts": o.bursts, "extra_conf": o.extra_conf,
                        "upstream": "kuryr-kubernetes 10.0.0 (hack/upstream/upstream)", "kuryr_rs": o.release_dir});
    // The peer and the limit, measured in this run.
    let seq = bridge_reference(10, false)?;
    run.metric(
        "bridge_add_sequential",
        Metric::from_samples(
            &seq,
            "ms",
            "reference bridge plugin ADD (exec), one at a time",
        ),
    );
    let before = crate::cpu::Snapshot::take()?;
    std::thread::sleep(Duration::from_secs(3));
    let idle = crate::cpu::Snapshot::take()?;
    let b = before.until(&idle, 0.0);
    let baseline = b.busy_ms / b.wall.as_secs_f64().max(1e-3);
    let conc = bridge_reference(20, true)?;
    let after = crate::cpu::Snapshot::take()?;
    run.metric(
        "bridge_add_concurrent",
        Metric::from_samples(
            &conc,
            "ms",
            "reference bridge plugin ADD (exec), 20 at once",
        ),
    );
    let u = idle.until(&after, baseline);
    run.metric(
        "cpu_floor_bridge_add20",
        Metric::from_samples(
            &[u.p50_floor_ms(crate::cpu::ncpu())],
            "ms",
            "lowest p50 the machine's CPU allows for the 20 concurrent bridge ADDs",
        ),
    );
    for &pools in &o.pools {
        let tag = if pools { "pools" } else { "nopools" };
        let conf = state.join(format!("kuryr-bench-{tag}.conf"));
        let mut text = std::fs::read_to_string(state.join("kuryr.conf"))?;
        if pools {
            text.push_str("\n[kubernetes]\nvif_pool_driver = neutron\n[vif_pool]\nports_pool_min = 25\nports_pool_max = 0\nports_pool_batch = 20\nports_pool_update_frequency = 20\n");
        }
        if !o.extra_conf.is_empty() {
            text.push('\n');
            text.push_str(&o.extra_conf);
            text.push('\n');
        }
        std::fs::write(&conf, text)?;
        let mut sides = BTreeMap::new();
        for &side in &o.sides {
            eprintln!(
                "=== {} with pools {}",
                side.name(),
                if pools { "on" } else { "off" }
            );
            let r = measure_side(repo, o, side, pools, &conf, tag);
            match r {
                Ok(r) => {
                    sides.insert(side, r);
                }
                Err(e) => {
                    run.note(format!("{} (pools {tag}) failed: {e:#}", side.name()));
                }
            }
        }
        let _ = std::fs::remove_file(&conf);
        let suffix = if pools { "_pools" } else { "" };
        for (side, r) in &sides {
            for (row, m) in &r.rows {
                run.metric(&format!("{}_{row}{suffix}", side.name()), m.clone());
            }
        }
        if let (Some(up), Some(rs)) = (sides.get(&Side::Upstream), sides.get(&Side::KuryrRs)) {
            for (row, m) in &rs.rows {
                let Some(u) = up.rows.get(row) else { continue };
                let stat = |m: &Metric| if m.n > 1 { m.p50 } else { m.mean };
                if stat(m) > 0.0 {
                    run.metric(
                        &format!("ratio_{row}{suffix}"),
                        Metric::from_samples(
                            &[stat(u) / stat(m)],
                            "x",
                            &format!("upstream ÷ kuryr-rs, {row} (p50 where sampled)"),
                        ),
                    );
                }
            }
        }
    }
    Ok(run)
}
