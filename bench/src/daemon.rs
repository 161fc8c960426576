//! The real kuryr-daemon binary as a child process: temp socket and state dir, no conflist,
//! health/metrics on ephemeral localhost ports (read back from its JSON log), and /proc
//! readings of its memory and CPU time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::http;
use crate::prom::Scrape;
use crate::stack::state_file;

pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub metrics_addr: String,
    /// Start to `/v1/ready` = 200.
    pub ready_after: Duration,
}

impl Daemon {
    /// Starts the daemon for `node`, pre-plugging pool ports into the holding netns
    /// `pool_netns` (the sweep removes `kbench-*` netns).
    pub async fn start(bin: &Path, dir: &Path, node: &str, pool_netns: &str) -> Result<Daemon> {
        if !bin.is_file() {
            bail!(
                "{} does not exist (build it: see hack/bench)",
                bin.display()
            );
        }
        let socket = dir.join("kuryr-daemon.sock");
        let log = dir.join("kuryr-daemon.log");
        let logf = std::fs::File::create(&log)?;
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("--config-file")
            .arg(state_file("kuryr.conf"))
            .arg("--kubeconfig")
            .arg(state_file("kubeconfig"))
            .args(["--node-name", node, "--pool-netns", pool_netns])
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--no-conflist", "--health-port", "0", "--metrics-port", "0"])
            .args(["--listen-address", "127.0.0.1", "--log-json"])
            .env(
                "KURYR_LOG",
                std::env::var("KURYR_BENCH_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let pid = child.id();
        let mut d = Daemon {
            child: Some(child),
            pid,
            socket,
            log,
            metrics_addr: String::new(),
            ready_after: Duration::ZERO,
        };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "kuryr-daemon exited with {st} during start-up:\n{}",
                    d.log_tail(20)
                );
            }
            if d.metrics_addr.is_empty() {
                d.metrics_addr = metrics_addr(&d.log).unwrap_or_default();
            }
            if !d.metrics_addr.is_empty()
                && http::unix(&d.socket, "GET", "/v1/ready", b"")
                    .await
                    .is_ok_and(|(st, _)| st == 200)
            {
                d.ready_after = started.elapsed();
                return Ok(d);
            }
            if Instant::now() > end {
                bail!("kuryr-daemon not ready after 60 s:\n{}", d.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub async fn scrape(&self) -> Result<Scrape> {
        let (st, body) = http::tcp_get(&self.metrics_addr, "/metrics").await?;
        if st != 200 {
            bail!("GET /metrics: HTTP {st}");
        }
        Ok(Scrape::parse(&body))
    }

    /// (VmRSS, VmHWM) in MiB.
    pub fn memory(&self) -> Result<(f64, f64)> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("read /proc/<daemon>/status")?;
        let kib = |k: &str| -> Result<f64> {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| anyhow!("no {k} in /proc/{}/status", self.pid))
        };
        Ok((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
    }

    /// `samples` VmRSS readings `every` apart (MiB), and the last VmHWM.
    pub async fn sample_rss(&self, samples: usize, every: Duration) -> Result<(Vec<f64>, f64)> {
        let mut v = Vec::with_capacity(samples);
        let mut hwm = 0.0;
        for i in 0..samples {
            if i > 0 {
                tokio::time::sleep(every).await;
            }
            let (rss, h) = self.memory()?;
            v.push(rss);
            hwm = h;
        }
        Ok((v, hwm))
    }

    /// User + system CPU time so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
        let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
        // USER_HZ is 100 on Linux.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// SIGTERM, wait up to 20 s (then SIGKILL); returns the exit status text.
    pub fn stop(&mut self) -> Result<String> {
        let Some(mut child) = self.child.take() else {
            return Ok("already stopped".into());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st.to_string());
            }
            if Instant::now() > end {
                let _ = child.kill();
                let st = child.wait()?;
                return Ok(format!("{st} (killed: no exit 20 s after SIGTERM)"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `metrics_addr` of the "kuryr-daemon serving" JSON log line.
fn metrics_addr(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "kuryr-daemon serving")
        .and_then(|v| v["fields"]["metrics_addr"].as_str().map(str::to_owned))
}
