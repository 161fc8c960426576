//! Result conversion to every output version (exact JSON), and chaining.

use kuryr_cni_api::{CniResult, CniVersion, Dns, Interface, IpConfig, Route};

/// Host tap + container eth0, dual-stack, routes with 1.1.0 attributes, full DNS.
fn rich() -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: "tap1234abcd-ef".into(),
                mac: Some("fa:16:3e:00:00:01".into()),
                mtu: Some(1450),
                ..Default::default()
            },
            Interface {
                name: "eth0".into(),
                mac: Some("fa:16:3e:aa:bb:cc".into()),
                mtu: Some(1450),
                sandbox: Some("/var/run/netns/cni-1234".into()),
                socket_path: Some("/run/vhu/sock0".into()),
                pci_id: Some("0000:00:1f.0".into()),
            },
        ],
        ips: vec![
            IpConfig {
                interface: Some(1),
                address: "10.0.0.5/24".into(),
                gateway: Some("10.0.0.1".into()),
            },
            IpConfig {
                interface: Some(1),
                address: "fd00::5/64".into(),
                gateway: Some("fd00::1".into()),
            },
        ],
        routes: vec![
            Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.0.0.1".into()),
                mtu: Some(1400),
                advmss: Some(1360),
                priority: Some(100),
                table: Some(254),
                scope: Some(0),
            },
            Route {
                dst: "::/0".into(),
                gw: Some("fd00::1".into()),
                ..Default::default()
            },
            Route {
                dst: "10.96.0.0/12".into(),
                ..Default::default()
            },
        ],
        dns: Dns {
            nameservers: vec!["10.0.0.2".into()],
            domain: Some("cluster.local".into()),
            search: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        },
    }
}

/// One interface, one IPv4 address without gateway, nothing else.
fn minimal() -> CniResult {
    CniResult {
        interfaces: vec![Interface {
            name: "eth0".into(),
            sandbox: Some("/proc/42/ns/net".into()),
            ..Default::default()
        }],
        ips: vec![IpConfig {
            interface: Some(0),
            address: "192.168.1.3/32".into(),
            gateway: None,
        }],
        ..Default::default()
    }
}

const RICH_04X_TAIL: &str = r#""interfaces":[{"name":"tap1234abcd-ef","mac":"fa:16:3e:00:00:01"},{"name":"eth0","mac":"fa:16:3e:aa:bb:cc","sandbox":"/var/run/netns/cni-1234"}],"ips":[{"version":"4","interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"version":"6","interface":1,"address":"fd00::5/64","gateway":"fd00::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"},{"dst":"::/0","gw":"fd00::1"},{"dst":"10.96.0.0/12"}],"dns":{"nameservers":["10.0.0.2"],"domain":"cluster.local","search":["default.svc.cluster.local"],"options":["ndots:5"]}}"#;

