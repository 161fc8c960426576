//! VERSION is answered locally, whatever else is in the environment.

mod common;

use common::run;

const SUPPORTED: &str = r#"["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]"#;

#[test]
fn version_for_each_version() {
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let r = run(
            &[("CNI_COMMAND", "VERSION")],
            &format!(r#"{{"cniVersion":"{version}"}}"#),
        );
        assert_eq!(r.code, 0, "{version}");
        assert_eq!(
            r.stdout,
            format!("{{\"cniVersion\":\"{version}\",\"supportedVersions\":{SUPPORTED}}}\n"),
            "{version}"
        );
        assert_eq!(r.stderr, "");
    }
}

#[test]
fn version_as_podman_probes_it() {
    // podman 4.3: CNI_CONTAINERID empty, the rest "dummy", stdin {"cniVersion":"1.0.0"}.
    let env = [
        ("CNI_COMMAND", "VERSION"),
        ("CNI_CONTAINERID", ""),
        ("CNI_NETNS", "dummy"),
        ("CNI_IFNAME", "dummy"),
        ("CNI_PATH", "dummy"),
        ("CNI_ARGS", ""),
    ];
    let r = run(&env, r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout,
        format!("{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":{SUPPORTED}}}\n")
    );
}

#[test]
fn version_with_odd_stdin() {
    for (stdin, echoed) in [
        ("", "1.1.0"),
        ("garbage", "1.1.0"),
        (r#"{"cniVersion":"0.2.0"}"#, "0.2.0"),
        ("{}", "1.1.0"),
    ] {
        let r = run(
            &[("CNI_COMMAND", "VERSION"), ("CNI_IFNAME", "bad/name")],
            stdin,
        );
        assert_eq!(r.code, 0, "{stdin:?}");
        assert_eq!(
            r.stdout,
            format!("{{\"cniVersion\":\"{echoed}\",\"supportedVersions\":{SUPPORTED}}}\n")
        );
    }
}
