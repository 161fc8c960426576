//! A minimal HTTP/1.1 client over a unix stream socket, with one deadline for the
//! whole exchange (connect, send, wait, read).
//!
//! One request per connection (`Connection: close`). Responses may be framed by
//! `Content-Length`, `Transfer-Encoding: chunked` (what hyper/axum use for streamed
//! bodies) or by the connection closing; `1xx` interim responses are skipped.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Largest accepted response body.
pub const MAX_BODY: u64 = 16 * 1024 * 1024;
const MAX_LINE: u64 = 8 * 1024;
const MAX_HEADERS: usize = 128;

/// A point in time the whole exchange must finish by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Instant,
}

impl Deadline {
    /// `total` after `start`.
    pub fn new(start: Instant, total: Duration) -> Deadline {
        Deadline { end: start + total }
    }

    /// Time left, or `None` once expired.
    pub fn remaining(&self) -> Option<Duration> {
        let now = Instant::now();
        (now < self.end).then(|| self.end - now)
    }
}

/// Which part of the exchange an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    SendRequest,
    ReadHeaders,
    ReadBody,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "connecting to the socket",
            Step::SendRequest => "sending the request",
            Step::ReadHeaders => "waiting for the response",
            Step::ReadBody => "reading the response body",
        })
    }
}

#[derive(Debug)]
pub enum HttpError {
    /// The socket could not be connected (missing, refused, permission): nothing was sent.
    Connect(io::Error),
    /// The deadline expired during `Step`.
    Timeout(Step),
    /// The connection failed or closed early during `Step`.
    Io(Step, io::Error),
    /// The peer does not speak HTTP/1.1 as expected.
    Protocol(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "connect failed: {e}"),
            HttpError::Timeout(step) => write!(f, "timed out {step}"),
            HttpError::Io(step, e) => write!(f, "connection failed while {step}: {e}"),
            HttpError::Protocol(m) => write!(f, "invalid HTTP response: {m}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one request and reads the response, all within `deadline`.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    deadline: Deadline,
) -> Result<Response, HttpError> {
    let stream = connect(socket, deadline)?;
    let mut conn = DeadlineStream {
        stream: &stream,
        deadline,
    };

    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kuryr-cni/{ver}\r\n\
         Accept: application/json\r\nConnection: close\r\n",
        host = kuryr_cni_api::wire::HTTP_HOST,
        ver = env!("CARGO_PKG_VERSION"),
    )
    .into_bytes();
    if let Some(body) = body {
        req.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        req.extend_from_slice(body);
    } else {
        req.extend_from_slice(b"\r\n");
    }
    conn.write_all(&req)
        .map_err(|e| io_error(Step::SendRequest, e))?;
    conn.flush().map_err(|e| io_error(Step::SendRequest, e))?;

    read_response(&mut BufReader::with_capacity(16 * 1024, conn), method)
}

/// `UnixStream::connect` has no timeout and can block when the listen backlog is full, so
/// it runs on a helper thread the caller stops waiting for at the deadline.
fn connect(socket: &Path, deadline: Deadline) -> Result<UnixStream, HttpError> {
    let remaining = deadline
        .remaining()
        .ok_or(HttpError::Timeout(Step::Connect))?;
    let (tx, rx) = mpsc::channel();
    let path = socket.to_path_buf();
    let spawned = thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(&path));
        });
    match spawned {
        Ok(_) => match rx.recv_timeout(remaining) {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(HttpError::Connect(e)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(HttpError::Timeout(Step::Connect)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(HttpError::Connect(io::Error::other(
                "connect thread ended without result",
            ))),
        },
        // No thread available: connect inline rather than fail.
        Err(_) => UnixStream::connect(socket).map_err(HttpError::Connect),
    }
}

/// Read/write with the socket timeout set to the time left before every call.
struct DeadlineStream<'a> {
    stream: &'a UnixStream,
    deadline: Deadline,
}

impl DeadlineStream<'_> {
    fn remaining(&self) -> io::Result<Duration> {
        self.deadline
            .remaining()
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    }
}

impl Read for DeadlineStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.remaining()?;
        self.stream.set_read_timeout(Some(left))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

impl Write for DeadlineStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.remaining()?;
        self.stream.set_write_timeout(Some(left))?;
        let mut s = self.stream;
        s.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn io_error(step: Step, e: io::Error) -> HttpError {
    match e.kind() {
        // SO_RCVTIMEO/SO_SNDTIMEO expiry is EAGAIN (WouldBlock) on Linux.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::Timeout(step),
        _ => HttpError::Io(step, e),
    }
}

