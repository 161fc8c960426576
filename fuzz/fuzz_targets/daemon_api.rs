//! The daemon's socket API parse step: first line `METHOD PATH`, then the body. Refusals are
//! 4xx with a spec code; what is accepted is well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = kuryr_daemon::api::fuzzing::api_request(data) {
        panic!("{e}");
    }
});
