//! Hostile input never hurts the shim (issue 15): whatever the environment, stdin and the
//! daemon's answer, the shim exits 0 with nothing or a JSON result, or 1 with a CNI error
//! object carrying a spec code, and never panics. Cases start from the committed corpus of the
//! cargo-fuzz target `cni_run` (`fuzz/corpus/cni_run`) with parts replaced; the long run is
//! `PROPTEST_CASES=50000 cargo test -p kuryr-cni --test prop_input` or the fuzz target
//! (README, "Fuzzing").

mod common;

use std::path::PathBuf;

use common::TempDir;
use kuryr_cni::fuzzing::{check_outcome, run_case, Case};
use kuryr_test_support::arb;
use proptest::prelude::*;
use serde_json::Value;

fn corpus() -> Vec<(String, Case)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/cni_run");
    let mut out: Vec<(String, Case)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| {
            let data = std::fs::read(e.path()).expect("read seed");
            (
                e.file_name().to_string_lossy().into_owned(),
                Case::parse(&data),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 10, "corpus too small: {}", out.len());
    out
}

/// Every seed is what its name says: the harness reaches the result printing and the error
/// paths (so the generated cases start deep in the shim, not at its first check).
#[test]
fn seeds_run_as_expected() {
    let dir = TempDir::new("seeds");
    for (name, case) in corpus() {
        let out = run_case(&case, dir.path());
        check_outcome(&out).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        let v: Value = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
        let want_exit = if name.contains("error")
            || name.contains("html")
            || name == "status"
            || name == "add-no-daemon"
        {
            1
        } else {
            0
        };
        assert_eq!(out.exit_code, want_exit, "seed {name}: {out:?}");
        if name.starts_with("add") && want_exit == 0 {
            assert!(
                v["ips"].as_array().is_some_and(|a| !a.is_empty()),
                "seed {name}: {v}"
            );
        }
    }
}

/// The case format round-trips (the property tests build cases and fuzz files hold them).
#[test]
fn case_format_round_trips() {
    for (name, case) in corpus() {
        assert_eq!(Case::parse(&case.to_bytes()), case, "seed {name}");
    }
}

const VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

#[derive(Debug, Clone)]
enum EnvChange {
    Set(usize, Vec<u8>),
    Unset(usize),
}

fn env_change() -> impl Strategy<Value = EnvChange> {
    let value = prop_oneof![
        4 => arb::tricky_string().prop_map(String::into_bytes),
        2 => prop::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "add", "Add "])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..20),
        1 => "(K8S_POD_NAMESPACE|K8S_POD_NAME|IgnoreUnknown|K8S_POD_UID|X)=[a-z;=_-]{0,12}(;[A-Z_]{1,8}=[a-z0-9-]{0,8}){0,3}"
            .prop_map(String::into_bytes),
    ];
    prop_oneof![
        4 => (0..VARS.len(), value).prop_map(|(i, v)| EnvChange::Set(i, v)),
        1 => (0..VARS.len()).prop_map(EnvChange::Unset),
    ]
}

/// A daemon answer: the seed's, none, arbitrary bytes, or an HTTP frame around a JSON body
/// (a mutated CNI result or error) with some status and framing.
fn answer(results: Vec<Value>) -> impl Strategy<Value = Option<Vec<u8>>> {
    let body = prop_oneof![
        3 => arb::json_bytes(results),
        2 => (prop_oneof![0u32..120, any::<u32>()], arb::tricky_string(), arb::tricky_string()).prop_map(|(code, msg, details)| {
            serde_json::to_vec(&serde_json::json!({"code": code, "msg": msg, "details": details}))
                .unwrap_or_default()
        }),
    ];
    prop_oneof![
        1 => Just(None),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Some),
        6 => (
            prop::sample::select(vec![100u16, 200, 201, 204, 299, 304, 400, 403, 404, 413, 500, 503, 504, 999]),
            body,
            0u8..4,
        )
            .prop_map(|(status, body, framing)| {
                let mut out = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n").into_bytes();
                match framing {
                    0 => out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes()),
                    1 => {
                        out.extend_from_slice(format!("Transfer-Encoding: chunked\r\n\r\n{:x}\r\n", body.len()).as_bytes());
                        out.extend_from_slice(&body);
                        out.extend_from_slice(b"\r\n0\r\n\r\n");
                        return Some(out);
                    }
                    2 => out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len() + 7).as_bytes()),
                    _ => out.extend_from_slice(b"\r\n"),
                }
                out.extend_from_slice(&body);
                Some(out)
            }),
    ]
}

