//! Address announcements: gratuitous ARP (IPv4) and unsolicited neighbour advertisement (IPv6).
//!
//! Frames are built by pure functions and sent whole over an AF_PACKET socket bound to the
//! interface. Sending acts on the calling thread's netns: call from inside
//! [`Netns::run`](crate::Netns::run), after the interface is up with its address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recv, send, setsockopt, sockopt, MsgFlags};
use nix::sys::time::TimeVal;

use crate::error::{Error, Result};
use crate::mac::MacAddr;
use crate::netlink::validate_ifname;
use crate::sys;

/// EtherType ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Length of a gratuitous ARP frame (Ethernet + ARP, no padding).
pub const GARP_FRAME_LEN: usize = 42;
/// Length of an unsolicited NA frame (Ethernet + IPv6 + NA + target link-layer option).
pub const NA_FRAME_LEN: usize = 86;

/// ff02::1, all-nodes.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Gratuitous ARP: broadcast ARP request with sender IP = target IP = `ip` (RFC 5227
/// "ARP announcement"), target hardware address zero.
pub fn gratuitous_arp_frame(mac: MacAddr, ip: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    let mut f = [0u8; GARP_FRAME_LEN];
    f[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // htype Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // ptype IPv4
    f[18] = 6; // hlen
    f[19] = 4; // plen
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // op request
    f[22..28].copy_from_slice(&mac.0); // sha
    f[28..32].copy_from_slice(&ip.octets()); // spa
                                             // tha stays 00:00:00:00:00:00
    f[38..42].copy_from_slice(&ip.octets()); // tpa
    f
}

/// Unsolicited neighbour advertisement for `ip` to ff02::1: ICMPv6 type 136, Override flag
/// set (Solicited and Router clear), target link-layer address option, hop limit 255,
/// IPv6 source = `ip`.
pub fn unsolicited_na_frame(mac: MacAddr, ip: Ipv6Addr) -> [u8; NA_FRAME_LEN] {
    let mut f = [0u8; NA_FRAME_LEN];
    // Ethernet
    f[0..6].copy_from_slice(&MacAddr::ipv6_multicast(ALL_NODES).0);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    // IPv6 header
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes()); // payload length
    f[20] = 58; // next header ICMPv6
    f[21] = 255; // hop limit (required by RFC 4861)
    f[22..38].copy_from_slice(&ip.octets());
    f[38..54].copy_from_slice(&ALL_NODES.octets());
    // ICMPv6 NA
    f[54] = 136;
    f[55] = 0;
    f[58] = 0x20; // R=0 S=0 O=1
    f[62..78].copy_from_slice(&ip.octets());
    f[78] = 2; // option: target link-layer address
    f[79] = 1; // length in units of 8 octets
    f[80..86].copy_from_slice(&mac.0);
    let csum = icmpv6_checksum(ip, ALL_NODES, &f[54..86]);
    f[56..58].copy_from_slice(&csum.to_be_bytes());
    f
}

/// RFC 4443 ICMPv6 checksum over the pseudo-header and `icmp` (checksum field zeroed).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = match chunk {
                [a, b] => u16::from_be_bytes([*a, *b]),
                [a] => u16::from_be_bytes([*a, 0]),
                _ => 0,
            };
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    // Skip the checksum field itself (bytes 2..4).
    add(&icmp[..2.min(icmp.len())]);
    if icmp.len() > 4 {
        add(&icmp[4..]);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An AF_PACKET raw socket bound to one interface and EtherType, in the netns of the thread
/// that opened it (it keeps working from any thread afterwards).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
    mac: Option<MacAddr>,
}

impl PacketSocket {
    /// Opens and binds the socket on `ifname` for `ethertype` (e.g. [`ETH_P_ARP`]).
    pub fn open(ifname: &str, ethertype: u16) -> Result<Self> {
        validate_ifname("open packet socket", ifname)?;
        let ifindex = nix::net::if_::if_nametoindex(ifname)
            .map_err(|e| Error::errno("open packet socket on", ifname, e))?;
        let (fd, mac) = sys::packet_socket(ifindex, ethertype)
            .map_err(|e| Error::io("open packet socket on", ifname, e))?;
        Ok(PacketSocket {
            fd,
            ifname: ifname.to_string(),
            mac: mac.map(MacAddr),
        })
    }

    /// Hardware address of the bound interface.
    pub fn mac(&self) -> Option<MacAddr> {
        self.mac
    }

