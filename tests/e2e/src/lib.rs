//! Helpers for tests that run against the local all-in-one stack (`hack/stack/stack up`).
//!
//! Every test in this crate is `#[ignore]`d so that a plain `cargo test` on a machine without
//! the stack stays green and honest; `hack/test` runs them with `--include-ignored` after it
//! has brought the stack up. A test that cannot reach the stack fails, it never skips.
#![forbid(unsafe_code)]

pub mod deploy;
pub mod kuryr;
pub mod vm;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The stack's state directory, its `stack.env` (ids of the stack's OpenStack objects), and names
/// unique to this test process: shared with the crates' stack tests.
pub use kuryr_test_support::{stack_env, state_dir, unique};

/// Run a command, returning its output; panics with the command line if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// A command's stdout followed by its stderr, for failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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

/// Whether a failed command's stderr says the object it asked for does not exist: kubectl's
/// `Error from server (NotFound)`, the openstack CLI's "No ... found for ...", "Unable to locate
/// ... in ...", "... could not be found", HTTP 404.
pub fn says_not_found(stderr: &str) -> bool {
    let e = stderr.to_lowercase();
    e.contains("(notfound)")
        || e.contains("not found")
        || e.contains("could not be found")
        || e.contains("unable to locate")
        || e.contains("http 404")
        || (e.contains("no ") && e.contains(" found for "))
}

