//! Invalid environments and configs: exit 1 with the spec's error code on stdout.

mod common;

use common::{attachment_env, conf, run, TempDir};

/// A config whose socket does not exist: input that passes validation ends in code 11.
fn unreachable_conf(dir: &TempDir, version: &str) -> String {
    conf(version, &dir.join("missing.sock"), &dir.join("queue"), "")
}

#[test]
fn missing_or_unknown_cni_command_is_code_4() {
    let dir = TempDir::new("cmd");
    let c = unreachable_conf(&dir, "1.0.0");
    for (value, msg) in [
        (None, "required env variables [CNI_COMMAND] missing"),
        (Some(""), "required env variables [CNI_COMMAND] missing"),
        (Some("add"), "unknown CNI_COMMAND: add"),
        (Some("DELETE"), "unknown CNI_COMMAND: DELETE"),
        (Some("INIT"), "unknown CNI_COMMAND: INIT"),
    ] {
        let mut env = attachment_env("ADD", "/run/netns/x");
        env.retain(|(k, _)| *k != "CNI_COMMAND");
        if let Some(v) = value {
            env.push(("CNI_COMMAND", v));
        }
        let r = run(&env, &c);
        let v = r.expect_error(4);
        assert_eq!(v["msg"], msg, "{value:?}");
        assert_eq!(
            v["cniVersion"], "1.1.0",
            "config not read yet: latest version"
        );
    }
}

#[test]
fn missing_required_variables_are_code_4_and_named() {
    let dir = TempDir::new("missing");
    let c = unreachable_conf(&dir, "1.1.0");
    let cases: Vec<(&str, &[&str], &str)> = vec![
        (
            "ADD",
            &["CNI_NETNS"],
            "required env variables [CNI_NETNS] missing",
        ),
        (
            "ADD",
            &["CNI_CONTAINERID"],
            "required env variables [CNI_CONTAINERID] missing",
        ),
        (
            "ADD",
            &["CNI_IFNAME"],
            "required env variables [CNI_IFNAME] missing",
        ),
        (
            "ADD",
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing",
        ),
        (
            "CHECK",
            &["CNI_NETNS"],
            "required env variables [CNI_NETNS] missing",
        ),
        (
            "DEL",
            &["CNI_CONTAINERID"],
            "required env variables [CNI_CONTAINERID] missing",
        ),
        (
            "DEL",
            &["CNI_IFNAME"],
            "required env variables [CNI_IFNAME] missing",
        ),
        (
            "GC",
            &["CNI_PATH"],
            "required env variables [CNI_PATH] missing",
        ),
    ];
    for (cmd, unset, msg) in cases {
        let mut env = attachment_env(cmd, "/run/netns/x");
        env.retain(|(k, _)| !unset.contains(k));
        let v = run(&env, &c).expect_error(4);
        assert_eq!(v["msg"], msg, "{cmd} without {unset:?}");
    }
    // Set-but-empty counts as missing.
    let mut env = attachment_env("ADD", "");
    env.retain(|(k, _)| *k != "CNI_IFNAME");
    env.push(("CNI_IFNAME", ""));
    let v = run(&env, &c).expect_error(4);
    assert_eq!(
        v["msg"],
        "required env variables [CNI_NETNS,CNI_IFNAME] missing"
    );
}

#[test]
fn bad_container_id_is_code_4() {
    let dir = TempDir::new("cid");
    let c = unreachable_conf(&dir, "1.0.0");
    for cid in ["-abc", "_abc", "a b", "abc/def", "ab@c", "ab:c", "é1"] {
        for cmd in ["ADD", "DEL", "CHECK"] {
            let mut env = attachment_env(cmd, "/run/netns/x");
            env.retain(|(k, _)| *k != "CNI_CONTAINERID");
            env.push(("CNI_CONTAINERID", cid));
            let v = run(&env, &c).expect_error(4);
            assert!(
                v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
                "{cmd} {cid:?}: {v}"
            );
        }
    }
}

#[test]
fn bad_ifname_is_code_4() {
    let dir = TempDir::new("ifname");
    let c = unreachable_conf(&dir, "1.0.0");
    for ifname in [
        "1234567890123456",
        ".",
        "..",
        "eth/0",
        "eth:0",
        "eth 0",
        "eth\t0",
        "eth0\n",
    ] {
        let mut env = attachment_env("ADD", "/run/netns/x");
        env.retain(|(k, _)| *k != "CNI_IFNAME");
        env.push(("CNI_IFNAME", ifname));
        let v = run(&env, &c).expect_error(4);
        assert!(
            v["msg"].as_str().unwrap().contains("CNI_IFNAME"),
            "{ifname:?}: {v}"
        );
    }
    // The longest valid name passes validation (and then fails to reach the daemon).
    let mut env = attachment_env("ADD", "/run/netns/x");
    env.retain(|(k, _)| *k != "CNI_IFNAME");
    env.push(("CNI_IFNAME", "123456789012345"));
    run(&env, &c).expect_error(11);
}