fn eof(step: Step, what: &str) -> HttpError {
    HttpError::Io(
        step,
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection closed {what}"),
        ),
    )
}

/// One line without its `\r\n`/`\n`. `Ok(None)` on EOF before any byte.
fn read_line<R: BufRead>(r: &mut R, step: Step) -> Result<Option<Vec<u8>>, HttpError> {
    let mut line = Vec::new();
    r.by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .map_err(|e| io_error(step, e))?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if line.len() as u64 >= MAX_LINE {
            return Err(HttpError::Protocol(format!(
                "line longer than {MAX_LINE} bytes"
            )));
        }
        return Err(eof(step, "in the middle of a line"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

pub fn read_response<R: BufRead>(r: &mut R, method: &str) -> Result<Response, HttpError> {
    loop {
        let (status, reason, headers) = read_head(r)?;
        if (100..200).contains(&status) {
            continue; // 100 Continue, 103 Early Hints, ...
        }
        let mut resp = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        resp.body = read_body(r, method, &resp)?;
        return Ok(resp);
    }
}

type Head = (u16, String, Vec<(String, String)>);

fn read_head<R: BufRead>(r: &mut R) -> Result<Head, HttpError> {
    let step = Step::ReadHeaders;
    // RFC 9112 2.2: a client may skip empty lines before the status line.
    let mut status_line = None;
    for _ in 0..4 {
        match read_line(r, step)? {
            None => return Err(eof(step, "before the response")),
            Some(l) if l.is_empty() => continue,
            Some(l) => {
                status_line = Some(l);
                break;
            }
        }
    }
    let status_line = status_line.ok_or_else(|| HttpError::Protocol("no status line".into()))?;
    let status_line = String::from_utf8_lossy(&status_line).into_owned();
    let mut parts = status_line.splitn(3, ' ');
    let proto = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default().to_owned();
    if !proto.starts_with("HTTP/1.") || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(HttpError::Protocol(format!(
            "bad status line {:?}",
            truncate(&status_line, 80)
        )));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| HttpError::Protocol(format!("bad status code {code:?}")))?;

    let mut headers = Vec::new();
    loop {
        let line = read_line(r, step)?.ok_or_else(|| eof(step, "in the response headers"))?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError::Protocol(format!(
                "more than {MAX_HEADERS} headers"
            )));
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        if line.starts_with([' ', '\t']) {
            return Err(HttpError::Protocol("obsolete header line folding".into()));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| {
            HttpError::Protocol(format!("bad header line {:?}", truncate(&line, 80)))
        })?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok((status, reason, headers))
}

fn read_body<R: BufRead>(r: &mut R, method: &str, resp: &Response) -> Result<Vec<u8>, HttpError> {
    let step = Step::ReadBody;
    if method.eq_ignore_ascii_case("HEAD") || resp.status == 204 || resp.status == 304 {
        return Ok(Vec::new());
    }
    let te: Vec<String> = resp
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(last) = te.last() {
        if last == "chunked" {
            return read_chunked(r);
        }
        // A non-chunked transfer coding: the body ends when the connection closes.
        return read_to_eof(r);
    }
    let mut length: Option<u64> = None;
    for (_, v) in resp
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::Protocol(format!("bad Content-Length {v:?}")));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| HttpError::Protocol(format!("bad Content-Length {v:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Protocol(
                    "conflicting Content-Length headers".into(),
                ));
            }
            length = Some(n);
        }
    }
    match length {
        Some(n) if n > MAX_BODY => Err(HttpError::Protocol(format!(
            "body of {n} bytes exceeds {MAX_BODY}"
        ))),
        Some(n) => {
            let mut body = Vec::with_capacity(n.min(64 * 1024) as usize);
            r.by_ref()
                .take(n)
                .read_to_end(&mut body)
                .map_err(|e| io_error(step, e))?;
            if (body.len() as u64) < n {
                return Err(eof(
                    step,
                    &format!("after {} of {n} body bytes", body.len()),
                ));
            }
            Ok(body)
        }
        None => read_to_eof(r),
    }
}

fn read_to_eof<R: BufRead>(r: &mut R) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    r.by_ref()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| io_error(Step::ReadBody, e))?;
    if body.len() as u64 > MAX_BODY {
        return Err(HttpError::Protocol(format!(
            "body exceeds {MAX_BODY} bytes"
        )));
    }
    Ok(body)
}