#[test]
fn rich_result_in_every_version() {
    let table: Vec<(CniVersion, String)> = vec![
        (CniVersion::V0_3_0, format!(r#"{{"cniVersion":"0.3.0",{RICH_04X_TAIL}"#)),
        (CniVersion::V0_3_1, format!(r#"{{"cniVersion":"0.3.1",{RICH_04X_TAIL}"#)),
        (CniVersion::V0_4_0, format!(r#"{{"cniVersion":"0.4.0",{RICH_04X_TAIL}"#)),
        (
            CniVersion::V1_0_0,
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"tap1234abcd-ef","mac":"fa:16:3e:00:00:01"},{"name":"eth0","mac":"fa:16:3e:aa:bb:cc","sandbox":"/var/run/netns/cni-1234"}],"ips":[{"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"interface":1,"address":"fd00::5/64","gateway":"fd00::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"},{"dst":"::/0","gw":"fd00::1"},{"dst":"10.96.0.0/12"}],"dns":{"nameservers":["10.0.0.2"],"domain":"cluster.local","search":["default.svc.cluster.local"],"options":["ndots:5"]}}"#.to_owned(),
        ),
        (
            CniVersion::V1_1_0,
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"tap1234abcd-ef","mac":"fa:16:3e:00:00:01","mtu":1450},{"name":"eth0","mac":"fa:16:3e:aa:bb:cc","mtu":1450,"sandbox":"/var/run/netns/cni-1234","socketPath":"/run/vhu/sock0","pciID":"0000:00:1f.0"}],"ips":[{"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"interface":1,"address":"fd00::5/64","gateway":"fd00::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1","mtu":1400,"advmss":1360,"priority":100,"table":254,"scope":0},{"dst":"::/0","gw":"fd00::1"},{"dst":"10.96.0.0/12"}],"dns":{"nameservers":["10.0.0.2"],"domain":"cluster.local","search":["default.svc.cluster.local"],"options":["ndots:5"]}}"#.to_owned(),
        ),
    ];
    assert_eq!(
        table.len(),
        CniVersion::ALL.len(),
        "every version is covered"
    );
    let r = rich();
    r.validate().expect("fixture is valid");
    for (version, expected) in table {
        assert_eq!(
            r.to_version(version).to_json(),
            expected,
            "version {version}"
        );
    }
}

#[test]
fn minimal_result_in_every_version() {
    let table = [
        (
            CniVersion::V0_3_0,
            r#"{"cniVersion":"0.3.0","interfaces":[{"name":"eth0","sandbox":"/proc/42/ns/net"}],"ips":[{"version":"4","interface":0,"address":"192.168.1.3/32"}]}"#,
        ),
        (
            CniVersion::V0_3_1,
            r#"{"cniVersion":"0.3.1","interfaces":[{"name":"eth0","sandbox":"/proc/42/ns/net"}],"ips":[{"version":"4","interface":0,"address":"192.168.1.3/32"}]}"#,
        ),
        (
            CniVersion::V0_4_0,
            r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/proc/42/ns/net"}],"ips":[{"version":"4","interface":0,"address":"192.168.1.3/32"}]}"#,
        ),
        (
            CniVersion::V1_0_0,
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/proc/42/ns/net"}],"ips":[{"interface":0,"address":"192.168.1.3/32"}]}"#,
        ),
        (
            CniVersion::V1_1_0,
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/proc/42/ns/net"}],"ips":[{"interface":0,"address":"192.168.1.3/32"}]}"#,
        ),
    ];
    for (version, expected) in table {
        assert_eq!(
            minimal().to_version(version).to_json(),
            expected,
            "version {version}"
        );
    }
}

#[test]
fn empty_result_in_every_version() {
    for version in CniVersion::ALL {
        assert_eq!(
            CniResult::default().to_version(version).to_json(),
            format!(r#"{{"cniVersion":"{version}"}}"#)
        );
    }
}

/// Printing in version V and reading it back as a prevResult gives the same result,
/// minus the fields V does not have.
#[test]
fn round_trip_through_every_version() {
    for version in CniVersion::ALL {
        let printed = rich().to_version(version).to_json();
        let value: serde_json::Value = serde_json::from_str(&printed).unwrap();
        let back = CniResult::from_prev_result(&value, "1.1.0").unwrap();
        let mut expected = rich();
        if !version.has_v1_1_result_fields() {
            for i in &mut expected.interfaces {
                (i.mtu, i.socket_path, i.pci_id) = (None, None, None);
            }
            for r in &mut expected.routes {
                (r.mtu, r.advmss, r.priority, r.table, r.scope) = (None, None, None, None, None);
            }
        }
        assert_eq!(back, expected, "version {version}");
    }
}

#[test]
fn internal_form_is_the_1_1_0_shape_without_cni_version() {
    let json = serde_json::to_string(&minimal()).unwrap();
    assert_eq!(
        json,
        r#"{"interfaces":[{"name":"eth0","sandbox":"/proc/42/ns/net"}],"ips":[{"interface":0,"address":"192.168.1.3/32"}]}"#
    );
    // The daemon may include cniVersion; it is ignored.
    let with_version: CniResult =
        serde_json::from_str(&format!(r#"{{"cniVersion":"1.1.0",{}"#, &json[1..])).unwrap();
    assert_eq!(with_version, minimal());
}

#[test]
fn validation_table() {
    let base = minimal;
    let cases: Vec<(&str, CniResult, Option<&str>)> = vec![
        ("valid", base(), None),
        ("rich valid", rich(), None),
        (
            "empty name",
            {
                let mut r = base();
                r.interfaces[0].name.clear();
                r
            },
            Some("interfaces[0]: empty name"),
        ),
        (
            "no prefix",
            {
                let mut r = base();
                r.ips[0].address = "10.0.0.1".into();
                r
            },
            Some("ips[0]: address"),
        ),
        (
            "prefix too long v4",
            {
                let mut r = base();
                r.ips[0].address = "10.0.0.1/33".into();
                r
            },
            Some("ips[0]: address"),
        ),
        (
            "prefix too long v6",
            {
                let mut r = base();
                r.ips[0].address = "fd00::1/129".into();
                r
            },
            Some("ips[0]: address"),
        ),
        (
            "signed prefix",
            {
                let mut r = base();
                r.ips[0].address = "10.0.0.1/+8".into();
                r
            },
            Some("ips[0]: address"),
        ),
        (
            "bad ip",
            {
                let mut r = base();
                r.ips[0].address = "10.0.0.256/24".into();
                r
            },
            Some("ips[0]: address"),
        ),
        (
            "gateway not ip",
            {
                let mut r = base();
                r.ips[0].gateway = Some("gw".into());
                r
            },
            Some("ips[0]: gateway"),
        ),
        (
            "gateway family",
            {
                let mut r = base();
                r.ips[0].gateway = Some("fd00::1".into());
                r
            },
            Some("ips[0]: gateway fd00::1 is not"),
        ),
        (
            "index out of range",
            {
                let mut r = base();
                r.ips[0].interface = Some(1);
                r
            },
            Some("ips[0]: interface index 1 out of range"),
        ),
        (
            "index without interfaces",
            {
                let mut r = base();
                r.interfaces.clear();
                r
            },
            Some("out of range (0 interfaces)"),
        ),
        (
            "ipam style (no index, no interfaces)",
            {
                let mut r = base();
                r.interfaces.clear();
                r.ips[0].interface = None;
                r
            },
            None,
        ),
        (
            "route dst",
            {
                let mut r = base();
                r.routes.push(Route {
                    dst: "default".into(),
                    ..Default::default()
                });
                r
            },
            Some("routes[0]: dst"),
        ),
        (
            "route gw",
            {
                let mut r = base();
                r.routes.push(Route {
                    dst: "0.0.0.0/0".into(),
                    gw: Some("x".into()),
                    ..Default::default()
                });
                r
            },
            Some("routes[0]: gw"),
        ),
        (
            "route gw family",
            {
                let mut r = base();
                r.routes.push(Route {
                    dst: "::/0".into(),
                    gw: Some("10.0.0.1".into()),
                    ..Default::default()
                });
                r
            },
            Some("routes[0]: gw 10.0.0.1 is not"),
        ),
    ];
    for (name, result, expected) in cases {
        match (result.validate(), expected) {
            (Ok(()), None) => {}
            (Err(e), Some(want)) => {
                assert!(e.contains(want), "{name}: {e:?} should contain {want:?}")
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn chaining_appends_after_prev_result_and_shifts_indices() {
    // What the bridge plugin returns (3 interfaces, ip on index 2).
    let prev: CniResult = serde_json::from_str(
        r#"{"interfaces":[{"name":"cnitest0","mac":"be:3d:86:e8:df:62"},{"name":"vethfe6fda8b","mac":"be:3d:86:e8:df:62"},{"name":"eth0","mac":"86:68:87:7c:56:5a","sandbox":"/proc/2945/ns/net"}],
            "ips":[{"interface":2,"address":"10.123.45.20/24","gateway":"10.123.45.1"}],
            "routes":[{"dst":"10.123.0.0/16"}],
            "dns":{"nameservers":["10.123.45.1"],"search":["a.local"]}}"#,
    )
    .unwrap();
    let ours: CniResult = serde_json::from_str(
        r#"{"interfaces":[{"name":"tapx","mac":"fa:16:3e:00:00:01"},{"name":"eth1","mac":"fa:16:3e:00:00:02","sandbox":"/proc/2945/ns/net"}],
            "ips":[{"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"address":"10.0.0.6/32"}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}],
            "dns":{"nameservers":["10.0.0.2","10.123.45.1"],"domain":"cluster.local","search":["b.local"],"options":["ndots:5"]}}"#,
    )
    .unwrap();
    let merged = CniResult::chained(prev, ours);
    merged.validate().unwrap();
    assert_eq!(
        merged.to_version(CniVersion::V1_0_0).to_json(),
        r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cnitest0","mac":"be:3d:86:e8:df:62"},{"name":"vethfe6fda8b","mac":"be:3d:86:e8:df:62"},{"name":"eth0","mac":"86:68:87:7c:56:5a","sandbox":"/proc/2945/ns/net"},{"name":"tapx","mac":"fa:16:3e:00:00:01"},{"name":"eth1","mac":"fa:16:3e:00:00:02","sandbox":"/proc/2945/ns/net"}],"ips":[{"interface":2,"address":"10.123.45.20/24","gateway":"10.123.45.1"},{"interface":4,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{"address":"10.0.0.6/32"}],"routes":[{"dst":"10.123.0.0/16"},{"dst":"0.0.0.0/0","gw":"10.0.0.1"}],"dns":{"nameservers":["10.123.45.1","10.0.0.2"],"domain":"cluster.local","search":["a.local","b.local"],"options":["ndots:5"]}}"#
    );
}

#[test]
fn chaining_onto_an_empty_prev_result_is_identity() {
    assert_eq!(CniResult::chained(CniResult::default(), rich()), rich());
}
