//! Nested bindings, for pods inside Nova VMs: the pod interface is a child of the VM's NIC
//! (`[binding] link_iface`) created directly in the pod netns: a macvlan in bridge mode
//! (`nested-macvlan`, the port's address is an allowed-address-pair of the VM port) or a VLAN
//! sub-interface with the trunk subport's VLAN id (`nested-vlan`). No host-side devices.
//!
//! A VLAN id still held on the parent by a netns that is not gone yet (upstream's EEXIST,
//! LP#1892388) is freed from the attachment records, which index VLAN → netns (see
//! `Cni::free_vlan`); no scan of every netns on the node.
//!
//! Testing: the development kernel has no 802.1Q, so `nested-vlan` is covered by the request
//! tests below and by `tests/bindings.rs`, which on such a kernel asserts the error names the
//! missing `8021q`. Manual check on a kernel with it (`modprobe 8021q`): run
//! `cargo test -p kuryr-daemon --test bindings nested_vlan -- --nocapture`; it then takes the
//! other branch and asserts `ip -d link` in the pod shows `vlan protocol 802.1Q id 101` on the
//! scratch parent, and that unplug removes it.

use std::os::fd::BorrowedFd;

use kuryr_core::vif::{Binding, Vif};
use kuryr_netplumb::rtnetlink::packet_route::link::LinkMessage;
use kuryr_netplumb::{vlan_link_message, MacvlanMode, Netns};

use super::{
    blocking, delete_link_in, link_exists, BindError, BindingDriver, HostEnv, PlugTarget, Plugged,
};
use crate::attachments::AttachedIface;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacvlanDriver;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanDriver;

fn parent_of(env: &HostEnv) -> Result<String, BindError> {
    env.link_iface.clone().ok_or_else(|| {
        BindError::Unusable(
            "[binding] link_iface is not set: nested bindings need the VM NIC to attach to".into(),
        )
    })
}

/// The nested MTU rule (upstream LP#1863212): the parent NIC must carry the VIF's MTU.
pub fn check_parent_mtu(
    parent: &str,
    parent_mtu: Option<u32>,
    vif: &Vif,
    mtu: u32,
) -> Result<(), BindError> {
    match parent_mtu {
        Some(p) if p < mtu => Err(BindError::Unusable(format!(
            "parent interface {parent} has MTU {p}, smaller than the MTU {mtu} of port {} (network {}): \
             lower the pod network's MTU or raise {parent}'s",
            vif.port_id, vif.network_id
        ))),
        _ => Ok(()),
    }
}

/// The RTM_NEWLINK request that creates `ifname` as VLAN `vlan_id` of the parent (ifindex
/// `parent_index`) directly in the netns `target`: `ip link add link PARENT name IFNAME netns
/// TARGET type vlan id VLAN`.
pub fn vlan_request(
    ifname: &str,
    parent_index: u32,
    vlan_id: u16,
    target: Option<BorrowedFd<'_>>,
) -> Result<LinkMessage, BindError> {
    Ok(vlan_link_message(ifname, parent_index, vlan_id, target)?)
}

#[derive(Clone, Copy)]
enum Kind {
    Macvlan,
    Vlan(u16),
}

/// Creates the child of `parent` in `target`. An interface of that name left in the pod netns
/// by an interrupted attempt is removed and the creation retried once.
async fn plug_child(
    env: &HostEnv,
    vif: &Vif,
    target: &PlugTarget,
    kind: Kind,
) -> Result<Plugged, BindError> {
    let parent = parent_of(env)?;
    let mtu = env.mtu_for(vif);
    let create = {
        let (host, ns, parent, name, vif) = (
            env.host.clone(),
            target.netns.clone(),
            parent.clone(),
            target.ifname.clone(),
            vif.clone(),
        );
        move || {
            host.with_netlink(async |nl| -> Result<(), BindError> {
                let p = nl.link(&parent).await?;
                check_parent_mtu(&parent, p.mtu, &vif, mtu)?;
                match kind {
                    Kind::Macvlan => nl.create_macvlan(&parent, &name, MacvlanMode::Bridge, Some(&ns), Some(mtu)).await?,
                    Kind::Vlan(id) => nl.create_vlan(&parent, &name, id, Some(&ns)).await.map_err(|e| {
                        if e.is_not_supported() {
                            BindError::Unusable(format!(
                                "cannot create VLAN {id} on {parent}: the kernel lacks 802.1Q support (module 8021q): {e}"
                            ))
                        } else {
                            BindError::from(e)
                        }
                    })?,
                }
                Ok(())
            })
        }
    };
    let c2 = create.clone();
    match blocking(create).await {
        Err(e)
            if e.is_already_exists()
                && link_exists(&target.netns, &target.ifname)
                    .await
                    .unwrap_or(false) =>
        {
            tracing::info!(ifname = %target.ifname, netns = %target.netns.label(), "removing a leftover pod interface before plugging");
            delete_link_in(&target.netns, &target.ifname).await?;
            blocking(c2).await?;
        }
        other => other?,
    }
    Ok(Plugged {
        host_ifname: String::new(),
        parent: Some(parent),
        mtu,
        tx_checksum_off: false,
        ovs_port: None,
    })
}

