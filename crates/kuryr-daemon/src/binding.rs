//! Binding drivers: how a VIF becomes an interface in the pod.
//!
//! Wiring is two separate steps so that a port pool can pre-plug ports:
//!
//! 1. [`BindingDriver::plug_host`] creates the host side and drops the pod end, unconfigured,
//!    into a target netns under a target name: the pod's netns and `CNI_IFNAME` on a normal
//!    ADD, or a holding netns and a temporary name for a pre-plugged port (which ADD then
//!    moves with `kuryr_netplumb::move_link` and renames to `CNI_IFNAME`);
//! 2. [`configure_pod`] configures whatever interface is in the pod netns: MAC, MTU,
//!    addresses, routes, TX checksum, gratuitous ARP / unsolicited NA ([`l3`]).
//!
//! | binding | host side | pod end |
//! |---|---|---|
//! | `ovs` | veth, host end `tap…` in the OVS bridge with `external_ids:iface-id` | veth end |
//! | `hybrid` | veth `tap…` in Linux bridge `qbr…`, veth `qvb…`/`qvo…`, `qvo…` in OVS | veth end |
//! | `nested-macvlan` | none (macvlan, mode bridge, on `[binding] link_iface`) | macvlan |
//! | `nested-vlan` | none (VLAN `vlan_id` on `[binding] link_iface`) | VLAN sub-interface |

pub mod hybrid;
pub mod l3;
pub mod nested;
pub mod ovs;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kuryr_core::vif::{Binding, Vif};
use kuryr_netplumb::{configure_interface, IfaceConfig, Netns};
use kuryr_ovsdb::Ovs;

use crate::attachments::AttachedIface;

/// How long the after-ADD check waits for ovs-vswitchd to attach a plugged OVS port (ADD
/// itself does not wait: see [`ovs::add_ovs_port`]).
pub const OVS_ATTACH_WAIT: Duration = Duration::from_secs(30);

/// A failed wiring step.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Net(#[from] kuryr_netplumb::Error),
    #[error("OVSDB: {0}")]
    Ovs(#[from] kuryr_ovsdb::Error),
    #[error("{op} {object}: {source}")]
    Netlink {
        op: &'static str,
        object: String,
        #[source]
        source: kuryr_netplumb::rtnetlink::Error,
    },
    /// The VIF or the node cannot be wired this way (names what and why).
    #[error("{0}")]
    Unusable(String),
    #[error("wiring task failed: {0}")]
    Task(String),
}

impl BindError {
    pub fn is_already_exists(&self) -> bool {
        match self {
            BindError::Net(e) => e.is_already_exists(),
            BindError::Netlink {
                source: kuryr_netplumb::rtnetlink::Error::NetlinkError(m),
                ..
            } => m.code.is_some_and(|c| c.get() == -17),
            _ => false,
        }
    }
}

/// What the drivers share: the host netns, OVSDB, the nested parent NIC, MTU policy.
#[derive(Debug)]
pub struct HostEnv {
    /// The netns host-side devices live in (the daemon's own).
    pub host: Netns,
    pub ovs: Arc<Ovs>,
    /// `[binding] link_iface`: parent NIC of nested bindings.
    pub link_iface: Option<String>,
    /// `[neutron_defaults] network_device_mtu` (0 = use the network's MTU).
    pub network_device_mtu: u32,
    /// bridge → whether the pod end needs TX checksum offload off (netdev datapath without
    /// userspace TSO). Asked once per bridge.
    tx_csum_off: Mutex<HashMap<String, bool>>,
    /// bridge → whether it runs on the userspace (netdev) datapath. Asked once per bridge.
    userspace: Mutex<HashMap<String, bool>>,
}

impl HostEnv {
    pub fn new(
        host: Netns,
        ovs: Arc<Ovs>,
        link_iface: Option<String>,
        network_device_mtu: u32,
    ) -> Self {
        HostEnv {
            host,
            ovs,
            link_iface,
            network_device_mtu,
            tx_csum_off: Mutex::default(),
            userspace: Mutex::default(),
        }
    }

