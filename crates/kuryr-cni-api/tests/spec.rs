//! Error JSON, error codes, verbs x versions, VERSION answers, network config parsing,
//! CNI_ARGS and name validation.

use kuryr_cni_api::{
    codes, validate_container_id, validate_ifname, validate_network_name, CniArgs, CniCommand,
    CniError, CniVersion, NetConf, VersionInfo, SUPPORTED_VERSIONS,
};
use serde_json::json;

#[test]
fn error_codes_have_the_spec_values() {
    let table = [
        (codes::INCOMPATIBLE_CNI_VERSION, 1),
        (codes::UNSUPPORTED_FIELD, 2),
        (codes::UNKNOWN_CONTAINER, 3),
        (codes::INVALID_ENVIRONMENT_VARIABLES, 4),
        (codes::IO_FAILURE, 5),
        (codes::DECODING_FAILURE, 6),
        (codes::INVALID_NETWORK_CONFIG, 7),
        (codes::TRY_AGAIN_LATER, 11),
        (codes::PLUGIN_NOT_AVAILABLE, 50),
        (codes::PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY, 51),
        (codes::KURYR_DAEMON_BAD_RESPONSE, 100),
        (codes::KURYR_DAEMON_HTTP_ERROR, 101),
        (codes::KURYR_INVALID_RESULT, 102),
        (codes::INTERNAL, 999),
    ];
    for (got, want) in table {
        assert_eq!(got, want);
    }
}

