//! Delimiter-free JSON stream framing.
//!
//! ovsdb-server writes JSON-RPC messages back to back with no separator, so we
//! scan bytes incrementally, tracking string/escape state and bracket depth,
//! and cut a message when the top-level object or array closes.

use serde_json::Value as Json;

use crate::error::{Error, Result};

/// Default upper bound on one message (a full vswitch schema is ~100 KiB).
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Incremental splitter of a byte stream into JSON values.
#[derive(Debug)]
pub struct JsonFramer {
    buf: Vec<u8>,
    /// Next byte of `buf` to scan.
    pos: usize,
    depth: usize,
    in_string: bool,
    escape: bool,
    max: usize,
}

impl Default for JsonFramer {
    fn default() -> Self {
        JsonFramer::new(DEFAULT_MAX_MESSAGE)
    }
}

impl JsonFramer {
    /// A framer refusing messages larger than `max` bytes.
    pub fn new(max: usize) -> JsonFramer {
        JsonFramer {
            buf: Vec::new(),
            pos: 0,
            depth: 0,
            in_string: false,
            escape: false,
            max,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as a value.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Next complete value, `Ok(None)` if more bytes are needed.
    pub fn next_value(&mut self) -> Result<Option<Json>> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            if self.depth == 0 {
                // Between messages: skip whitespace, then expect an object or array.
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        self.buf.drain(..=self.pos);
                        self.pos = 0;
                        continue;
                    }
                    b'{' | b'[' => {}
                    _ => {
                        return Err(Error::Protocol(format!(
                            "unexpected byte {:?} between JSON messages",
                            char::from(b)
                        )))
                    }
                }
            }
            self.pos += 1;
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let end = self.pos;
                        let parsed = serde_json::from_slice::<Json>(&self.buf[..end]);
                        self.buf.drain(..end);
                        self.pos = 0;
                        return parsed
                            .map(Some)
                            .map_err(|e| Error::Protocol(format!("invalid JSON message: {e}")));
                    }
                }
                _ => {}
            }
        }
        if self.buf.len() > self.max {
            return Err(Error::Protocol(format!(
                "message exceeds {} bytes",
                self.max
            )));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drain(f: &mut JsonFramer) -> Vec<Json> {
        let mut out = Vec::new();
        while let Some(v) = f.next_value().expect("valid stream") {
            out.push(v);
        }
        out
    }

    #[test]
    fn several_values_in_one_read() {
        let mut f = JsonFramer::default();
        f.push(br#"{"id":1,"result":[]}{"id":2,"result":{"a":"}{]["}}  [1,2]"#);
        assert_eq!(
            drain(&mut f),
            vec![
                json!({"id":1,"result":[]}),
                json!({"id":2,"result":{"a":"}{]["}}),
                json!([1, 2])
            ]
        );
        assert_eq!(f.pending_bytes(), 0);
    }

    #[test]
    fn value_split_byte_by_byte() {
        let msg = br#"{"method":"update","params":["m",{"T":{"u":{"new":{"s":"a\"}\\","n":-1.5e3}}}}],"id":null}"#;
        let mut f = JsonFramer::default();
        let mut got = Vec::new();
        for b in msg.iter() {
            f.push(std::slice::from_ref(b));
            got.extend(drain(&mut f));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["params"][1]["T"]["u"]["new"]["s"], json!("a\"}\\"));
    }

    #[test]
    fn split_in_the_middle_then_next_starts() {
        let mut f = JsonFramer::default();
        f.push(br#"{"id":1,"res"#);
        assert!(drain(&mut f).is_empty());
        f.push(br#"ult":"x"}{"id":"#);
        assert_eq!(drain(&mut f), vec![json!({"id":1,"result":"x"})]);
        f.push(b"2}\n");
        assert_eq!(drain(&mut f), vec![json!({"id":2})]);
    }

    #[test]
    fn utf8_is_kept() {
        let mut f = JsonFramer::default();
        let s = "{\"k\":\"Grüße ✓\"}".as_bytes();
        let (a, b) = s.split_at(9); // splits inside a multi-byte char
        f.push(a);
        assert!(drain(&mut f).is_empty());
        f.push(b);
        assert_eq!(drain(&mut f), vec![json!({"k": "Grüße ✓"})]);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut f = JsonFramer::default();
        f.push(b"42");
        assert!(f.next_value().is_err());
        let mut f = JsonFramer::default();
        f.push(b"{\"a\":tru}");
        assert!(f.next_value().is_err());
    }

    #[test]
    fn oversized_message_is_an_error() {
        let mut f = JsonFramer::new(16);
        f.push(br#"{"a":"0123456789012345678901234567890"#);
        assert!(f.next_value().is_err());
    }
}
