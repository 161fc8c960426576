//! ovsdb-server's byte stream never panics the client's readers (issue 15), and framing does
//! not depend on how reads split the stream. Streams are the committed seed corpus of the
//! cargo-fuzz target `ovsdb_stream` (`fuzz/corpus/ovsdb_stream`: first byte the read size,
//! then the stream), mutated. Long run:
//! `PROPTEST_CASES=50000 cargo test -p kuryr-ovsdb --test prop_input`.

use kuryr_ovsdb::fuzzing::stream;
use kuryr_test_support::arb;
use proptest::prelude::*;
use serde_json::Value;

/// The messages of each seed stream.
fn seed_messages() -> Vec<Value> {
    let mut out = Vec::new();
    for (name, data) in arb::corpus("ovsdb_stream", 4) {
        let msgs = stream(&data[1..], 4096, 1 << 20).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        assert!(!msgs.is_empty(), "seed {name}");
        out.extend(msgs);
    }
    out
}

#[test]
fn seeds_frame() {
    assert!(seed_messages().len() >= 6);
}

fn streams() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            6 => arb::json_bytes(seed_messages()),
            1 => prop::sample::select(vec![&b" \n"[..], b"{", b"}", b"]", b"\"", b"\\", b"[[[[", b"x"])
                .prop_map(<[u8]>::to_vec),
        ],
        1..5,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(arb::config(1000))]

    /// Any stream, any read size: no panic; the same messages (and the same error) whether
    /// it arrives in one read or in pieces.
    #[test]
    fn prop_stream(data in streams(), piece in 1usize..64) {
        let whole = stream(&data, data.len().max(1), 1 << 20);
        let split = stream(&data, piece, 1 << 20);
        match (&whole, &split) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => {
                // A stream that ends in the middle of a message is not an error in either;
                // anything else must agree.
                return Err(TestCaseError::fail(format!("whole {whole:?} vs split by {piece} {split:?}")));
            }
        }
    }
}

/// The message size limit holds whatever the read size (a server sending an endless message
/// is cut off, not buffered without bound).
#[test]
fn oversized_message_is_an_error_in_any_piece_size() {
    let mut data = b"{\"id\":1,\"result\":\"".to_vec();
    data.extend(std::iter::repeat_n(b'a', 5000));
    for piece in [1, 7, 4096, 10_000] {
        let r = stream(&data, piece, 1024);
        assert!(r.is_err(), "piece {piece}: {r:?}");
    }
}