#[test]
fn error_json_in_every_version() {
    for version in CniVersion::ALL {
        let e = CniError::new(
            7,
            "Invalid Configuration",
            "Network 192.168.0.0/31 too small",
        )
        .with_version(version.as_str());
        assert_eq!(
            e.to_json(),
            format!(
                r#"{{"cniVersion":"{version}","code":7,"msg":"Invalid Configuration","details":"Network 192.168.0.0/31 too small"}}"#
            )
        );
        // Empty details are omitted, like libcni's omitempty.
        let e = CniError::new(11, "try later", "").with_version(version.as_str());
        assert_eq!(
            e.to_json(),
            format!(r#"{{"cniVersion":"{version}","code":11,"msg":"try later"}}"#)
        );
    }
    // Without a version (as the daemon may send it).
    assert_eq!(
        CniError::new(3, "gone", "").to_json(),
        r#"{"code":3,"msg":"gone"}"#
    );
    // Strings are escaped.
    assert_eq!(
        CniError::new(5, "a \"quoted\"\nline", "").to_json(),
        r#"{"code":5,"msg":"a \"quoted\"\nline"}"#
    );
}

#[test]
fn daemon_error_bodies() {
    type Expected<'a> = Option<(u32, &'a str, &'a str)>;
    let table: Vec<(&[u8], Expected)> = vec![
        (
            br#"{"code":11,"msg":"port not ready","details":"pod ns/p"}"#,
            Some((11, "port not ready", "pod ns/p")),
        ),
        (
            br#"{"cniVersion":"1.0.0","code":3,"msg":"gone"}"#,
            Some((3, "gone", "")),
        ),
        (br#"{"code":0,"msg":"not an error"}"#, None),
        (br#"{"code":"11","msg":"string code"}"#, None),
        (br#"{"msg":"no code"}"#, None),
        (br#"{"code":11}"#, None),
        (b"Internal Server Error", None),
        (b"", None),
    ];
    for (body, want) in table {
        let got = CniError::from_body(body).map(|e| (e.code, e.msg.clone(), e.details.clone()));
        let want = want.map(|(c, m, d)| (c, m.to_owned(), d.to_owned()));
        assert_eq!(got, want, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn suggested_http_statuses() {
    for (code, status) in [
        (1, 400),
        (2, 400),
        (3, 404),
        (4, 400),
        (5, 500),
        (6, 400),
        (7, 400),
        (11, 503),
        (50, 503),
        (51, 503),
        (100, 500),
        (999, 500),
    ] {
        assert_eq!(
            CniError::new(code, "", "").suggested_http_status(),
            status,
            "code {code}"
        );
    }
}

/// Every verb against every version string: which are accepted, and the error otherwise.
#[test]
fn verbs_by_versions() {
    let versions = [
        "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "1.2.0", "1.1", "", "v1.0.0",
    ];
    // expected[verb] = versions accepted
    let accepted = |cmd: CniCommand| -> &'static [&'static str] {
        match cmd {
            CniCommand::Add | CniCommand::Del | CniCommand::Version => {
                &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
            }
            CniCommand::Check => &["0.4.0", "1.0.0", "1.1.0"],
            CniCommand::Gc | CniCommand::Status => &["1.1.0"],
        }
    };
    for cmd in CniCommand::ALL {
        for v in versions {
            match cmd.check_version(v) {
                Ok(parsed) => {
                    assert!(accepted(cmd).contains(&v), "{cmd} {v} should be rejected");
                    assert_eq!(parsed.as_str(), v);
                }
                Err(e) => {
                    assert!(
                        !accepted(cmd).contains(&v),
                        "{cmd} {v} should be accepted: {e}"
                    );
                    assert_eq!(e.code, codes::INCOMPATIBLE_CNI_VERSION, "{cmd} {v}");
                    if CniVersion::parse(v).is_some() {
                        assert_eq!(e.msg, format!("config version does not allow {cmd}"));
                    } else {
                        assert_eq!(e.msg, "incompatible CNI versions");
                        assert!(e.details.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"));
                    }
                }
            }
        }
    }
}

#[test]
fn verbs_parse_and_required_env() {
    let table = [
        (
            "ADD",
            Some(CniCommand::Add),
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"][..],
        ),
        (
            "DEL",
            Some(CniCommand::Del),
            &["CNI_CONTAINERID", "CNI_IFNAME"][..],
        ),
        (
            "CHECK",
            Some(CniCommand::Check),
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"][..],
        ),
        ("GC", Some(CniCommand::Gc), &["CNI_PATH"][..]),
        ("STATUS", Some(CniCommand::Status), &[][..]),
        ("VERSION", Some(CniCommand::Version), &[][..]),
        ("add", None, &[][..]),
        ("DELETE", None, &[][..]),
        (" ADD", None, &[][..]),
    ];
    for (s, want, env) in table {
        assert_eq!(CniCommand::parse(s), want, "{s:?}");
        if let Some(cmd) = want {
            assert_eq!(cmd.required_env(), env, "{s}");
            assert_eq!(cmd.as_str(), s);
            assert_eq!(serde_json::to_string(&cmd).unwrap(), format!("\"{s}\""));
        } else {
            let e = CniCommand::from_env_value(Some(s)).unwrap_err();
            assert_eq!(
                (e.code, e.msg.as_str()),
                (4, format!("unknown CNI_COMMAND: {s}").as_str())
            );
        }
    }
    for missing in [None, Some("")] {
        let e = CniCommand::from_env_value(missing).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "required env variables [CNI_COMMAND] missing")
        );
    }
}

#[test]
fn version_answers() {
    let supported = r#"["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]"#;
    let table = [
        (r#"{"cniVersion":"0.3.0"}"#, "0.3.0"),
        (r#"{"cniVersion":"0.3.1"}"#, "0.3.1"),
        (r#"{"cniVersion":"0.4.0"}"#, "0.4.0"),
        (r#"{"cniVersion":"1.0.0"}"#, "1.0.0"),
        (r#"{"cniVersion":"1.1.0"}"#, "1.1.0"),
        (r#"{"cniVersion":"0.2.0"}"#, "0.2.0"),
        (
            r#"{"cniVersion":"1.0.0","name":"x","type":"kuryr-cni"}"#,
            "1.0.0",
        ),
        ("", "1.1.0"),
        ("not json", "1.1.0"),
        (r#"{"cniVersion":""}"#, "1.1.0"),
        (r#"{"cniVersion":1}"#, "1.1.0"),
        ("{}", "1.1.0"),
    ];
    for (stdin, echoed) in table {
        assert_eq!(
            VersionInfo::for_stdin(stdin.as_bytes()).to_json(),
            format!(r#"{{"cniVersion":"{echoed}","supportedVersions":{supported}}}"#),
            "stdin {stdin:?}"
        );
    }
    assert_eq!(
        SUPPORTED_VERSIONS.to_vec(),
        CniVersion::ALL.map(CniVersion::as_str).to_vec()
    );
}

#[test]
fn netconf_defaults_and_extra_fields() {
    let stdin = br#"{"bridge":"cnitest0","capabilities":{"portMappings":true},"cniVersion":"1.0.0","ipam":{"type":"host-local"},"name":"kuryr","runtimeConfig":{"io.kubernetes.cri.pod-annotations":null},"type":"kuryr-cni"}"#;
    let (conf, raw) = NetConf::parse(stdin).unwrap();
    assert_eq!(conf.cni_version, "1.0.0");
    assert_eq!(conf.name, "kuryr");
    assert_eq!(conf.plugin_type, "kuryr-cni");
    assert_eq!(conf.daemon_socket, "/run/kuryr/kuryr-daemon.sock");
    assert_eq!(conf.timeout_seconds, 120.0);
    assert_eq!(conf.status_timeout_seconds, 10.0);
    assert!(!conf.debug);
    assert_eq!(conf.log_file, None);
    assert_eq!(conf.del_queue_dir, "/var/lib/kuryr/del-queue");
    assert_eq!(conf.prev_result, None);
    let mut extra_keys: Vec<&str> = conf.extra.keys().map(String::as_str).collect();
    extra_keys.sort_unstable();
    assert_eq!(
        extra_keys,
        ["bridge", "capabilities", "ipam", "runtimeConfig"]
    );
    assert_eq!(
        raw,
        serde_json::from_slice::<serde_json::Value>(stdin).unwrap()
    );
    assert_eq!(conf.timeout_for(CniCommand::Add).as_secs(), 120);
    assert_eq!(conf.timeout_for(CniCommand::Status).as_secs(), 10);

    let (conf, _) = NetConf::parse(
        br#"{"cniVersion":"0.4.0","name":"k","type":"kuryr-cni","daemon_socket":"/tmp/d.sock","timeout_seconds":0.5,
             "status_timeout_seconds":2,"debug":true,"log_file":"/tmp/l","del_queue_dir":"/tmp/q","prevResult":{"ips":[]}}"#,
    )
    .unwrap();
    assert_eq!(
        (
            conf.daemon_socket.as_str(),
            conf.timeout_seconds,
            conf.status_timeout_seconds,
            conf.debug
        ),
        ("/tmp/d.sock", 0.5, 2.0, true)
    );
    assert_eq!(
        (conf.log_file.as_deref(), conf.del_queue_dir.as_str()),
        (Some("/tmp/l"), "/tmp/q")
    );
    assert_eq!(conf.prev_result, Some(json!({"ips": []})));
    assert_eq!(conf.timeout_for(CniCommand::Del).as_millis(), 500);
}

#[test]
fn netconf_errors() {
    let table: Vec<(&str, u32, &str)> = vec![
        ("", 6, "error decoding network config"),
        ("{", 6, "error decoding network config"),
        ("{\"cniVersion\":\"1.0.0\",}", 6, "error decoding"),
        ("{} trailing", 6, "error decoding"),
        ("[]", 6, "not a JSON object"),
        ("null", 6, "not a JSON object"),
        ("\"str\"", 6, "not a JSON object"),
        (r#"{"name":"n","type":"t"}"#, 7, "missing cniVersion"),
        (r#"{"cniVersion":"1.0.0","type":"t"}"#, 7, "missing name"),
        (r#"{"cniVersion":"1.0.0","name":"n"}"#, 7, "missing type"),
        (
            r#"{"cniVersion":null,"name":"n","type":"t"}"#,
            7,
            "missing cniVersion",
        ),
        (
            r#"{"cniVersion":"","name":"n","type":"t"}"#,
            7,
            "empty cniVersion",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"","type":"t"}"#,
            7,
            "empty name",
        ),
        (
            r#"{"cniVersion":1.0,"name":"n","type":"t"}"#,
            7,
            "cniVersion in network config must be a string",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":["n"],"type":"t"}"#,
            7,
            "name in network config must be a string",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"-n","type":"t"}"#,
            7,
            "invalid characters found in network name",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"a b","type":"t"}"#,
            7,
            "invalid characters found in network name",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","timeout_seconds":"60"}"#,
            7,
            "invalid network config",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","timeout_seconds":0}"#,
            7,
            "invalid timeout_seconds",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","timeout_seconds":-1}"#,
            7,
            "invalid timeout_seconds",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","timeout_seconds":1e300}"#,
            7,
            "invalid timeout_seconds",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","status_timeout_seconds":0}"#,
            7,
            "invalid status_timeout_seconds",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","debug":"yes"}"#,
            7,
            "invalid network config",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","daemon_socket":""}"#,
            7,
            "empty daemon_socket",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","del_queue_dir":""}"#,
            7,
            "empty del_queue_dir",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","log_file":5}"#,
            7,
            "invalid network config",
        ),
    ];
    for (stdin, code, msg) in table {
        let e = NetConf::parse(stdin.as_bytes()).expect_err(stdin);
        assert_eq!(e.code, code, "{stdin}: {e}");
        assert!(
            e.msg.contains(msg) || e.details.contains(msg),
            "{stdin}: {e} should contain {msg:?}"
        );
    }
    // An unsupported version is not a config error: it is code 1, per verb.
    let (conf, _) = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#).unwrap();
    assert_eq!(
        CniCommand::Add
            .check_version(&conf.cni_version)
            .unwrap_err()
            .code,
        1
    );
}

#[test]
fn cni_args_table() {
    struct Want {
        ns: Option<&'static str>,
        name: Option<&'static str>,
        uid: Option<&'static str>,
        infra: Option<&'static str>,
        ignore: bool,
        other: &'static [(&'static str, &'static str)],
    }
    let none = Want {
        ns: None,
        name: None,
        uid: None,
        infra: None,
        ignore: false,
        other: &[],
    };
    let ok: Vec<(&str, Want)> = vec![
        ("", Want { ..none }),
        // containerd CRI (order is random: Go map iteration)
        (
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=cnitest;K8S_POD_NAME=pod-a;K8S_POD_INFRA_CONTAINER_ID=90c45da12e2d;K8S_POD_UID=uid-pod-a",
            Want { ns: Some("cnitest"), name: Some("pod-a"), uid: Some("uid-pod-a"), infra: Some("90c45da12e2d"), ignore: true, other: &[] },
        ),
        (
            "K8S_POD_UID=u;K8S_POD_NAME=p;IgnoreUnknown=true;K8S_POD_NAMESPACE=n",
            Want { ns: Some("n"), name: Some("p"), uid: Some("u"), ignore: true, ..none },
        ),
        // podman
        ("IgnoreUnknown=1;K8S_POD_NAME=p1", Want { name: Some("p1"), ignore: true, ..none }),
        // unknown keys are tolerated even without IgnoreUnknown
        ("FOO=bar;K8S_POD_NAME=p", Want { name: Some("p"), other: &[("FOO", "bar")], ..none }),
        ("IgnoreUnknown=0;A=1;B=2;A=3", Want { other: &[("A", "3"), ("B", "2")], ..none }),
        ("IgnoreUnknown=FALSE", Want { ..none }),
        ("IgnoreUnknown=True", Want { ignore: true, ..none }),
        ("K8S_POD_NAME=", Want { name: Some(""), ..none }),
        ("k8s_pod_name=lower", Want { other: &[("k8s_pod_name", "lower")], ..none }),
        ("K8S_POD_NAME=a;K8S_POD_NAME=b", Want { name: Some("b"), ..none }),
    ];
    for (s, w) in ok {
        let a = CniArgs::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(a.k8s_pod_namespace.as_deref(), w.ns, "{s}");
        assert_eq!(a.k8s_pod_name.as_deref(), w.name, "{s}");
        assert_eq!(a.k8s_pod_uid.as_deref(), w.uid, "{s}");
        assert_eq!(a.k8s_pod_infra_container_id.as_deref(), w.infra, "{s}");
        assert_eq!(a.ignore_unknown, w.ignore, "{s}");
        let other: Vec<(&str, &str)> = a
            .other
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(other, w.other, "{s}");
        for (k, v) in w.other {
            assert_eq!(a.get(k), Some(*v));
        }
        assert_eq!(a.get("K8S_POD_NAME"), w.name);
    }
    let bad = [
        "A",
        "A=B=C",
        "A=B;",
        ";A=B",
        "A=B;;C=D",
        "=v",
        "IgnoreUnknown=yes",
        "IgnoreUnknown=",
        " ",
        "A=1;B",
    ];
    for s in bad {
        let e = CniArgs::parse(s).expect_err(s);
        assert_eq!(e.code, codes::INVALID_ENVIRONMENT_VARIABLES, "{s}");
        assert_eq!(e.msg, "invalid CNI_ARGS", "{s}");
    }
    let a: CniArgs = "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p".parse().unwrap();
    assert_eq!(a.pod(), Some(("ns", "p")));
    assert_eq!(CniArgs::parse("K8S_POD_NAME=p").unwrap().pod(), None);
}

#[test]
fn container_id_table() {
    let good = [
        "a",
        "0",
        "default-c1",
        "775cd3138186aa00ff",
        "A_b.c-D",
        "x.",
        "a--_..b",
    ];
    for id in good {
        validate_container_id(id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
    }
    let bad = [
        "", "-abc", "_a", ".a", "a b", "a/b", "a@b", "a:b", "é", "a\n", "a;b",
    ];
    for id in bad {
        assert_eq!(validate_container_id(id).unwrap_err().code, 4, "{id:?}");
    }
}

#[test]
fn ifname_table() {
    let good = [
        "eth0",
        "e",
        "net1",
        "123456789012345",
        "a.b",
        "a-b_c",
        "x@y",
        "é",
    ];
    for n in good {
        validate_ifname(n).unwrap_or_else(|e| panic!("{n:?}: {e}"));
    }
    let bad = [
        ("", "missing"),
        ("1234567890123456", "too long"),
        ("éééééééé", "too long"), // 16 bytes
        (".", ". or .."),
        ("..", ". or .."),
        ("eth/0", "contains"),
        ("eth:0", "contains"),
        ("eth 0", "contains"),
        ("eth\t0", "contains"),
        ("eth\n", "contains"),
        ("eth\u{a0}0", "contains"),
    ];
    for (n, msg) in bad {
        let e = validate_ifname(n).expect_err(n);
        assert_eq!(e.code, 4, "{n:?}");
        assert!(e.msg.contains(msg), "{n:?}: {e}");
    }
}

#[test]
fn network_name_table() {
    for n in ["kuryr", "k8s-pod-network", "a.b_c"] {
        validate_network_name(n).unwrap();
    }
    for n in ["", "-k", "a b", "a/b"] {
        assert_eq!(validate_network_name(n).unwrap_err().code, 7, "{n:?}");
    }
}
