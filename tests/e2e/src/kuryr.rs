//! kuryr-daemon and kuryr-controller as host processes for a test, the way `hack/kuryr-services`
//! runs them (bare-metal style), plus a namespace guard.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{kubectl, must, run, stack_env, state_dir, wait_for, workspace_bin, Proc};

/// Where the daemon writes the conflist (containerd's CRI plugin reads it).
pub const CONFLIST: &str = "/etc/cni/net.d/10-kuryr.conflist";

/// The running pair; both are stopped on drop (the daemon removes its conflist then).
pub struct Kuryr {
    pub daemon: Proc,
    pub controller: Proc,
}

/// Starts both with the stack's kuryr.conf; `daemon_args` are extra daemon flags (e.g.
/// `--chain portmap`). Waits until the daemon wrote the conflist and the node is Ready.
pub fn start(daemon_args: &[&str]) -> Kuryr {
    let state = state_dir();
    let conf = state.join("kuryr.conf");
    let kcfg = state.join("kubeconfig");
    let host = stack_env()["STACK_HOST"].clone();
    let mut daemon = Proc::spawn(
        "kuryr-daemon",
        Command::new(workspace_bin("kuryr-daemon"))
            .arg("--config-file")
            .arg(&conf)
            .arg("--kubeconfig")
            .arg(&kcfg)
            .args(["--node-name", &host, "--cni-bin-dir", "/opt/cni/bin"])
            .arg("--install-cni-from")
            .arg(workspace_bin("kuryr-cni"))
            .args(daemon_args)
            .env("RUST_LOG", "info"),
    );
    let controller = Proc::spawn(
        "kuryr-controller",
        Command::new(workspace_bin("kuryr-controller"))
            .arg("--config-file")
            .arg(&conf)
            .arg("--kubeconfig")
            .arg(&kcfg)
            .arg("--install-crds")
            .env("RUST_LOG", "info"),
    );
    // The daemon writes the conflist only once ready; then the node goes Ready.
    wait_for(
        "the kuryr conflist",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            assert!(
                daemon.alive(),
                "kuryr-daemon exited:\n{}",
                daemon.log_tail(40)
            );
            Path::new(CONFLIST).exists().then_some(())
        },
    );
    must(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        "node",
        &host,
    ]));
    Kuryr { daemon, controller }
}

/// A namespace deleted (without waiting) on drop.
pub struct Namespace(pub String);

impl Namespace {
    /// Creates a namespace named `prefix` + a unique suffix.
    pub fn create(prefix: &str) -> Namespace {
        let ns = Namespace(crate::unique(prefix));
        must(kubectl().args(["create", "namespace", &ns.0]));
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run(kubectl().args(["delete", "namespace", &self.0, "--wait=false"]));
    }
}