/// `Transfer-Encoding: chunked` (RFC 9112 7.1): `<hex size>[;ext]\r\n<data>\r\n` ...,
/// `0\r\n`, optional trailer fields, `\r\n`.
fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>, HttpError> {
    let step = Step::ReadBody;
    let mut body = Vec::new();
    loop {
        let line = read_line(r, step)?.ok_or_else(|| eof(step, "before a chunk size"))?;
        let line = String::from_utf8_lossy(&line).into_owned();
        let size_str = line.split(';').next().unwrap_or_default().trim();
        if size_str.is_empty()
            || size_str.len() > 15
            || !size_str.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(HttpError::Protocol(format!(
                "bad chunk size line {:?}",
                truncate(&line, 80)
            )));
        }
        let size = u64::from_str_radix(size_str, 16)
            .map_err(|_| HttpError::Protocol(format!("bad chunk size {size_str:?}")))?;
        if size == 0 {
            // Trailer section, ended by an empty line (or by EOF, which is tolerated).
            loop {
                match read_line(r, step)? {
                    None => return Ok(body),
                    Some(l) if l.is_empty() => return Ok(body),
                    Some(_) => {}
                }
            }
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(HttpError::Protocol(format!(
                "body exceeds {MAX_BODY} bytes"
            )));
        }
        let before = body.len();
        r.by_ref()
            .take(size)
            .read_to_end(&mut body)
            .map_err(|e| io_error(step, e))?;
        if ((body.len() - before) as u64) < size {
            return Err(eof(step, "in the middle of a chunk"));
        }
        match read_line(r, step)? {
            Some(l) if l.is_empty() => {}
            Some(_) => {
                return Err(HttpError::Protocol(
                    "chunk data not followed by CRLF".into(),
                ))
            }
            None => return Err(eof(step, "after a chunk")),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Response, HttpError> {
        read_response(&mut io::Cursor::new(raw.to_vec()), "POST")
    }

    #[test]
    fn content_length_body() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-type: application/json\r\n\r\nhello",
        )
        .unwrap();
        assert_eq!(
            (r.status, r.reason.as_str(), r.body.as_slice()),
            (200, "OK", &b"hello"[..])
        );
        assert_eq!(
            r.headers[1],
            ("content-type".to_owned(), "application/json".to_owned())
        );
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\n{\"a\r\n1;name=value\r\n\"\r\nA\r\n:123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let r = parse(raw).unwrap();
        assert_eq!(String::from_utf8(r.body).unwrap(), "{\"a\":123456789");
    }

    #[test]
    fn chunked_upper_case_hex_and_bare_lf() {
        let raw = b"HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\nB\nhello world\n0\n\n";
        assert_eq!(parse(raw).unwrap().body, b"hello world");
    }

    #[test]
    fn chunked_errors() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n",
        ] {
            assert!(
                matches!(parse(raw), Err(HttpError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let truncated = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc";
        assert!(matches!(
            parse(truncated),
            Err(HttpError::Io(Step::ReadBody, _))
        ));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let raw =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
        let r = parse(raw).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"{}"[..]));
    }

    #[test]
    fn body_until_close_and_no_body_statuses() {
        assert_eq!(
            parse(b"HTTP/1.0 500 Oops\r\n\r\nsome text").unwrap().body,
            b"some text"
        );
        assert!(
            parse(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n")
                .unwrap()
                .body
                .is_empty()
        );
    }

    #[test]
    fn content_length_errors() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Err(HttpError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // Identical duplicates are fine.
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx")
                .unwrap()
                .body,
            b"x"
        );
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(matches!(
            parse(short),
            Err(HttpError::Io(Step::ReadBody, _))
        ));
    }

    #[test]
    fn bad_heads() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Err(HttpError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(matches!(
            parse(b""),
            Err(HttpError::Io(Step::ReadHeaders, _))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nA: b\r\n"),
            Err(HttpError::Io(Step::ReadHeaders, _))
        ));
    }

    #[test]
    fn over_a_socket_pair_with_deadline() {
        let (a, b) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        // Nothing is ever written: the read must give up at the deadline. On a thread, so
        // that a missing timeout fails the test instead of hanging it.
        thread::spawn(move || {
            let deadline = Deadline::new(Instant::now(), Duration::from_millis(200));
            let conn = DeadlineStream {
                stream: &a,
                deadline,
            };
            let _ = tx.send(read_response(&mut BufReader::new(conn), "POST").map(|r| r.status));
        });
        let started = Instant::now();
        let res = rx
            .recv_timeout(Duration::from_secs(3))
            .expect("read_response must return at the deadline");
        assert!(
            matches!(res, Err(HttpError::Timeout(Step::ReadHeaders))),
            "{res:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(b);
    }
}
