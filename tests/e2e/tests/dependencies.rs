//! The dependency tree (issue 15, "Least privilege, proven"): every crate we ship or test with is
//! under a licence `deny.toml` allows and comes from crates.io, and none has a known advisory in
//! the RustSec database. Both run `cargo deny` on the workspace; they need no stack and run in
//! `hack/test`'s unit step, which installs the pinned cargo-deny first.
//!
//! The advisory database is a git repository: `$KURYR_ADVISORY_DB` (a path or URL) if set, else
//! the local clone `/var/cache/kuryr-rs/advisory-db.git` if present, else RustSec's own on
//! github.com. It is cloned into a scratch directory each run, so nothing stale is read
//! silently; when none can be reached the advisory test is reported as skipped, never passed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The cargo-deny `hack/test` installs (`hack/cargo-deny`), else one on $PATH.
const PINNED: &str = "/var/cache/kuryr-rs/cargo-deny-0.20.2/bin/cargo-deny";
const LOCAL_DB: &str = "/var/cache/kuryr-rs/advisory-db.git";
const RUSTSEC_DB: &str = "https://github.com/RustSec/advisory-db";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo_deny() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KURYR_CARGO_DENY") {
        return Some(PathBuf::from(p));
    }
    if Path::new(PINNED).is_file() {
        return Some(PINNED.into());
    }
    let on_path = Command::new("cargo-deny").arg("--version").output();
    on_path
        .is_ok_and(|o| o.status.success())
        .then(|| "cargo-deny".into())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `cargo deny check <checks>` on the workspace with `config`.
fn check(deny: &Path, config: &Path, checks: &[&str], extra: &[&str]) -> Output {
    let mut c = Command::new(deny);
    c.arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"))
        .args(["--color", "never"])
        .args(extra)
        .arg("check")
        .arg("--config")
        .arg(config)
        .args(["--show-stats"])
        .args(checks);
    // cargo-deny runs `cargo metadata`, which needs the toolchain's cargo.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    c.env(
        "PATH",
        format!(
            "{home}/.cargo/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", deny.display()))
}

#[test]
fn dependency_licences_sources_and_bans_are_allowed() {
    let Some(deny) = cargo_deny() else {
        kuryr_test_support::skip!("cargo-deny is not installed (hack/test installs it: hack/cargo-deny)");
    };
    let o = check(
        &deny,
        &workspace().join("deny.toml"),
        &["licenses", "sources", "bans"],
        &["--offline"],
    );
    let out = text(&o);
    eprintln!("{out}");
    assert!(
        o.status.success(),
        "cargo deny check licenses sources bans failed (deny.toml refuses something in the dependency tree):\n{out}"
    );
    // The check looked at the tree: a run that checked nothing is not a pass.
    assert!(
        out.contains("licenses ok") && out.contains("sources ok"),
        "{out}"
    );
}

#[test]
fn no_known_advisories_in_the_dependency_tree() {
    let Some(deny) = cargo_deny() else {
        kuryr_test_support::skip!("cargo-deny is not installed (hack/test installs it: hack/cargo-deny)");
    };
    let db = std::env::var("KURYR_ADVISORY_DB").ok().unwrap_or_else(|| {
        if Path::new(LOCAL_DB).exists() {
            format!("file://{LOCAL_DB}")
        } else {
            RUSTSEC_DB.into()
        }
    });
    let db = if db.contains("://") {
        db
    } else {
        format!("file://{db}")
    };
    // deny.toml with this database, cloned into a scratch db-path.
    let scratch = std::env::temp_dir().join(kuryr_test_support::unique("kuryr-deny-"));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let base = std::fs::read_to_string(workspace().join("deny.toml")).expect("deny.toml");
    assert!(
        base.contains("\n[advisories]\n") && !base.contains("db-urls") && !base.contains("db-path"),
        "deny.toml's [advisories] must leave db-urls and db-path to this test"
    );
    let config = scratch.join("deny.toml");
    std::fs::write(
        &config,
        base.replace(
            "\n[advisories]\n",
            &format!(
                "\n[advisories]\ndb-urls = [{db:?}]\ndb-path = {:?}\n",
                scratch.join("db").display().to_string()
            ),
        ),
    )
    .expect("write config");
    let fetch = Command::new(&deny)
        .arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"))
        .args(["--color", "never", "fetch", "--config"])
        .arg(&config)
        .arg("db")
        .output()
        .expect("run cargo deny fetch");
    if !fetch.status.success() {
        let why = text(&fetch);
        let _ = std::fs::remove_dir_all(&scratch);
        kuryr_test_support::skip!(
            "no advisory database reachable ({db}; set KURYR_ADVISORY_DB to a clone of {RUSTSEC_DB}): {}",
            why.lines().last().unwrap_or("").trim()
        );
    }
    let o = check(&deny, &config, &["advisories"], &["--offline"]);
    let out = text(&o);
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!("advisory database: {db}\n{out}");
    assert!(
        o.status.success(),
        "known advisories in the dependency tree (database {db}):\n{out}"
    );
    assert!(out.contains("advisories ok"), "{out}");
}
