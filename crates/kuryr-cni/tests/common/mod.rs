//! Helpers for executing the built `kuryr-cni` binary, and a test double of kuryr-daemon's
//! `POST /v1/cni` endpoint (only to check the shim's side of the protocol: framing,
//! chunked decoding, version conversion, prevResult merge, deadlines).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_kuryr-cni");

/// A unique directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "kcni-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// stdout as JSON (panics with context if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} stderr={:?}",
                self.stdout, self.stderr
            )
        })
    }
    /// Asserts a CNI error with `code` and returns the error object.
    pub fn expect_error(&self, code: u64) -> Value {
        let v = self.json();
        assert_eq!(self.code, 1, "exit code; stdout={}", self.stdout);
        assert_eq!(
            v["code"].as_u64(),
            Some(code),
            "error code; stdout={}",
            self.stdout
        );
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "msg; stdout={}",
            self.stdout
        );
        v
    }
    pub fn expect_silent_success(&self) {
        assert_eq!(
            (self.code, self.stdout.as_str()),
            (0, ""),
            "stderr={}",
            self.stderr
        );
    }
}

/// Runs the binary with exactly `env` (nothing inherited) and `stdin`.
pub fn run(env: &[(&str, &str)], stdin: &str) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn kuryr-cni");
    {
        let mut si = child.stdin.take().expect("stdin");
        // The binary may exit before reading stdin (e.g. bad CNI_COMMAND): ignore EPIPE.
        let _ = si.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait kuryr-cni");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// The CNI env of an ADD/DEL/CHECK as containerd's CRI plugin sets it.
pub fn attachment_env<'a>(command: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "90c45da12e2d4f6a"),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=cnitest;K8S_POD_NAME=pod-a;K8S_POD_INFRA_CONTAINER_ID=90c45da12e2d4f6a;K8S_POD_UID=uid-pod-a",
        ),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ("PATH", "/usr/bin:/bin"),
    ]
}

/// A network config pointing at `socket` with the given extra JSON members
/// (`extra` is inserted verbatim, e.g. `"timeout_seconds":0.5,`).
pub fn conf(version: &str, socket: &Path, queue: &Path, extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"kuryr","type":"kuryr-cni",{extra}"daemon_socket":"{}","del_queue_dir":"{}","capabilities":{{"portMappings":true}},"runtimeConfig":{{"portMappings":[]}}}}"#,
        socket.display(),
        queue.display()
    )
}

/// How the double answers one connection.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Status + body framed with Content-Length.
    Length(u16, String),
    /// Status + body sent with `Transfer-Encoding: chunked` in chunks of `size` bytes,
    /// with a chunk extension and a trailer.
    Chunked(u16, String, usize),
    /// Status + body, no framing header: the body ends when the connection closes.
    UntilClose(u16, String),
    /// `100 Continue` first, then the inner reply.
    Continue(Box<Reply>),
    /// Bytes verbatim, then close.
    Raw(Vec<u8>),
    /// Read the request, then close without answering.
    Hangup,
    /// Wait, then the inner reply (if the client is still there).
    Delay(Duration, Box<Reply>),
    /// Headers of a chunked 200, one chunk, then stall for the duration.
    StallInBody(Duration),
}

/// One request as the double received it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// Serves `replies.len()` connections on `socket`, one reply each, in order.
pub struct DaemonDouble {
    handle: Option<JoinHandle<Vec<Captured>>>,
}

impl DaemonDouble {
    pub fn start(socket: &Path, replies: Vec<Reply>) -> DaemonDouble {
        let listener = UnixListener::bind(socket).expect("bind test socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let handle = thread::spawn(move || {
            let mut captured = Vec::new();
            for reply in replies {
                let deadline = Instant::now() + Duration::from_secs(20);
                let stream = loop {
                    match listener.accept() {
                        Ok((s, _)) => break s,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if Instant::now() > deadline {
                                return captured;
                            }
                            thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => return captured,
                    }
                };
                stream.set_nonblocking(false).expect("blocking");
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                if let Some(c) = read_request(&stream) {
                    captured.push(c);
                }
                answer(&stream, &reply);
            }
            captured
        });
        DaemonDouble {
            handle: Some(handle),
        }
    }

    /// Waits for the double to finish and returns what it received.
    pub fn captured(mut self) -> Vec<Captured> {
        self.handle
            .take()
            .map(|h| h.join().expect("double thread"))
            .unwrap_or_default()
    }
}

fn read_request(stream: &UnixStream) -> Option<Captured> {
    let mut r = BufReader::new(stream);
    let mut request_line = String::new();
    r.read_line(&mut request_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Captured {
        request_line: request_line.trim_end().to_owned(),
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

fn answer(mut stream: &UnixStream, reply: &Reply) {
    let _ = match reply {
        Reply::Length(status, body) => write!(
            stream,
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            reason(*status),
            body.len()
        ),
        Reply::Chunked(status, body, size) => {
            let mut out = format!(
                "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                reason(*status)
            )
            .into_bytes();
            for (i, chunk) in body.as_bytes().chunks((*size).max(1)).enumerate() {
                let ext = if i % 2 == 0 { ";ext=1" } else { "" };
                out.extend_from_slice(format!("{:X}{ext}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\nx-trailer: done\r\n\r\n");
            // Send in small pieces so the client sees partial reads.
            for piece in out.chunks(5) {
                stream.write_all(piece).ok();
                stream.flush().ok();
            }
            Ok(())
        }
        Reply::UntilClose(status, body) => write!(stream, "HTTP/1.1 {status} {}\r\n\r\n{body}", reason(*status)),
        Reply::Continue(inner) => {
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            answer(stream, inner);
            Ok(())
        }
        Reply::Raw(bytes) => stream.write_all(bytes),
        Reply::Hangup => Ok(()),
        Reply::Delay(d, inner) => {
            // The fake daemon's answer delay, simulated.
            thread::sleep(*d);
            answer(stream, inner);
            Ok(())
        }
        Reply::StallInBody(d) => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"re\r\n");
            // The fake daemon stalls mid-body, simulated.
            thread::sleep(*d);
            Ok(())
        }
    };
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
