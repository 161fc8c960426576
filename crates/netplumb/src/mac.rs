//! Ethernet MAC address.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Raw octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
    /// Group bit set (includes broadcast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
    /// From a slice of exactly 6 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(b).ok().map(MacAddr)
    }
    /// 33:33:xx:xx:xx:xx for an IPv6 multicast group.
    pub fn ipv6_multicast(group: std::net::Ipv6Addr) -> Self {
        let o = group.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

/// Error parsing a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets separated by ':' or '-'")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for slot in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_roundtrip() {
        let m: MacAddr = "FA:16:3e:0a:0B:0c".parse().expect("valid mac");
        assert_eq!(m.0, [0xfa, 0x16, 0x3e, 0x0a, 0x0b, 0x0c]);
        assert_eq!(m.to_string(), "fa:16:3e:0a:0b:0c");
        assert_eq!("fa-16-3e-0a-0b-0c".parse::<MacAddr>(), Ok(m));
    }

    #[test]
    fn parse_rejects_garbage() {
        for s in [
            "",
            "fa:16:3e:0a:0b",
            "fa:16:3e:0a:0b:0c:0d",
            "fa:16:3e:0a:0b:zz",
            "fa:16:3e:0a:0b:100",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s} should not parse");
        }
    }

    #[test]
    fn ipv6_multicast_mapping() {
        let m = MacAddr::ipv6_multicast("ff02::1".parse().expect("addr"));
        assert_eq!(m.0, [0x33, 0x33, 0, 0, 0, 1]);
        assert!(m.is_multicast());
    }
}
