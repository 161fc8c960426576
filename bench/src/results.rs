//! Results files: `bench/results/<benchmark>.json` holds every run of one benchmark
//! (appended), `bench/results/SUMMARY.md` is regenerated from all of them.
//!
//! ```json
//! {"benchmark": "daemon-add", "description": "…", "schema": 1,
//!  "runs": [{"commit": "…", "dirty": true, "date": "2026-…Z", "duration_s": 95.2,
//!            "machine": {"nproc": 2, "mem_total_mib": 24105, "kernel": "…", …},
//!            "params": {…}, "checks": {…}, "notes": ["…"],
//!            "metrics": {"add_sequential": {"p50": 9.1, "p90": …, "p99": …, "mean": …,
//!                        "min": …, "max": …, "n": 100, "unit": "ms",
//!                        "target": {"p50": 20, "p99": 100}, "meets_target": true}}}]}
//! ```
//!
//! A new benchmark (e.g. the controller's) is one more file with the same shape; the
//! summary picks it up without code changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::stats::Metric;

pub const SCHEMA: u64 = 1;

/// One run of one benchmark.
#[derive(Debug, Serialize)]
pub struct Run {
    pub commit: String,
    pub dirty: bool,
    /// Paths `git status --porcelain` lists (the work tree may be shared with others).
    pub dirty_files: usize,
    pub date: String,
    pub duration_s: f64,
    pub machine: Value,
    pub params: Value,
    /// Facts about the run that are not timings (e.g. ports Neutron saw ACTIVE).
    pub checks: Value,
    pub notes: Vec<String>,
    pub metrics: BTreeMap<String, Metric>,
    #[serde(skip)]
    started: Option<Instant>,
    #[serde(skip)]
    load_start: String,
}

impl Run {
    /// Starts a run record: git and machine facts now, duration when written.
    pub fn start(repo: &Path) -> Run {
        let (commit, dirty_files) = git_state(repo);
        Run {
            commit,
            dirty: dirty_files > 0,
            dirty_files,
            date: utc_now(),
            duration_s: 0.0,
            machine: Value::Null,
            params: json!({}),
            checks: json!({}),
            notes: Vec::new(),
            metrics: BTreeMap::new(),
            started: Some(Instant::now()),
            load_start: loadavg(),
        }
    }

    pub fn metric(&mut self, name: &str, m: Metric) {
        self.metrics.insert(name.to_owned(), m);
    }

    pub fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("note: {s}");
        self.notes.push(s);
    }

    /// Appends this run to `<dir>/<benchmark>.json` and regenerates `<dir>/SUMMARY.md`.
    pub fn write(mut self, dir: &Path, benchmark: &str, description: &str) -> Result<PathBuf> {
        if let Some(s) = self.started {
            self.duration_s = (s.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        }
        self.machine = machine(&self.load_start);
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(format!("{benchmark}.json"));
        let mut doc: Value = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{} is not JSON; move it away", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                json!({"benchmark": benchmark, "description": description, "schema": SCHEMA, "runs": []})
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        doc["description"] = json!(description);
        let runs = doc["runs"]
            .as_array_mut()
            .with_context(|| format!("{}: no runs array", path.display()))?;
        runs.push(serde_json::to_value(&self)?);
        write_atomic(
            &path,
            format!("{}\n", serde_json::to_string_pretty(&doc)?).as_bytes(),
        )?;
        write_summary(dir)?;
        Ok(path)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// `git rev-parse HEAD` and the number of changed paths. Read-only: `--no-optional-locks`
/// keeps `git status` from refreshing the index.
fn git_state(repo: &Path) -> (String, usize) {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .arg("--no-optional-locks")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let commit = run(&["rev-parse", "HEAD"])
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let dirty = run(&["status", "--porcelain"])
        .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    (commit, dirty)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn meminfo_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn machine(load_start: &str) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_total_mib": meminfo_kib("MemTotal").map(|k| k / 1024),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default(),
        "cpu": cpu,
        "hostname": std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
    })
}

/// RFC 3339 UTC, seconds precision.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

// ------------------------------------------------------------------------------ summary

