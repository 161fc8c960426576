//! Helpers for tests that run against the local all-in-one stack (`hack/stack/stack up`).
//!
//! Every test in this crate is `#[ignore]`d so that a plain `cargo test` on a machine without
//! the stack stays green and honest; `hack/test` runs them with `--include-ignored` after it
//! has brought the stack up. A test that cannot reach the stack fails, it never skips.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The stack's state directory (same default as hack/stack/lib.sh).
pub fn state_dir() -> PathBuf {
    std::env::var_os("STACK_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/kuryr-stack"))
}

/// Key/value pairs from `$STACK_STATE/stack.env` (ids of the stack's OpenStack objects).
pub fn stack_env() -> HashMap<String, String> {
    let path = state_dir().join("stack.env");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} unreadable ({e}): is the stack up? run hack/stack/stack up", path.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Run a command, returning its output; panics with the command line if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command that must succeed; returns stdout. On failure, panics with stdout+stderr.
pub fn must(cmd: &mut Command) -> String {
    let out = run(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}

/// `kubectl` of the stack, with the admin kubeconfig.
pub fn kubectl() -> Command {
    let env = stack_env();
    let bin = std::env::var("K8S_BIN").ok().or_else(|| env.get("K8S_BIN").cloned());
    let kubectl = match bin {
        Some(b) => PathBuf::from(b).join("kubectl"),
        None => PathBuf::from("kubectl"),
    };
    let mut c = Command::new(kubectl);
    c.env("KUBECONFIG", state_dir().join("kubeconfig"));
    c
}

/// The `openstack` CLI of the stack for one cloud of its clouds.yaml.
pub fn openstack(cloud: &str) -> Command {
    let env = stack_env();
    let cli = env.get("OPENSTACK_CLI").cloned().unwrap_or_else(|| "openstack".into());
    let mut c = Command::new(cli);
    c.env("OS_CLIENT_CONFIG_FILE", state_dir().join("clouds.yaml"));
    c.args(["--os-cloud", cloud]);
    c
}

/// A name unique to this test process, for objects a test creates.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}
