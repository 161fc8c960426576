//! The CNI types never panic on hostile input and answer with spec codes (issue 15):
//! `CNI_ARGS`, the stdin config, `prevResult` of every version, daemon error bodies, the
//! VERSION probe, DEL queue files. Configs start from the committed seed corpus of the
//! cargo-fuzz target `cni_run` (`fuzz/corpus/cni_run`), mutated. Long run:
//! `PROPTEST_CASES=50000 cargo test -p kuryr-cni-api --test prop_input`.

use kuryr_cni_api::codes::is_spec_code;
use kuryr_cni_api::{
    CniArgs, CniCommand, CniError, CniResult, CniVersion, DelQueueEntry, NetConf, VersionInfo,
};
use kuryr_test_support::arb;
use proptest::prelude::*;
use serde_json::{json, Value};

/// The stdin configs and their prevResults from the corpus.
fn seed_configs() -> Vec<Value> {
    let mut out = Vec::new();
    for (_, data) in arb::corpus("cni_run", 10) {
        let text = String::from_utf8_lossy(&data).into_owned();
        let Some((_, rest)) = text.split_once("\n\n") else {
            continue;
        };
        let stdin = rest.split("\n--answer--\n").next().unwrap_or_default();
        if let Ok(v) = serde_json::from_str::<Value>(stdin) {
            out.push(v);
        }
    }
    assert!(out.len() >= 10, "{} seed configs", out.len());
    out
}

fn seed_results() -> Vec<Value> {
    let mut out: Vec<Value> = seed_configs()
        .into_iter()
        .filter_map(|c| c.get("prevResult").cloned())
        .collect();
    out.push(json!({"cniVersion":"1.1.0","interfaces":[{"name":"tap1","mac":"fa:16:3e:11:22:33","mtu":1450},
        {"name":"eth0","mac":"fa:16:3e:11:22:33","mtu":1450,"sandbox":"/var/run/netns/cni-1","socketPath":"/s","pciID":"0000:00:01.0"}],
        "ips":[{"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"interface":1,"address":"fd00::5/64"}],
        "routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1","mtu":1400,"advmss":1360,"priority":10,"table":100,"scope":0}],
        "dns":{"nameservers":["10.0.0.2"],"domain":"cluster.local","search":["svc.cluster.local"],"options":["ndots:5"]}}));
    assert!(out.len() >= 3, "{} seed results", out.len());
    out
}

fn in_spec(e: &CniError) -> Result<(), TestCaseError> {
    prop_assert!(
        is_spec_code(e.code),
        "code {} is not a spec code: {e:?}",
        e.code
    );
    prop_assert!(!e.msg.is_empty(), "error without msg: {e:?}");
    let v: Value =
        serde_json::from_str(&e.to_json()).map_err(|x| TestCaseError::fail(x.to_string()))?;
    prop_assert_eq!(&v["code"], &json!(e.code));
    Ok(())
}