fn num(v: &Value) -> String {
    match v.as_f64() {
        None => "–".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn target_text(t: &Value) -> String {
    match t.as_object() {
        Some(o) if !o.is_empty() => o
            .iter()
            .map(|(k, v)| format!("{k} ≤ {}", num(v)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

fn verdict(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "**NO**",
        None => "",
    }
}

/// Markdown summary of every `*.json` in `dir`: the latest run of each benchmark in full,
/// and the history of its targeted metrics.
pub fn summary(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = String::from(
        "# kuryr-rs benchmark results\n\n\
         Generated by `kuryr-bench` from the JSON files in this directory (do not edit: \
         re-run `kuryr-bench summary`). Percentiles are nearest-rank over the samples; `n` is \
         the number of successful samples. Numbers come from a 2-core machine shared with \
         other work: compare runs by their load average.\n",
    );
    for f in files {
        let doc: Value = match std::fs::read(&f)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(d) => d,
            None => {
                out += &format!("\n## {}\n\nunreadable\n", f.display());
                continue;
            }
        };
        let name = doc["benchmark"].as_str().unwrap_or("?");
        let runs = doc["runs"].as_array().cloned().unwrap_or_default();
        let Some(last) = runs.last() else { continue };
        out += &format!(
            "\n## {name}\n\n{}\n\n",
            doc["description"].as_str().unwrap_or("")
        );
        let m = &last["machine"];
        out += &format!(
            "Latest of {} run(s): {} · commit `{}`{} · {} s · {} CPUs, {} MiB, kernel {} · load {} → {}\n\n",
            runs.len(),
            last["date"].as_str().unwrap_or("?"),
            last["commit"].as_str().map(|c| &c[..c.len().min(12)]).unwrap_or("?"),
            if last["dirty"].as_bool().unwrap_or(false) {
                format!(" (+{} uncommitted paths)", last["dirty_files"])
            } else {
                String::new()
            },
            num(&last["duration_s"]),
            m["nproc"],
            m["mem_total_mib"],
            m["kernel"].as_str().unwrap_or("?"),
            m["loadavg_start"].as_str().unwrap_or("?"),
            m["loadavg_end"].as_str().unwrap_or("?"),
        );
        out += "| metric | n | p50 | p90 | p99 | mean | max | unit | target | meets |\n\
                |---|---:|---:|---:|---:|---:|---:|---|---|---|\n";
        let metrics = last["metrics"].as_object().cloned().unwrap_or_default();
        for (k, v) in &metrics {
            let errors = v["errors"].as_u64().unwrap_or(0);
            out += &format!(
                "| `{k}` | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                v["n"],
                if errors > 0 {
                    format!(" ({errors} failed)")
                } else {
                    String::new()
                },
                num(&v["p50"]),
                num(&v["p90"]),
                num(&v["p99"]),
                num(&v["mean"]),
                num(&v["max"]),
                v["unit"].as_str().unwrap_or(""),
                target_text(&v["target"]),
                verdict(&v["meets_target"]),
            );
        }
        let whats: Vec<String> = metrics
            .iter()
            .filter_map(|(k, v)| v["what"].as_str().map(|w| format!("- `{k}`: {w}")))
            .collect();
        if !whats.is_empty() {
            out += &format!("\n{}\n", whats.join("\n"));
        }
        if let Some(p) = last["params"].as_object().filter(|p| !p.is_empty()) {
            out += &format!("\nParameters: `{}`\n", Value::Object(p.clone()));
        }
        if let Some(c) = last["checks"].as_object().filter(|c| !c.is_empty()) {
            out += &format!("\nChecks: `{}`\n", Value::Object(c.clone()));
        }
        if let Some(n) = last["notes"].as_array().filter(|n| !n.is_empty()) {
            out += "\nNotes:\n";
            for x in n {
                out += &format!("- {}\n", x.as_str().unwrap_or(""));
            }
        }
        // History of the targeted metrics (newest first, at most 10 runs).
        let targeted: Vec<&String> = metrics
            .iter()
            .filter(|(_, v)| v["target"].is_object())
            .map(|(k, _)| k)
            .collect();
        if runs.len() > 1 && !targeted.is_empty() {
            out += "\nHistory (p50 / p99, newest first):\n\n| date | commit | load |";
            for k in &targeted {
                out += &format!(" `{k}` |");
            }
            out += "\n|---|---|---|";
            out += &"---|".repeat(targeted.len());
            out += "\n";
            for r in runs.iter().rev().take(10) {
                out += &format!(
                    "| {} | `{}`{} | {} |",
                    r["date"].as_str().unwrap_or("?"),
                    r["commit"]
                        .as_str()
                        .map(|c| &c[..c.len().min(9)])
                        .unwrap_or("?"),
                    if r["dirty"].as_bool().unwrap_or(false) {
                        "+"
                    } else {
                        ""
                    },
                    r["machine"]["loadavg_start"].as_str().unwrap_or("?"),
                );
                for k in &targeted {
                    let v = &r["metrics"][k.as_str()];
                    out += &if v.is_object() {
                        format!(" {} / {} |", num(&v["p50"]), num(&v["p99"]))
                    } else {
                        " – |".into()
                    };
                }
                out += "\n";
            }
        }
    }
    Ok(out)
}

pub fn write_summary(dir: &Path) -> Result<PathBuf> {
    let s = summary(dir)?;
    let p = dir.join("SUMMARY.md");
    write_atomic(&p, s.as_bytes())?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_format() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.ends_with('Z') && d.as_bytes()[10] == b'T', "{d}");
    }

    #[test]
    fn append_and_summarise() {
        let dir = tempfile::tempdir().expect("tmp");
        for i in 0..2 {
            let mut r = Run::start(Path::new("."));
            r.metric(
                "x",
                Metric::from_samples(&[1.0, 2.0, f64::from(i)], "ms", "a thing")
                    .with_target(&[("p50", 3.0)]),
            );
            r.metric("y", Metric::from_samples(&[], "ms", ""));
            r.write(dir.path(), "demo", "A demo").expect("write");
        }
        let doc: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
        assert_eq!(doc["runs"].as_array().unwrap().len(), 2);
        assert!(doc["runs"][1]["metrics"]["y"]["p50"].is_null());
        let s = std::fs::read_to_string(dir.path().join("SUMMARY.md")).unwrap();
        assert!(
            s.contains("## demo") && s.contains("| `x` | 3 |") && s.contains("History"),
            "{s}"
        );
    }
}
