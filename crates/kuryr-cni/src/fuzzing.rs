//! One CNI invocation from one byte string, for the property tests and the cargo-fuzz target
//! `cni_run` (`fuzz/` at the workspace root), and the invariant both check. Not used by the
//! binary.
//!
//! Input format (what the corpus files in `fuzz/corpus/cni_run/` hold):
//!
//! ```text
//! CNI_COMMAND=ADD            <- environment, one KEY=VALUE per line (raw bytes: a value
//! CNI_NETNS=/run/netns/x        need not be UTF-8), up to the first empty line
//!
//! {"cniVersion":...}         <- stdin, up to a line "--answer--" (or the end)
//! --answer--
//! HTTP/1.1 200 OK ...        <- what the daemon answers, raw; none: the daemon is not there
//! ```

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::time::Instant;

use kuryr_cni_api::{codes, CniVersion};

use crate::http::{Deadline, HttpError, Response};
use crate::run::{self, Outcome};

/// One invocation: the environment, stdin and the daemon's raw answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Case {
    pub env: Vec<(String, Vec<u8>)>,
    pub stdin: Vec<u8>,
    /// `None`: connecting to the daemon fails (nothing listens).
    pub answer: Option<Vec<u8>>,
}

const ANSWER_MARK: &[u8] = b"\n--answer--\n";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Case {
    /// Splits fuzz input into a case (any bytes are a case).
    pub fn parse(data: &[u8]) -> Case {
        let (head, rest) = match find(data, b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (&data[..0], data),
        };
        let env = head
            .split(|b| *b == b'\n')
            .filter_map(|line| {
                let eq = line.iter().position(|b| *b == b'=')?;
                let key = String::from_utf8_lossy(&line[..eq]).into_owned();
                Some((key, line[eq + 1..].to_vec()))
            })
            .collect();
        let (stdin, answer) = match find(rest, ANSWER_MARK) {
            Some(i) => (&rest[..i], Some(rest[i + ANSWER_MARK.len()..].to_vec())),
            None => (rest, None),
        };
        Case {
            env,
            stdin: stdin.to_vec(),
            answer,
        }
    }

    /// The inverse of [`parse`](Self::parse) (for cases built by the property tests).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.env {
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.stdin);
        if let Some(a) = &self.answer {
            out.extend_from_slice(ANSWER_MARK);
            out.extend_from_slice(a);
        }
        out
    }
}

/// Points every path the config names at `sandbox` (the socket, the DEL queue, the log), so
/// that a generated config cannot make the shim write outside it. Input that is not a JSON
/// object is left alone (it never gets that far).
fn sandboxed_stdin(stdin: &[u8], sandbox: &Path) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut o)) = serde_json::from_slice(stdin) else {
        return stdin.to_vec();
    };
    let path = |name: &str| serde_json::Value::from(sandbox.join(name).display().to_string());
    o.insert("daemon_socket".into(), path("no-daemon.sock"));
    o.insert("del_queue_dir".into(), path("del-queue"));
    if o.contains_key("log_file") {
        o.insert("log_file".into(), path("kuryr-cni.log"));
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

/// Runs `case` as the binary would, with its paths inside `sandbox` (an existing directory).
pub fn run_case(case: &Case, sandbox: &Path) -> Outcome {
    let env = case.env.clone();
    let getenv = move |name: &str| -> Option<OsString> {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| OsString::from_vec(v.clone()))
    };
    let stdin = sandboxed_stdin(&case.stdin, sandbox);
    let mut transport = |_: &Path, _: &[u8], _: Deadline| -> Result<Response, HttpError> {
        match &case.answer {
            Some(raw) => crate::http::read_response(&mut std::io::Cursor::new(raw), "POST"),
            None => Err(HttpError::Connect(std::io::Error::from(
                std::io::ErrorKind::NotFound,
            ))),
        }
    };
    run::run_with(
        &getenv,
        &mut stdin.as_slice(),
        Instant::now(),
        &mut transport,
    )
}

/// The invariant of every invocation: exit 0 with nothing or one JSON object on stdout, or
/// exit 1 with one CNI error object (`cniVersion` one kuryr speaks, a code the spec allows,
/// a message) and nothing else.
pub fn check_outcome(out: &Outcome) -> Result<(), String> {
    let fail = |why: String| Err(format!("{why}; stdout={:?}", out.stdout));
    match out.exit_code {
        0 => {
            if out.stdout.is_empty() {
                return Ok(());
            }
            let Some(line) = out.stdout.strip_suffix('\n') else {
                return fail("success output does not end in a newline".into());
            };
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(o)) if !o.contains_key("code") => Ok(()),
                Ok(_) => fail("success output is not a result object".into()),
                Err(e) => fail(format!("success output is not JSON: {e}")),
            }
        }
        1 => {
            let Some(line) = out.stdout.strip_suffix('\n') else {
                return fail("error output does not end in a newline".into());
            };
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => return fail(format!("error output is not JSON: {e}")),
            };
            let Some(o) = v.as_object() else {
                return fail("error output is not an object".into());
            };
            if let Some(k) = o
                .keys()
                .find(|k| !matches!(k.as_str(), "cniVersion" | "code" | "msg" | "details"))
            {
                return fail(format!("unexpected key {k:?} in the error"));
            }
            match o.get("cniVersion").and_then(|v| v.as_str()) {
                Some(ver) if CniVersion::parse(ver).is_some() => {}
                other => return fail(format!("error cniVersion {other:?}")),
            }
            match o.get("code").and_then(|c| c.as_u64()) {
                Some(c) if u32::try_from(c).is_ok_and(codes::is_spec_code) => {}
                other => return fail(format!("error code {other:?} is not a spec code")),
            }
            match o.get("msg").and_then(|m| m.as_str()) {
                Some(m) if !m.is_empty() => {}
                _ => return fail("error without msg".into()),
            }
            if o.get("details").is_some_and(|d| !d.is_string()) {
                return fail("details is not a string".into());
            }
            Ok(())
        }
        other => fail(format!("exit code {other}")),
    }
}
