//! A Keystone, Neutron or Octavia response body, decoded every way kuryr-rs decodes one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kuryr_openstack::fuzzing::response_body(data);
});