    /// Sends one complete Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let n = send(self.fd.as_raw_fd(), frame, MsgFlags::empty())
            .map_err(|e| Error::errno("send frame on", &*self.ifname, e))?;
        if n != frame.len() {
            return Err(Error::errno(
                "send frame on",
                &*self.ifname,
                Errno::EMSGSIZE,
            ));
        }
        Ok(())
    }

    /// Receives one frame, `Ok(None)` on timeout.
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        let tv = TimeVal::new(
            i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX) as _,
            i64::from(timeout.subsec_micros().max(1)) as _,
        );
        setsockopt(&self.fd.as_fd(), sockopt::ReceiveTimeout, &tv)
            .map_err(|e| Error::errno("set receive timeout on", &*self.ifname, e))?;
        match recv(self.fd.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(n) => Ok(Some(n)),
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(None),
            Err(e) => Err(Error::errno("receive frame on", &*self.ifname, e)),
        }
    }

    /// Receives frames until one satisfies `pred` or `timeout` passes.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if let Some(n) = self.recv_timeout(&mut buf, left)? {
                let frame = &buf[..n];
                if pred(frame) {
                    return Ok(Some(frame.to_vec()));
                }
            }
        }
    }
}

fn socket_with_mac(
    ifname: &str,
    ethertype: u16,
    op: &'static str,
) -> Result<(PacketSocket, MacAddr)> {
    let sock = PacketSocket::open(ifname, ethertype)?;
    let mac = sock
        .mac()
        .ok_or_else(|| Error::invalid(op, ifname, "interface has no Ethernet address"))?;
    Ok((sock, mac))
}

/// Sends a gratuitous ARP for `ip` from `ifname`.
pub fn send_gratuitous_arp(ifname: &str, ip: Ipv4Addr) -> Result<()> {
    let (sock, mac) = socket_with_mac(ifname, ETH_P_ARP, "send gratuitous ARP")?;
    tracing::debug!(ifname, %ip, %mac, netns = ?crate::netns::current_label(), "send gratuitous ARP");
    sock.send(&gratuitous_arp_frame(mac, ip))
}

/// Sends an unsolicited neighbour advertisement for `ip` from `ifname`.
pub fn send_unsolicited_na(ifname: &str, ip: Ipv6Addr) -> Result<()> {
    let (sock, mac) = socket_with_mac(ifname, ETH_P_IPV6, "send unsolicited NA")?;
    tracing::debug!(ifname, %ip, %mac, netns = ?crate::netns::current_label(), "send unsolicited NA");
    sock.send(&unsolicited_na_frame(mac, ip))
}

/// Gratuitous ARP or unsolicited NA depending on the family of `ip`.
pub fn announce(ifname: &str, ip: IpAddr) -> Result<()> {
    match ip {
        IpAddr::V4(v4) => send_gratuitous_arp(ifname, v4),
        IpAddr::V6(v6) => send_unsolicited_na(ifname, v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]);

    #[test]
    fn garp_bytes() {
        let f = gratuitous_arp_frame(MAC, Ipv4Addr::new(10, 0, 0, 5));
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,             // dst broadcast
            0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56,             // src
            0x08, 0x06,                                     // ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04,             // Ethernet/IPv4, hlen 6, plen 4
            0x00, 0x01,                                     // request
            0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56,             // sha
            10, 0, 0, 5,                                    // spa
            0, 0, 0, 0, 0, 0,                               // tha
            10, 0, 0, 5,                                    // tpa
        ];
        assert_eq!(f, expected);
    }

    #[test]
    fn na_bytes() {
        let ip: Ipv6Addr = "2001:db8::10".parse().expect("ip");
        let f = unsolicited_na_frame(MAC, ip);
        #[rustfmt::skip]
        let expected: [u8; 86] = [
            0x33, 0x33, 0x00, 0x00, 0x00, 0x01,             // dst 33:33:00:00:00:01
            0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56,             // src
            0x86, 0xdd,                                     // IPv6
            0x60, 0x00, 0x00, 0x00,                         // version 6
            0x00, 0x20, 58, 255,                            // payload 32, ICMPv6, hop limit 255
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // src 2001:db8::10
            0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,       // dst ff02::1
            136, 0,                                         // NA, code 0
            0x8e, 0x8e,                                     // checksum (computed independently)
            0x20, 0, 0, 0,                                  // O flag
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // target
            2, 1, 0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56,       // target link-layer address option
        ];
        assert_eq!(f, expected);
    }

    #[test]
    fn na_checksum_verifies_to_zero() {
        // Summing a packet including its checksum must fold to 0xffff (i.e. ~sum == 0).
        let ip: Ipv6Addr = "fd00:1:2::abcd".parse().expect("ip");
        let f = unsolicited_na_frame(MacAddr([2, 0, 0, 0, 0, 1]), ip);
        let icmp = &f[54..86];
        let mut sum: u32 = 0;
        let mut words = Vec::new();
        words.extend_from_slice(&ip.octets());
        words.extend_from_slice(&ALL_NODES.octets());
        words.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        words.extend_from_slice(&[0, 0, 0, 58]);
        words.extend_from_slice(icmp);
        for c in words.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