fn cases() -> impl Strategy<Value = Case> {
    let seeds = corpus();
    let stdins: Vec<Value> = seeds
        .iter()
        .filter_map(|(_, c)| serde_json::from_slice(&c.stdin).ok())
        .collect();
    let results: Vec<Value> = seeds
        .iter()
        .filter_map(|(_, c)| {
            let a = c.answer.as_ref()?;
            let text = String::from_utf8_lossy(a);
            let body = text.split("\r\n\r\n").nth(1)?;
            serde_json::from_str(body).ok()
        })
        .collect();
    let cases: Vec<Case> = seeds.into_iter().map(|(_, c)| c).collect();
    (
        prop::sample::select(cases),
        prop::collection::vec(env_change(), 0..3),
        prop_oneof![2 => Just(None), 5 => arb::json_bytes(stdins).prop_map(Some)],
        prop_oneof![1 => Just(None), 1 => answer(results).prop_map(Some)],
    )
        .prop_map(|(mut case, env, stdin, ans)| {
            for ch in env {
                match ch {
                    EnvChange::Set(i, v) => {
                        case.env.retain(|(k, _)| k != VARS[i]);
                        case.env.push((VARS[i].to_owned(), v));
                    }
                    EnvChange::Unset(i) => case.env.retain(|(k, _)| k != VARS[i]),
                }
            }
            if let Some(s) = stdin {
                case.stdin = s;
            }
            if let Some(a) = ans {
                case.answer = a;
            }
            case
        })
}

proptest! {
    #![proptest_config(arb::config(2000))]

    #[test]
    fn prop_any_invocation_answers_in_spec(case in cases()) {
        let dir = TempDir::new("prop");
        let out = run_case(&case, dir.path());
        if let Err(e) = check_outcome(&out) {
            return Err(TestCaseError::fail(format!("{e}\ncase bytes: {:?}", String::from_utf8_lossy(&case.to_bytes()))));
        }
    }
}

/// Regression (found while writing the invariant): a daemon error body with a code the CNI
/// spec reserves (here 42) was printed as-is; the runtime must only see spec codes.
#[test]
fn reserved_code_from_the_daemon_becomes_100() {
    let dir = TempDir::new("reserved");
    let mut case = corpus()
        .into_iter()
        .find(|(n, _)| n == "add-error-11")
        .expect("seed")
        .1;
    let body = r#"{"code":42,"msg":"odd","details":"d"}"#;
    case.answer = Some(
        format!(
            "HTTP/1.1 500 X\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    );
    let out = run_case(&case, dir.path());
    check_outcome(&out).expect("in spec");
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(v["code"], 100, "{v}");
    assert!(v["msg"].as_str().expect("msg").contains("code 42"), "{v}");
    assert!(
        v["details"].as_str().expect("details").contains("odd"),
        "{v}"
    );
}

/// Regression (found by `prop_any_invocation_answers_in_spec`): a daemon error body with an
/// empty `msg` was printed as-is, an error without the message the spec requires.
#[test]
fn daemon_error_without_msg_gets_one() {
    let dir = TempDir::new("nomsg");
    let mut case = corpus()
        .into_iter()
        .find(|(n, _)| n == "add-error-11")
        .expect("seed")
        .1;
    let body = r#"{"code":1,"details":"","msg":""}"#;
    case.answer = Some(
        format!(
            "HTTP/1.1 400 X\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    );
    let out = run_case(&case, dir.path());
    check_outcome(&out).expect("in spec");
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(v["code"], 1, "{v}");
    assert_eq!(v["msg"], "kuryr-daemon failed ADD with HTTP 400", "{v}");
}
