//! prevResult parsing for every supported version, and the failure cases.

use kuryr_cni_api::{codes, CniResult};
use serde_json::{json, Value};

/// (name, config cniVersion, prevResult, expected internal form as JSON)
fn ok_cases() -> Vec<(&'static str, &'static str, Value, Value)> {
    let v4_eth0 = json!({
        "interfaces": [{"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}],
        "ips": [{"interface": 0, "address": "10.0.0.5/32", "gateway": "10.0.0.1"}],
        "dns": {"nameservers": ["10.1.0.1"]}
    });
    let spec_04x = |v: &str| {
        json!({
            "cniVersion": v,
            "interfaces": [{"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.0.0.5/32", "gateway": "10.0.0.1"}],
            "dns": {"nameservers": ["10.1.0.1"]}
        })
    };
    vec![
        ("0.3.0", "0.3.0", spec_04x("0.3.0"), v4_eth0.clone()),
        ("0.3.1", "0.3.1", spec_04x("0.3.1"), v4_eth0.clone()),
        ("0.4.0", "0.4.0", spec_04x("0.4.0"), v4_eth0.clone()),
        (
            "0.4.0 without cniVersion uses the config's",
            "0.4.0",
            {
                let mut v = spec_04x("x");
                v.as_object_mut().unwrap().remove("cniVersion");
                v
            },
            v4_eth0.clone(),
        ),
        (
            "0.4.0 ipv6 and routes",
            "0.4.0",
            json!({"cniVersion": "0.4.0",
                   "ips": [{"version": "6", "address": "fd00::5/64", "gateway": "fd00::1"}],
                   "routes": [{"dst": "::/0", "gw": "fd00::1"}, {"dst": "fd01::/64"}]}),
            json!({"ips": [{"address": "fd00::5/64", "gateway": "fd00::1"}],
                   "routes": [{"dst": "::/0", "gw": "fd00::1"}, {"dst": "fd01::/64"}]}),
        ),
        (
            // What Debian's bridge 1.1.1 + host-local returned under ctr (harness sample).
            "1.0.0 bridge with empty dns",
            "1.0.0",
            json!({"cniVersion": "1.0.0",
                   "interfaces": [{"name": "cnitest0", "mac": "76:55:95:a3:16:34"},
                                  {"name": "vethca13a29c", "mac": "76:55:95:a3:16:34"},
                                  {"name": "eth0", "mac": "da:72:2d:04:31:c3", "sandbox": "/proc/3044/ns/net"}],
                   "ips": [{"interface": 2, "address": "10.123.45.21/24", "gateway": "10.123.45.1"}],
                   "dns": {}}),
            json!({"interfaces": [{"name": "cnitest0", "mac": "76:55:95:a3:16:34"},
                                  {"name": "vethca13a29c", "mac": "76:55:95:a3:16:34"},
                                  {"name": "eth0", "mac": "da:72:2d:04:31:c3", "sandbox": "/proc/3044/ns/net"}],
                   "ips": [{"interface": 2, "address": "10.123.45.21/24", "gateway": "10.123.45.1"}]}),
        ),
        (
            "1.0.0 with a stray ips[].version is tolerated",
            "1.0.0",
            json!({"cniVersion": "1.0.0", "ips": [{"version": "4", "address": "10.0.0.5/32"}]}),
            json!({"ips": [{"address": "10.0.0.5/32"}]}),
        ),
        (
            "1.1.0 with all new fields",
            "1.1.0",
            json!({"cniVersion": "1.1.0",
                   "interfaces": [{"name": "eth0", "mac": "fa:16:3e:aa:bb:cc", "mtu": 1450, "sandbox": "/run/netns/x",
                                   "socketPath": "/run/vhu/s", "pciID": "0000:00:1f.0"}],
                   "ips": [{"interface": 0, "address": "10.0.0.5/24"}],
                   "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400, "advmss": 1360,
                               "priority": 10, "table": 100, "scope": 0}],
                   "dns": {"nameservers": ["10.0.0.2"], "domain": "d", "search": ["s"], "options": ["o"]}}),
            json!({"interfaces": [{"name": "eth0", "mac": "fa:16:3e:aa:bb:cc", "mtu": 1450, "sandbox": "/run/netns/x",
                                   "socketPath": "/run/vhu/s", "pciID": "0000:00:1f.0"}],
                   "ips": [{"interface": 0, "address": "10.0.0.5/24"}],
                   "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400, "advmss": 1360,
                               "priority": 10, "table": 100, "scope": 0}],
                   "dns": {"nameservers": ["10.0.0.2"], "domain": "d", "search": ["s"], "options": ["o"]}}),
        ),
        (
            "libcni omitempty zeros and empty strings read as unset",
            "1.1.0",
            json!({"cniVersion": "1.1.0",
                   "interfaces": [{"name": "eth0", "mac": "", "mtu": 0, "sandbox": ""}],
                   "ips": [{"address": "10.0.0.5/24", "gateway": ""}],
                   "routes": [{"dst": "0.0.0.0/0", "gw": "", "mtu": 0, "advmss": 0, "priority": 0, "table": 0}],
                   "dns": {"domain": "", "nameservers": null}}),
            json!({"interfaces": [{"name": "eth0"}],
                   "ips": [{"address": "10.0.0.5/24"}],
                   "routes": [{"dst": "0.0.0.0/0", "table": 0}]}),
        ),
        ("empty object", "1.0.0", json!({}), json!({})),
        (
            "null lists",
            "1.0.0",
            json!({"cniVersion": "1.0.0", "interfaces": null, "ips": null, "routes": null, "dns": null}),
            json!({}),
        ),
        (
            "unknown keys are ignored",
            "1.0.0",
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/32", "x": 1}], "extra": {"a": 1}}),
            json!({"ips": [{"address": "10.0.0.5/32"}]}),
        ),
    ]
}

