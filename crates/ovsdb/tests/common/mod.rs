//! Test fixture: a private ovsdb-server (real binary) in a temp dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `ovs-vsctl` against one fixture database (clonable into blocking tasks).
#[derive(Clone, Debug)]
pub struct Vsctl {
    db: String,
    dir: PathBuf,
}

impl Vsctl {
    /// Run `ovs-vsctl --db=... --no-wait ARGS`, panicking on failure; returns trimmed stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        match out {
            Ok(s) => s,
            Err(e) => panic!("ovs-vsctl {args:?} failed: {e}"),
        }
    }

    /// Like `run` but returns stderr on failure.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ovs-vsctl")
            .arg(format!("--db={}", self.db))
            .arg("--no-wait")
            .arg("--timeout=10")
            .args(args)
            .envs(private_env(&self.dir))
            .output()
            .map_err(|e| format!("cannot run ovs-vsctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// Keep every OVS tool away from the system's run/db/log dirs.
fn private_env(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"]
        .into_iter()
        .map(|k| (k, dir.to_path_buf()))
        .collect()
}

fn require_tools() {
    for tool in ["ovsdb-server", "ovsdb-tool", "ovs-vsctl"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "{tool} not found in PATH: these tests need a real ovsdb-server \
             (Debian: apt-get install --no-install-recommends openvswitch-switch)"
        );
    }
}

pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
pub const BRIDGE: &str = "br-test";

/// A private ovsdb-server; killed on drop.
pub struct OvsdbServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub tcp_port: u16,
    pub vsctl: Vsctl,
}

impl OvsdbServer {
    /// Create conf.db, start the server, add the Open_vSwitch row and a netdev bridge.
    pub fn start() -> OvsdbServer {
        require_tools();
        let dir = tempfile::Builder::new()
            .prefix("ovsdb-t")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let db = dir.path().join("conf.db");
        let st = Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(SCHEMA)
            .envs(private_env(dir.path()))
            .status()
            .expect("run ovsdb-tool");
        assert!(st.success(), "ovsdb-tool create failed");
        let vsctl = Vsctl {
            db: format!("unix:{}", dir.path().join("db.sock").display()),
            dir: dir.path().to_path_buf(),
        };
        let mut s = OvsdbServer {
            dir,
            child: None,
            tcp_port: 0,
            vsctl,
        };
        s.spawn();
        s.vsctl.run(&["init"]);
        s.vsctl.run(&[
            "add-br",
            BRIDGE,
            "--",
            "set",
            "bridge",
            BRIDGE,
            "datapath_type=netdev",
        ]);
        s
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = d.join("log");
        let _ = std::fs::remove_file(&log);
        let child = Command::new("ovsdb-server")
            .arg(d.join("conf.db"))
            .arg(format!("--remote=punix:{}", d.join("db.sock").display()))
            .arg("--remote=ptcp:0:127.0.0.1")
            .arg(format!("--unixctl={}", d.join("ctl").display()))
            .arg(format!("--pidfile={}", d.join("pid").display()))
            .arg("--no-chdir")
            .arg(format!("--log-file={}", log.display()))
            .envs(private_env(d))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ovsdb-server");
        self.child = Some(child);
        // Ready when the unix socket accepts and the log shows the tcp port.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let sock_ok = std::os::unix::net::UnixStream::connect(self.socket()).is_ok();
            let port = std::fs::read_to_string(&log).ok().and_then(|l| {
                l.lines().find_map(|line| {
                    line.split("listening on port ")
                        .nth(1)
                        .and_then(|p| p.trim().parse::<u16>().ok())
                })
            });
            if let (true, Some(p)) = (sock_ok, port) {
                self.tcp_port = p;
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "ovsdb-server exited early: {st}; log: {:?}",
                    std::fs::read_to_string(&log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "ovsdb-server did not become ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill and start again on the same database and socket.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    /// `unix:<dir>/db.sock`
    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// `tcp:127.0.0.1:<port>`
    pub fn tcp_endpoint(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.tcp_port)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().map(Child::id).expect("server running");
        let st = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Freeze the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resume after `freeze`.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for OvsdbServer {
    fn drop(&mut self) {
        self.kill();
    }
}
