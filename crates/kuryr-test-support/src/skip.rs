//! Tests that cannot run on this machine say so (issue 15: skipped is not passed).
//!
//! A test that finds a tool or kernel feature missing (no `8021q`, no `systemd-analyze`) ends
//! with [`skip!`](crate::skip) instead of returning as if it had passed; a test that proves only
//! part of what it is for goes on after [`record_skip`]. Either way one line
//! `KURYR-SKIP <test binary> <test name>: <reason>` goes to stdout (seen with `--nocapture`) and,
//! when `KURYR_SKIP_LOG` names a file (hack/test sets it), is appended to that file, which
//! survives libtest's output capture and parallel tests. hack/test-count counts a test that
//! recorded a skip and then passed as **skipped**, never as passed; one that recorded a skip
//! and then failed is failed.

use std::io::Write;
use std::path::Path;

/// The environment variable naming the file skips are appended to.
pub const SKIP_LOG_ENV: &str = "KURYR_SKIP_LOG";

/// Ends the calling test (a function returning `()`) as skipped: records the reason (a
/// `format!` string) with [`record_skip`] and returns.
#[macro_export]
macro_rules! skip {
    ($($reason:tt)+) => {{
        $crate::skip::record_skip(&::std::format!($($reason)+));
        return;
    }};
}

/// Records that the calling test does not prove (all of) what it is for on this machine, and
/// why. The test then counts as skipped even if it goes on and passes. Panics if the record
/// cannot be written to `KURYR_SKIP_LOG` (the test would otherwise count as passed).
pub fn record_skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed thread>")
        .to_string();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "<unknown binary>".into());
    let line = skip_line(&binary, &test, reason);
    println!("{line}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
        append_line(Path::new(&log), &line).unwrap_or_else(|e| {
            panic!(
                "cannot record the skip in {SKIP_LOG_ENV}={}: {e}\n{line}",
                Path::new(&log).display()
            )
        });
    }
}

/// The one line a skip is recorded as (the reason folded onto one line).
pub fn skip_line(binary: &str, test: &str, reason: &str) -> String {
    let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("KURYR-SKIP {binary} {test}: {reason}")
}

/// Appends `line` with one write (`O_APPEND`: lines of parallel tests do not interleave).
pub fn append_line(log: &Path, line: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?
        .write_all(format!("{line}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_one_line_naming_binary_test_and_reason() {
        assert_eq!(
            skip_line(
                "bindings-0a1b",
                "nested_vlan",
                "kernel without 802.1Q:\n  cannot create VLAN"
            ),
            "KURYR-SKIP bindings-0a1b nested_vlan: kernel without 802.1Q: cannot create VLAN"
        );
        let log = std::env::temp_dir().join(crate::unique("kuryr-skip-log-"));
        append_line(&log, "KURYR-SKIP a t1: r1").expect("append");
        append_line(&log, "KURYR-SKIP a t2: r2").expect("append");
        let text = std::fs::read_to_string(&log).expect("read");
        let _ = std::fs::remove_file(&log);
        assert_eq!(text, "KURYR-SKIP a t1: r1\nKURYR-SKIP a t2: r2\n");
    }

    /// `skip!` returns before the rest of the test. Run on a thread that is no test's name, so
    /// the record (under hack/test) matches no test and this test still counts as passed.
    #[test]
    fn skip_returns_before_the_rest_of_the_test() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static REACHED: AtomicBool = AtomicBool::new(false);
        fn body() {
            crate::skip!("no {} here", "8021q");
            #[allow(unreachable_code)]
            {
                REACHED.store(true, Ordering::Relaxed);
            }
        }
        std::thread::Builder::new()
            .name("kuryr-test-support skip probe".into())
            .spawn(body)
            .expect("spawn")
            .join()
            .expect("join");
        assert!(!REACHED.load(Ordering::Relaxed), "skip! must return");
    }
}
