//! `kuryr-bench cni-exec`: what one exec of the kuryr-cni shim costs the container runtime.
//!
//! Every sample is fork/exec + write stdin + read stdout + wait, measured here the way a
//! runtime (containerd's libcni) drives a plugin. Cases:
//! * `VERSION` (no socket involved): the pure exec + parse + print cost;
//! * `ADD` with the daemon unreachable (socket path does not exist): exec, parse, connect
//!   failure, CNI error 11 on stdout — the error path;
//! * `ADD` against an in-process stub daemon that answers at once: the full success path
//!   (HTTP over the unix socket, result conversion) minus the daemon's own work;
//! * the same exec of a no-op: `/bin/true` (dynamically linked) and a static no-op built
//!   with `gcc -static` when gcc is there, the floor any plugin pays on this machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::results::Run;
use crate::stats::Metric;

pub struct Opts {
    pub cni_bin: PathBuf,
    pub version_runs: usize,
    pub add_runs: usize,
    pub warmup: usize,
}

struct Exec<'a> {
    bin: &'a Path,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
}

/// One exec; returns (elapsed, exit code, stdout).
fn exec_once(e: &Exec<'_>) -> Result<(Duration, i32, Vec<u8>)> {
    let started = Instant::now();
    let mut child = Command::new(e.bin)
        .env_clear()
        .envs(e.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {}", e.bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A no-op exits without reading: EPIPE is expected there.
        let _ = stdin.write_all(&e.stdin);
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut out).context("read stdout")?;
    }
    let status = child.wait().context("wait")?;
    Ok((started.elapsed(), status.code().unwrap_or(-1), out))
}

/// `runs` execs after `warmup` unmeasured ones; `check` validates each sample's output.
fn measure(
    e: &Exec<'_>,
    warmup: usize,
    runs: usize,
    check: &dyn Fn(i32, &[u8]) -> Result<()>,
) -> Result<(Vec<Duration>, usize, Option<String>)> {
    for _ in 0..warmup {
        exec_once(e)?;
    }
    let mut samples = Vec::with_capacity(runs);
    let (mut errors, mut first_error) = (0, None);
    for _ in 0..runs {
        let (took, code, out) = exec_once(e)?;
        match check(code, &out) {
            Ok(()) => samples.push(took),
            Err(err) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
    Ok((samples, errors, first_error))
}

fn cni_env(command: &str) -> Vec<(String, String)> {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "0123456789abcdef0123456789abcdef"),
        ("CNI_NETNS", "/var/run/netns/kbench-none"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=kbench;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef0123456789abcdef;K8S_POD_UID=00000000-0000-4000-8000-000000000001",
        ),
        ("CNI_PATH", "/opt/cni/bin"),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

fn netconf(socket: &Path, queue: &Path) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "cniVersion": "1.1.0", "name": "kuryr", "type": "kuryr-cni",
        "daemon_socket": socket.display().to_string(),
        "del_queue_dir": queue.display().to_string(),
        "timeout_seconds": 10
    }))
    .expect("json")
}

/// What the stub returns for ADD (the daemon's 1.1.0 internal form).
const STUB_RESULT: &str = r#"{"result":{"interfaces":[{"name":"tap01234567-89","mac":"fa:16:3e:11:22:33","mtu":1442},{"name":"eth0","mac":"fa:16:3e:11:22:33","mtu":1442,"sandbox":"/var/run/netns/kbench-none"}],"ips":[{"interface":1,"address":"10.244.1.5/16","gateway":"10.244.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.0.1"}],"dns":{}}}"#;

/// A daemon stand-in: answers every request at once with [`STUB_RESULT`].
struct Stub {
    stop: Arc<AtomicBool>,
    path: PathBuf,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Stub {
    fn start(path: &Path) -> Result<Stub> {
        let l = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = serve_one(conn);
            }
        });
        Ok(Stub {
            stop,
            path: path.to_owned(),
            handle: Some(handle),
        })
    }
}

