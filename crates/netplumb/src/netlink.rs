//! Typed rtnetlink verbs.
//!
//! A [`Netlink`] is bound to the netns of the thread that opened it. Get one inside a netns
//! with [`Netns::with_netlink`](crate::Netns::with_netlink), which opens the socket on the
//! dedicated netns thread and drives it with a current-thread tokio runtime.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoMacVlan, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
    MacVlanMode, State,
};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{
    AddressMessageBuilder, LinkDummy, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan,
    RouteMessageBuilder,
};

use crate::error::{Error, ErrorKind, Result};
use crate::mac::MacAddr;
use crate::netns::{current_label, Netns};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Checks an interface name the way the kernel's `dev_valid_name` does.
pub fn validate_ifname(op: &'static str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > MAX_IFNAME_LEN
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if bad {
        return Err(Error::invalid(
            op,
            format!("{name:?}"),
            "invalid interface name",
        ));
    }
    Ok(())
}

/// IP address family selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    /// IPv4
    V4,
    /// IPv6
    V6,
}

impl IpFamily {
    /// Family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }
    fn address_family(self) -> AddressFamily {
        match self {
            IpFamily::V4 => AddressFamily::Inet,
            IpFamily::V6 => AddressFamily::Inet6,
        }
    }
}

/// RFC 2863 operational state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    /// Unknown (typical for loopback / some virtual links).
    Unknown,
    /// Not present.
    NotPresent,
    /// Down.
    Down,
    /// Down because the lower layer (e.g. veth peer) is down.
    LowerLayerDown,
    /// Testing.
    Testing,
    /// Dormant.
    Dormant,
    /// Up.
    Up,
    /// Value unknown to this crate.
    Other(u8),
}

impl From<State> for OperState {
    fn from(s: State) -> Self {
        match s {
            State::Unknown => OperState::Unknown,
            State::NotPresent => OperState::NotPresent,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Testing => OperState::Testing,
            State::Dormant => OperState::Dormant,
            State::Up => OperState::Up,
            State::Other(v) => OperState::Other(v),
            _ => OperState::Other(255),
        }
    }
}

/// What `ip link show` tells about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// ifindex.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address.
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: Option<u32>,
    /// IFF_UP (administratively up).
    pub admin_up: bool,
    /// IFF_LOWER_UP (carrier).
    pub lower_up: bool,
    /// Operational state.
    pub oper_state: OperState,
    /// Link kind (`veth`, `macvlan`, `vlan`, ...), absent for physical NICs and loopback.
    pub kind: Option<String>,
    /// IFLA_LINK: parent (macvlan/vlan) or peer (veth) ifindex, possibly in another netns.
    pub link_index: Option<u32>,
    /// IFLA_PROMISCUITY: how many users put the device in promiscuous mode (ovs-vswitchd is
    /// one once it has opened the device for its datapath).
    pub promiscuity: Option<u32>,
}

impl LinkInfo {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut info = LinkInfo {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            admin_up: msg.header.flags.contains(LinkFlags::Up),
            lower_up: msg.header.flags.contains(LinkFlags::LowerUp),
            oper_state: OperState::Unknown,
            kind: None,
            link_index: None,
            promiscuity: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => info.name = n.clone(),
                LinkAttribute::Address(a) => info.mac = MacAddr::from_slice(a),
                LinkAttribute::Mtu(m) => info.mtu = Some(*m),
                LinkAttribute::OperState(s) => info.oper_state = (*s).into(),
                LinkAttribute::Link(l) => info.link_index = Some(*l),
                LinkAttribute::Promiscuity(p) => info.promiscuity = Some(*p),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let NlLinkInfo::Kind(k) = i {
                            info.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }
}

/// Options for [`Netlink::create_veth`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VethOptions {
    /// MTU for both ends.
    pub mtu: Option<u32>,
    /// MAC of the local end.
    pub mac: Option<MacAddr>,
    /// MAC of the peer end.
    pub peer_mac: Option<MacAddr>,
}

/// Macvlan mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    /// No traffic between macvlans on the same parent.
    Private,
    /// Traffic between macvlans goes through the external switch.
    Vepa,
    /// Macvlans on the same parent talk directly (the usual choice).
    Bridge,
    /// Single macvlan takes over the parent.
    Passthru,
}

