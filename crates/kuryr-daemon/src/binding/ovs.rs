//! `ovs` binding: a veth pair, the host end `tap…` in the OVS integration bridge with the
//! Neutron port id as `external_ids:iface-id` (what makes OVN/the OVS agent bind the port and
//! Neutron report it ACTIVE).

use kuryr_core::vif::{Binding, Vif};
use kuryr_netplumb::{plug_veth_with, ExistingHost, MacAddr, Netns, VethPlug};
use kuryr_ovsdb::PortSpec;

use super::{
    blocking, delete_link_in, link_exists, BindError, BindingDriver, HostEnv, PlugTarget, Plugged,
};
use crate::attachments::AttachedIface;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OvsDriver;

pub(crate) fn mac_of(vif: &Vif) -> Result<MacAddr, BindError> {
    vif.mac.parse().map_err(|_| {
        BindError::Unusable(format!(
            "port {}: MAC {:?} does not parse",
            vif.port_id, vif.mac
        ))
    })
}

fn bridge_of(vif: &Vif) -> Result<&str, BindError> {
    match &vif.binding {
        Binding::Ovs { bridge } | Binding::Hybrid { bridge, .. } => Ok(bridge),
        other => Err(BindError::Unusable(format!(
            "binding {} has no OVS bridge",
            other.kind()
        ))),
    }
}

/// Creates the veth pair `host_ifname` (host) <-> `target.ifname` (in `target.netns`). A
/// pod end left over from an interrupted attempt (host end gone) is removed first.
pub(crate) async fn plug_pod_veth(
    env: &HostEnv,
    vif: &Vif,
    mtu: u32,
    target: &PlugTarget,
) -> Result<(), BindError> {
    let plug = VethPlug {
        host_ifname: vif.host_ifname.clone(),
        peer_ifname: target.ifname.clone(),
        mtu: Some(mtu),
        host_mac: None,
        peer_mac: Some(mac_of(vif)?),
    };
    let existing = if target.fresh {
        ExistingHost::Replace
    } else {
        ExistingHost::Reuse
    };
    let (host, ns) = (env.host.clone(), target.netns.clone());
    let p = plug.clone();
    let first = blocking(move || {
        plug_veth_with(&host, &ns, &p, existing)
            .map(|_| ())
            .map_err(BindError::from)
    })
    .await;
    match first {
        Err(e) if e.is_already_exists() => {
            tracing::info!(ifname = %target.ifname, netns = %target.netns.label(), "removing a leftover pod interface before plugging");
            delete_link_in(&target.netns, &target.ifname).await?;
            let (host, ns) = (env.host.clone(), target.netns.clone());
            blocking(move || {
                plug_veth_with(&host, &ns, &plug, existing)
                    .map(|_| ())
                    .map_err(BindError::from)
            })
            .await
        }
        other => other,
    }
}

/// Adds `ifname` to `bridge` with the Neutron external ids. Does not wait for ovs-vswitchd
/// to apply it (with the userspace datapath that takes tens of ms and grows with the number
/// of ports): the port is only usable once OVN binds it and Neutron reports it ACTIVE, which
/// ADD waits for anyway, and the daemon checks the attach in the background
/// ([`crate::cni`]; CHECK reports an interface vswitchd failed).
pub(crate) async fn add_ovs_port(
    env: &HostEnv,
    bridge: &str,
    ifname: &str,
    vif: &Vif,
    pod_uid: &str,
) -> Result<(), BindError> {
    let mut spec = PortSpec::new(bridge, ifname)
        .iface_id(&vif.port_id)
        .attached_mac(&vif.mac)
        .iface_status("active");
    // A pre-plugged pool port has no pod yet.
    if !pod_uid.is_empty() {
        spec = spec.vm_uuid(pod_uid);
    }
    env.ovs.add_port(&spec).await?;
    Ok(())
}

/// How the after-ADD attach check of an OVS port ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachOutcome {
    /// ovs-vswitchd assigned OpenFlow port `ofport`.
    Attached { ofport: i64 },
    /// The port was removed (a quick DEL) before vswitchd got to it: not a failure.
    Removed,
    /// vswitchd refused the port (its `error` column) or did not act within the deadline.
    Failed(String),
}

