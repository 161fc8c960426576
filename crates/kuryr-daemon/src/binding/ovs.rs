//! `ovs` binding: a veth pair, the host end `tap…` in the OVS integration bridge with the
//! Neutron port id as `external_ids:iface-id` (what makes OVN/the OVS agent bind the port and
//! Neutron report it ACTIVE).

use kuryr_core::vif::{Binding, Vif};
use std::time::Duration;

use kuryr_netplumb::{plug_veth_with, ExistingHost, LinkInfo, MacAddr, Netns, VethPlug};
use kuryr_ovsdb::{InterfaceInfo, Ovs, PortSpec};

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

pub(crate) fn bridge_of(vif: &Vif) -> Result<&str, BindError> {
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

/// Adds `ifname` to `bridge` with the Neutron external ids. An OVS port of that name that
/// is already there is replaced, never updated in place: the device was (re)created just
/// before, and ovs-vswitchd (userspace datapath) keeps receiving on the device it opened for
/// an existing port, so an in-place update leaves the port without a datapath (issue 11).
/// Replacing waits (bounded) for vswitchd to drop the old port; creating does not wait for
/// ovs-vswitchd (with the userspace datapath that takes tens of ms and grows with the number
/// of ports): the port is only usable once OVN binds it and Neutron reports it ACTIVE, which
/// ADD waits for anyway, and the daemon checks the attach in the background
/// ([`crate::cni`]; CHECK reports an interface vswitchd failed or does not hold).
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
        .iface_status("active")
        .replace(OVS_REPLACE_WAIT);
    // A pre-plugged pool port has no pod yet.
    if !pod_uid.is_empty() {
        spec = spec.vm_uuid(pod_uid);
    }
    let out = env.ovs.add_port(&spec).await?;
    if out.replaced.is_some() {
        tracing::info!(port = ifname, vswitchd_applied = ?out.replaced, "replaced an existing OVS port of a re-created device");
    }
    Ok(())
}

/// How long replacing an OVS port waits for ovs-vswitchd to drop the old one.
pub const OVS_REPLACE_WAIT: Duration = Duration::from_secs(5);

/// Whether ovs-vswitchd holds a host device it has a port for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// vswitchd opened this very device: OpenFlow port `ofport`.
    Held { ofport: i64 },
    /// No OVS interface of that name.
    NoPort,
    /// The OVS interface exists, the device does not.
    NoDevice,
    /// vswitchd has not acted on the interface yet (no OpenFlow port).
    Pending,
    /// vswitchd refused the interface (`ofport` -1 and its error).
    Failed(String),
    /// vswitchd has an OpenFlow port for the name but does not receive on this device (it
    /// holds a device of that name that no longer exists): what, in words.
    Stale(String),
}

/// Judges one OVS interface against the kernel's device of the same name. Stale: the
/// interface has an OpenFlow port but the device is not promiscuous (vswitchd puts every
/// device it receives on in promiscuous mode, kernel and userspace datapaths alike) or its
/// ifindex is not the one vswitchd recorded.
pub fn judge(iface: Option<&InterfaceInfo>, link: Option<&LinkInfo>) -> Hold {
    let Some(i) = iface else { return Hold::NoPort };
    let Some(l) = link else { return Hold::NoDevice };
    match i.ofport {
        Some(-1) => Hold::Failed(i.error.clone().unwrap_or_else(|| "ofport -1".into())),
        Some(p) if p > 0 => {
            let mut why = Vec::new();
            if let Some(ix) = i.ifindex.filter(|ix| *ix > 0 && *ix != i64::from(l.index)) {
                why.push(format!(
                    "OVSDB records ifindex {ix}, the device has ifindex {}",
                    l.index
                ));
            }
            if l.promiscuity == Some(0) {
                why.push("the device is not promiscuous (vswitchd has not opened it)".into());
            }
            // vswitchd caches a device's flags by name. When it opens a device re-created
            // under the name of one it was still dropping, it can write the dead device's
            // flags (down) with PROMISC added: held, but no packet moves.
            if !l.admin_up {
                why.push(
                    "the device is administratively down (vswitchd wrote flags it had cached for an earlier device of that name)"
                        .into(),
                );
            }
            if why.is_empty() {
                Hold::Held { ofport: p }
            } else {
                Hold::Stale(why.join("; "))
            }
        }
        _ => Hold::Pending,
    }
}