#[test]
fn parses_prev_results_of_every_version() {
    for (name, conf_version, prev, expected) in ok_cases() {
        let parsed = CniResult::from_prev_result(&prev, conf_version)
            .unwrap_or_else(|e| panic!("{name}: unexpected error {e}"));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), expected, "{name}");
    }
}

#[test]
fn rejects_bad_prev_results() {
    // (name, config cniVersion, prevResult, expected code, text in msg or details)
    let cases: Vec<(&str, &str, Value, u32, &str)> = vec![
        (
            "not an object",
            "1.0.0",
            json!([1]),
            codes::DECODING_FAILURE,
            "not a JSON object",
        ),
        (
            "string",
            "1.0.0",
            json!("x"),
            codes::DECODING_FAILURE,
            "not a JSON object",
        ),
        (
            "0.2.0 version",
            "1.0.0",
            json!({"cniVersion": "0.2.0"}),
            codes::INCOMPATIBLE_CNI_VERSION,
            "0.2.0",
        ),
        (
            "unknown version",
            "1.0.0",
            json!({"cniVersion": "2.0.0"}),
            codes::INCOMPATIBLE_CNI_VERSION,
            "2.0.0",
        ),
        (
            "no version anywhere",
            "",
            json!({}),
            codes::INCOMPATIBLE_CNI_VERSION,
            "plugin supports",
        ),
        (
            "numeric version",
            "1.0.0",
            json!({"cniVersion": 1}),
            codes::DECODING_FAILURE,
            "must be a string",
        ),
        (
            "0.2.0 shape",
            "0.4.0",
            json!({"cniVersion": "0.4.0", "ip4": {"ip": "10.0.0.5/24"}}),
            codes::DECODING_FAILURE,
            "0.2.0 result shape",
        ),
        (
            "version/family mismatch",
            "0.4.0",
            json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "fd00::5/64"}]}),
            codes::DECODING_FAILURE,
            "does not match",
        ),
        (
            "bad version value",
            "0.3.1",
            json!({"cniVersion": "0.3.1", "ips": [{"version": "5", "address": "10.0.0.5/24"}]}),
            codes::DECODING_FAILURE,
            "is not \"4\" or \"6\"",
        ),
        (
            "bad cidr",
            "1.0.0",
            json!({"ips": [{"address": "10.0.0.5"}]}),
            codes::DECODING_FAILURE,
            "is not a CIDR",
        ),
        (
            "missing address",
            "1.0.0",
            json!({"ips": [{"gateway": "10.0.0.1"}]}),
            codes::DECODING_FAILURE,
            "address",
        ),
        (
            "index out of range",
            "1.0.0",
            json!({"interfaces": [{"name": "eth0"}], "ips": [{"interface": 1, "address": "10.0.0.5/24"}]}),
            codes::DECODING_FAILURE,
            "out of range",
        ),
        (
            "negative index",
            "1.0.0",
            json!({"interfaces": [{"name": "eth0"}], "ips": [{"interface": -1, "address": "10.0.0.5/24"}]}),
            codes::DECODING_FAILURE,
            "invalid value",
        ),
        (
            "interfaces not a list",
            "1.0.0",
            json!({"interfaces": {"name": "eth0"}}),
            codes::DECODING_FAILURE,
            "invalid type",
        ),
        (
            "route without dst",
            "1.0.0",
            json!({"routes": [{"gw": "10.0.0.1"}]}),
            codes::DECODING_FAILURE,
            "dst",
        ),
    ];
    for (name, conf_version, prev, code, text) in cases {
        let err = CniResult::from_prev_result(&prev, conf_version).expect_err(name);
        assert_eq!(err.code, code, "{name}: {err}");
        assert!(
            err.msg.contains(text) || err.details.contains(text),
            "{name}: {err} should mention {text:?}"
        );
    }
}
