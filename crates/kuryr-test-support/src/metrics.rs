//! Reading a kuryr process's Prometheus metrics from a test: the address its log says the
//! metrics server listens on (`--metrics-addr 127.0.0.1:0` picks a free port), one scrape, and
//! one sample's value. Failures panic naming what was missing: a test reading a counter must
//! not take "no answer" for zero.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `text` without ANSI colour sequences (`ESC [ ... m`), as tracing's terminal format writes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `addr=` field of the first log line containing `message` (text or JSON log format).
pub fn logged_addr(log: &str, message: &str) -> Option<SocketAddr> {
    let log = strip_ansi(log);
    let line = log.lines().find(|l| l.contains(message))?;
    let rest = line
        .split_once("addr=")
        .or_else(|| line.split_once("\"addr\":\""))?
        .1;
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The metrics server address a kuryr-controller logged ("metrics server (/metrics)").
pub fn controller_metrics_addr(log: &str) -> Option<SocketAddr> {
    logged_addr(log, "metrics server (/metrics)")
}

/// `GET /metrics` from `addr`: the body; panics if there is no 200 answer.
pub fn scrape(addr: SocketAddr) -> String {
    let raw = get(addr).unwrap_or_else(|e| panic!("scrape http://{addr}/metrics: {e}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("scrape http://{addr}/metrics: no HTTP answer: {raw:?}"));
    assert!(
        head.split_whitespace().nth(1) == Some("200"),
        "scrape http://{addr}/metrics: {head}"
    );
    body.to_string()
}

fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(raw)
}

/// The value of the sample `series` (name with its labels exactly as exposed, e.g.
/// `kuryr_controller_adopted_total{kind="port"}`); `None` if the exposition has no such sample.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            let v = v.split_whitespace().next().unwrap_or(v);
            v.parse()
                .unwrap_or_else(|e| panic!("sample {series}: value {v:?}: {e}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_logged_address_in_coloured_and_json_logs() {
        let coloured = "\u{1b}[2m2026-12-07T14:19:44Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m run: health server (/alive, /ready) \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:8082\n\
                        x: metrics server (/metrics) \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:41234\n";
        assert_eq!(
            controller_metrics_addr(coloured),
            Some("127.0.0.1:41234".parse().expect("addr"))
        );
        let json =
            r#"{"level":"INFO","message":"metrics server (/metrics)","addr":"127.0.0.1:9654"}"#;
        assert_eq!(
            controller_metrics_addr(json),
            Some("127.0.0.1:9654".parse().expect("addr"))
        );
        assert_eq!(
            controller_metrics_addr("health server (/alive) addr=1.2.3.4:1"),
            None
        );
    }

    #[test]
    fn reads_one_sample_and_tells_absent_from_zero() {
        let text = "# TYPE x counter\nkuryr_controller_adopted_total{kind=\"port\"} 8\nkuryr_controller_adopted_total{kind=\"network\"} 0\nkuryr_controller_leader 1\n";
        assert_eq!(
            sample(text, r#"kuryr_controller_adopted_total{kind="port"}"#),
            Some(8.0)
        );
        assert_eq!(
            sample(text, r#"kuryr_controller_adopted_total{kind="network"}"#),
            Some(0.0)
        );
        assert_eq!(sample(text, "kuryr_controller_leader"), Some(1.0));
        assert_eq!(
            sample(
                text,
                r#"kuryr_controller_adopted_total{kind="loadbalancer"}"#
            ),
            None
        );
        assert_eq!(sample(text, "kuryr_controller_adopted_total"), None);
    }
}