fn serve_one(conn: std::os::unix::net::UnixStream) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let mut w = conn;
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{STUB_RESULT}",
        STUB_RESULT.len()
    )?;
    w.flush()
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Builds a static no-op with gcc, if gcc and a static libc are there.
fn static_noop(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("noop.c");
    let bin = dir.join("noop-static");
    std::fs::write(&src, "int main(void) { return 0; }\n").ok()?;
    let ok = Command::new("gcc")
        .args(["-static", "-O2", "-s", "-o"])
        .arg(&bin)
        .arg(&src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(bin)
}

pub fn run(o: &Opts, run: &mut Run) -> Result<()> {
    if !o.cni_bin.is_file() {
        bail!(
            "{} does not exist: build it with hack/build-bins (or pass --cni-bin)",
            o.cni_bin.display()
        );
    }
    let tmp = tempfile::Builder::new().prefix("kbench-cni-").tempdir()?;
    let queue = tmp.path().join("del-queue");
    let dead_sock = tmp.path().join("no-daemon.sock");
    let stub_sock = tmp.path().join("stub.sock");
    let file = Command::new("file")
        .arg("-b")
        .arg(&o.cni_bin)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let size = std::fs::metadata(&o.cni_bin).map(|m| m.len()).unwrap_or(0);
    run.params = json!({
        "cni_bin": o.cni_bin.display().to_string(),
        "cni_bin_bytes": size,
        "cni_bin_file": file,
        "version_runs": o.version_runs,
        "add_runs": o.add_runs,
        "warmup": o.warmup,
    });
    if !file.contains("statically linked") && !file.contains("static-pie") {
        run.note(format!("{} is not static ({file})", o.cni_bin.display()));
    }

    let version = Exec {
        bin: &o.cni_bin,
        env: vec![("CNI_COMMAND".into(), "VERSION".into())],
        stdin: br#"{"cniVersion":"1.1.0"}"#.to_vec(),
    };
    let (s, errs, first) = measure(&version, o.warmup, o.version_runs, &|code, out| {
        if code == 0 && out.starts_with(br#"{"cniVersion":"1.1.0","supportedVersions":"#) {
            Ok(())
        } else {
            bail!(
                "VERSION: exit {code}, stdout {}",
                String::from_utf8_lossy(out)
            )
        }
    })?;
    if let Some(e) = first {
        run.note(e);
    }
    run.metric(
        "cni_version_exec",
        Metric::from_durations(&s, "kuryr-cni VERSION: exec to exit")
            .with_errors(errs)
            .with_target(&[("p50", 3.0)]),
    );

    let add_dead = Exec {
        bin: &o.cni_bin,
        env: cni_env("ADD"),
        stdin: netconf(&dead_sock, &queue),
    };
    let (s, errs, first) = measure(&add_dead, o.warmup, o.add_runs, &|code, out| {
        let v: serde_json::Value = serde_json::from_slice(out).unwrap_or_default();
        if code == 1 && v["code"] == 11 {
            Ok(())
        } else {
            bail!(
                "ADD (no daemon): exit {code}, stdout {}",
                String::from_utf8_lossy(out)
            )
        }
    })?;
    if let Some(e) = first {
        run.note(e);
    }
    run.metric(
        "cni_add_unreachable_exec",
        Metric::from_durations(
            &s,
            "kuryr-cni ADD, daemon socket missing: exec to CNI error 11",
        )
        .with_errors(errs)
        .with_target(&[("p50", 3.0)]),
    );

    {
        let _stub = Stub::start(&stub_sock)?;
        let add_stub = Exec {
            bin: &o.cni_bin,
            env: cni_env("ADD"),
            stdin: netconf(&stub_sock, &queue),
        };
        let (s, errs, first) = measure(&add_stub, o.warmup, o.add_runs, &|code, out| {
            if code == 0 && out.starts_with(br#"{"cniVersion":"1.1.0","interfaces":"#) {
                Ok(())
            } else {
                bail!(
                    "ADD (stub): exit {code}, stdout {}",
                    String::from_utf8_lossy(out)
                )
            }
        })?;
        if let Some(e) = first {
            run.note(e);
        }
        run.metric(
            "cni_add_stub_exec",
            Metric::from_durations(
                &s,
                "kuryr-cni ADD against an instant in-process stub daemon: exec, HTTP on the unix socket, result",
            )
            .with_errors(errs),
        );
    }

    let any_ok = |_: i32, _: &[u8]| Ok(());
    let t = Exec {
        bin: Path::new("/bin/true"),
        env: vec![],
        stdin: br#"{"cniVersion":"1.1.0"}"#.to_vec(),
    };
    let (s, _, _) = measure(&t, o.warmup, o.version_runs, &any_ok)?;
    run.metric(
        "noop_true_exec",
        Metric::from_durations(
            &s,
            "/bin/true (dynamically linked), same exec path: the floor for a dynamic binary",
        ),
    );
    match static_noop(tmp.path()) {
        Some(bin) => {
            let e = Exec {
                bin: &bin,
                env: vec![],
                stdin: br#"{"cniVersion":"1.1.0"}"#.to_vec(),
            };
            let (s, _, _) = measure(&e, o.warmup, o.version_runs, &any_ok)?;
            run.metric(
                "noop_static_exec",
                Metric::from_durations(&s, "static no-op (gcc -static, main returns 0), same exec path: the floor for a static binary"),
            );
        }
        None => run.note("gcc -static unavailable: no static no-op comparison"),
    }
    Ok(())
}
