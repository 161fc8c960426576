//! Everything that reads ovsdb-server's bytes, from one byte string: for the property tests
//! and the cargo-fuzz target `ovsdb_stream` (`fuzz/` at the workspace root). Not used by the
//! client. The invariant is that none of it panics.

use serde_json::Value as Json;

use crate::framing::JsonFramer;
use crate::monitor::parse_table_updates;
use crate::op::{parse_transact_result, Operation};
use crate::ovs::InterfaceInfo;
use crate::value::Row;

/// Feeds `stream` to a framer in pieces of `piece` bytes (at least 1) and reads every message
/// it yields as the client would: a transact result (for 1 to 3 operations), a monitor's
/// table updates (the rows as Interface rows too), a notification's parameters. Returns the
/// messages framed, for the property that framing does not depend on how reads split the
/// stream.
pub fn stream(stream: &[u8], piece: usize, max_message: usize) -> Result<Vec<Json>, String> {
    let mut framer = JsonFramer::new(max_message);
    let mut out = Vec::new();
    for chunk in stream.chunks(piece.max(1)) {
        framer.push(chunk);
        loop {
            match framer.next_value() {
                Ok(Some(v)) => {
                    message(&v);
                    out.push(v);
                }
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(out)
}

/// One framed message, read every way the client reads one.
pub fn message(v: &Json) {
    let ops = [
        Operation::select("Interface", vec![], &["name"]),
        Operation::insert("Port", Row::new(), Some("p")),
        Operation::comment("kuryr"),
    ];
    let result = v.get("result").unwrap_or(v);
    for n in 0..=ops.len() {
        if let Ok(results) = parse_transact_result(&ops[..n], result) {
            for r in &results {
                let _ = (r.count(), r.uuid.as_ref());
                r.rows().iter().for_each(row);
            }
        }
    }
    for candidate in [
        Some(v),
        v.get("result"),
        v.get("params").and_then(|p| p.get(1)),
        v.get("params").and_then(|p| p.get(2)),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(updates) = parse_table_updates(candidate) {
            for rows in updates.values() {
                for u in rows.values() {
                    u.old.iter().chain(u.new.iter()).for_each(row);
                }
            }
        }
    }
}

fn row(r: &Row) {
    let _ = InterfaceInfo::from_row(r);
    let _ = (
        r.uuid(),
        r.get_str("name"),
        r.get_i64("ofport"),
        r.get_string_map("external_ids"),
        r.get_uuids("interfaces"),
    );
    let _ = Row::from_json(&r.to_json());
}
