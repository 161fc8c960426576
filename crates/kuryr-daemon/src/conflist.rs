//! The CNI network configuration list (`10-kuryr.conflist`) and the installation of the
//! `kuryr-cni` binary. Both are written atomically (temporary file, fsync, rename): the
//! runtime never reads half a file or executes half a binary.
//!
//! The conflist is written only once the daemon is ready and removed on a clean shutdown, so
//! kubelet reports the node's network as not ready while the daemon is down (and with
//! `cniVersion` 1.1.0 the runtime also asks STATUS).
//!
//! The conflist's `cniVersion` is a flag (`--cni-version`, default 1.0.0): the shim answers in
//! the version the conflist names, and runtimes whose libcni predates 1.2 (containerd 1.6/1.7,
//! older CRI-O) reject a 1.1.0 result with `unsupported CNI result version "1.1.0"`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Default file name: sorts before most other CNI configs.
pub const CONFLIST_NAME: &str = "10-kuryr.conflist";

/// What goes into the conflist.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflistSpec {
    /// The socket the daemon really listens on.
    pub daemon_socket: String,
    pub del_queue_dir: String,
    /// The shim's deadline for ADD/DEL/CHECK/GC.
    pub timeout_seconds: f64,
    /// Chained plugins after kuryr-cni, e.g. `portmap`, `bandwidth`, `tuning`.
    pub chain: Vec<String>,
    /// The conflist's `cniVersion` (what the runtime's libcni understands).
    pub cni_version: String,
}

/// Default `cniVersion` of the conflist: the newest version every supported runtime parses.
pub const DEFAULT_CNI_VERSION: &str = "1.0.0";

/// A chained plugin entry: well-known plugins get their runtime capabilities.
fn chained_plugin(name: &str) -> Value {
    match name {
        "portmap" => json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        "bandwidth" => json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        "tuning" => json!({"type": "tuning"}),
        other => json!({"type": other}),
    }
}

/// The conflist document.
pub fn build(spec: &ConflistSpec) -> Value {
    let mut plugins = vec![json!({
        "type": "kuryr-cni",
        "daemon_socket": spec.daemon_socket,
        "del_queue_dir": spec.del_queue_dir,
        "timeout_seconds": spec.timeout_seconds,
    })];
    plugins.extend(
        spec.chain
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| chained_plugin(c)),
    );
    json!({"cniVersion": spec.cni_version, "name": "kuryr", "plugins": plugins})
}

/// Writes `bytes` to `path` atomically with `mode`. The temporary file starts with `.` so
/// the runtime (which only reads `*.conf`, `*.conflist`, `*.json`) ignores it.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Writes the conflist into `dir`; returns its path.
pub fn write(dir: &Path, name: &str, spec: &ConflistSpec) -> io::Result<PathBuf> {
    let path = dir.join(name);
    let mut text = serde_json::to_string_pretty(&build(spec)).map_err(io::Error::other)?;
    text.push('\n');
    write_atomic(&path, text.as_bytes(), 0o644)?;
    Ok(path)
}

/// Removes the conflist (absent is fine).
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Copies the `kuryr-cni` binary to `<bin_dir>/kuryr-cni` atomically (mode 0755).
pub fn install_cni_binary(from: &Path, bin_dir: &Path) -> io::Result<PathBuf> {
    let bytes = fs::read(from)?;
    let dest = bin_dir.join("kuryr-cni");
    write_atomic(&dest, &bytes, 0o755)?;
    Ok(dest)
}

/// How the reference plugins shipped with kuryr-rs (`--install-cni-plugins-from`) meet copies the
/// host already has in the CNI bin dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PluginInstall {
    /// Install unless the host's copy reports the same or a newer version (a copy whose
    /// version cannot be read, e.g. `version unknown` or a binary that does not run here, is
    /// replaced).
    UnlessNewer,
    /// Install only where the host has no plugin of that name.
    IfMissing,
    /// Always install (replace whatever the host has).
    Always,
}

/// A plugin's version as it reports it (`CNI portmap plugin v1.9.0`).
pub type PluginVersion = (u64, u64, u64);

/// Parses the `vX.Y.Z` a reference plugin prints when run without `CNI_COMMAND`.
pub fn parse_plugin_version(about: &str) -> Option<PluginVersion> {
    about.lines().find_map(|l| {
        let rest = &l[l.find(" plugin v")? + " plugin v".len()..];
        let v: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut it = v.split('.').map(|n| n.parse::<u64>().ok());
        Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
    })
}

/// Runs `path` without `CNI_COMMAND` (the reference plugins print their name and version and
/// exit) in an empty environment, for at most two seconds; `None` if it does not say.
pub fn plugin_version(path: &Path) -> Option<PluginVersion> {
    use std::process::{Command, Stdio};
    let spawn = || {
        Command::new(path)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    // ETXTBSY: another thread's fork may briefly hold a just-written file open.
    let mut child = spawn()
        .or_else(|e| match e.raw_os_error() {
            Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                spawn()
            }
            _ => Err(e),
        })
        .ok()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_plugin_version(&text)
}

