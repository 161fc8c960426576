//! `kuryr-cni`: the CNI plugin executable container runtimes run.
//!
//! A thin shim: it validates the CNI environment and stdin, answers `VERSION` itself, and
//! forwards `ADD`, `DEL`, `CHECK`, `GC` and `STATUS` to kuryr-daemon over HTTP/1.1 on a
//! unix socket (protocol in the `kuryr_cni_api` crate docs). It prints the daemon's ADD
//! result in the requested CNI version, merged behind a chained `prevResult`. A DEL that
//! cannot reach the daemon is queued on disk for the daemon to replay, and succeeds.
//!
//! No async runtime, no HTTP crate: std, serde, serde_json. See README.md for the
//! static build. The logic is in the library half (`src/lib.rs`), so that tests and the
//! fuzz targets (`fuzz/` at the workspace root) drive exactly what the binary runs.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let started = Instant::now();
    let outcome = kuryr_cni::run::run(
        &|name| std::env::var_os(name),
        &mut io::stdin().lock(),
        started,
    );
    if !outcome.stderr.is_empty() {
        let _ = io::stderr().lock().write_all(outcome.stderr.as_bytes());
    }
    let mut stdout = io::stdout().lock();
    // A closed stdout (EPIPE) must not panic: there is nobody left to tell.
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(outcome.exit_code)
}
