//! Optional logging to the file named by the config's `log_file`. Never to stdout (the
//! CNI result goes there). Failing to open or write the log never fails the CNI call.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct Logger {
    file: Option<File>,
    debug: bool,
    context: String,
}

impl Logger {
    pub fn disabled() -> Logger {
        Logger::default()
    }

    /// Opens `path` for appending (created `0640`); `None` or an open failure gives a
    /// logger that drops everything.
    pub fn open(path: Option<&str>, debug: bool) -> Logger {
        let file = path.filter(|p| !p.is_empty()).and_then(|p| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(p)
                .ok()
        });
        Logger {
            file,
            debug,
            context: String::new(),
        }
    }

    /// Text put on every line after the level, e.g. `ADD cid=… ifname=eth0`.
    pub fn set_context(&mut self, context: String) {
        self.context = context;
    }

    pub fn info(&mut self, msg: &str) {
        self.line("INFO", msg);
    }

    pub fn warn(&mut self, msg: &str) {
        self.line("WARN", msg);
    }

    pub fn error(&mut self, msg: &str) {
        self.line("ERROR", msg);
    }

    /// Only with `debug: true`; the message is built only then.
    pub fn debug(&mut self, msg: impl FnOnce() -> String) {
        if self.debug && self.file.is_some() {
            let m = msg();
            self.line("DEBUG", &m);
        }
    }

    fn line(&mut self, level: &str, msg: &str) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let line = format!(
            "{} kuryr-cni[{}] {level} {}{}{msg}\n",
            rfc3339_now(),
            std::process::id(),
            self.context,
            if self.context.is_empty() { "" } else { ": " },
        );
        // One write per line: O_APPEND keeps concurrent invocations' lines whole.
        let _ = file.write_all(line.as_bytes());
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), without a date crate.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_millis())
}

fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_708_375, 539), "2026-11-26T15:52:55.539Z");
        assert_eq!(rfc3339(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }
}
