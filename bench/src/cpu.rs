//! Where the CPU goes while a phase runs: the whole machine (`/proc/stat`) and the stack's
//! processes that react to a pod being wired (`/proc/<pid>/stat`), as differences of two
//! snapshots. With `n` requests started at once on `ncpu` CPUs that together used `busy` CPU
//! time, no scheduler can finish half of them in less than `busy / (2 · ncpu)`: that is the
//! floor a p50 target of a concurrent phase has to be compared with.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Processes whose CPU is reported by name (`comm`, at most 15 characters).
pub const WATCHED: [&str; 6] = [
    "ovs-vswitchd",
    "ovsdb-server",
    "ovn-controller",
    "kube-apiserver",
    "etcd",
    "kuryr-daemon",
];

/// USER_HZ on Linux.
const TICK_MS: f64 = 10.0;

#[derive(Clone, Debug)]
pub struct Snapshot {
    at: Instant,
    /// Non-idle jiffies of all CPUs (user, nice, system, irq, softirq, steal).
    busy: u64,
    /// Per watched process name: utime + stime ticks (summed over processes of that name).
    procs: BTreeMap<String, u64>,
}

pub fn ncpu() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn machine_busy() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

fn process_ticks() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let Some(name) = WATCHED.iter().find(|w| comm == &w[..w.len().min(15)]) else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        *out.entry((*name).to_string()).or_default() += ticks;
    }
    out
}

impl Snapshot {
    pub fn take() -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            busy: machine_busy()?,
            procs: process_ticks(),
        })
    }

    /// The CPU used between `self` and `later`, `baseline_busy_per_s` (ms of machine CPU per
    /// second when idle) subtracted from the machine total.
    pub fn until(&self, later: &Snapshot, baseline_busy_per_s: f64) -> Usage {
        let wall = later.at.saturating_duration_since(self.at);
        let busy_ms = later.busy.saturating_sub(self.busy) as f64 * TICK_MS;
        let procs = later
            .procs
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(self.procs.get(k).copied().unwrap_or(0)) as f64 * TICK_MS,
                )
            })
            .collect();
        Usage {
            wall,
            busy_ms,
            above_idle_ms: (busy_ms - baseline_busy_per_s * wall.as_secs_f64()).max(0.0),
            procs,
        }
    }
}

/// Machine CPU (ms of machine CPU per second of wall time) while nothing is asked of the stack.
pub async fn idle_baseline(over: Duration) -> Result<f64> {
    let a = Snapshot::take()?;
    tokio::time::sleep(over).await;
    let b = Snapshot::take()?;
    let u = a.until(&b, 0.0);
    Ok(u.busy_ms / u.wall.as_secs_f64().max(1e-3))
}

#[derive(Clone, Debug)]
pub struct Usage {
    pub wall: Duration,
    /// Machine CPU used in the window.
    pub busy_ms: f64,
    /// Machine CPU above the idle baseline: what the phase made the machine do.
    pub above_idle_ms: f64,
    /// Per watched process.
    pub procs: BTreeMap<String, f64>,
}

impl Usage {
    /// The p50 no schedule of `requests` simultaneous requests can beat on `ncpu` CPUs, given
    /// the CPU the phase consumed (above idle).
    pub fn p50_floor_ms(&self, ncpu: usize) -> f64 {
        self.above_idle_ms / (2.0 * ncpu as f64)
    }

    pub fn to_json(&self, requests: usize, ncpu: usize) -> Value {
        let per = |ms: f64| (ms / requests.max(1) as f64 * 100.0).round() / 100.0;
        json!({
            "wall_ms": (self.wall.as_secs_f64() * 1e4).round() / 10.0,
            "machine_busy_ms": self.busy_ms,
            "machine_above_idle_ms": (self.above_idle_ms * 10.0).round() / 10.0,
            "machine_ms_per_request": per(self.above_idle_ms),
            "by_process_ms_per_request": self.procs.iter().map(|(k, v)| (k.clone(), json!(per(*v)))).collect::<serde_json::Map<_, _>>(),
            "ncpu": ncpu,
            "p50_floor_ms": (self.p50_floor_ms(ncpu) * 10.0).round() / 10.0,
        })
    }
}