async fn unplug_child(iface: &AttachedIface, netns: Option<&Netns>) -> Result<(), BindError> {
    // Deleting the pod end frees the VLAN id / MAC on the parent at once, instead of when
    // the netns is finally destroyed.
    match netns {
        Some(ns) => delete_link_in(ns, &iface.ifname).await.map(|_| ()),
        None => Ok(()),
    }
}

async fn check_parent(env: &HostEnv, iface: &AttachedIface) -> Vec<String> {
    let Some(parent) = iface.parent.as_deref().or(env.link_iface.as_deref()) else {
        return vec!["no parent interface recorded and [binding] link_iface is not set".into()];
    };
    super::ovs::check_host_link(env, parent).await
}

impl BindingDriver for MacvlanDriver {
    fn kind(&self) -> &'static str {
        "nested-macvlan"
    }
    async fn plug_host(
        &self,
        env: &HostEnv,
        vif: &Vif,
        _pod_uid: &str,
        target: &PlugTarget,
    ) -> Result<Plugged, BindError> {
        plug_child(env, vif, target, Kind::Macvlan).await
    }
    async fn unplug(
        &self,
        _env: &HostEnv,
        iface: &AttachedIface,
        netns: Option<&Netns>,
        _host_side: bool,
    ) -> Result<(), BindError> {
        unplug_child(iface, netns).await
    }
    async fn check_host(&self, env: &HostEnv, iface: &AttachedIface) -> Vec<String> {
        check_parent(env, iface).await
    }
}

impl BindingDriver for VlanDriver {
    fn kind(&self) -> &'static str {
        "nested-vlan"
    }
    async fn plug_host(
        &self,
        env: &HostEnv,
        vif: &Vif,
        _pod_uid: &str,
        target: &PlugTarget,
    ) -> Result<Plugged, BindError> {
        let Binding::NestedVlan { vlan_id } = vif.binding else {
            return Err(BindError::Unusable(format!(
                "binding {} is not nested-vlan",
                vif.binding.kind()
            )));
        };
        plug_child(env, vif, target, Kind::Vlan(vlan_id)).await
    }
    async fn unplug(
        &self,
        _env: &HostEnv,
        iface: &AttachedIface,
        netns: Option<&Netns>,
        _host_side: bool,
    ) -> Result<(), BindError> {
        unplug_child(iface, netns).await
    }
    async fn check_host(&self, env: &HostEnv, iface: &AttachedIface) -> Vec<String> {
        check_parent(env, iface).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::tests::vif;
    use kuryr_netplumb::rtnetlink::packet_route::link::{
        InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo,
    };

    #[test]
    fn vlan_request_carries_parent_id_name_and_netns() {
        let msg = vlan_request("eth0", 7, 101, None).expect("request");
        let attrs = &msg.attributes;
        assert!(
            attrs.contains(&LinkAttribute::IfName("eth0".into())),
            "{attrs:?}"
        );
        assert!(attrs.contains(&LinkAttribute::Link(7)), "{attrs:?}");
        let info = attrs
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .expect("IFLA_LINKINFO");
        assert!(info.contains(&LinkInfo::Kind(InfoKind::Vlan)), "{info:?}");
        let data = info
            .iter()
            .find_map(|i| match i {
                LinkInfo::Data(InfoData::Vlan(v)) => Some(v.clone()),
                _ => None,
            })
            .expect("IFLA_INFO_DATA");
        assert!(data.contains(&InfoVlan::Id(101)), "{data:?}");
        assert!(
            !attrs.iter().any(|a| matches!(a, LinkAttribute::NetNsFd(_))),
            "no netns asked for: {attrs:?}"
        );

        let f = std::fs::File::open("/proc/self/ns/net").expect("own netns");
        use std::os::fd::AsFd;
        let msg = vlan_request("eth0", 7, 101, Some(f.as_fd())).expect("request");
        assert!(
            msg.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::NetNsFd(_))),
            "netns fd missing"
        );
    }

    #[test]
    fn vlan_request_rejects_bad_ids_and_names() {
        assert!(vlan_request("eth0", 7, 0, None).is_err());
        assert!(vlan_request("eth0", 7, 4095, None).is_err());
        assert!(vlan_request("eth0", 0, 10, None).is_err());
        assert!(vlan_request("a-very-long-interface", 7, 10, None).is_err());
    }

    #[test]
    fn parent_mtu_smaller_than_vif_names_both() {
        let v = vif("p1");
        let e = check_parent_mtu("ens3", Some(1400), &v, 1442).expect_err("must fail");
        let s = e.to_string();
        assert!(
            s.contains("ens3") && s.contains("1400") && s.contains("1442"),
            "{s}"
        );
        assert!(check_parent_mtu("ens3", Some(1500), &v, 1442).is_ok());
        assert!(check_parent_mtu("ens3", Some(1442), &v, 1442).is_ok());
    }
}