/// [`judge`] for `ifname`, reading OVSDB and the host netns.
pub async fn inspect(ovs: &Ovs, host: &Netns, ifname: &str) -> Result<Hold, BindError> {
    let iface = ovs.find_interface(ifname).await?;
    let (host, name) = (host.clone(), ifname.to_owned());
    let link = blocking(move || {
        host.with_netlink(async |nl| nl.find_link(&name).await)
            .map_err(BindError::from)
    })
    .await?;
    Ok(judge(iface.as_ref(), link.as_ref()))
}

/// Sets host device `ifname` up if it exists and is down; whether it did.
pub async fn set_up_if_down(host: &Netns, ifname: &str) -> Result<bool, BindError> {
    let (h, name) = (host.clone(), ifname.to_owned());
    blocking(move || {
        h.with_netlink(async |nl| match nl.find_link(&name).await? {
            Some(l) if !l.admin_up => nl.set_up(&name).await.map(|()| true),
            _ => Ok(false),
        })
        .map_err(BindError::from)
    })
    .await
}

/// After vswitchd opened a device we plugged (and set up): if it left the device down (it
/// wrote flags cached for an earlier device of that name), sets it up again. Logs it.
pub async fn undo_stale_flags(host: &Netns, ifname: &str) -> Result<bool, BindError> {
    let fixed = set_up_if_down(host, ifname).await?;
    if fixed {
        tracing::info!(%ifname, "ovs-vswitchd left the device down when it opened it (flags it had cached for an earlier device of that name); set it up");
    }
    Ok(fixed)
}

