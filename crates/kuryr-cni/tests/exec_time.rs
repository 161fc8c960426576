//! Exec time of `kuryr-cni` VERSION (the cost a runtime pays per probe). Printed, not
//! asserted: run with `--nocapture` to see it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn version_exec_time_over_200_runs() {
    let mut samples: Vec<Duration> = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        let mut child = Command::new(common::BIN)
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(br#"{"cniVersion":"1.0.0"}"#)
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        samples.push(started.elapsed());
        assert!(out.status.success());
        assert!(out
            .stdout
            .starts_with(br#"{"cniVersion":"1.0.0","supportedVersions":"#));
    }
    samples.sort();
    let total: Duration = samples.iter().sum();
    let us = |d: Duration| d.as_micros();
    println!(
        "kuryr-cni VERSION exec time over {} runs ({}): mean {} us, min {} us, p50 {} us, p95 {} us, max {} us",
        samples.len(),
        if cfg!(debug_assertions) { "debug build" } else { "release build" },
        us(total / samples.len() as u32),
        us(samples[0]),
        us(samples[samples.len() / 2]),
        us(samples[samples.len() * 95 / 100]),
        us(samples[samples.len() - 1]),
    );
}
