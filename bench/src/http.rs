//! A minimal HTTP/1.1 client for the daemon's unix socket (what kuryr-cni does: one request
//! per connection, `Connection: close`) and for plain TCP GETs (metrics).
//! Adapted from crates/kuryr-daemon/tests/common/mod.rs.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: kuryr-daemon\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.context("write head")?;
    s.write_all(body).await.context("write body")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.context("read response")?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no header end in {text:?}"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    // The daemon answers with Content-Length or chunked; de-chunk if needed.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One request over the unix socket: (status, JSON body or Null).
pub async fn unix(sock: &Path, method: &str, path: &str, body: &[u8]) -> Result<(u16, Value)> {
    let s = UnixStream::connect(sock)
        .await
        .with_context(|| format!("connect {}", sock.display()))?;
    let (status, body) = exchange(s, method, path, body).await?;
    let v = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    };
    Ok((status, v))
}

/// POST /v1/cni.
pub async fn cni(sock: &Path, req: &Value) -> Result<(u16, Value)> {
    unix(sock, "POST", "/v1/cni", &serde_json::to_vec(req)?).await
}

/// GET over TCP: (status, body).
pub async fn tcp_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    exchange(s, "GET", path, b"").await
}

#[cfg(test)]
mod tests {
    #[test]
    fn dechunk() {
        assert_eq!(
            super::dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
