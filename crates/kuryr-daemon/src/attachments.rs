//! Crash-safe local records of what ADD wired, one JSON file per attachment
//! `(container_id, ifname)` under the attachments directory (default
//! `/var/lib/kuryr/attachments`). DEL, CHECK and GC work from these records alone, so they
//! never need the API server, the controller or OpenStack.
//!
//! Writes go to `.<name>.tmp.<pid>.<n>`, are fsynced, renamed over the final name, and the
//! directory is fsynced: a crash leaves either the old or the new record, plus at worst a
//! temporary file that readers ignore (and [`AttachmentStore::open`] removes).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use kuryr_core::vif::Vif;
use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// Current [`Attachment::format`].
pub const FORMAT: u32 = 1;

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Progress of the ADD that made the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachState {
    /// Written before the first kernel/OVS change: DEL must clean up whatever exists.
    Plugging,
    /// Devices created and configured.
    Plugged,
}

/// One pod interface of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedIface {
    /// Name inside the pod netns (`CNI_IFNAME` for the default VIF, the status key otherwise).
    pub ifname: String,
    pub default: bool,
    /// Neutron port id.
    pub port_id: String,
    /// Host-side device (`tap…` for ovs/hybrid); empty for nested bindings.
    pub host_ifname: String,
    /// `ovs`, `hybrid`, `nested-vlan`, `nested-macvlan`.
    pub binding: String,
    /// The VIF as it was wired.
    pub vif: Vif,
    /// Parent NIC of nested bindings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// MTU actually configured.
    pub mtu: u32,
    /// TX checksum offload was turned off on the pod end.
    #[serde(default)]
    pub tx_checksum_off: bool,
}

/// Everything needed to undo, check or report one CNI attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub format: u32,
    pub container_id: String,
    /// `CNI_IFNAME` of the ADD.
    pub ifname: String,
    /// `CNI_NETNS` of the ADD.
    pub netns: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    /// When the ADD started (ms since the epoch); orders attachments of the same pod.
    pub created_unix_ms: u64,
    pub state: AttachState,
    pub interfaces: Vec<AttachedIface>,
}

impl Attachment {
    pub fn pod(&self) -> String {
        format!("{}/{}", self.pod_namespace, self.pod_name)
    }
    /// The pod, for Events.
    pub fn pod_ref(&self) -> crate::api::routes::PodRef {
        crate::api::routes::PodRef {
            namespace: self.pod_namespace.clone(),
            name: self.pod_name.clone(),
            uid: (!self.pod_uid.is_empty()).then(|| self.pod_uid.clone()),
        }
    }
    /// `container_id/ifname`, for messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container_id, self.ifname)
    }
}

