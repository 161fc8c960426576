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