/// What happened to one shipped plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOutcome {
    /// The host had none: installed.
    Installed,
    /// The host's copy (its version, if it said) was replaced.
    Replaced { host: Option<PluginVersion> },
    /// The host's copy is byte-for-byte the shipped one.
    Current,
    /// The host's copy was left alone (policy `if-missing`, or it is the same or newer).
    KeptHost { host: Option<PluginVersion> },
}

/// The decision for one plugin (pure, for tests).
pub fn plugin_decision(
    policy: PluginInstall,
    shipped: Option<PluginVersion>,
    host: Option<Option<PluginVersion>>,
) -> PluginOutcome {
    match (policy, host) {
        (_, None) => PluginOutcome::Installed,
        (PluginInstall::Always, Some(host)) => PluginOutcome::Replaced { host },
        (PluginInstall::IfMissing, Some(host)) => PluginOutcome::KeptHost { host },
        (PluginInstall::UnlessNewer, Some(host)) => match (host, shipped) {
            (Some(h), Some(s)) if h >= s => PluginOutcome::KeptHost { host },
            _ => PluginOutcome::Replaced { host },
        },
    }
}

/// Installs every executable in `from` (the plugins shipped in the daemon image) into
/// `bin_dir` the way `kuryr-cni` is installed (temporary file + rename, mode 0755), subject to
/// `policy`. Returns each plugin's name and outcome, sorted by name.
pub fn install_plugins(
    from: &Path,
    bin_dir: &Path,
    policy: PluginInstall,
) -> io::Result<Vec<(String, PluginOutcome)>> {
    let mut names: Vec<String> = fs::read_dir(from)?
        .flatten()
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut done = Vec::with_capacity(names.len());
    for name in names {
        let src = from.join(&name);
        let dest = bin_dir.join(&name);
        let bytes = fs::read(&src)?;
        let host = match fs::read(&dest) {
            Ok(have) if have == bytes => {
                done.push((name, PluginOutcome::Current));
                continue;
            }
            Ok(_) => Some(plugin_version(&dest)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let shipped = match (policy, &host) {
            (PluginInstall::UnlessNewer, Some(_)) => plugin_version(&src),
            _ => None,
        };
        let outcome = plugin_decision(policy, shipped, host);
        if !matches!(outcome, PluginOutcome::KeptHost { .. }) {
            write_atomic(&dest, &bytes, 0o755)?;
        }
        done.push((name, outcome));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(chain: &[&str]) -> ConflistSpec {
        ConflistSpec {
            daemon_socket: "/run/kuryr/kuryr-daemon.sock".into(),
            del_queue_dir: "/var/lib/kuryr/del-queue".into(),
            timeout_seconds: 120.0,
            chain: chain.iter().map(|s| s.to_string()).collect(),
            cni_version: "1.1.0".into(),
        }
    }

    #[test]
    fn content_points_the_shim_at_the_socket() {
        let v = build(&spec(&[]));
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["name"], "kuryr");
        let p = v["plugins"].as_array().expect("plugins");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0]["type"], "kuryr-cni");
        assert_eq!(p[0]["daemon_socket"], "/run/kuryr/kuryr-daemon.sock");
        assert_eq!(p[0]["del_queue_dir"], "/var/lib/kuryr/del-queue");
        assert_eq!(p[0]["timeout_seconds"], 120.0);
        // What the shim will parse out of it.
        let conf = kuryr_cni_api::NetConf::from_value(&json!({"cniVersion": "1.1.0", "name": "kuryr",
            "type": "kuryr-cni", "daemon_socket": p[0]["daemon_socket"], "del_queue_dir": p[0]["del_queue_dir"],
            "timeout_seconds": p[0]["timeout_seconds"]}))
        .expect("shim accepts the plugin config");
        assert_eq!(conf.daemon_socket, "/run/kuryr/kuryr-daemon.sock");
    }

    #[test]
    fn chained_plugins_get_capabilities() {
        let v = build(&spec(&["portmap", "bandwidth", "tuning"]));
        let p = v["plugins"].as_array().expect("plugins");
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[1],
            json!({"type": "portmap", "capabilities": {"portMappings": true}})
        );
        assert_eq!(p[2]["capabilities"]["bandwidth"], true);
        assert_eq!(p[3], json!({"type": "tuning"}));
    }

    #[test]
    fn written_atomically_and_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write(dir.path(), CONFLIST_NAME, &spec(&["portmap"])).expect("write");
        let read: Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
        assert_eq!(read, build(&spec(&["portmap"])));
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [CONFLIST_NAME]);
        remove(&path).expect("remove");
        remove(&path).expect("remove twice");
        assert!(!path.exists());
    }

    #[test]
    fn plugin_versions_are_read_from_what_they_print() {
        let about = "CNI portmap plugin v1.9.0\nCNI protocol versions supported: 0.1.0, 1.0.0\n";
        assert_eq!(parse_plugin_version(about), Some((1, 9, 0)));
        assert_eq!(
            parse_plugin_version("CNI bandwidth plugin v1.10.2-rc1"),
            Some((1, 10, 2))
        );
        assert_eq!(
            parse_plugin_version("CNI portmap plugin v2.1"),
            Some((2, 1, 0))
        );
        assert_eq!(
            parse_plugin_version("CNI portmap plugin version unknown"),
            None
        );
        assert_eq!(parse_plugin_version(""), None);
    }

    #[test]
    fn plugin_decisions_leave_newer_host_copies_alone() {
        use PluginInstall::*;
        use PluginOutcome::*;
        let ours = Some((1, 9, 0));
        assert_eq!(plugin_decision(UnlessNewer, ours, None), Installed);
        assert_eq!(
            plugin_decision(UnlessNewer, ours, Some(Some((1, 1, 1)))),
            Replaced {
                host: Some((1, 1, 1))
            }
        );
        assert_eq!(
            plugin_decision(UnlessNewer, ours, Some(Some((1, 10, 0)))),
            KeptHost {
                host: Some((1, 10, 0))
            }
        );
        assert_eq!(
            plugin_decision(UnlessNewer, ours, Some(Some((1, 9, 0)))),
            KeptHost {
                host: Some((1, 9, 0))
            }
        );
        assert_eq!(
            plugin_decision(UnlessNewer, ours, Some(None)),
            Replaced { host: None }
        );
        assert_eq!(
            plugin_decision(IfMissing, ours, Some(Some((0, 1, 0)))),
            KeptHost {
                host: Some((0, 1, 0))
            }
        );
        assert_eq!(plugin_decision(IfMissing, ours, None), Installed);
        assert_eq!(
            plugin_decision(Always, ours, Some(Some((9, 0, 0)))),
            Replaced {
                host: Some((9, 0, 0))
            }
        );
    }

    fn fake_plugin(path: &Path, version: &str) {
        fs::write(
            path,
            format!("#!/bin/sh\necho \"CNI $(basename $0) plugin {version}\" >&2\n"),
        )
        .expect("write");
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn shipped_plugins_installed_next_to_kuryr_cni() {
        let dir = tempfile::tempdir().expect("tmp");
        let from = dir.path().join("shipped");
        let bin = dir.path().join("bin");
        fs::create_dir_all(&from).expect("mkdir");
        fs::create_dir_all(&bin).expect("mkdir");
        fake_plugin(&from.join("portmap"), "v1.9.0");
        fake_plugin(&from.join("bandwidth"), "v1.9.0");
        fs::write(from.join("README"), b"not a plugin").expect("write");
        // The host has an older bandwidth and nothing else.
        fake_plugin(&bin.join("bandwidth"), "v1.1.1");
        assert_eq!(plugin_version(&bin.join("bandwidth")), Some((1, 1, 1)));

        let got = install_plugins(&from, &bin, PluginInstall::UnlessNewer).expect("install");
        assert_eq!(
            got,
            [
                (
                    "bandwidth".to_string(),
                    PluginOutcome::Replaced {
                        host: Some((1, 1, 1))
                    }
                ),
                ("portmap".to_string(), PluginOutcome::Installed),
            ]
        );
        for p in ["portmap", "bandwidth"] {
            assert_eq!(
                fs::read(bin.join(p)).expect("read"),
                fs::read(from.join(p)).expect("read")
            );
            assert_eq!(
                fs::metadata(bin.join(p))
                    .expect("meta")
                    .permissions()
                    .mode()
                    & 0o777,
                0o755
            );
        }
        assert!(!bin.join("README").exists());
        // Again: nothing to do.
        let again = install_plugins(&from, &bin, PluginInstall::UnlessNewer).expect("again");
        assert!(
            again.iter().all(|(_, o)| *o == PluginOutcome::Current),
            "{again:?}"
        );

        // A newer host copy stays, unless the operator says otherwise.
        fake_plugin(&bin.join("portmap"), "v2.0.0");
        let kept = install_plugins(&from, &bin, PluginInstall::UnlessNewer).expect("kept");
        assert_eq!(
            kept[1],
            (
                "portmap".to_string(),
                PluginOutcome::KeptHost {
                    host: Some((2, 0, 0))
                }
            )
        );
        assert!(
            String::from_utf8_lossy(&fs::read(bin.join("portmap")).expect("read"))
                .contains("v2.0.0")
        );
        install_plugins(&from, &bin, PluginInstall::Always).expect("always");
        assert_eq!(
            fs::read(bin.join("portmap")).expect("read"),
            fs::read(from.join("portmap")).expect("read")
        );
        let names: Vec<String> = fs::read_dir(&bin)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn binary_is_installed_executable() {
        let dir = tempfile::tempdir().expect("tmp");
        let src = dir.path().join("src-bin");
        fs::write(&src, b"#!/bin/sh\nexit 0\n").expect("write");
        let bin = dir.path().join("bin");
        let dest = install_cni_binary(&src, &bin).expect("install");
        assert_eq!(dest, bin.join("kuryr-cni"));
        assert_eq!(fs::read(&dest).expect("read"), b"#!/bin/sh\nexit 0\n");
        assert_eq!(
            fs::metadata(&dest).expect("meta").permissions().mode() & 0o777,
            0o755
        );
    }
}
