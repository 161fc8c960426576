//! ethtool offload knobs (legacy SIOCETHTOOL ioctl).
//!
//! Acts on the calling thread's netns: call from inside [`Netns::run`](crate::Netns::run).

use crate::error::{Error, Result};
use crate::netlink::validate_ifname;
use crate::sys;

/// Whether TX checksum offload is on (`ethtool -k IF | grep tx-checksumming`).
pub fn tx_checksum(ifname: &str) -> Result<bool> {
    validate_ifname("read tx-checksumming", ifname)?;
    sys::tx_csum_get(ifname).map_err(|e| Error::io("read tx-checksumming of", ifname, e))
}

/// Turns TX checksum offload on or off (`ethtool -K IF tx off`).
pub fn set_tx_checksum(ifname: &str, enabled: bool) -> Result<()> {
    validate_ifname("set tx-checksumming", ifname)?;
    tracing::debug!(ifname, enabled, netns = ?crate::netns::current_label(), "set tx-checksumming");
    sys::tx_csum_set(ifname, enabled).map_err(|e| {
        Error::io(
            if enabled {
                "enable tx-checksumming on"
            } else {
                "disable tx-checksumming on"
            },
            ifname,
            e,
        )
    })
}
