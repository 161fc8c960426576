//! The project's test command itself: its failure summary must show why each failing test
//! failed, whatever form the test runner gives its panic lines (issue 18: the summary printed
//! nothing once Rust added the thread id to them).

use std::path::Path;
use std::process::Command;

fn summary(log: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "kuryr-harness-{}-{}.log",
        std::process::id(),
        log.len()
    ));
    std::fs::write(&path, log).expect("write log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/test-summary");
    let out = Command::new(script)
        .arg(&path)
        .output()
        .expect("run hack/test-summary");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "hack/test-summary failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn failure_summary_shows_the_panic_message_in_both_panic_line_forms() {
    let log = "\
running 3 tests
test a ... ok
thread 'deployed_in_cluster_end_to_end' (4388) panicked at tests/e2e/tests/deploy.rs:624:5:
daemon not ready: the new form, with a thread id
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
thread 'old_style' panicked at tests/e2e/tests/pods.rs:10:9:
assertion `left == right` failed: the old form
test b ... FAILED
test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s
";
    let out = summary(log);
    assert!(
        out.contains("'deployed_in_cluster_end_to_end' (4388) panicked at"),
        "{out}"
    );
    assert!(
        out.contains("daemon not ready: the new form, with a thread id"),
        "{out}"
    );
    assert!(
        out.contains("assertion `left == right` failed: the old form"),
        "{out}"
    );
    assert!(
        !out.contains("test a ... ok"),
        "only the panics, not the whole log: {out}"
    );
}

#[test]
fn failure_summary_of_a_clean_log_is_empty() {
    assert_eq!(
        summary("running 1 test\ntest a ... ok\ntest result: ok. 1 passed; 0 failed\n"),
        ""
    );
}
