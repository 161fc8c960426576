//! kuryr.conf and KuryrPort VIFs (both kuryr-rs' typed form and upstream's os-vif
//! primitives) never panic on hostile input (issue 15), and a VIF that is read is valid and
//! round-trips. Cases are the committed seed corpora of the cargo-fuzz targets `kuryr_conf`
//! and `kuryrport_vif` (`fuzz/corpus/`), mutated. Long run:
//! `PROPTEST_CASES=50000 cargo test -p kuryr-core --test prop_input`.

use kuryr_core::config::{Config, Role};
use kuryr_core::fuzzing;
use kuryr_test_support::arb;
use proptest::prelude::*;
use serde_json::Value;

fn conf_seeds() -> Vec<String> {
    arb::corpus("kuryr_conf", 4)
        .into_iter()
        .map(|(_, d)| String::from_utf8(d).expect("utf-8 seed"))
        .collect()
}

/// Section and option names and values the parser knows, so that edits reach its checks.
fn conf_words() -> Vec<String> {
    let mut words = Vec::new();
    for seed in conf_seeds() {
        for line in seed.lines() {
            let line = line.trim();
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                words.push(s.to_owned());
            } else if let Some((k, v)) = line.split_once('=') {
                words.push(k.trim().to_owned());
                words.push(v.trim().to_owned());
            }
        }
    }
    words.extend(
        [
            "nested-vlan",
            "neutron-vif",
            "nested-macvlan",
            "noop",
            "neutron",
            "nested",
            "namespace",
            "default",
            "policy",
            "0",
            "1",
            "-1",
            "65536",
            "99999999999999999999",
            "true",
            "maybe",
            "a,b,c",
            "s1,s2,s3",
            "x\n  y",
        ]
        .map(str::to_owned),
    );
    words.sort();
    words.dedup();
    words
}

fn vif_seeds() -> Vec<Value> {
    arb::corpus("kuryrport_vif", 5)
        .into_iter()
        .map(|(n, d)| serde_json::from_slice(&d).unwrap_or_else(|e| panic!("seed {n}: {e}")))
        .collect()
}

/// The seeds are what they claim: every kuryr.conf reads for the daemon, every VIF reads.
#[test]
fn seeds_read() {
    for (name, data) in arb::corpus("kuryr_conf", 4) {
        let text = String::from_utf8(data).expect("utf-8");
        Config::parse(&text, Role::Daemon).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, data) in arb::corpus("kuryrport_vif", 5) {
        let v: Value = serde_json::from_slice(&data).expect("json");
        let n = if v.get("vifs").is_some() {
            serde_json::from_value::<kuryr_core::crd::KuryrPortStatus>(v)
                .expect("status")
                .vifs
                .values()
                .map(|e| e.vif().map(|_| ()))
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .len()
        } else {
            kuryr_core::vif::Vif::from_status_value(&v).unwrap_or_else(|e| panic!("{name}: {e}"));
            1
        };
        assert!(n >= 1, "{name}");
        fuzzing::kuryrport_vif(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

proptest! {
    #![proptest_config(arb::config(1000))]

    #[test]
    fn prop_kuryr_conf(text in prop_oneof![
        6 => arb::text_mutated(conf_seeds(), conf_words()),
        1 => arb::tricky_string(),
    ]) {
        fuzzing::kuryr_conf(&text);
    }

    #[test]
    fn prop_kuryrport_vif(bytes in arb::json_bytes(vif_seeds())) {
        if let Err(e) = fuzzing::kuryrport_vif(&bytes) {
            return Err(TestCaseError::fail(format!("{e}\ninput: {}", String::from_utf8_lossy(&bytes))));
        }
    }
}

/// Regression (found while writing the VIF property): an os-vif network `mtu` above u32 was
/// truncated (`as u32`), so 4294968738 read as MTU 1442 and passed validation.
#[test]
fn os_vif_mtu_out_of_range_is_refused() {
    let seed = arb::corpus("kuryrport_vif", 5)
        .into_iter()
        .find(|(n, _)| n == "upstream-ovs.json")
        .expect("seed")
        .1;
    let mut v: Value = serde_json::from_slice(&seed).expect("json");
    v["versioned_object.data"]["network"]["versioned_object.data"]["mtu"] =
        Value::from(4_294_968_738u64);
    let r = kuryr_core::vif::Vif::from_status_value(&v);
    assert!(r.is_err(), "{r:?}");
}