    /// MTU to configure: the network's, lowered to `network_device_mtu` when that is set.
    pub fn mtu_for(&self, vif: &Vif) -> u32 {
        match self.network_device_mtu {
            0 => vif.mtu,
            m => vif.mtu.min(m),
        }
    }

    /// Whether `bridge` runs on Open vSwitch's userspace (netdev) datapath. Fails if the bridge
    /// does not exist.
    pub async fn userspace_datapath(&self, bridge: &str) -> Result<bool, BindError> {
        if let Some(v) = self
            .userspace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(bridge)
        {
            return Ok(*v);
        }
        let info =
            self.ovs.bridge_exists(bridge).await?.ok_or_else(|| {
                BindError::Unusable(format!("OVS bridge {bridge} does not exist"))
            })?;
        let v = info.datapath_type == "netdev";
        self.userspace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bridge.to_owned(), v);
        Ok(v)
    }

    /// Whether the pod end behind `bridge` needs TX checksum offload turned off: with the
    /// userspace (netdev) datapath, partially checksummed packets from a veth are only
    /// fixed up when userspace TSO is on. Fails if the bridge does not exist.
    pub async fn tx_checksum_off(&self, bridge: &str) -> Result<bool, BindError> {
        if let Some(v) = self
            .tx_csum_off
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(bridge)
        {
            return Ok(*v);
        }
        let off =
            self.userspace_datapath(bridge).await? && !self.ovs.userspace_tso_enabled().await?;
        self.tx_csum_off
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bridge.to_owned(), off);
        Ok(off)
    }
}

/// Where `plug_host` drops the pod end.
#[derive(Debug, Clone)]
pub struct PlugTarget {
    pub netns: Netns,
    pub ifname: String,
    /// A new sandbox: host-side devices an earlier plug of the same VIF left (for a previous
    /// sandbox of the pod, their peer in another netns) are replaced, not reused.
    pub fresh: bool,
}

/// What `plug_host` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugged {
    /// Host-side device reported in the CNI result; empty for nested bindings.
    pub host_ifname: String,
    /// Parent NIC of nested bindings.
    pub parent: Option<String>,
    /// MTU of the pod end.
    pub mtu: u32,
    /// The pod end must have TX checksum offload off.
    pub tx_checksum_off: bool,
    /// The OVS port added to a bridge (`tap…` or `qvo…`), for the after-ADD attach check.
    pub ovs_port: Option<String>,
}

/// One way of attaching a VIF. See the module docs.
pub trait BindingDriver: Sync {
    /// `ovs`, `hybrid`, `nested-vlan`, `nested-macvlan`.
    fn kind(&self) -> &'static str;

    /// Creates the host side; the pod end lands unconfigured in `target`. Idempotent for the
    /// same VIF and target.
    fn plug_host(
        &self,
        env: &HostEnv,
        vif: &Vif,
        pod_uid: &str,
        target: &PlugTarget,
    ) -> impl Future<Output = Result<Plugged, BindError>> + Send;

    /// Undoes a plug: the host side when `host_side` (it may belong to a newer sandbox
    /// otherwise), and the pod end when its netns still exists. Absent devices are fine.
    fn unplug(
        &self,
        env: &HostEnv,
        iface: &AttachedIface,
        netns: Option<&Netns>,
        host_side: bool,
    ) -> impl Future<Output = Result<(), BindError>> + Send;

    /// CHECK of the host side: what differs from the record (empty = fine).
    fn check_host(
        &self,
        env: &HostEnv,
        iface: &AttachedIface,
    ) -> impl Future<Output = Vec<String>> + Send;
}

/// The driver for a binding (static dispatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Ovs(ovs::OvsDriver),
    Hybrid(hybrid::HybridDriver),
    Macvlan(nested::MacvlanDriver),
    Vlan(nested::VlanDriver),
}

