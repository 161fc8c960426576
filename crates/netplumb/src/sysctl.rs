//! Per-netns sysctl access through /proc/sys/net.
//!
//! /proc/sys/net reflects the netns of the *calling thread*, so call from inside
//! [`Netns::run`](crate::Netns::run). Only `net.*` keys are accepted (the others are not
//! namespaced and would change the host).

use std::path::PathBuf;

use crate::error::{Error, Result};

/// `/proc/sys/...` path for `net/ipv6/conf/eth0/disable_ipv6` or `net.ipv4.ip_forward`.
///
/// Use the slash form when an interface name contains dots (`eth0.100`).
pub fn sysctl_path(key: &str) -> Result<PathBuf> {
    let normalized = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    let parts: Vec<&str> = normalized.split('/').collect();
    let valid = parts.len() >= 2
        && parts[0] == "net"
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != ".." && !p.contains('\0'));
    if !valid {
        return Err(Error::invalid(
            "resolve sysctl",
            key,
            "expected a net.* / net/... key",
        ));
    }
    Ok(PathBuf::from("/proc/sys").join(normalized))
}

/// Writes `value` to the sysctl `key` in the calling thread's netns.
pub fn write(key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key)?;
    tracing::debug!(key, value, netns = ?crate::netns::current_label(), "write sysctl");
    std::fs::write(&path, value)
        .map_err(|e| Error::io("write sysctl", format!("{}={value}", path.display()), e))
}

/// Reads the sysctl `key` (trimmed) in the calling thread's netns.
pub fn read(key: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io("read sysctl", path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            sysctl_path("net/ipv6/conf/eth0.100/disable_ipv6").expect("ok"),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0.100/disable_ipv6")
        );
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").expect("ok"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        for bad in [
            "kernel.hostname",
            "net/../kernel/x",
            "net",
            "net//x",
            "/net/x",
            "",
        ] {
            assert!(sysctl_path(bad).is_err(), "{bad} accepted");
        }
    }
}