/// Waits (OVSDB monitor, bounded) until vswitchd has acted on `ifname`, undoes flags it
/// wrote from a stale cache ([`undo_stale_flags`]), then judges it.
pub async fn await_hold(
    ovs: &Ovs,
    host: &Netns,
    ifname: &str,
    timeout: Duration,
) -> Result<Hold, BindError> {
    match ovs.wait_ofport(ifname, timeout).await {
        Ok(_) => {
            undo_stale_flags(host, ifname).await?;
        }
        Err(kuryr_ovsdb::Error::Interface { .. }) | Err(kuryr_ovsdb::Error::Timeout { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    inspect(ovs, host, ifname).await
}

/// Repairs the stale OVS port `ifname` of `bridge`: a device that is only down is set up;
/// otherwise the port is re-added (removed, vswitchd given [`OVS_REPLACE_WAIT`] to drop it,
/// inserted again with the same interface external ids). Judges the result once vswitchd
/// has acted (bounded by `timeout`). Fails if there is no such OVS interface.
pub async fn repair(
    ovs: &Ovs,
    host: &Netns,
    bridge: &str,
    ifname: &str,
    timeout: Duration,
) -> Result<Hold, BindError> {
    if set_up_if_down(host, ifname).await? {
        let hold = inspect(ovs, host, ifname).await?;
        if matches!(hold, Hold::Held { .. }) {
            tracing::info!(%ifname, "set the held device up");
            return Ok(hold);
        }
    }
    let iface = ovs.find_interface(ifname).await?.ok_or_else(|| {
        BindError::Unusable(format!("OVS port {ifname} vanished before its repair"))
    })?;
    let mut spec = PortSpec::new(bridge, ifname).replace(OVS_REPLACE_WAIT);
    if !iface.iface_type.is_empty() {
        spec = spec.iface_type(&iface.iface_type);
    }
    for (k, v) in &iface.external_ids {
        spec = spec.external_id(k, v);
    }
    ovs.add_port(&spec).await?;
    await_hold(ovs, host, ifname, timeout).await
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
        Ok(ports) => match ports.iter().find(|p| p.name == ifname) {
            None => vec![format!("OVS port {ifname} is not on bridge {bridge}")],
            Some(p) => {
                let iface = p.interfaces.first();
                let got = iface
                    .and_then(|i| i.external_ids.get("iface-id"))
                    .map(String::as_str);
                let mut out = vec![];
                if got != Some(port_id) {
                    out.push(format!(
                        "OVS port {ifname}: external_ids:iface-id is {got:?}, expected {port_id:?}"
                    ));
                }
                if let Some(i) = iface.filter(|i| i.ofport == Some(-1) || i.error.is_some()) {
                    out.push(format!(
                        "OVS port {ifname}: ovs-vswitchd could not attach it: {}",
                        i.error.as_deref().unwrap_or("ofport -1")
                    ));
                }
                // OVSDB outlives the switch: while ovs-vswitchd is down every row looks fine and
                // every device looks unheld (nobody opened it). Say that, not "stale".
                if let Ok(false) = env.ovs.vswitchd_running().await {
                    out.push(format!(
                        "ovs-vswitchd is not running: OVS port {ifname} has no datapath until it is back"
                    ));
                    return out;
                }
                if let Some(i) = iface {
                    let (host, name) = (env.host.clone(), ifname.to_owned());
                    let link = blocking(move || {
                        host.with_netlink(async |nl| nl.find_link(&name).await)
                            .map_err(BindError::from)
                    })
                    .await;
                    match link {
                        Ok(l) => {
                            if let Hold::Stale(why) = judge(Some(i), l.as_ref()) {
                                out.push(format!("OVS port {ifname} is stale: ovs-vswitchd does not hold device {ifname} ({why}); the pod has no network"));
                            }
                        }
                        Err(e) => out.push(format!("cannot look up host interface {ifname}: {e}")),
                    }
                }
                out
            }
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_netplumb::OperState;

    fn iface(ofport: Option<i64>, ifindex: Option<i64>) -> InterfaceInfo {
        InterfaceInfo {
            uuid: kuryr_ovsdb::Uuid("8e0b5c3a-0000-4000-8000-000000000001".into()),
            name: "tap0123456789a".into(),
            iface_type: String::new(),
            external_ids: Default::default(),
            ofport,
            error: None,
            admin_state: None,
            link_state: None,
            mac_in_use: None,
            ifindex,
        }
    }

    fn link(index: u32, promiscuity: Option<u32>) -> LinkInfo {
        LinkInfo {
            index,
            name: "tap0123456789a".into(),
            mac: None,
            mtu: Some(1442),
            admin_up: true,
            lower_up: true,
            oper_state: OperState::Up,
            kind: Some("veth".into()),
            link_index: Some(2),
            promiscuity,
        }
    }

    #[test]
    fn held_needs_an_ofport_a_promiscuous_device_and_the_recorded_ifindex() {
        assert_eq!(
            judge(Some(&iface(Some(5), Some(40))), Some(&link(40, Some(1)))),
            Hold::Held { ofport: 5 }
        );
        // A kernel too old to report promiscuity, vswitchd not reporting ifindex: held.
        assert_eq!(
            judge(Some(&iface(Some(5), None)), Some(&link(40, None))),
            Hold::Held { ofport: 5 }
        );
    }

    #[test]
    fn a_recreated_device_under_a_surviving_port_is_stale() {
        // The issue-11 state: vswitchd kept its OpenFlow port, the new device is not promiscuous.
        let h = judge(Some(&iface(Some(5), Some(40))), Some(&link(41, Some(0))));
        let Hold::Stale(why) = h else { panic!("{h:?}") };
        assert!(
            why.contains("ifindex 40") && why.contains("ifindex 41"),
            "{why}"
        );
        assert!(why.contains("not promiscuous"), "{why}");
        // Either sign alone is enough.
        assert!(matches!(
            judge(Some(&iface(Some(5), Some(40))), Some(&link(40, Some(0)))),
            Hold::Stale(_)
        ));
        assert!(matches!(
            judge(Some(&iface(Some(5), Some(40))), Some(&link(41, Some(1)))),
            Hold::Stale(_)
        ));
    }

    #[test]
    fn a_held_device_that_is_down_is_stale() {
        let mut down = link(40, Some(1));
        down.admin_up = false;
        match judge(Some(&iface(Some(5), Some(40))), Some(&down)) {
            Hold::Stale(why) => assert!(why.contains("administratively down"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pending_failed_and_missing_are_not_stale() {
        assert_eq!(
            judge(Some(&iface(None, None)), Some(&link(40, Some(0)))),
            Hold::Pending
        );
        assert_eq!(
            judge(Some(&iface(Some(0), None)), Some(&link(40, Some(0)))),
            Hold::Pending
        );
        let mut failed = iface(Some(-1), None);
        failed.error = Some("could not open network device".into());
        assert_eq!(
            judge(Some(&failed), Some(&link(40, Some(0)))),
            Hold::Failed("could not open network device".into())
        );
        assert_eq!(judge(None, Some(&link(40, Some(0)))), Hold::NoPort);
        assert_eq!(judge(Some(&iface(Some(5), None)), None), Hold::NoDevice);
    }
}
