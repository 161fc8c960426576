//! Drains the DEL queue kuryr-cni wrote while the daemon was unreachable (see
//! `kuryr_cni_api` "DEL queue"): at start-up, before serving, every queued DEL is executed
//! and its file removed once the DEL succeeded.

use std::fs;
use std::path::Path;

use kuryr_cni_api::{is_queue_file_name, DelQueueEntry};

use crate::api::routes::{parse_cni, Command};
use crate::cni::Cni;

/// What a drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub executed: usize,
    /// Older than the attachment now recorded under the same key (container id reuse).
    pub skipped_stale: usize,
    /// Unreadable or not a DEL: removed.
    pub discarded: usize,
    /// DEL failed: file kept for the next start.
    pub failed: usize,
}

/// Executes every queued DEL in `dir` (absent directory = nothing queued).
pub async fn drain(dir: &Path, cni: &Cni) -> DrainReport {
    let mut report = DrainReport::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return report;
    };
    let mut files: Vec<_> = entries.flatten().collect();
    files.sort_by_key(|e| e.file_name());
    for e in files {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if !is_queue_file_name(&name) {
            if name.starts_with('.') && name.contains(".tmp.") {
                // A write the shim did not finish: it never reported success for it.
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        let entry = match fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| DelQueueEntry::from_json(&b).map_err(|e| e.to_string()))
        {
            Ok(entry) => entry,
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "discarding unreadable DEL queue entry");
                let _ = fs::remove_file(&path);
                report.discarded += 1;
                continue;
            }
        };
        let body = match serde_json::to_vec(&entry.request) {
            Ok(b) => b,
            Err(_) => {
                report.discarded += 1;
                let _ = fs::remove_file(&path);
                continue;
            }
        };
        let req = match parse_cni(&body) {
            Ok(Command::Del(r)) => r,
            other => {
                tracing::warn!(file = %path.display(), parsed = ?other.map(|c| c.verb()), "discarding DEL queue entry that is not a valid DEL");
                let _ = fs::remove_file(&path);
                report.discarded += 1;
                continue;
            }
        };
        // Container ids can be reused: a DEL queued before the current attachment of the same
        // key was made is about an older incarnation.
        if let Ok(Some(att)) = cni.store.load(&req.container_id, &req.ifname) {
            if att.created_unix_ms > entry.queued_at_unix_ms {
                tracing::info!(file = %path.display(), "skipping a queued DEL older than the current attachment");
                let _ = fs::remove_file(&path);
                report.skipped_stale += 1;
                continue;
            }
        }
        match cni.execute(Command::Del(req)).await {
            Ok(_) => {
                tracing::info!(file = %path.display(), reason = %entry.reason, "executed queued DEL");
                let _ = fs::remove_file(&path);
                report.executed += 1;
            }
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "queued DEL failed; keeping it for the next start");
                report.failed += 1;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::tests::attachment;
    use crate::attachments::AttachmentStore;
    use crate::binding::HostEnv;
    use crate::cni::Settings;
    use crate::events::Recorder;
    use crate::health::{FailureWindow, Health};
    use crate::locks::KeyedLocks;
    use crate::metrics::Metrics;
    use crate::watch::Cluster;
    use kuryr_cni_api::{CniRequest, DelQueueEntry};
    use std::sync::Arc;
    use std::time::Duration;

    fn cni(dir: &Path) -> Cni {
        let (cluster, _w) = Cluster::new();
        let health = Arc::new(Health::new(
            cluster.clone(),
            None,
            FailureWindow::new(Duration::from_secs(300), 3, 0.5),
        ));
        let ovs = Arc::new(kuryr_ovsdb::Ovs::lazy(
            "unix:/nonexistent/db.sock",
            Duration::from_secs(1),
        ));
        Cni {
            settings: Settings {
                vif_timeout: Duration::from_secs(1),
                chain: None,
            },
            cluster,
            env: HostEnv::new(
                kuryr_netplumb::Netns::current().expect("own netns"),
                ovs,
                None,
                0,
            ),
            store: AttachmentStore::open(dir.join("attachments")).expect("store"),
            locks: KeyedLocks::new(),
            events: Recorder::new(None, "n1"),
            metrics: Metrics::new(),
            health,
            pool: Arc::new(crate::pool::Pool::disabled(Metrics::new())),
        }
    }

    fn entry(cid: &str, queued_at: u64) -> DelQueueEntry {
        let req: CniRequest = serde_json::from_value(serde_json::json!({"command": "DEL", "container_id": cid,
            "ifname": "eth0", "config": {"cniVersion": "1.1.0", "name": "kuryr", "type": "kuryr-cni"}}))
        .expect("request");
        DelQueueEntry::new(req, queued_at, "connect refused")
    }

    #[tokio::test]
    async fn queued_dels_run_once_and_stale_ones_are_skipped() {
        let dir = tempfile::tempdir().expect("tmp");
        let q = dir.path().join("q");
        fs::create_dir_all(&q).expect("dir");
        let cni = cni(dir.path());
        // The container id was reused: the attachment recorded now is newer than the DEL.
        let current = attachment("reused", "eth0", 2_000);
        cni.store.save(&current).expect("save");
        for e in [entry("reused", 1_000), entry("gone", 3_000)] {
            fs::write(q.join(e.file_name()), e.to_json().expect("json")).expect("write");
        }
        let r = drain(&q, &cni).await;
        assert_eq!(
            r,
            DrainReport {
                executed: 1,
                skipped_stale: 1,
                discarded: 0,
                failed: 0
            }
        );
        assert_eq!(
            cni.store.load("reused", "eth0").expect("load"),
            Some(current),
            "a stale DEL unplugged the new attachment"
        );
        assert_eq!(fs::read_dir(&q).expect("dir").count(), 0);
        // Nothing left: a second drain does nothing.
        assert_eq!(drain(&q, &cni).await, DrainReport::default());
        assert_eq!(
            drain(&dir.path().join("missing"), &cni).await,
            DrainReport::default()
        );
    }
}
