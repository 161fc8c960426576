//! The socket API's parse step never panics and answers every request it refuses with a 4xx
//! and a spec code (issue 15); what it accepts is well-formed. Requests are the committed
//! seed corpus of the cargo-fuzz target `daemon_api` (`fuzz/corpus/daemon_api`), mutated.
//! Long run: `PROPTEST_CASES=50000 cargo test -p kuryr-daemon --test prop_api`.

use kuryr_daemon::api::fuzzing::api_request;
use kuryr_test_support::arb;
use proptest::prelude::*;
use serde_json::Value;

/// (request line, body as JSON) of each seed.
fn seeds() -> Vec<(String, Value)> {
    arb::corpus("daemon_api", 6)
        .into_iter()
        .map(|(name, data)| {
            let text = String::from_utf8(data).expect("utf-8");
            let (line, body) = text.split_once('\n').unwrap_or((&text, ""));
            let body = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(body).unwrap_or_else(|e| panic!("seed {name}: {e}"))
            };
            (line.to_owned(), body)
        })
        .collect()
}

/// Every seed is accepted (the cases start from requests that get past the parser).
#[test]
fn seeds_are_accepted() {
    for (line, body) in seeds() {
        let (method, path) = line.split_once(' ').expect("request line");
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).expect("json")
        };
        let r = kuryr_daemon::api::routes::parse_in("kuryr-standalone", method, path, &bytes);
        assert!(r.is_ok(), "{line}: {r:?}");
    }
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    let s = seeds();
    let lines: Vec<String> = s
        .iter()
        .map(|(l, _)| l.clone())
        .chain(
            [
                "PUT /v1/cni",
                "POST /",
                "GET /v1/cni",
                "POST /v1/cni/../ready",
                "POST",
            ]
            .map(str::to_owned),
        )
        .collect();
    let bodies: Vec<Value> = s
        .into_iter()
        .map(|(_, b)| b)
        .filter(|b| !b.is_null())
        .collect();
    (prop::sample::select(lines), arb::json_bytes(bodies)).prop_map(|(line, body)| {
        let mut out = line.into_bytes();
        out.push(b'\n');
        out.extend_from_slice(&body);
        out
    })
}

proptest! {
    #![proptest_config(arb::config(2000))]

    #[test]
    fn prop_api_request(data in request()) {
        if let Err(e) = api_request(&data) {
            return Err(TestCaseError::fail(format!("{e}\nrequest: {}", String::from_utf8_lossy(&data))));
        }
    }
}