#[test]
fn malformed_cni_args_are_code_4_and_unknown_keys_are_fine() {
    let dir = TempDir::new("args");
    let c = unreachable_conf(&dir, "1.0.0");
    for args in ["A", "A=B=C", "K8S_POD_NAME=p;", "=x", "IgnoreUnknown=maybe"] {
        let mut env = attachment_env("ADD", "/run/netns/x");
        env.retain(|(k, _)| *k != "CNI_ARGS");
        env.push(("CNI_ARGS", args));
        let v = run(&env, &c).expect_error(4);
        assert_eq!(v["msg"], "invalid CNI_ARGS", "{args:?}");
    }
    for args in [
        "",
        "FOO=bar",
        "IgnoreUnknown=1;K8S_POD_NAME=p1;SOMETHING_NEW=1",
    ] {
        let mut env = attachment_env("ADD", "/run/netns/x");
        env.retain(|(k, _)| *k != "CNI_ARGS");
        env.push(("CNI_ARGS", args));
        run(&env, &c).expect_error(11);
    }
}

#[test]
fn unparsable_stdin_is_code_6() {
    for stdin in [
        "",
        "{",
        "{\"cniVersion\":\"1.0.0\",}",
        "[]",
        "null",
        "42",
        "\u{feff}{}",
        "{} {}",
    ] {
        for cmd in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
            let v = run(&attachment_env(cmd, "/run/netns/x"), stdin).expect_error(6);
            assert_eq!(v["cniVersion"], "1.1.0");
        }
    }
}

#[test]
fn missing_required_config_fields_are_code_7() {
    let env = attachment_env("ADD", "/run/netns/x");
    for (stdin, msg) in [
        (
            r#"{"name":"kuryr","type":"kuryr-cni"}"#,
            "missing cniVersion in network config",
        ),
        (
            r#"{"cniVersion":"1.0.0","type":"kuryr-cni"}"#,
            "missing name in network config",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"kuryr"}"#,
            "missing type in network config",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"-kuryr","type":"kuryr-cni"}"#,
            "invalid characters found in network name",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"kuryr","type":"kuryr-cni","timeout_seconds":"soon"}"#,
            "invalid network config",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"kuryr","type":"kuryr-cni","timeout_seconds":-5}"#,
            "invalid timeout_seconds in network config",
        ),
    ] {
        let v = run(&env, stdin).expect_error(7);
        assert_eq!(v["msg"], msg, "{stdin}");
    }
}

#[test]
fn unsupported_or_too_old_version_is_code_1() {
    let dir = TempDir::new("ver");
    // (command, config version)
    let cases = [
        ("ADD", "9.9.9"),
        ("ADD", "0.2.0"),
        ("ADD", "0.1.0"),
        ("ADD", "1.1"),
        ("DEL", "2.0.0"),
        ("CHECK", "0.3.1"),
        ("CHECK", "0.3.0"),
        ("GC", "1.0.0"),
        ("GC", "0.4.0"),
        ("STATUS", "1.0.0"),
        ("STATUS", "0.3.1"),
    ];
    for (cmd, version) in cases {
        let c = unreachable_conf(&dir, version);
        let r = run(&attachment_env(cmd, "/run/netns/x"), &c);
        let v = r.expect_error(1);
        // Reported in a version the caller can read: the config's if supported, else 1.1.0.
        let want = if kuryr_cni_api::CniVersion::parse(version).is_some() {
            version
        } else {
            "1.1.0"
        };
        assert_eq!(v["cniVersion"], want, "{cmd} {version}");
    }
}

#[test]
fn bad_prev_result_on_add_is_code_6() {
    let dir = TempDir::new("prev");
    let base = unreachable_conf(&dir, "1.0.0");
    for prev in [
        r#"[1]"#,
        r#"{"ips":[{"address":"10.0.0.1"}]}"#,
        r#"{"ip4":{"ip":"10.0.0.1/24"}}"#,
    ] {
        let c = format!(r#"{},"prevResult":{prev}}}"#, &base[..base.len() - 1]);
        let v = run(&attachment_env("ADD", "/run/netns/x"), &c).expect_error(6);
        assert_eq!(v["cniVersion"], "1.0.0", "{prev}");
    }
}

#[test]
fn errors_after_the_config_use_its_version() {
    let dir = TempDir::new("errver");
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let v = run(
            &attachment_env("ADD", "/run/netns/x"),
            &unreachable_conf(&dir, version),
        )
        .expect_error(11);
        assert_eq!(v["cniVersion"], version);
    }
}
