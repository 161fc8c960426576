//! ovsdb-server's byte stream: first byte the read size, then the stream. Framed and read as
//! the client reads it; framing does not depend on the read size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let split = kuryr_ovsdb::fuzzing::stream(stream, usize::from(piece % 64) + 1, 1 << 20);
    let whole = kuryr_ovsdb::fuzzing::stream(stream, stream.len().max(1), 1 << 20);
    match (&split, &whole) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "framing depends on the read size"),
        (Err(_), Err(_)) => {}
        _ => panic!("read by {piece}: {split:?}; whole: {whole:?}"),
    }
});
