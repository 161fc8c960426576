//! A KuryrPort VIF (kuryr-rs' typed form or upstream's os-vif primitive) or a whole status:
//! what is read is valid and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = kuryr_core::fuzzing::kuryrport_vif(data) {
        panic!("{e}");
    }
});
