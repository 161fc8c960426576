//! kuryr.conf (oslo ini), read as the controller and as the daemon read it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        kuryr_core::fuzzing::kuryr_conf(text);
    }
});