proptest! {
    #![proptest_config(arb::config(1000))]

    #[test]
    fn prop_cni_args(s in prop_oneof![
        arb::tricky_string(),
        "((K8S_POD_NAMESPACE|K8S_POD_NAME|K8S_POD_UID|IgnoreUnknown|[A-Za-z_]{0,4})=[^;]{0,10};?){0,6}",
    ]) {
        match CniArgs::parse(&s) {
            Ok(a) => {
                // What was parsed is what is looked up.
                if let Some(ns) = &a.k8s_pod_namespace {
                    prop_assert_eq!(a.get("K8S_POD_NAMESPACE"), Some(ns.as_str()));
                }
                let _ = a.pod();
            }
            Err(e) => {
                in_spec(&e)?;
                prop_assert_eq!(e.code, 4);
            }
        }
    }

    #[test]
    fn prop_netconf(bytes in arb::json_bytes(seed_configs())) {
        match NetConf::parse(&bytes) {
            Ok((conf, raw)) => {
                prop_assert!(raw.is_object());
                for cmd in CniCommand::ALL {
                    let t = conf.timeout_for(cmd);
                    prop_assert!(!t.is_zero() && t.as_secs() <= 86_400, "{t:?}");
                    if let Err(e) = cmd.check_version(&conf.cni_version) {
                        in_spec(&e)?;
                        prop_assert_eq!(e.code, 1);
                    }
                }
            }
            Err(e) => {
                in_spec(&e)?;
                prop_assert!(matches!(e.code, 6 | 7), "{e:?}");
            }
        }
        let info = VersionInfo::for_stdin(&bytes);
        prop_assert!(serde_json::from_str::<Value>(&info.to_json()).is_ok());
    }

    /// A prevResult that is read is valid, and printed in any version it reads back.
    #[test]
    fn prop_prev_result(v in arb::mutated(seed_results()), config_version in prop::sample::select(vec!["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "0.2.0", ""])) {
        match CniResult::from_prev_result(&v, config_version) {
            Ok(r) => {
                prop_assert!(r.validate().is_ok(), "{:?}", r.validate());
                for out in CniVersion::ALL {
                    let printed: Value = serde_json::from_str(&r.to_version(out).to_json())
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let back = CniResult::from_prev_result(&printed, out.as_str());
                    prop_assert!(back.is_ok(), "{out}: {printed} does not read back: {back:?}");
                    let chained = CniResult::chained(r.clone(), r.clone());
                    prop_assert!(chained.validate().is_ok(), "{:?}", chained.validate());
                }
            }
            Err(e) => {
                in_spec(&e)?;
                prop_assert!(matches!(e.code, 1 | 6), "{e:?}");
            }
        }
    }

    /// A daemon error body: either not an error (None) or one with a non-zero code.
    #[test]
    fn prop_error_body(bytes in arb::json_bytes(vec![
        json!({"code": 11, "msg": "m", "details": "d"}),
        json!({"cniVersion": "1.0.0", "code": 50, "msg": "not ready"}),
    ])) {
        if let Some(e) = CniError::from_body(&bytes) {
            prop_assert!(e.code != 0);
        }
    }

    #[test]
    fn prop_del_queue_entry(bytes in arb::json_bytes(vec![json!({
        "format": 1, "queued_at_unix_ms": 1, "reason": "connect: ENOENT",
        "request": {"command": "DEL", "container_id": "c1", "netns": "", "ifname": "eth0",
                    "args": "", "path": "/opt/cni/bin", "config": {"cniVersion": "1.0.0", "name": "kuryr", "type": "kuryr-cni"}}
    })])) {
        match DelQueueEntry::from_json(&bytes) {
            Ok(e) => {
                let name = e.file_name();
                prop_assert!(kuryr_cni_api::is_queue_file_name(&name), "{name:?}");
                prop_assert!(!name.contains('/') && name.len() <= 255, "{name:?}");
            }
            Err(e) => in_spec(&e)?,
        }
    }
}

#[test]
fn seeds_parse() {
    for c in seed_configs()
        .into_iter()
        .filter(|c| c.get("type").is_some())
    {
        let bytes = serde_json::to_vec(&c).expect("json");
        let (conf, _) = NetConf::parse(&bytes).unwrap_or_else(|e| panic!("{e}: {c}"));
        if let Some(p) = &conf.prev_result {
            CniResult::from_prev_result(p, &conf.cni_version)
                .unwrap_or_else(|e| panic!("{e}: {p}"));
        }
    }
}

/// Regression (found by `prop_netconf`): `"timeout_seconds": 6.09806489934951e-73` is
/// positive, so it was accepted, and made a zero deadline: every call failed at once with
/// "timed out". Below 1 ms is now code 7 naming the field; 1 ms itself is accepted.
#[test]
fn tiny_timeouts_are_code_7() {
    for key in ["timeout_seconds", "status_timeout_seconds"] {
        for v in [6.09806489934951e-73, 1e-9, 0.0009] {
            let conf = json!({"cniVersion": "1.0.0", "name": "kuryr", "type": "kuryr-cni", key: v});
            let e = NetConf::parse(&serde_json::to_vec(&conf).expect("json"))
                .expect_err("tiny timeout");
            assert_eq!(e.code, 7, "{key}={v}: {e:?}");
            assert_eq!(e.msg, format!("invalid {key} in network config"), "{e:?}");
        }
        let conf = json!({"cniVersion": "1.0.0", "name": "kuryr", "type": "kuryr-cni", key: 0.001});
        let (c, _) = NetConf::parse(&serde_json::to_vec(&conf).expect("json")).expect("1 ms");
        assert!(
            !c.timeout_for(CniCommand::Status).is_zero()
                && !c.timeout_for(CniCommand::Add).is_zero()
        );
    }
}

/// Regression (found by `prop_del_queue_entry`, 20000 cases): an entry whose container id
/// starts with '.' got a file name starting with '.', which the daemon's drain takes for an
/// interrupted write. (kuryr-cni never queues such an id: it validates CNI_CONTAINERID; the
/// name must hold for any entry all the same.)
#[test]
fn queue_file_names_never_look_temporary() {
    for cid in ["..", ".x", "."] {
        let name = kuryr_cni_api::queue_file_name(cid, "eth0");
        assert!(
            kuryr_cni_api::is_queue_file_name(&name),
            "{cid:?} -> {name:?}"
        );
    }
    assert_eq!(
        kuryr_cni_api::queue_file_name("..", "eth0"),
        "%2E.@eth0.json"
    );
    assert_eq!(kuryr_cni_api::queue_file_name("c1", "eth0"), "c1@eth0.json");
}