/// Runs a command that shows one object: its stdout, or `None` when it failed because the
/// object does not exist ([`says_not_found`]). Any other failure panics with the command's
/// stderr: an API or CLI that does not answer must not read as "gone".
pub fn unless_not_found(cmd: &mut Command) -> Option<String> {
    let out = run(cmd);
    if out.status.success() {
        return Some(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if says_not_found(&err) {
        return None;
    }
    panic!(
        "{cmd:?} failed ({}), and not with \"not found\":\nstderr: {err}",
        out.status
    );
}

/// Runs `script` with `sh -c` in pod `ns/pod` (`kubectl exec`): its exit status and what it
/// printed. A probe whose failure means "unreachable" must not also read a failed `kubectl
/// exec` (pod gone, container not running, API down) as "unreachable": the script's own status
/// is printed after it, and its absence panics with kubectl's stderr.
pub fn exec_probe(ns: &str, pod: &str, script: &str) -> (i32, String) {
    const MARK: &str = "kuryr-e2e-probe-rc=";
    let out = run(kubectl().args([
        "exec",
        "-n",
        ns,
        pod,
        "--",
        "sh",
        "-c",
        &format!("{script}; echo {MARK}$?"),
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some((printed, rc)) = stdout.rsplit_once(MARK) else {
        panic!(
            "kubectl exec in {ns}/{pod} did not run the probe ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let rc = rc
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("probe status {rc:?}: {e}"));
    (rc, printed.to_string())
}

/// `kubectl` of the stack, with the admin kubeconfig.
pub fn kubectl() -> Command {
    let env = stack_env();
    let bin = std::env::var("K8S_BIN")
        .ok()
        .or_else(|| env.get("K8S_BIN").cloned());
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
    let cli = env
        .get("OPENSTACK_CLI")
        .cloned()
        .unwrap_or_else(|| "openstack".into());
    let mut c = Command::new(cli);
    c.env("OS_CLIENT_CONFIG_FILE", state_dir().join("clouds.yaml"));
    c.args(["--os-cloud", cloud]);
    c
}

/// Where cargo put the workspace's binaries (`kuryr-controller`, `kuryr-daemon`, `kuryr-cni`).
pub fn bin_dir() -> PathBuf {
    // Test executables live in <target>/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// The path of one of the workspace's binaries; panics with a hint if it was not built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// A background process killed (SIGTERM, then SIGKILL) when dropped; its output goes to a log
/// file that is printed if the test panics.
pub struct Proc {
    pub name: String,
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        // One file per spawn: a restarted process must not truncate its predecessor's log.
        static SPAWNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SPAWNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("{}-{}-{n}.log", name, std::process::id()));
        let f = std::fs::File::create(&log).expect("log file");
        let f2 = f.try_clone().expect("log file");
        let child = cmd
            .stdout(f)
            .stderr(f2)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM and wait up to 10 s (the daemon removes its conflist on SIGTERM), then SIGKILL.
    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if !self.alive() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {} ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail(60)
            );
        }
    }
}

/// One test of a test binary at a time on the node, for tests that run their own kuryr-controller
/// and kuryr-daemon (or upstream's): hack/test runs a binary's tests two at a time.
pub fn node_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Poll `f` every `every` until it returns `Some`, or panic with `what` after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() > end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// Tells the stack's supervisor bookkeeping that the test is about to kill `service` on purpose
/// (`$STATE/expected-kills`): hack/test's summary then marks that crash as deliberate instead
/// of reporting it as a crash no test caused.
pub fn announce_kill(service: &str, why: &str) {
    kuryr_test_support::announce_kill(service, why).expect("write $STATE/expected-kills");
}

/// ovs-vswitchd's pid from the stack's pid file, if that process is alive.
pub fn vswitchd_pid() -> Option<u32> {
    let p = std::fs::read_to_string(state_dir().join("pids/ovs-vswitchd.pid")).ok()?;
    let pid: u32 = p.trim().parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// Whether ovs-vswitchd answers on its control socket (within 3 s).
pub fn vswitchd_answers() -> bool {
    run(Command::new("timeout").args([
        "3",
        "ovs-appctl",
        "-t",
        "/var/run/openvswitch/ovs-vswitchd.ctl",
        "version",
    ]))
    .status
    .success()
}

/// Kills ovs-vswitchd with -9, announced as deliberate ([`announce_kill`]): its old pid.
pub fn kill_vswitchd(why: &str) -> u32 {
    let old = vswitchd_pid().expect("ovs-vswitchd runs (pid file of the stack)");
    announce_kill("ovs-vswitchd", why);
    must(Command::new("kill").args(["-9", &old.to_string()]));
    old
}

/// Waits until the stack's supervisor restarted ovs-vswitchd after [`kill_vswitchd`] (a new pid
/// that answers on its control socket): the new pid.
pub fn wait_vswitchd_restarted(old: u32) -> u32 {
    wait_for(
        "the supervisor to restart ovs-vswitchd",
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(100),
        || vswitchd_pid().filter(|p| *p != old && vswitchd_answers()),
    )
}

/// If ovs-vswitchd is no longer the process `before` (its pid when a check began, from
/// [`vswitchd_pid`]), the supervisor's record of why (the last `ovs-vswitchd` line of
/// `$STATE/crashes`, e.g. `killed by SIGABRT`: OVS 3.1's userspace conntrack aborts under NAT
/// traffic, README "Open vSwitch"), after waiting for the new process to answer. `None` while the
/// same process runs: a failed check then is the product's failure, not the node's.
pub fn vswitchd_replaced_since(before: Option<u32>) -> Option<String> {
    let before = before?;
    if vswitchd_pid() == Some(before) {
        return None;
    }
    wait_vswitchd_restarted(before);
    let crashes = std::fs::read_to_string(state_dir().join("crashes")).unwrap_or_default();
    Some(
        crashes
            .lines()
            .rfind(|l| l.contains(" ovs-vswitchd "))
            .unwrap_or("ovs-vswitchd replaced, no crash recorded")
            .to_string(),
    )
}

/// The host PID of a process of pod `ns/pod` (found by the pod UID in its cgroup path), to run
/// host tools in the pod's network namespace.
pub fn pod_pid(ns: &str, pod: &str) -> u32 {
    let uid = crate::deploy::kjson(kubectl().args(["get", "pod", "-n", ns, pod, "-o", "json"]))
        ["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let forms = [format!("pod{uid}"), format!("pod{}", uid.replace('-', "_"))];
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if forms.iter().any(|f| cg.contains(f.as_str())) && comm.trim() != "pause" {
            return pid;
        }
    }
    panic!("no process of pod {ns}/{pod} (uid {uid}) found in /proc");
}