impl Driver {
    pub fn for_binding(b: &Binding) -> Driver {
        match b {
            Binding::Ovs { .. } => Driver::Ovs(ovs::OvsDriver),
            Binding::Hybrid { .. } => Driver::Hybrid(hybrid::HybridDriver),
            Binding::NestedMacvlan => Driver::Macvlan(nested::MacvlanDriver),
            Binding::NestedVlan { .. } => Driver::Vlan(nested::VlanDriver),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            Driver::Ovs($d) => $e,
            Driver::Hybrid($d) => $e,
            Driver::Macvlan($d) => $e,
            Driver::Vlan($d) => $e,
        }
    };
}

impl BindingDriver for Driver {
    fn kind(&self) -> &'static str {
        delegate!(self, d => d.kind())
    }
    async fn plug_host(
        &self,
        env: &HostEnv,
        vif: &Vif,
        pod_uid: &str,
        target: &PlugTarget,
    ) -> Result<Plugged, BindError> {
        delegate!(self, d => d.plug_host(env, vif, pod_uid, target).await)
    }
    async fn unplug(
        &self,
        env: &HostEnv,
        iface: &AttachedIface,
        netns: Option<&Netns>,
        host_side: bool,
    ) -> Result<(), BindError> {
        delegate!(self, d => d.unplug(env, iface, netns, host_side).await)
    }
    async fn check_host(&self, env: &HostEnv, iface: &AttachedIface) -> Vec<String> {
        delegate!(self, d => d.check_host(env, iface).await)
    }
}

/// Runs blocking netns/netlink work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, BindError>
where
    F: FnOnce() -> Result<T, BindError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BindError::Task(e.to_string()))?
}

/// Step 2 of wiring: configures the interface in the pod netns (see [`l3::iface_config`]).
pub async fn configure_pod(netns: &Netns, cfg: IfaceConfig) -> Result<(), BindError> {
    let ns = netns.clone();
    blocking(move || {
        configure_interface(&ns, &cfg)
            .map(|_| ())
            .map_err(BindError::from)
    })
    .await
}

/// Deletes `name` in `ns` (absent is fine).
pub async fn delete_link_in(ns: &Netns, name: &str) -> Result<bool, BindError> {
    let (ns, name) = (ns.clone(), name.to_owned());
    blocking(move || {
        ns.with_netlink(async |nl| nl.delete_link(&name).await)
            .map_err(BindError::from)
    })
    .await
}

/// The host-side name of veth `name` in `ns` (its peer, looked up in the host netns `host`);
/// `None` when `name` is absent, not a veth, or its peer is not in `host`.
pub async fn veth_peer_in_host(
    ns: &Netns,
    name: &str,
    host: &Netns,
) -> Result<Option<String>, BindError> {
    let (ns, name, host) = (ns.clone(), name.to_owned(), host.clone());
    blocking(move || {
        let link = ns.with_netlink(async |nl| nl.find_link(&name).await)?;
        let Some(peer) = link
            .filter(|l| l.kind.as_deref() == Some("veth"))
            .and_then(|l| l.link_index)
        else {
            return Ok(None);
        };
        let links = host.with_netlink(async |nl| nl.links().await)?;
        Ok(links
            .into_iter()
            .find(|l| l.index == peer && l.kind.as_deref() == Some("veth"))
            .map(|l| l.name))
    })
    .await
}

/// Whether `name` exists in `ns`.
pub async fn link_exists(ns: &Netns, name: &str) -> Result<bool, BindError> {
    let (ns, name) = (ns.clone(), name.to_owned());
    blocking(move || {
        ns.with_netlink(async |nl| nl.find_link(&name).await.map(|l| l.is_some()))
            .map_err(BindError::from)
    })
    .await
}

/// `prefix` + the first 11 characters of the port id (os-vif's qbr/qvb/qvo names).
pub fn port_dev_name(prefix: &str, port_id: &str) -> String {
    let short: String = port_id.chars().take(11).collect();
    format!("{prefix}{short}")
}
