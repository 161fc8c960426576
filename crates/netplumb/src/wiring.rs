//! Composable pod-wiring steps built from the primitives.
//!
//! The two halves are separate on purpose: [`plug_veth`] creates the host side (and drops
//! the peer into some netns: the pod's, or a holding netns for pre-plugged ports);
//! [`move_link`] relocates a pre-plugged end; [`configure_interface`] configures whatever
//! interface is in the pod netns. Each step is idempotent where the kernel lets it be.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::error::Result;
use crate::mac::MacAddr;
use crate::netlink::{LinkInfo, RouteSpec, VethOptions};
use crate::netns::Netns;
use crate::{announce, ethtool, sysctl};

/// A veth pair to plug: `host_ifname` stays in the host netns, `peer_ifname` lands in the
/// target netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPlug {
    /// Host end, e.g. `tap1234abcd-12`.
    pub host_ifname: String,
    /// Peer end name inside the target netns, e.g. `eth0`.
    pub peer_ifname: String,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// MAC of the host end.
    pub host_mac: Option<MacAddr>,
    /// MAC of the peer end (usually the Neutron port's MAC).
    pub peer_mac: Option<MacAddr>,
}

/// Creates the veth pair from `host` with its peer directly in `target`, then sets the host
/// end up. If the host end already exists with the right kind, it is reused (idempotent).
/// Returns the host end.
pub fn plug_veth(host: &Netns, target: &Netns, plug: &VethPlug) -> Result<LinkInfo> {
    plug_veth_with(host, target, plug, ExistingHost::Reuse)
}

/// What [`plug_veth_with`] does when the host end already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingHost {
    /// Keep it if it is a veth (a retried plug into the same target).
    Reuse,
    /// Delete it and create the pair again (it belongs to an earlier sandbox: its peer is in
    /// another netns). All in the same netlink session as the create.
    Replace,
}