impl From<MacvlanMode> for MacVlanMode {
    fn from(m: MacvlanMode) -> Self {
        match m {
            MacvlanMode::Private => MacVlanMode::Private,
            MacvlanMode::Vepa => MacVlanMode::Vepa,
            MacvlanMode::Bridge => MacVlanMode::Bridge,
            MacvlanMode::Passthru => MacVlanMode::Passthrough,
        }
    }
}

/// A route to add or delete. Always bound to an output interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination (host bits are cleared before sending); `0.0.0.0/0` / `::/0` is default.
    pub dest: IpNet,
    /// Next hop; `None` makes a directly connected (scope link) route.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub ifname: String,
    /// RTNH_F_ONLINK: treat the gateway as on-link even if no subnet covers it.
    pub onlink: bool,
    /// Route priority (metric).
    pub metric: Option<u32>,
}

impl RouteSpec {
    /// `default via GW dev IF`.
    pub fn default_via(ifname: &str, gateway: IpAddr) -> Self {
        let dest = match gateway {
            IpAddr::V4(_) => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        }
        .unwrap_or_default();
        Self::via(ifname, dest, gateway)
    }
    /// `DEST via GW dev IF` (e.g. subnet host routes).
    pub fn via(ifname: &str, dest: IpNet, gateway: IpAddr) -> Self {
        RouteSpec {
            dest,
            gateway: Some(gateway),
            ifname: ifname.to_string(),
            onlink: false,
            metric: None,
        }
    }
    /// `DEST dev IF` (directly connected, no gateway).
    pub fn link(ifname: &str, dest: IpNet) -> Self {
        RouteSpec {
            dest,
            gateway: None,
            ifname: ifname.to_string(),
            onlink: false,
            metric: None,
        }
    }
    /// Marks the gateway on-link (`ip route ... onlink`).
    pub fn onlink(mut self) -> Self {
        self.onlink = true;
        self
    }
    /// Sets the metric.
    pub fn metric(mut self, metric: u32) -> Self {
        self.metric = Some(metric);
        self
    }
    fn describe(&self) -> String {
        let mut s = self.dest.trunc().to_string();
        if let Some(gw) = self.gateway {
            s.push_str(&format!(" via {gw}"));
        }
        s.push_str(&format!(" dev {}", self.ifname));
        if self.onlink {
            s.push_str(" onlink");
        }
        s
    }
}

/// One route read back from the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination network.
    pub dest: IpNet,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Output ifindex.
    pub oif: Option<u32>,
    /// RTNH_F_ONLINK was set.
    pub onlink: bool,
    /// Scope link (directly connected).
    pub scope_link: bool,
    /// Priority (metric).
    pub metric: Option<u32>,
    /// Routing table id.
    pub table: u32,
}

/// One neighbour (ARP / NDP) cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface index.
    pub ifindex: u32,
    /// IP address.
    pub ip: IpAddr,
    /// Link-layer address, absent for incomplete entries.
    pub mac: Option<MacAddr>,
    /// Kernel state, e.g. `Stale`, `Reachable`.
    pub state: String,
}

/// Builds the RTM_NEWLINK request for `ip link add link PARENT name NAME type vlan id ID`
/// (optionally `netns FD`). Pure: nothing is sent.
pub fn vlan_link_message(
    name: &str,
    parent_index: u32,
    vlan_id: u16,
    target_netns: Option<BorrowedFd<'_>>,
) -> Result<LinkMessage> {
    validate_ifname("build vlan request", name)?;
    if vlan_id == 0 || vlan_id > 4094 {
        return Err(Error::invalid(
            "build vlan request",
            name,
            format!("vlan id {vlan_id} out of range 1..=4094"),
        ));
    }
    if parent_index == 0 {
        return Err(Error::invalid(
            "build vlan request",
            name,
            "parent ifindex 0",
        ));
    }
    let mut b = LinkVlan::new(name, parent_index, vlan_id);
    if let Some(fd) = target_netns {
        b = b.setns_by_fd(fd.as_raw_fd());
    }
    Ok(b.build())
}

