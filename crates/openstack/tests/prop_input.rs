//! OpenStack answers and clouds.yaml never panic kuryr-rs (issue 15): every Neutron,
//! Octavia and Keystone response body it decodes, the error message of a failed call, and
//! every cloud of a clouds.yaml. Cases are the committed seed corpora of the cargo-fuzz
//! targets `openstack_response` and `clouds_yaml` (`fuzz/corpus/`), mutated. Long run:
//! `PROPTEST_CASES=50000 cargo test -p kuryr-openstack --test prop_input`.

use kuryr_openstack::fuzzing;
use kuryr_openstack::CloudsFile;
use kuryr_test_support::arb;
use proptest::prelude::*;
use serde_json::Value;

fn body_seeds() -> Vec<Value> {
    arb::corpus("openstack_response", 15)
        .into_iter()
        .filter_map(|(_, d)| serde_json::from_slice(&d).ok())
        .collect()
}

fn clouds_seeds() -> Vec<String> {
    arb::corpus("clouds_yaml", 2)
        .into_iter()
        .map(|(_, d)| String::from_utf8(d).expect("utf-8"))
        .collect()
}

fn clouds_words() -> Vec<String> {
    [
        "clouds",
        "auth",
        "auth_type",
        "auth_url",
        "password",
        "v3applicationcredential",
        "application_credential_id",
        "application_credential_secret",
        "username",
        "project_name",
        "project_id",
        "user_domain_name",
        "project_domain_id",
        "region_name",
        "interface",
        "internal",
        "admin",
        "public",
        "cacert",
        "verify",
        "insecure",
        "api_timeout",
        "1e300",
        "-1",
        "0",
        ".nan",
        ".inf",
        "2.5",
        "true",
        "no",
        "~",
        "&a x",
        "*a",
        "[1, 2]",
        "{a: b}",
        "!!binary aGVsbG8=",
        "network_endpoint_override",
        "http://[::1]:9696",
        "not a url",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn seeds_read() {
    for (name, data) in arb::corpus("clouds_yaml", 2) {
        let f = CloudsFile::parse(&String::from_utf8(data).expect("utf-8"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let names: Vec<String> = f.names().map(str::to_owned).collect();
        assert!(!names.is_empty(), "{name}");
        for n in names {
            f.cloud(&n)
                .unwrap_or_else(|e| panic!("{name} cloud {n}: {e}"));
        }
    }
    assert!(body_seeds().len() >= 15);
}

proptest! {
    #![proptest_config(arb::config(500))]

    #[test]
    fn prop_response_body(bytes in arb::json_bytes(body_seeds())) {
        fuzzing::response_body(&bytes);
    }

    #[test]
    fn prop_clouds_yaml(text in prop_oneof![
        6 => arb::text_mutated(clouds_seeds(), clouds_words()),
        1 => arb::tricky_string(),
    ]) {
        fuzzing::clouds_yaml(&text);
    }
}

/// Regression (found while writing the clouds.yaml property): a huge `api_timeout` (finite,
/// positive) panicked in `Duration::from_secs_f64`; it must be a configuration error.
#[test]
fn huge_api_timeout_is_an_error() {
    for t in ["1e300", "1.8e19"] {
        let text = format!(
            "clouds:\n  c:\n    auth: {{auth_url: 'http://127.0.0.1:5000/v3', username: u, password: p}}\n    api_timeout: {t}\n"
        );
        let f = CloudsFile::parse(&text).expect("yaml");
        let e = f.cloud("c").expect_err("huge api_timeout");
        assert!(e.to_string().contains("api_timeout"), "{e}");
    }
}