/// [`plug_veth`] with an explicit policy for a host end that already exists.
pub fn plug_veth_with(
    host: &Netns,
    target: &Netns,
    plug: &VethPlug,
    existing: ExistingHost,
) -> Result<LinkInfo> {
    host.with_netlink(async |nl| {
        let opts = VethOptions { mtu: plug.mtu, mac: plug.host_mac, peer_mac: plug.peer_mac };
        match nl.create_veth(&plug.host_ifname, &plug.peer_ifname, Some(target), &opts).await {
            Ok(()) => {}
            Err(e) if e.is_already_exists() => {
                match (nl.find_link(&plug.host_ifname).await?, existing) {
                    // Only reuse if it is the veth we would have created.
                    (Some(l), ExistingHost::Reuse) if l.kind.as_deref() == Some("veth") => {
                        tracing::debug!(host_ifname = %plug.host_ifname, "veth already plugged, reusing");
                    }
                    (Some(_), ExistingHost::Replace) => {
                        tracing::info!(host_ifname = %plug.host_ifname, "replacing a host interface left by an earlier sandbox");
                        nl.delete_link(&plug.host_ifname).await?;
                        nl.create_veth(&plug.host_ifname, &plug.peer_ifname, Some(target), &opts)
                            .await?;
                    }
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        nl.set_up(&plug.host_ifname).await?;
        nl.link(&plug.host_ifname).await
    })
}

/// Moves `name` from `from` into `to`, renaming it to `new_name` on the way if given.
pub fn move_link(from: &Netns, name: &str, to: &Netns, new_name: Option<&str>) -> Result<()> {
    from.with_netlink(async |nl| nl.move_link_to_netns(name, to, new_name).await)
}

/// How long [`configure_interface`] waits for the link to be operationally up before
/// sending announcements.
pub const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

/// Everything to configure on an interface that is already in its final netns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    /// Interface name inside the netns.
    pub ifname: String,
    /// MAC to set (link is brought down first if needed).
    pub mac: Option<MacAddr>,
    /// MTU to set.
    pub mtu: Option<u32>,
    /// Addresses with prefix length, e.g. `10.0.0.5/24`, `2001:db8::5/64`.
    pub addresses: Vec<IpNet>,
    /// Routes, added after the link is up.
    pub routes: Vec<RouteSpec>,
    /// Turn TX checksum offload off (needed behind some OVS / nested setups).
    pub disable_tx_checksum: bool,
    /// Send a gratuitous ARP / unsolicited NA per address once configured.
    pub announce: bool,
}

/// Configures an interface inside `ns`, all on one netns thread and one netlink socket:
/// enable IPv6 if needed, MAC, MTU, addresses, up, routes, tx-checksum, announcements.
/// Existing addresses/routes are accepted, so re-running is safe. Returns the final link.
pub fn configure_interface(ns: &Netns, cfg: &IfaceConfig) -> Result<LinkInfo> {
    ns.with_netlink(async |nl| {
        let ifname = cfg.ifname.as_str();
        let link = nl.link(ifname).await?;
        if cfg.addresses.iter().any(|a| a.addr().is_ipv6()) {
            sysctl::write(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0")?;
        }
        if let Some(mac) = cfg.mac {
            if link.mac != Some(mac) {
                if link.admin_up {
                    nl.set_down(ifname).await?;
                }
                nl.set_mac(ifname, mac).await?;
            }
        }
        if let Some(mtu) = cfg.mtu {
            if link.mtu != Some(mtu) {
                nl.set_mtu(ifname, mtu).await?;
            }
        }
        for addr in &cfg.addresses {
            ignore_exists(nl.add_address(ifname, *addr).await)?;
        }
        nl.set_up(ifname).await?;
        for route in &cfg.routes {
            ignore_exists(nl.add_route(route).await)?;
        }
        if cfg.disable_tx_checksum {
            ethtool::set_tx_checksum(ifname, false)?;
        }
        if cfg.announce && !cfg.addresses.is_empty() {
            // Best effort: announcements sent before the link is operationally up are lost,
            // but a peer that never comes up must not fail the wiring.
            if let Err(e) = nl.wait_oper_up(ifname, ANNOUNCE_WAIT).await {
                tracing::debug!(error = %e, "announcing anyway");
            }
            for addr in &cfg.addresses {
                let ip: IpAddr = addr.addr();
                announce::announce(ifname, ip)?;
            }
        }
        nl.link(ifname).await
    })
}

/// Sends `count` rounds of announcements (gratuitous ARP for IPv4, unsolicited NA for
/// IPv6) for every address in `ips` from `ifname` inside `ns`, `interval` apart, the way
/// `arping -U -c N` repeats them: a peer or a router that misses one (the port was being
/// bound) still gets the next. One packet socket per family for all rounds (closing an
/// AF_PACKET socket waits for an RCU grace period, a few ms). Waits (event-driven, at most
/// [`ANNOUNCE_WAIT`]) for the link to be operationally up first. Blocks the calling thread
/// for about `(count - 1) * interval`: run it off the request path.
pub fn announce_addresses(
    ns: &Netns,
    ifname: &str,
    ips: &[IpAddr],
    count: u32,
    interval: Duration,
) -> Result<u32> {
    if ips.is_empty() || count == 0 {
        return Ok(0);
    }
    ns.with_netlink(async |nl| {
        if let Err(e) = nl.wait_oper_up(ifname, ANNOUNCE_WAIT).await {
            tracing::debug!(error = %e, "announcing anyway");
        }
        let open = |want_v6: bool, ethertype| -> Result<Option<announce::PacketSocket>> {
            if ips.iter().any(|ip| ip.is_ipv6() == want_v6) {
                announce::PacketSocket::open(ifname, ethertype).map(Some)
            } else {
                Ok(None)
            }
        };
        let v4 = open(false, announce::ETH_P_ARP)?;
        let v6 = open(true, announce::ETH_P_IPV6)?;
        let mut sent = 0;
        for round in 0..count {
            if round > 0 {
                tokio::time::sleep(interval).await;
            }
            for ip in ips {
                match (ip, &v4, &v6) {
                    (IpAddr::V4(a), Some(s), _) => {
                        let mac = s.mac().ok_or_else(|| {
                            crate::Error::invalid(
                                "send gratuitous ARP",
                                ifname,
                                "no Ethernet address",
                            )
                        })?;
                        s.send(&announce::gratuitous_arp_frame(mac, *a))?;
                    }
                    (IpAddr::V6(a), _, Some(s)) => {
                        let mac = s.mac().ok_or_else(|| {
                            crate::Error::invalid(
                                "send unsolicited NA",
                                ifname,
                                "no Ethernet address",
                            )
                        })?;
                        s.send(&announce::unsolicited_na_frame(mac, *a))?;
                    }
                    _ => continue,
                }
                sent += 1;
            }
        }
        tracing::debug!(ifname, sent, netns = %ns.label(), "announced addresses");
        Ok(sent)
    })
}

fn ignore_exists(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.is_already_exists() => {
            tracing::debug!(error = %e, "already present, keeping");
            Ok(())
        }
        other => other,
    }
}
