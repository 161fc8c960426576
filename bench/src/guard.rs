//! Is a kuryr-controller running against the cluster? (It would reconcile the benchmark's
//! Pods/KuryrPorts; the live benchmark waits for it to go away.)
//!
//! Counted as a controller: a process whose argv[0] is `kuryr-controller` (the binary, also
//! inside a pod), and `cargo test`/`cargo run` invocations naming kuryr-controller (their
//! integration tests run a controller in-process). Not counted: compiles (`rustc`,
//! `cargo build/check/clippy`) and shells, editors or greps that merely mention the name.

use std::time::{Duration, Instant};

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Whether one command line is a running controller (see the module doc).
pub fn is_controller(argv: &[String]) -> bool {
    let Some(arg0) = argv.first() else {
        return false;
    };
    let joined = argv.join(" ");
    if !(joined.contains("kuryr-controller") || joined.contains("kuryr_controller")) {
        return false;
    }
    let b = basename(arg0);
    if b.starts_with("kuryr-controller") {
        return true;
    }
    // `cargo test …`, `timeout 900 cargo test …`, `cargo +stable run …`.
    let Some(i) = argv.iter().position(|a| basename(a) == "cargo") else {
        return false;
    };
    argv[i + 1..]
        .iter()
        .find(|a| !a.starts_with('-') && !a.starts_with('+'))
        .is_some_and(|sub| matches!(sub.as_str(), "test" | "t" | "run" | "r" | "nextest"))
}

/// `pid: command line` of every running controller.
pub fn running_controllers() -> Vec<String> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if is_controller(&argv) {
            let mut line = argv.join(" ");
            line.truncate(160);
            out.push(format!("{pid}: {line}"));
        }
    }
    out
}

/// Waits (polling every `every`) until no controller runs, at most `max`.
/// Returns what still runs (empty = clear) and how long it waited.
pub fn wait_for_no_controller(max: Duration, every: Duration) -> (Vec<String>, Duration) {
    let t = Instant::now();
    loop {
        let running = running_controllers();
        if running.is_empty() || t.elapsed() >= max {
            return (running, t.elapsed());
        }
        eprintln!(
            "kuryr-controller running ({}); waiting (up to {}s, {}s so far)…",
            running.join("; "),
            max.as_secs(),
            t.elapsed().as_secs()
        );
        std::thread::sleep(
            every
                .min(max.saturating_sub(t.elapsed()))
                .max(Duration::from_secs(1)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::is_controller;

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn classification() {
        assert!(is_controller(&v(
            "/usr/local/bin/kuryr-controller --config-file x"
        )));
        assert!(is_controller(&v("/kuryr-controller")));
        assert!(is_controller(&v(
            "timeout 900 cargo test -p kuryr-controller --test stack"
        )));
        assert!(is_controller(&v(
            "/root/.rustup/toolchains/x/bin/cargo test -p kuryr-controller"
        )));
        assert!(is_controller(&v("cargo run --bin kuryr-controller")));
        assert!(!is_controller(&v(
            "/root/.rustup/toolchains/x/bin/rustc --crate-name kuryr_controller"
        )));
        assert!(!is_controller(&v(
            "cargo build --release -p kuryr-controller"
        )));
        assert!(!is_controller(&v("pgrep -fa kuryr-controller")));
        assert!(!is_controller(&v(
            "bash -c cd crates/kuryr-controller && ls"
        )));
        assert!(!is_controller(&v("/usr/bin/kuryr-daemon --node-name x")));
    }
}