/// The directory of attachment records.
#[derive(Debug, Clone)]
pub struct AttachmentStore {
    dir: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn state_err(op: &'static str, path: &Path, e: io::Error) -> DaemonError {
    DaemonError::State {
        op,
        path: path.display().to_string(),
        source: e,
    }
}

impl AttachmentStore {
    /// Creates the directory (0700) if needed and removes temporaries left by a crash.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, DaemonError> {
        let dir = dir.into();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| state_err("create attachments directory", &dir, e))?;
        let store = AttachmentStore { dir };
        if let Ok(entries) = fs::read_dir(&store.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp.") {
                    tracing::info!(file = %name, "removing temporary file of an interrupted write");
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// File of the record `(container_id, ifname)` (same escaping as the DEL queue).
    pub fn path_of(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join(kuryr_cni_api::queue_file_name(container_id, ifname))
    }

    /// Writes (or replaces) a record atomically.
    pub fn save(&self, a: &Attachment) -> Result<(), DaemonError> {
        let final_path = self.path_of(&a.container_id, &a.ifname);
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.dir.join(format!(
            ".{name}.tmp.{}.{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let json = serde_json::to_vec_pretty(a)
            .map_err(|e| DaemonError::Internal(format!("serialize attachment: {e}")))?;
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &final_path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            state_err("write attachment record", &final_path, e)
        })
    }

    /// The record of `(container_id, ifname)`, if any.
    pub fn load(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Attachment>, DaemonError> {
        let path = self.path_of(container_id, ifname);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Attachment>(&bytes) {
                Ok(a) if a.container_id == container_id && a.ifname == ifname => Ok(Some(a)),
                Ok(a) => {
                    tracing::warn!(file = %path.display(), found = %a.key(), "record belongs to another attachment (name hash clash), ignoring");
                    Ok(None)
                }
                Err(e) => Err(state_err(
                    "parse attachment record",
                    &path,
                    io::Error::new(io::ErrorKind::InvalidData, e),
                )),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(state_err("read attachment record", &path, e)),
        }
    }

    /// Removes a record; `Ok(false)` if there was none.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<bool, DaemonError> {
        let path = self.path_of(container_id, ifname);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Ok(d) = File::open(&self.dir) {
                    let _ = d.sync_all();
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(state_err("remove attachment record", &path, e)),
        }
    }

    /// Number of records (file names only: nothing is read or parsed).
    pub fn count(&self) -> Result<usize, DaemonError> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| state_err("count attachments", &self.dir, e))?;
        Ok(entries
            .flatten()
            .filter(|e| kuryr_cni_api::is_queue_file_name(&e.file_name().to_string_lossy()))
            .count())
    }

    /// All readable records. Temporaries are skipped; unreadable records are logged and
    /// skipped (they are left in place for an operator to look at).
    pub fn list(&self) -> Result<Vec<Attachment>, DaemonError> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| state_err("list attachments", &self.dir, e))?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !kuryr_cni_api::is_queue_file_name(&name) {
                continue;
            }
            match fs::read(e.path())
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Attachment>(&b).map_err(|e| e.to_string()))
            {
                Ok(a) => out.push(a),
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "skipping unreadable attachment record")
                }
            }
        }
        out.sort_by(|a, b| {
            a.created_unix_ms
                .cmp(&b.created_unix_ms)
                .then_with(|| a.key().cmp(&b.key()))
        });
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kuryr_core::vif::{Binding, VifIp};

    pub(crate) fn vif(port: &str) -> Vif {
        Vif {
            port_id: port.into(),
            network_id: "net".into(),
            mac: "fa:16:3e:00:00:01".into(),
            mtu: 1442,
            ips: vec![VifIp {
                address: "10.244.0.5".parse().expect("ip"),
                subnet_cidr: "10.244.0.0/16".into(),
                subnet_id: None,
                gateway: Some("10.244.0.1".parse().expect("ip")),
                routes: vec![],
                dns: vec![],
            }],
            binding: Binding::Ovs {
                bridge: "br-int".into(),
            },
            host_ifname: kuryr_core::vif::host_ifname(port),
            active: true,
            port_filter: true,
        }
    }

    pub(crate) fn attachment(cid: &str, ifname: &str, created: u64) -> Attachment {
        let v = vif("6d3b7c52-1a2b-4c5d");
        Attachment {
            format: FORMAT,
            container_id: cid.into(),
            ifname: ifname.into(),
            netns: "/run/netns/x".into(),
            pod_namespace: "ns".into(),
            pod_name: "pod".into(),
            pod_uid: "uid".into(),
            created_unix_ms: created,
            state: AttachState::Plugged,
            interfaces: vec![AttachedIface {
                ifname: ifname.into(),
                default: true,
                port_id: v.port_id.clone(),
                host_ifname: v.host_ifname.clone(),
                binding: "ovs".into(),
                mtu: v.mtu,
                vif: v,
                parent: None,
                tx_checksum_off: false,
            }],
        }
    }

    #[test]
    fn round_trip_list_and_remove() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = AttachmentStore::open(dir.path().join("attachments")).expect("open");
        let a = attachment("c1", "eth0", 2);
        let b = attachment("c2", "eth0", 1);
        store.save(&a).expect("save a");
        store.save(&b).expect("save b");
        assert_eq!(store.load("c1", "eth0").expect("load"), Some(a.clone()));
        assert_eq!(store.load("c1", "eth1").expect("load"), None);
        // Sorted by creation time.
        assert_eq!(store.list().expect("list"), vec![b.clone(), a.clone()]);
        assert_eq!(store.count().expect("count"), 2);
        // Replace.
        let mut a2 = a.clone();
        a2.state = AttachState::Plugging;
        store.save(&a2).expect("save again");
        assert_eq!(store.load("c1", "eth0").expect("load"), Some(a2));
        assert!(store.remove("c1", "eth0").expect("remove"));
        assert!(!store.remove("c1", "eth0").expect("remove twice"));
        assert_eq!(store.list().expect("list"), vec![b]);
        // No temporaries left behind by successful writes.
        let names: Vec<String> = fs::read_dir(store.dir())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn crash_leftovers_are_ignored_and_cleaned() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("attachments");
        let store = AttachmentStore::open(&path).expect("open");
        let a = attachment("c1", "eth0", 1);
        store.save(&a).expect("save");
        // A crash between write and rename leaves a half-written temporary next to the record.
        let tmp = path.join(".c1@eth0.json.tmp.999.0");
        fs::write(&tmp, b"{\"format\":1,\"contai").expect("write tmp");
        // ...and a record truncated by something other than us.
        fs::write(path.join("junk@eth0.json"), b"{").expect("write junk");
        assert_eq!(store.list().expect("list"), vec![a.clone()]);
        // Temporaries are not records (the corrupt one is: an operator must look at it).
        assert_eq!(store.count().expect("count"), 2);
        assert_eq!(store.load("c1", "eth0").expect("load"), Some(a));
        assert!(
            store.load("junk", "eth0").is_err(),
            "a corrupt record must be an error, not 'absent'"
        );
        // Re-opening (daemon restart) removes the temporary, keeps the records.
        let store = AttachmentStore::open(&path).expect("reopen");
        assert!(!tmp.exists(), "temporary survived the restart");
        assert_eq!(store.list().expect("list").len(), 1);
    }

    #[test]
    fn odd_names_are_escaped_into_one_file_each() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = AttachmentStore::open(dir.path()).expect("open");
        let a = attachment("c1", "net/1", 1);
        store.save(&a).expect("save");
        assert!(store.path_of("c1", "net/1").starts_with(dir.path()));
        assert_eq!(store.load("c1", "net/1").expect("load"), Some(a));
    }
}
