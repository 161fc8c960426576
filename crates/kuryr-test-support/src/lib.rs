//! Helpers the stack tests share (controller, daemon, e2e): where the local stack keeps its
//! files (`hack/stack/stack up`), the ids in its `stack.env`, names unique to a test process,
//! [`skip!`] for a test that cannot run on this machine (counted as skipped by hack/test), and
//! [`metrics`]: a kuryr process's Prometheus samples, and test certificates ([`certs`], openssl
//! CLI).
//! Test code only: a dev-dependency, or a dependency of test-only crates and of the benchmark
//! (`kuryr-bench`), never of a shipped binary.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// The stack's state directory: `$STACK_STATE`, else `/var/lib/kuryr-stack` (the default of
/// hack/stack/lib.sh).
pub fn state_dir() -> PathBuf {
    std::env::var_os("STACK_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/kuryr-stack"))
}

/// A file of the stack's state directory (`kuryr.conf`, `kubeconfig`, `clouds.yaml`, ...).
pub fn state_file(name: &str) -> PathBuf {
    state_dir().join(name)
}

/// Key/value pairs of `stack.env` (ids of the stack's OpenStack objects); panics with a hint if
/// the stack is not up.
pub fn stack_env() -> HashMap<String, String> {
    let path = state_file("stack.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} unreadable ({e}): is the stack up? run hack/stack/stack up",
            path.display()
        )
    });
    parse_env(&text)
}

/// `KEY=value` lines, `#` comments skipped, keys and values trimmed.
pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A name unique to this test process: `<prefix><pid>-<n>` (short: some end up in interface
/// names of at most 15 bytes).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Tells the stack's supervisor bookkeeping that `service` (its supervisor name, e.g.
/// `ovs-vswitchd`) is about to be killed on purpose: one line `EPOCH SERVICE WHY` in
/// `$STATE/expected-kills`. hack/test's crash summary then marks the crash the supervisor records
/// within 30 s as deliberate instead of reporting it as a crash nothing caused.
pub fn announce_kill(service: &str, why: &str) -> std::io::Result<()> {
    use std::io::Write;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_file("expected-kills"))?;
    writeln!(f, "{now} {service} {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_and_unique_names() {
        let env = parse_env(
            "# ids\nPOD_NET_ID = n1\nEMPTY=\nno equals sign\n  # indented comment\nK=a=b\n",
        );
        assert_eq!(env.len(), 3, "{env:?}");
        assert_eq!(
            (
                env["POD_NET_ID"].as_str(),
                env["EMPTY"].as_str(),
                env["K"].as_str()
            ),
            ("n1", "", "a=b")
        );
        let (a, b) = (unique("kst-"), unique("kst-"));
        assert_ne!(a, b);
        assert!(
            a.starts_with(&format!("kst-{}-", std::process::id())),
            "{a}"
        );
    }
}

#[cfg(feature = "arb")]
pub mod arb;
pub mod certs;
pub mod metrics;
pub mod skip;
