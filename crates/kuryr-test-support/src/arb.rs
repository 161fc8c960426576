//! proptest strategies for input that must not hurt (issue 15): arbitrary JSON, strings that
//! break parsers, and real examples ("seeds") with a few of their parts replaced, removed or
//! retyped, so that the generated input gets past the first checks of a parser and into its
//! corners. Used by the always-run property tests of every crate that parses outside input;
//! the cargo-fuzz targets in `fuzz/` cover the same parsers with unstructured bytes.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Number of cases of each property test: `PROPTEST_CASES` when set (a long run:
/// `PROPTEST_CASES=100000 cargo test -p <crate> prop_`), else `default` (the always-run part).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A proptest config with [`cases`] and no persistence files (failures are printed with their
/// input and become regression tests by hand).
pub fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings parsers trip over: empty, huge, control characters, separators, numbers at their
/// limits, non-ASCII, plus arbitrary ones.
pub fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[ -~]{0,24}",
        1 => prop::sample::select(vec![
            "", " ", "\0", "\n", "\r\n", "=", ";", ";;", "a=b=c", "/", "//", "..", ".", "-",
            "0", "-1", "1.5", "1e400", "-0", "NaN", "inf", "18446744073709551616",
            "4294967296", "65536", "255.255.255.255/33", "::/129", "10.0.0.1/", "/24",
            "fa:16:3e:zz:00:00", "é", "\u{feff}", "\u{10ffff}", "%00", "\\", "\"", "null",
            "[]", "{}", "eth0", "tap12345678901234567890", "0.0.0.0/0", "fd00::1",
        ])
        .prop_map(str::to_owned),
        1 => (prop::sample::select(vec!["a", "é", "/", "0", ";"]), 200usize..5000)
            .prop_map(|(s, n)| s.repeat(n)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, -1, 4095, 4096, 65535, 65536, 1 << 32])
            .prop_map(Value::from),
        tricky_string().prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((tricky_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every position in `v` (JSON pointer paths), the root included.
fn paths(v: &Value, here: String, out: &mut Vec<String>) {
    out.push(here.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                paths(x, format!("{here}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                let k = k.replace('~', "~0").replace('/', "~1");
                paths(x, format!("{here}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// One change to a seed.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Replace the value at the chosen position.
    Replace(Value),
    /// Remove it from its parent object or array.
    Remove,
    /// Add a key with this value (objects), or push it (arrays).
    Insert(String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => json_value().prop_map(Mutation::Replace),
        1 => leaf().prop_map(Mutation::Replace),
        2 => Just(Mutation::Remove),
        1 => (tricky_string(), json_value()).prop_map(|(k, v)| Mutation::Insert(k, v)),
    ]
}

/// Applies `m` at the position chosen by `pick` (an index into the seed's positions).
pub fn apply(seed: &mut Value, pick: usize, m: Mutation) {
    let mut all = Vec::new();
    paths(seed, String::new(), &mut all);
    let path = all[pick % all.len()].clone();
    match m {
        Mutation::Replace(v) => {
            if let Some(slot) = seed.pointer_mut(&path) {
                *slot = v;
            }
        }
        Mutation::Insert(k, v) => match seed.pointer_mut(&path) {
            Some(Value::Object(o)) => {
                o.insert(k, v);
            }
            Some(Value::Array(a)) => a.push(v),
            _ => {}
        },
        Mutation::Remove => {
            let Some((parent, last)) = path.rsplit_once('/') else {
                return;
            };
            let last = last.replace("~1", "/").replace("~0", "~");
            match seed.pointer_mut(parent) {
                Some(Value::Object(o)) => {
                    o.remove(&last);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = last.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// One of `seeds`, unchanged or with up to four mutations.
pub fn mutated(seeds: Vec<Value>) -> impl Strategy<Value = Value> {
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<usize>(), mutation()), 0..5),
    )
        .prop_map(|(mut v, ms)| {
            for (pick, m) in ms {
                apply(&mut v, pick, m);
            }
            v
        })
}

/// Bytes: arbitrary, or a mutated seed serialized (mostly), sometimes cut short or with a
/// byte flipped.
pub fn json_bytes(seeds: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        6 => (mutated(seeds), any::<usize>(), any::<u8>(), 0u8..4).prop_map(|(v, at, b, how)| {
            let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
            if !bytes.is_empty() {
                let i = at % bytes.len();
                match how {
                    0 => bytes.truncate(i),
                    1 => bytes[i] = b,
                    _ => {}
                }
            }
            bytes
        }),
    ]
}

/// One change to a line-oriented text (an ini or YAML file).
#[derive(Debug, Clone)]
pub enum LineEdit {
    Delete(usize),
    Duplicate(usize),
    /// Replace what follows the first `=` or `:` of the line (or the line) with this.
    Value(usize, String),
    /// Insert this line before the line.
    Insert(usize, String),
    /// Indent the line (a continuation in ini, nesting in YAML).
    Indent(usize),
    /// Cut the text at this byte (on a char boundary at or before it).
    Truncate(usize),
}

fn line_edit(words: Vec<String>) -> impl Strategy<Value = LineEdit> {
    let word = prop_oneof![
        2 => prop::sample::select(words),
        2 => tricky_string(),
    ];
    let line = (word.clone(), word.clone(), 0u8..5).prop_map(|(a, b, shape)| match shape {
        0 => format!("[{a}]"),
        1 => format!("{a} = {b}"),
        2 => format!("{a}: {b}"),
        3 => format!("  {a}: {{{b}}}"),
        _ => a,
    });
    prop_oneof![
        2 => any::<usize>().prop_map(LineEdit::Delete),
        1 => any::<usize>().prop_map(LineEdit::Duplicate),
        4 => (any::<usize>(), word).prop_map(|(i, w)| LineEdit::Value(i, w)),
        3 => (any::<usize>(), line).prop_map(|(i, l)| LineEdit::Insert(i, l)),
        1 => any::<usize>().prop_map(LineEdit::Indent),
        1 => any::<usize>().prop_map(LineEdit::Truncate),
    ]
}

/// Applies `e` to `text`.
pub fn apply_line_edit(text: &str, e: LineEdit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let n = lines.len();
    match e {
        LineEdit::Delete(i) => {
            lines.remove(i % n);
        }
        LineEdit::Duplicate(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        LineEdit::Value(i, v) => {
            let l = &mut lines[i % n];
            match l.find(['=', ':']) {
                Some(at) => {
                    l.truncate(at + 1);
                    l.push(' ');
                    l.push_str(&v);
                }
                None => *l = v,
            }
        }
        LineEdit::Insert(i, l) => lines.insert(i % (n + 1), l),
        LineEdit::Indent(i) => lines[i % n].insert_str(0, "  "),
        LineEdit::Truncate(at) => {
            let joined = lines.join("\n");
            let mut at = at % (joined.len() + 1);
            while !joined.is_char_boundary(at) {
                at -= 1;
            }
            return joined[..at].to_owned();
        }
    }
    lines.join("\n") + "\n"
}

/// One of `seeds` with up to five line edits whose words come from `words` (option and
/// section names, values the parser knows) or are [`tricky_string`]s.
pub fn text_mutated(seeds: Vec<String>, words: Vec<String>) -> impl Strategy<Value = String> {
    (
        prop::sample::select(seeds),
        prop::collection::vec(line_edit(words), 0..6),
    )
        .prop_map(|(mut text, edits)| {
            for e in edits {
                text = apply_line_edit(&text, e);
            }
            text
        })
}

/// The files of a seed corpus directory (`fuzz/corpus/<target>` under the workspace root),
/// sorted by name; panics if there are fewer than `min` (a missing corpus must fail).
pub fn corpus(target: &str, min: usize) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| {
            let data = std::fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), data))
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= min,
        "seed corpus {} has {} files, expected at least {min}",
        dir.display(),
        out.len()
    );
    out
}
