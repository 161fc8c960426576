//! The project's test command itself: its failure summary must show why each failing test
//! failed, whatever form the test runner gives its panic lines (issue 18: the summary printed
//! nothing once Rust added the thread id to them), and its accounting (hack/test-count) must
//! tell the truth (issue 15): a skipped test is not passed, a step's exit status counts, a
//! crashed test binary's tests fail by name, and the summary agrees with the closing line. The
//! logs below have the form of real `cargo test` output (Rust 1.95; a test binary that called
//! `std::process::abort()`, one that called `std::process::exit(3)`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn hack(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../hack")
        .join(script)
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(kuryr_test_support::unique("kuryr-harness-"));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn summary(log: &str) -> String {
    let dir = Scratch::new();
    let out = Command::new(hack("test-summary"))
        .arg(dir.file("run.log", log))
        .output()
        .expect("run hack/test-summary");
    assert!(out.status.success(), "hack/test-summary failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// hack/test-count's output and whether it said the run passed. `steps`: (step, log, cargo's
/// exit status); `skips`: the KURYR_SKIP_LOG the tests wrote; `extra`: more arguments.
fn count(
    dir: &Scratch,
    skips: &str,
    extra: &[&str],
    steps: &[(&str, &str, i32)],
) -> (String, bool) {
    let mut cmd = Command::new(hack("test-count"));
    cmd.arg("--skips")
        .arg(dir.file("skips.log", skips))
        .args(extra);
    for (step, log, rc) in steps {
        cmd.arg(step)
            .arg(dir.file(&format!("{step}.log"), log))
            .arg(rc.to_string());
    }
    let out = cmd.output().expect("run hack/test-count");
    assert!(out.stderr.is_empty(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    (text, out.status.success())
}

fn closing(out: &str) -> &str {
    out.lines().last().unwrap_or_default()
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

/// A test that passed after `skip!` is skipped, not passed, in the closing line and listed with
/// its reason; the record is matched by test binary and name (the same name in another binary
/// passed); a test that recorded a skip and then failed is failed.
#[test]
fn a_skipped_test_is_counted_skipped_never_passed() {
    let dir = Scratch::new();
    let log = "\
     Running tests/bindings.rs (/var/cache/kuryr-rs/cargo-target/debug/deps/bindings-0a1b2c3d)

running 3 tests
test plain ... ok
test nested_vlan ... ok
test skips_then_fails ... FAILED

failures:

---- skips_then_fails stdout ----
KURYR-SKIP bindings-0a1b2c3d skips_then_fails: no 8021q
test fake_in_captured_output ... ok

failures:
    skips_then_fails

test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s

     Running tests/kernel.rs (/var/cache/kuryr-rs/cargo-target/debug/deps/kernel-4e5f6a7b)

running 2 tests
test nested_vlan ... ok
test vlan_partly ... ok

test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s
";
    let skips = "\
KURYR-SKIP bindings-0a1b2c3d nested_vlan: kernel without 802.1Q, the VLAN wiring is not proven: cannot create VLAN 101 on par0
KURYR-SKIP bindings-0a1b2c3d skips_then_fails: no 8021q
KURYR-SKIP kernel-4e5f6a7b vlan_partly: kernel without 802.1Q, no VLAN made
";
    let (out, ok) = count(&dir, skips, &[], &[("e2e", log, 101)]);
    assert_eq!(closing(&out), "2 passed, 1 failed, 2 skipped", "{out}");
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "skipped: nested_vlan [e2e, bindings-0a1b2c3d]: kernel without 802.1Q, the VLAN wiring is not proven: cannot create VLAN 101 on par0"
        ),
        "{out}"
    );
    assert!(
        out.contains("skipped: vlan_partly [e2e, kernel-4e5f6a7b]"),
        "{out}"
    );
    assert!(
        out.contains("failed: skips_then_fails [e2e, bindings-0a1b2c3d]"),
        "{out}"
    );

    // Without the skip records the same log is all passes but the one failure.
    let (out, _) = count(&dir, "", &[], &[("e2e", log, 101)]);
    assert_eq!(closing(&out), "4 passed, 1 failed, 0 skipped", "{out}");
}

/// A step whose command exited non-zero fails the run even if its log names no failing test
/// (a build error, a killed cargo), with a line saying why; the same log with status 0 passes.
#[test]
fn a_nonzero_exit_with_no_failing_test_fails_the_run() {
    let dir = Scratch::new();
    let log = "\
     Running unittests src/lib.rs (/var/cache/kuryr-rs/cargo-target/debug/deps/kuryr_core-0123abcd)

running 2 tests
test a ... ok
test b ... ignored, needs root

test result: ok. 1 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

error: could not compile `kuryr-daemon` (test \"bindings\") due to 1 previous error
";
    let (out, ok) = count(&dir, "", &[], &[("unit", log, 0)]);
    assert!(ok, "{out}");
    assert_eq!(out, "1 passed, 0 failed, 0 skipped\n");

    let (out, ok) = count(&dir, "", &[], &[("unit", log, 101)]);
    assert!(!ok, "{out}");
    assert_eq!(
        out,
        "failed: unit: cargo test exited 101 but its log names no failing test: \
         error: could not compile `kuryr-daemon` (test \"bindings\") due to 1 previous error\n\
         1 passed, 1 failed, 0 skipped\n"
    );

    // hack/fuzz: its targets count; exit 1 with no FAILED target (e.g. the build failed) fails.
    let fuzz_ok =
        "fuzz cni_run: ok, 9000 runs in 15 s (cov: 812)\nfuzz daemon_api: FAILED after 2 s\n";
    let (out, ok) = count(&dir, "", &[], &[("fuzz", fuzz_ok, 1)]);
    assert!(!ok);
    assert_eq!(
        out,
        "failed: daemon_api [fuzz, hack/fuzz]\n1 passed, 1 failed, 0 skipped\n"
    );
    let (out, ok) = count(
        &dir,
        "",
        &[],
        &[(
            "fuzz",
            "building the fuzz targets\nerror: could not compile `kuryr-fuzz`\n",
            1,
        )],
    );
    assert!(!ok);
    assert_eq!(
        out,
        "failed: fuzz: hack/fuzz exited 1 but its log names no failing test: \
         error: could not compile `kuryr-fuzz`\n0 passed, 1 failed, 0 skipped\n"
    );

    // A failure outside the logs (hack/test's host-check) counts too.
    let (out, ok) = count(
        &dir,
        "",
        &["--fail", "host-check: leftovers"],
        &[("unit", log, 0)],
    );
    assert!(!ok);
    assert_eq!(
        out,
        "failed: host-check: leftovers\n1 passed, 1 failed, 0 skipped\n"
    );
}

/// `--list` as libtest answers it for the crashed binary: every test, or with `--ignored` the
/// ignored ones.
const LISTING: &str = r#"#!/bin/sh
case "$*" in
  "--list --ignored") printf 'e2e_aborts: test\ne2e_never_ran: test\n\n2 tests, 0 benchmarks\n' ;;
  "--list") printf 'a_first: test\nb_aborts: test\nc_never_ran: test\ne2e_aborts: test\ne2e_never_ran: test\n\n5 tests, 0 benchmarks\n' ;;
  *) exit 64 ;;
esac
"#;

/// A test binary that died (signal, exit) prints no `test result:` line: each of the tests the
/// run ran in it that has no result line fails, by name, with the reason; those that finished
/// before the crash count as they ended.
#[test]
fn a_crashed_test_binary_fails_its_unfinished_tests_by_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new();
    let bin = dir.file("crash-c2345199e1e174f7", LISTING);
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = bin.display();
    let unit = format!(
        "\
     Running unittests src/lib.rs (target/debug/deps/truthcrate-137b47949fc5bdb4)

running 1 test
test tests::passes ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.14s

     Running tests/crash.rs ({bin})

running 3 tests
test a_first ... ok
error: test failed, to rerun pass `--test crash`

Caused by:
  process didn't exit successfully: `{bin}` (signal: 6, SIGABRT: process abort signal)
     Running tests/exit.rs (/nonexistent/deps/exit-98e133d60aaeca42)

running 2 tests
error: test failed, to rerun pass `--test exit`

Caused by:
  process didn't exit successfully: `/nonexistent/deps/exit-98e133d60aaeca42` (exit status: 3)
note: test exited abnormally; to see the full output pass --no-capture to the harness.
   Doc-tests truthcrate

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

error: 2 targets failed:
    `--test crash`
    `--test exit`
"
    );
    let e2e = format!(
        "\
     Running tests/crash.rs ({bin})

running 2 tests
error: test failed, to rerun pass `--test crash`

Caused by:
  process didn't exit successfully: `{bin} --ignored --test-threads=2` (signal: 6, SIGABRT: process abort signal)
"
    );
    let (out, ok) = count(&dir, "", &[], &[("unit", &unit, 101), ("e2e", &e2e, 101)]);
    assert!(!ok, "{out}");
    let abort = "(the test binary crashed: signal: 6, SIGABRT: process abort signal)";
    let expected = [
        format!("failed: b_aborts {abort} [unit, crash-c2345199e1e174f7]"),
        format!("failed: c_never_ran {abort} [unit, crash-c2345199e1e174f7]"),
        "failed: (its tests: `/nonexistent/deps/exit-98e133d60aaeca42 --list` listed none) \
         (the test binary crashed: exit status: 3) [unit, exit-98e133d60aaeca42]"
            .to_string(),
        format!("failed: e2e_aborts {abort} [e2e, crash-c2345199e1e174f7]"),
        format!("failed: e2e_never_ran {abort} [e2e, crash-c2345199e1e174f7]"),
        "2 passed, 5 failed, 0 skipped".to_string(),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{out}");

    // hack/test's summary after the run lists every one of them, under the same counts.
    let counts = dir.file("counts.log", &out);
    let sum = Command::new(hack("test-summary"))
        .arg("--counts")
        .arg(&counts)
        .arg(dir.file("unit-again.log", &unit))
        .output()
        .expect("run hack/test-summary");
    let sum = String::from_utf8(sum.stdout).expect("utf-8");
    assert!(
        sum.starts_with("counted as failed (2 passed, 5 failed, 0 skipped):\n"),
        "{sum}"
    );
    let listed: Vec<&str> = sum.lines().filter(|l| l.starts_with("    ")).collect();
    assert_eq!(listed.len(), 5, "{sum}");
    for l in &expected[..5] {
        assert!(
            sum.contains(&format!("    {}", l.trim_start_matches("failed: "))),
            "{l} not in the summary:\n{sum}"
        );
    }
}
