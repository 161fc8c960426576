//! OVSDB remote addresses (`unix:PATH`, `tcp:HOST:PORT`).

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Default ovsdb-server socket of a host OVS.
pub const DEFAULT_ENDPOINT: &str = "unix:/var/run/openvswitch/db.sock";

/// Where ovsdb-server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Unix domain socket path.
    Unix(PathBuf),
    /// TCP `host:port` (IPv6 hosts in brackets).
    Tcp(String),
}

impl Endpoint {
    /// Parse `unix:PATH`, `tcp:HOST:PORT` or a bare absolute path.
    pub fn parse(s: &str) -> Result<Endpoint> {
        let bad = || Error::InvalidEndpoint(s.to_owned());
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad());
            }
            return Ok(Endpoint::Tcp(addr.to_owned()));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        Err(bad())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            Endpoint::parse(DEFAULT_ENDPOINT).ok(),
            Some(Endpoint::Unix("/var/run/openvswitch/db.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("/tmp/x.sock").ok(),
            Some(Endpoint::Unix("/tmp/x.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp:127.0.0.1:6640").ok(),
            Some(Endpoint::Tcp("127.0.0.1:6640".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp:[::1]:6640").ok(),
            Some(Endpoint::Tcp("[::1]:6640".into()))
        );
        for bad in [
            "",
            "unix:",
            "tcp:1.2.3.4",
            "tcp::1",
            "tcp:h:99999",
            "ssl:1.2.3.4:6640",
            "relative.sock",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(Error::InvalidEndpoint(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Endpoint::parse("tcp:[::1]:6640")
                .map(|e| e.to_string())
                .ok()
                .as_deref(),
            Some("tcp:[::1]:6640")
        );
    }
}