/// Handle on an rtnetlink socket opened in one netns.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    ns: Option<Arc<str>>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("ns", &self.ns).finish()
    }
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's netns and spawns its driver task.
    ///
    /// Must be called within a tokio runtime (as inside [`Netns::with_netlink`]).
    pub fn connect() -> Result<Self> {
        let ns = current_label();
        let rt = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::other(
                "open rtnetlink",
                "socket",
                ErrorKind::Other,
                format!("no tokio runtime: {e}"),
            )
        })?;
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("open rtnetlink", "socket", e))?;
        rt.spawn(conn);
        Ok(Netlink { handle, ns })
    }

    /// The raw rtnetlink handle, for requests this crate does not wrap.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    fn nl_err(
        &self,
        op: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(rtnetlink::Error) -> Error + '_ {
        let object = object.into();
        move |e| Error::netlink(op, object, e).in_netns(self.ns.clone())
    }

    fn with_ns(&self, e: Error) -> Error {
        e.in_netns(self.ns.clone())
    }

    /// Link by name, `None` if absent.
    pub async fn find_link(&self, name: &str) -> Result<Option<LinkInfo>> {
        validate_ifname("get link", name).map_err(|e| self.with_ns(e))?;
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(Some(msg)) => Ok(Some(LinkInfo::from_message(&msg))),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = self.nl_err("get link", name)(e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Link by name; [`ErrorKind::NotFound`] if absent.
    pub async fn link(&self, name: &str) -> Result<LinkInfo> {
        self.link_for("get link", name).await
    }

    async fn link_for(&self, op: &'static str, name: &str) -> Result<LinkInfo> {
        validate_ifname(op, name).map_err(|e| self.with_ns(e))?;
        match self.find_link(name).await {
            Ok(Some(l)) => Ok(l),
            Ok(None) => Err(self.with_ns(Error::errno(op, name, nix::errno::Errno::ENODEV))),
            Err(e) => Err(e),
        }
    }

    async fn index_for(&self, op: &'static str, name: &str) -> Result<u32> {
        Ok(self.link_for(op, name).await?.index)
    }

    /// Waits until `name` is operationally up (carrier and linkwatch settled; the kernel
    /// drops IPv6 input until then) or `timeout` passes ([`ErrorKind::TimedOut`]).
    ///
    /// Event-driven: subscribes to `RTNLGRP_LINK` on a second socket of the same netns
    /// *before* reading the current state, so an RTM_NEWLINK between the two is not lost.
    pub async fn wait_oper_up(&self, name: &str, timeout: std::time::Duration) -> Result<LinkInfo> {
        use futures_util::StreamExt;
        use rtnetlink::packet_core::NetlinkPayload;
        use rtnetlink::packet_route::RouteNetlinkMessage;
        use rtnetlink::sys::{AsyncSocket, SocketAddr};

        const OP: &str = "wait for link up";
        fn is_up(l: &LinkInfo) -> bool {
            l.oper_state == OperState::Up
                || (l.oper_state == OperState::Unknown && l.admin_up && l.lower_up)
        }
        let (mut conn, _handle, mut events) =
            rtnetlink::new_connection().map_err(|e| self.with_ns(Error::io(OP, name, e)))?;
        conn.socket_mut()
            .socket_mut()
            .bind(&SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK))
            .map_err(|e| self.with_ns(Error::io(OP, name, e)))?;
        let driver = tokio::spawn(conn);
        let result = async {
            let link = self.link_for(OP, name).await?;
            if is_up(&link) {
                return Ok(link);
            }
            let index = link.index;
            let mut last = link.oper_state;
            let wait = async {
                while let Some((msg, _)) = events.next().await {
                    if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) =
                        msg.payload
                    {
                        if m.header.index == index {
                            let l = LinkInfo::from_message(&m);
                            if is_up(&l) {
                                return Some(l);
                            }
                            last = l.oper_state;
                        }
                    }
                }
                None
            };
            let waited = tokio::time::timeout(timeout, wait).await;
            match waited {
                Ok(Some(l)) => Ok(l),
                Ok(None) => Err(self.with_ns(Error::other(
                    OP,
                    name,
                    ErrorKind::Other,
                    "link event subscription closed".to_string(),
                ))),
                Err(_) => Err(self.with_ns(Error::other(
                    OP,
                    name,
                    ErrorKind::TimedOut,
                    format!("still {last:?} after {timeout:?}"),
                ))),
            }
        }
        .await;
        driver.abort();
        result
    }

    /// All links.
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(self.nl_err("list links", "all"))?;
        Ok(msgs.iter().map(LinkInfo::from_message).collect())
    }

    /// Creates a veth pair `name <-> peer`; the peer is created directly in `peer_netns`
    /// (if given) under `peer` (e.g. `eth0`). Both ends start down.
    pub async fn create_veth(
        &self,
        name: &str,
        peer: &str,
        peer_netns: Option<&Netns>,
        opts: &VethOptions,
    ) -> Result<()> {
        let op = "create veth";
        let object = match peer_netns {
            Some(ns) => format!("{name} <-> {peer} (peer netns {})", ns.label()),
            None => format!("{name} <-> {peer}"),
        };
        validate_ifname(op, name).map_err(|e| self.with_ns(e))?;
        validate_ifname(op, peer).map_err(|e| self.with_ns(e))?;
        let mut pb = LinkMessageBuilder::<LinkUnspec>::new().name(peer);
        if let Some(ns) = peer_netns {
            pb = pb.setns_by_fd(ns.as_fd().as_raw_fd());
        }
        if let Some(mtu) = opts.mtu {
            pb = pb.mtu(mtu);
        }
        if let Some(mac) = opts.peer_mac {
            pb = pb.address(mac.0.to_vec());
        }
        let mut b =
            LinkVeth::new(name, peer).set_info_data(InfoData::Veth(InfoVeth::Peer(pb.build())));
        if let Some(mtu) = opts.mtu {
            b = b.mtu(mtu);
        }
        if let Some(mac) = opts.mac {
            b = b.address(mac.0.to_vec());
        }
        tracing::debug!(netns = ?self.ns, %object, ?opts, "create veth");
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(self.nl_err(op, object))
        // `peer_netns` fd stays borrowed until here, so the raw fd in the message is valid.
    }

    /// Creates a `dummy` link (needs the dummy module).
    pub async fn create_dummy(&self, name: &str) -> Result<()> {
        validate_ifname("create dummy", name).map_err(|e| self.with_ns(e))?;
        tracing::debug!(netns = ?self.ns, name, "create dummy");
        self.handle
            .link()
            .add(LinkDummy::new(name).build())
            .execute()
            .await
            .map_err(self.nl_err("create dummy", name))
    }

    /// Creates a macvlan `name` on `parent`, directly in `target` netns if given.
    pub async fn create_macvlan(
        &self,
        parent: &str,
        name: &str,
        mode: MacvlanMode,
        target: Option<&Netns>,
        mtu: Option<u32>,
    ) -> Result<()> {
        let op = "create macvlan";
        let object = match target {
            Some(ns) => format!("{name} on {parent} (into netns {})", ns.label()),
            None => format!("{name} on {parent}"),
        };
        validate_ifname(op, name).map_err(|e| self.with_ns(e))?;
        let parent_index = self.index_for(op, parent).await?;
        let mut b = LinkMessageBuilder::<rtnetlink::LinkMacVlan>::new(name)
            .link(parent_index)
            .append_info_data(InfoMacVlan::Mode(mode.into()));
        if let Some(ns) = target {
            b = b.setns_by_fd(ns.as_fd().as_raw_fd());
        }
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        tracing::debug!(netns = ?self.ns, %object, ?mode, "create macvlan");
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(self.nl_err(op, object))
    }

    /// Creates VLAN `vlan_id` sub-interface `name` on `parent` (needs the 8021q module).
    pub async fn create_vlan(
        &self,
        parent: &str,
        name: &str,
        vlan_id: u16,
        target: Option<&Netns>,
    ) -> Result<()> {
        let op = "create vlan";
        let object = format!("{name} on {parent} id {vlan_id}");
        let parent_index = self.index_for(op, parent).await?;
        let msg = vlan_link_message(name, parent_index, vlan_id, target.map(|t| t.as_fd()))
            .map_err(|e| self.with_ns(e))?;
        tracing::debug!(netns = ?self.ns, %object, "create vlan");
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(self.nl_err(op, object))
    }

    async fn change_link(
        &self,
        op: &'static str,
        object: String,
        name: &str,
        f: impl FnOnce(LinkMessageBuilder<LinkUnspec>) -> LinkMessageBuilder<LinkUnspec>,
    ) -> Result<()> {
        let index = self.index_for(op, name).await?;
        let msg = f(LinkUnspec::new_with_index(index)).build();
        tracing::debug!(netns = ?self.ns, %object, op, "change link");
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(self.nl_err(op, object))
    }

    /// `ip link set IF address MAC`.
    pub async fn set_mac(&self, name: &str, mac: MacAddr) -> Result<()> {
        self.change_link("set mac", format!("{name} to {mac}"), name, |b| {
            b.address(mac.0.to_vec())
        })
        .await
    }

    /// `ip link set IF mtu MTU`.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        self.change_link("set mtu", format!("{name} to {mtu}"), name, |b| b.mtu(mtu))
            .await
    }

    /// `ip link set IF up`.
    pub async fn set_up(&self, name: &str) -> Result<()> {
        self.change_link("set link up", name.to_string(), name, |b| b.up())
            .await
    }

    /// `ip link set IF down`.
    pub async fn set_down(&self, name: &str) -> Result<()> {
        self.change_link("set link down", name.to_string(), name, |b| b.down())
            .await
    }

    /// `ip link set OLD name NEW` (the link must be down).
    pub async fn rename(&self, name: &str, new_name: &str) -> Result<()> {
        validate_ifname("rename link", new_name).map_err(|e| self.with_ns(e))?;
        self.change_link("rename link", format!("{name} to {new_name}"), name, |b| {
            b.name(new_name)
        })
        .await
    }

    /// `ip link set IF netns TARGET [name NEW]`: moves a link, optionally renaming it atomically
    /// (so e.g. a pre-plugged `tmp1234` can become `eth0` in the pod).
    pub async fn move_link_to_netns(
        &self,
        name: &str,
        target: &Netns,
        new_name: Option<&str>,
    ) -> Result<()> {
        let op = "move link";
        if let Some(n) = new_name {
            validate_ifname(op, n).map_err(|e| self.with_ns(e))?;
        }
        let object = match new_name {
            Some(n) => format!("{name} to netns {} as {n}", target.label()),
            None => format!("{name} to netns {}", target.label()),
        };
        let fd = target.as_fd().as_raw_fd();
        self.change_link(op, object, name, |b| {
            let b = b.setns_by_fd(fd);
            match new_name {
                Some(n) => b.name(n),
                None => b,
            }
        })
        .await
    }

    /// `ip link del IF`; `Ok(false)` if it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool> {
        let Some(link) = self.find_link(name).await? else {
            tracing::debug!(netns = ?self.ns, name, "delete link: already absent");
            return Ok(false);
        };
        tracing::debug!(netns = ?self.ns, name, "delete link");
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = self.nl_err("delete link", name)(e);
                if e.is_not_found() {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Addresses on a link (IPv4 and IPv6, including link-local).
    pub async fn addresses(&self, ifname: &str) -> Result<Vec<IpNet>> {
        let index = self.index_for("list addresses", ifname).await?;
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(self.nl_err("list addresses", ifname))?;
        let mut out = Vec::new();
        for m in msgs {
            let mut local = None;
            let mut address = None;
            for a in &m.attributes {
                match a {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                if let Ok(net) = IpNet::new(ip, m.header.prefix_len) {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    /// `ip addr add ADDR/PLEN dev IF`. IPv6 addresses are added with `nodad` (Neutron
    /// already guarantees uniqueness), so they are usable at once.
    pub async fn add_address(&self, ifname: &str, addr: IpNet) -> Result<()> {
        let op = "add address";
        let object = format!("{addr} to {ifname}");
        let index = self.index_for(op, ifname).await?;
        let mut req = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        tracing::debug!(netns = ?self.ns, %object, "add address");
        req.execute().await.map_err(self.nl_err(op, object))
    }

    /// `ip addr del ADDR/PLEN dev IF`; `Ok(false)` if it was not there.
    pub async fn del_address(&self, ifname: &str, addr: IpNet) -> Result<bool> {
        let op = "delete address";
        let object = format!("{addr} from {ifname}");
        let index = self.index_for(op, ifname).await?;
        let msg = match addr.addr() {
            IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(a, addr.prefix_len())
                .build(),
            IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(a, addr.prefix_len())
                .build(),
        };
        tracing::debug!(netns = ?self.ns, %object, "delete address");
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = self.nl_err(op, object)(e);
                if e.is_not_found() {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn route_message(&self, op: &'static str, spec: &RouteSpec) -> Result<RouteMessage> {
        let object = spec.describe();
        let index = self.index_for(op, &spec.ifname).await?;
        let dest = spec.dest.trunc();
        let invalid = |why: String| self.with_ns(Error::invalid(op, object.clone(), why));
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.addr(), dest.prefix_len())
            .map_err(|e| invalid(e.to_string()))?
            .output_interface(index);
        match spec.gateway {
            Some(gw) => {
                if gw.is_ipv4() != dest.addr().is_ipv4() {
                    return Err(invalid("gateway and destination families differ".into()));
                }
                b = b.gateway(gw).map_err(|e| invalid(e.to_string()))?;
            }
            None if dest.addr().is_ipv4() => b = b.scope(RouteScope::Link),
            None => {}
        }
        if spec.onlink {
            b = b.onlink();
        }
        if let Some(m) = spec.metric {
            b = b.priority(m);
        }
        Ok(b.build())
    }

    /// `ip route add ...`; [`ErrorKind::AlreadyExists`] if an identical route exists.
    pub async fn add_route(&self, spec: &RouteSpec) -> Result<()> {
        let op = "add route";
        let msg = self.route_message(op, spec).await?;
        tracing::debug!(netns = ?self.ns, route = %spec.describe(), "add route");
        self.handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(self.nl_err(op, spec.describe()))
    }

    /// `ip route del ...`; `Ok(false)` if no such route.
    pub async fn del_route(&self, spec: &RouteSpec) -> Result<bool> {
        let op = "delete route";
        let msg = self.route_message(op, spec).await?;
        tracing::debug!(netns = ?self.ns, route = %spec.describe(), "delete route");
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = self.nl_err(op, spec.describe())(e);
                if e.is_not_found() {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Routes of one family in the main table.
    pub async fn routes(&self, family: IpFamily) -> Result<Vec<RouteInfo>> {
        let query = match family {
            IpFamily::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            IpFamily::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(self.nl_err("list routes", format!("{family:?}")))?;
        Ok(msgs
            .iter()
            .filter_map(parse_route)
            .filter(|r| r.table == u32::from(RouteHeader::RT_TABLE_MAIN))
            .collect())
    }

    /// Neighbour cache entries of one family.
    pub async fn neighbours(&self, family: IpFamily) -> Result<Vec<Neighbour>> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family.address_family())
            .execute()
            .try_collect()
            .await
            .map_err(self.nl_err("list neighbours", format!("{family:?}")))?;
        let mut out = Vec::new();
        for m in msgs {
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        ip = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        ip = Some(IpAddr::V6(*v6))
                    }
                    NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_slice(l),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(Neighbour {
                    ifindex: m.header.ifindex,
                    ip,
                    mac,
                    state: format!("{:?}", m.header.state),
                });
            }
        }
        Ok(out)
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn parse_route(m: &RouteMessage) -> Option<RouteInfo> {
    let unspecified = match m.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut dest = None;
    let mut info = RouteInfo {
        dest: IpNet::default(),
        gateway: None,
        oif: None,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        scope_link: m.header.scope == RouteScope::Link,
        metric: None,
        table: u32::from(m.header.table),
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dest = route_addr(d),
            RouteAttribute::Gateway(g) => info.gateway = route_addr(g),
            RouteAttribute::Oif(i) => info.oif = Some(*i),
            RouteAttribute::Priority(p) => info.metric = Some(*p),
            RouteAttribute::Table(t) => info.table = *t,
            _ => {}
        }
    }
    info.dest = IpNet::new(
        dest.unwrap_or(unspecified),
        m.header.destination_prefix_length,
    )
    .ok()?;
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;
    use rtnetlink::packet_route::link::{InfoKind, InfoVlan, LinkInfo as NlInfo};

    #[test]
    fn vlan_request_attributes() {
        let msg = vlan_link_message("eth0.100", 7, 100, None).expect("valid request");
        assert_eq!(msg.header.index, 0);
        assert!(msg
            .attributes
            .contains(&LinkAttribute::IfName("eth0.100".into())));
        assert!(msg.attributes.contains(&LinkAttribute::Link(7)));
        let infos = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .expect("IFLA_LINKINFO present");
        assert_eq!(
            infos,
            vec![
                NlInfo::Kind(InfoKind::Vlan),
                NlInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(100)]))
            ]
        );
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::NetNsFd(_))));
    }

    #[test]
    fn vlan_request_wire_format() {
        let msg = vlan_link_message("p1.42", 3, 42, None).expect("valid request");
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // ifinfomsg header is 16 bytes; then NLAs.
        let mut nlas = Vec::new();
        let mut off = 16;
        while off + 4 <= buf.len() {
            let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
            let kind = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]);
            nlas.push((kind, buf[off + 4..off + len].to_vec()));
            off += (len + 3) & !3;
        }
        // IFLA_IFNAME = 3, NUL terminated
        assert!(nlas.contains(&(3, b"p1.42\0".to_vec())));
        // IFLA_LINK = 5
        assert!(nlas.contains(&(5, 3u32.to_ne_bytes().to_vec())));
        // IFLA_LINKINFO = 18 { IFLA_INFO_KIND = 1 "vlan", IFLA_INFO_DATA = 2 { IFLA_VLAN_ID = 1 u16 } }
        let linkinfo = &nlas.iter().find(|(k, _)| *k == 18).expect("linkinfo").1;
        let expected: Vec<u8> = [
            &[9u8, 0, 1, 0][..],
            b"vlan\0",
            &[0, 0, 0],
            &[12, 0, 2, 0],
            &[6, 0, 1, 0],
            &42u16.to_ne_bytes(),
            &[0, 0],
        ]
        .concat();
        assert_eq!(linkinfo, &expected);
    }

    #[test]
    fn vlan_request_netns_fd() {
        let f =
            std::fs::File::open("/proc/self/ns/net").or_else(|_| std::fs::File::open("/dev/null"));
        let f = f.expect("some fd");
        let msg = vlan_link_message("v5", 2, 5, Some(f.as_fd())).expect("valid");
        assert!(msg
            .attributes
            .contains(&LinkAttribute::NetNsFd(f.as_raw_fd())));
    }

    #[test]
    fn vlan_request_rejects_bad_input() {
        assert_eq!(
            vlan_link_message("v", 2, 0, None)
                .map_err(|e| e.kind())
                .err(),
            Some(ErrorKind::InvalidInput)
        );
        assert!(vlan_link_message("v", 2, 4095, None).is_err());
        assert!(vlan_link_message("v", 0, 10, None).is_err());
        assert!(vlan_link_message("this-name-is-too-long", 2, 10, None).is_err());
        assert!(vlan_link_message("", 2, 10, None).is_err());
        assert!(vlan_link_message("a/b", 2, 10, None).is_err());
    }

    #[test]
    fn ifname_validation() {
        assert!(validate_ifname("t", "eth0").is_ok());
        assert!(validate_ifname("t", "tap0123456789ab").is_ok()); // 15 chars
        assert!(validate_ifname("t", "tap0123456789abc").is_err()); // 16 chars
        assert!(validate_ifname("t", "a b").is_err());
        assert!(validate_ifname("t", "..").is_err());
    }

    #[test]
    fn route_spec_describe_and_default() {
        let r = RouteSpec::default_via("eth0", "10.0.0.1".parse().expect("ip"));
        assert_eq!(r.dest.to_string(), "0.0.0.0/0");
        assert_eq!(r.describe(), "0.0.0.0/0 via 10.0.0.1 dev eth0");
        let r6 = RouteSpec::default_via("eth0", "fe80::1".parse().expect("ip")).onlink();
        assert_eq!(r6.describe(), "::/0 via fe80::1 dev eth0 onlink");
        let l = RouteSpec::link("eth0", "169.254.169.254/32".parse().expect("net"));
        assert_eq!(l.describe(), "169.254.169.254/32 dev eth0");
    }
}
