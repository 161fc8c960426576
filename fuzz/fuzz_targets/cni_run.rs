//! One kuryr-cni invocation (environment, stdin, the daemon's raw answer; format in
//! `kuryr_cni::fuzzing`): exit 0 with nothing or a JSON result, or 1 with a CNI error object
//! carrying a spec code. Paths the config names are moved into a scratch directory.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use kuryr_cni::fuzzing::{check_outcome, run_case, Case};
use libfuzzer_sys::fuzz_target;

fn sandbox() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("kuryr-fuzz-cni-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = sandbox();
    let out = run_case(&Case::parse(data), dir);
    let _ = std::fs::remove_dir_all(dir.join("del-queue"));
    let _ = std::fs::remove_file(dir.join("kuryr-cni.log"));
    if let Err(e) = check_outcome(&out) {
        panic!("{e}");
    }
});