/// Waits (OVSDB monitor, no polling) until ovs-vswitchd attaches OVS port `port`: an OpenFlow
/// port number, or -1 and an error.
pub async fn await_attach(
    ovs: &kuryr_ovsdb::Ovs,
    port: &str,
    timeout: std::time::Duration,
) -> AttachOutcome {
    match ovs.wait_ofport(port, timeout).await {
        Ok(ofport) => AttachOutcome::Attached { ofport },
        Err(e) => match ovs.find_interface(port).await {
            Ok(None) => AttachOutcome::Removed,
            _ => AttachOutcome::Failed(e.to_string()),
        },
    }
}

/// CHECK of an OVS port: on `bridge`, with `iface-id` = the port id.
pub(crate) async fn check_ovs_port(
    env: &HostEnv,
    bridge: &str,
    ifname: &str,
    port_id: &str,
) -> Vec<String> {
    match env.ovs.list_ports(bridge).await {
        Err(e) => vec![format!("cannot read OVS bridge {bridge}: {e}")],
        Ok(ports) => {
            match ports.iter().find(|p| p.name == ifname) {
                None => vec![format!("OVS port {ifname} is not on bridge {bridge}")],
                Some(p) => {
                    let iface = p.interfaces.first();
                    let got = iface
                        .and_then(|i| i.external_ids.get("iface-id"))
                        .map(String::as_str);
                    let mut out = vec![];
                    if got != Some(port_id) {
                        out.push(format!("OVS port {ifname}: external_ids:iface-id is {got:?}, expected {port_id:?}"));
                    }
                    if let Some(i) = iface.filter(|i| i.ofport == Some(-1) || i.error.is_some()) {
                        out.push(format!(
                            "OVS port {ifname}: ovs-vswitchd could not attach it: {}",
                            i.error.as_deref().unwrap_or("ofport -1")
                        ));
                    }
                    out
                }
            }
        }
    }
}

pub(crate) async fn check_host_link(env: &HostEnv, name: &str) -> Vec<String> {
    match link_exists(&env.host, name).await {
        Ok(true) => vec![],
        Ok(false) => vec![format!("host interface {name} is missing")],
        Err(e) => vec![format!("cannot look up host interface {name}: {e}")],
    }
}

impl BindingDriver for OvsDriver {
    fn kind(&self) -> &'static str {
        "ovs"
    }

    async fn plug_host(
        &self,
        env: &HostEnv,
        vif: &Vif,
        pod_uid: &str,
        target: &PlugTarget,
    ) -> Result<Plugged, BindError> {
        let bridge = bridge_of(vif)?;
        let tx_checksum_off = env.tx_checksum_off(bridge).await?;
        let mtu = env.mtu_for(vif);
        plug_pod_veth(env, vif, mtu, target).await?;
        add_ovs_port(env, bridge, &vif.host_ifname, vif, pod_uid).await?;
        Ok(Plugged {
            host_ifname: vif.host_ifname.clone(),
            parent: None,
            mtu,
            tx_checksum_off,
            ovs_port: Some(vif.host_ifname.clone()),
        })
    }

    async fn unplug(
        &self,
        env: &HostEnv,
        iface: &AttachedIface,
        netns: Option<&Netns>,
        host_side: bool,
    ) -> Result<(), BindError> {
        let mut first_err = None;
        if host_side {
            let bridge = bridge_of(&iface.vif)?;
            if let Err(e) = env.ovs.del_port(bridge, &iface.host_ifname).await {
                first_err.get_or_insert(BindError::from(e));
            }
            // Deleting one end of a veth deletes both.
            if let Err(e) = delete_link_in(&env.host, &iface.host_ifname).await {
                first_err.get_or_insert(e);
            }
        } else if let Some(ns) = netns {
            if let Err(e) = delete_link_in(ns, &iface.ifname).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn check_host(&self, env: &HostEnv, iface: &AttachedIface) -> Vec<String> {
        let mut out = check_host_link(env, &iface.host_ifname).await;
        match bridge_of(&iface.vif) {
            Ok(bridge) => {
                out.extend(check_ovs_port(env, bridge, &iface.host_ifname, &iface.port_id).await)
            }
            Err(e) => out.push(e.to_string()),
        }
        out
    }
}
