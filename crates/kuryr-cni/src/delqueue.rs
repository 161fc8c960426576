//! Writing DEL queue entries (see `kuryr_cni_api` crate docs, "DEL queue").

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kuryr_cni_api::DelQueueEntry;

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Writes `entry` to `dir/<entry.file_name()>` atomically: the JSON goes to
/// `dir/.<name>.tmp.<pid>`, is fsynced, renamed over the final name, then the directory
/// is fsynced. Creates `dir` (mode 0700) if needed. Returns the final path.
pub fn enqueue(dir: &Path, entry: &DelQueueEntry) -> io::Result<PathBuf> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let name = entry.file_name();
    let final_path = dir.join(&name);
    let tmp_path = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let json = entry.to_json().map_err(io::Error::other)?;

    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp_path)?;
        f.write_all(json.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp_path, &final_path)?;
        // Make the rename durable; a failure here does not undo the queued entry.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    match write() {
        Ok(()) => Ok(final_path),
        Err(e) => {
            let _ = fs::remove_file(&tmp_path);
            Err(e)
        }
    }
}
