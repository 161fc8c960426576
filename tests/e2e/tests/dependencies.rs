//! The dependency tree (issue 15, "Least privilege, proven"): every crate we ship or test with is
//! under a licence `deny.toml` allows and comes from crates.io, and none has a known advisory in
//! the RustSec database. Both run `cargo deny` on the workspace; they need no stack and run in
//! `hack/test`'s unit step, which installs the pinned cargo-deny first.
//!
//! The advisory database is a git repository: `$KURYR_ADVISORY_DB` (a path or URL) if set, else
//! the local clone `/var/cache/kuryr-rs/advisory-db.git` if present, else RustSec's own on
//! github.com. It is cloned into a scratch directory each run, so nothing stale is read
//! silently; when none can be reached the advisory test is reported as skipped, never passed.

use kuryr_e2e::deploy::{path_with_cargo, repo as workspace};
use kuryr_e2e::{run, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where `hack/cargo-deny` installs the pinned cargo-deny.
const PINNED: &str = "/var/cache/kuryr-rs/cargo-deny-0.20.2/bin/cargo-deny";
const LOCAL_DB: &str = "/var/cache/kuryr-rs/advisory-db.git";
const RUSTSEC_DB: &str = "https://github.com/RustSec/advisory-db";

/// The cargo-deny `hack/test` installs (`hack/cargo-deny`), or `$KURYR_CARGO_DENY` (the same
/// version: the advisory test relies on where it keeps its database).
fn cargo_deny() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KURYR_CARGO_DENY") {
        return Some(PathBuf::from(p));
    }
    Path::new(PINNED).is_file().then(|| PINNED.into())
}

/// `cargo deny check <checks>` on the workspace with `config`.
fn check(deny: &Path, config: &Path, checks: &[&str], extra: &[&str]) -> Output {
    let mut c = Command::new(deny);
    c.arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"))
        .args(["--color", "never"])
        .args(extra)
        .arg("--config")
        .arg(config)
        .args(["check", "--show-stats"])
        .args(checks);
    // cargo-deny runs `cargo metadata`, which needs the toolchain's cargo.
    run(c.env("PATH", path_with_cargo()))
}

#[test]
fn dependency_licences_sources_and_bans_are_allowed() {
    let Some(deny) = cargo_deny() else {
        kuryr_test_support::skip!(
            "cargo-deny is not installed (hack/test installs it: hack/cargo-deny)"
        );
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

/// Where cargo-deny 0.20.2 keeps RustSec's default database under `db-path` (a git checkout;
/// the directory name is a hash of the default URL).
const DB_DIR: &str = "advisory-db-3157b0e258782691";

/// An advisory the test adds to its own clone of the database, for a crate every build of ours
/// has, to prove the check reads the database it is given.
const SYNTHETIC: &str = r#"```toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "serde"
date = "2099-01-01"
url = "https://example.invalid/kuryr-rs-synthetic"
categories = ["memory-corruption"]

[versions]
patched = [">= 99.0.0"]
```

# Synthetic advisory (kuryr-rs dependency test)

Made by tests/e2e/tests/dependencies.rs in its scratch clone only.
"#;

#[test]
fn no_known_advisories_in_the_dependency_tree() {
    let Some(deny) = cargo_deny() else {
        kuryr_test_support::skip!(
            "cargo-deny is not installed (hack/test installs it: hack/cargo-deny)"
        );
    };
    let source = std::env::var("KURYR_ADVISORY_DB").ok().unwrap_or_else(|| {
        if Path::new(LOCAL_DB).exists() {
            LOCAL_DB.into()
        } else {
            RUSTSEC_DB.into()
        }
    });
    // A fresh clone in a scratch db-path, where cargo-deny looks for RustSec's database; the
    // check then runs offline against exactly that.
    let scratch = std::env::temp_dir().join(kuryr_test_support::unique("kuryr-deny-"));
    let db = scratch.join("db").join(DB_DIR);
    std::fs::create_dir_all(db.parent().expect("parent")).expect("scratch dir");
    let clone = run(Command::new("git")
        .args(["clone", "--quiet", "--depth", "1"])
        .arg(if source.contains("://") {
            source.clone()
        } else {
            format!("file://{source}")
        })
        .arg(&db));
    if !clone.status.success() {
        let why = text(&clone);
        let _ = std::fs::remove_dir_all(&scratch);
        kuryr_test_support::skip!(
            "no advisory database reachable ({source}; set KURYR_ADVISORY_DB to a clone of {RUSTSEC_DB}): {}",
            why.lines().find(|l| l.starts_with("fatal:")).or(why.lines().last()).unwrap_or("").trim()
        );
    }
    let date = run(Command::new("git")
        .arg("-C")
        .arg(&db)
        .args(["log", "-1", "--format=%cI"]));
    let date = String::from_utf8_lossy(&date.stdout).trim().to_string();
    let base = std::fs::read_to_string(workspace().join("deny.toml")).expect("deny.toml");
    assert!(
        base.contains("\n[advisories]\n") && !base.contains("db-urls") && !base.contains("db-path"),
        "deny.toml's [advisories] must leave db-urls and db-path to this test"
    );
    let config = scratch.join("deny.toml");
    let db_path = scratch.join("db").display().to_string();
    std::fs::write(
        &config,
        base.replace(
            "\n[advisories]\n",
            &format!("\n[advisories]\ndb-path = {db_path:?}\n"),
        ),
    )
    .expect("write config");

    // The check reads this database: a synthetic advisory against serde fails it, naming it.
    let synthetic = db.join("crates/serde/RUSTSEC-2099-0001.md");
    std::fs::create_dir_all(synthetic.parent().expect("parent")).expect("advisory dir");
    std::fs::write(&synthetic, SYNTHETIC).expect("write synthetic advisory");
    let o = check(&deny, &config, &["advisories"], &["--offline"]);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("RUSTSEC-2099-0001"),
        "cargo deny did not report the synthetic advisory: it is not reading {}\n{out}",
        db.display()
    );
    std::fs::remove_file(&synthetic).expect("remove synthetic advisory");

    let o = check(&deny, &config, &["advisories"], &["--offline"]);
    let out = text(&o);
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!("advisory database: {source} (last change {date})\n{out}");
    assert!(
        o.status.success(),
        "known advisories in the dependency tree (database {source}, last change {date}):\n{out}"
    );
    assert!(out.contains("advisories ok"), "{out}");
}
