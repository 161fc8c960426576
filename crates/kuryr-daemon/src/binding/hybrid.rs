//! `hybrid` binding (ML2/OVS with the iptables hybrid firewall, upstream `VIFBridge`): the
//! pod veth's host end `tap…` is enslaved to a per-port Linux bridge `qbr…`, which reaches
//! OVS through a second veth pair `qvb…` (in the Linux bridge) / `qvo…` (in OVS, with the
//! Neutron external ids). This replaces what os-vif's `ovs` plugin did for upstream.

use kuryr_core::vif::{Binding, Vif};
use kuryr_netplumb::rtnetlink::{LinkBridge, LinkUnspec};
use kuryr_netplumb::{Netlink, Netns, VethOptions};

use super::ovs::{add_ovs_port, check_host_link, check_ovs_port, plug_pod_veth};
use super::{
    blocking, delete_link_in, port_dev_name, BindError, BindingDriver, HostEnv, PlugTarget, Plugged,
};
use crate::attachments::AttachedIface;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HybridDriver;

/// Device names of a hybrid plug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridNames {
    pub bridge: String,
    pub qbr: String,
    pub qvb: String,
    pub qvo: String,
    pub tap: String,
}

impl HybridNames {
    pub fn of(vif: &Vif) -> Result<HybridNames, BindError> {
        match &vif.binding {
            Binding::Hybrid {
                bridge,
                linux_bridge,
            } => Ok(HybridNames {
                bridge: bridge.clone(),
                qbr: linux_bridge.clone(),
                qvb: port_dev_name("qvb", &vif.port_id),
                qvo: port_dev_name("qvo", &vif.port_id),
                tap: vif.host_ifname.clone(),
            }),
            other => Err(BindError::Unusable(format!(
                "binding {} is not hybrid",
                other.kind()
            ))),
        }
    }
}

fn nl_err(
    op: &'static str,
    object: &str,
) -> impl FnOnce(kuryr_netplumb::rtnetlink::Error) -> BindError {
    let object = object.to_owned();
    move |source| BindError::Netlink { op, object, source }
}

async fn set_controller(nl: &Netlink, dev: &str, bridge: &str) -> Result<(), BindError> {
    let dev_idx = nl.link(dev).await?.index;
    let br_idx = nl.link(bridge).await?.index;
    nl.handle()
        .link()
        .change(
            LinkUnspec::new_with_index(dev_idx)
                .controller(br_idx)
                .build(),
        )
        .execute()
        .await
        .map_err(nl_err("enslave", &format!("{dev} to {bridge}")))
}

/// Creates the Linux bridge (up) unless it exists; a missing `bridge` kernel feature shows
/// as "Operation not supported".
pub async fn ensure_linux_bridge(nl: &Netlink, name: &str) -> Result<(), BindError> {
    if nl.find_link(name).await?.is_some() {
        return Ok(());
    }
    match nl
        .handle()
        .link()
        .add(LinkBridge::new(name).build())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = nl_err("create linux bridge", name)(e);
            if e.is_already_exists() {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// The Linux side of the hybrid plug, in `host`: `qbr` bridge, `tap` and `qvb` enslaved to
/// it, `qvb`/`qvo` veth pair, everything up with `mtu`. Idempotent.
pub fn plug_linux_side(host: &Netns, n: &HybridNames, mtu: u32) -> Result<(), BindError> {
    host.with_netlink(async |nl| -> Result<(), BindError> {
        ensure_linux_bridge(&nl, &n.qbr).await?;
        if nl.find_link(&n.qvb).await?.is_none() {
            let opts = VethOptions {
                mtu: Some(mtu),
                mac: None,
                peer_mac: None,
            };
            match nl.create_veth(&n.qvb, &n.qvo, None, &opts).await {
                Err(e) if !e.is_already_exists() => return Err(e.into()),
                _ => {}
            }
        }
        set_controller(&nl, &n.tap, &n.qbr).await?;
        set_controller(&nl, &n.qvb, &n.qbr).await?;
        for dev in [&n.qvb, &n.qvo, &n.tap] {
            nl.set_mtu(dev, mtu).await?;
            nl.set_up(dev).await?;
        }
        nl.set_up(&n.qbr).await?;
        Ok(())
    })
}

impl BindingDriver for HybridDriver {
    fn kind(&self) -> &'static str {
        "hybrid"
    }

    async fn plug_host(
        &self,
        env: &HostEnv,
        vif: &Vif,
        pod_uid: &str,
        target: &PlugTarget,
    ) -> Result<Plugged, BindError> {
        let names = HybridNames::of(vif)?;
        let tx_checksum_off = env.tx_checksum_off(&names.bridge).await?;
        let mtu = env.mtu_for(vif);
        plug_pod_veth(env, vif, mtu, target).await?;
        let (host, n) = (env.host.clone(), names.clone());
        blocking(move || plug_linux_side(&host, &n, mtu)).await?;
        add_ovs_port(env, &names.bridge, &names.qvo, vif, pod_uid).await?;
        Ok(Plugged {
            host_ifname: names.tap,
            parent: None,
            mtu,
            tx_checksum_off,
            ovs_port: Some(names.qvo),
        })
    }

    async fn unplug(
        &self,
        env: &HostEnv,
        iface: &AttachedIface,
        netns: Option<&Netns>,
        host_side: bool,
    ) -> Result<(), BindError> {
        let n = HybridNames::of(&iface.vif)?;
        let mut first_err = None;
        if host_side {
            if let Err(e) = env.ovs.del_port(&n.bridge, &n.qvo).await {
                first_err.get_or_insert(BindError::from(e));
            }
            for dev in [&n.qvb, &n.tap, &n.qbr] {
                if let Err(e) = delete_link_in(&env.host, dev).await {
                    first_err.get_or_insert(e);
                }
            }
        } else if let Some(ns) = netns {
            if let Err(e) = delete_link_in(ns, &iface.ifname).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn check_host(&self, env: &HostEnv, iface: &AttachedIface) -> Vec<String> {
        let n = match HybridNames::of(&iface.vif) {
            Ok(n) => n,
            Err(e) => return vec![e.to_string()],
        };
        let mut out = Vec::new();
        for dev in [&n.tap, &n.qbr, &n.qvb, &n.qvo] {
            out.extend(check_host_link(env, dev).await);
        }
        out.extend(check_ovs_port(env, &n.bridge, &n.qvo, &iface.port_id).await);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::tests::vif;

    #[test]
    fn names_follow_os_vif() {
        let mut v = vif("6d3b7c52-1a2b-4c5d");
        v.binding = Binding::Hybrid {
            bridge: "br-int".into(),
            linux_bridge: "qbr6d3b7c52-1a".into(),
        };
        let n = HybridNames::of(&v).expect("names");
        assert_eq!(n.qvb, "qvb6d3b7c52-1a");
        assert_eq!(n.qvo, "qvo6d3b7c52-1a");
        assert_eq!(n.tap, "tap6d3b7c52-1a");
        assert!([&n.qbr, &n.qvb, &n.qvo, &n.tap]
            .iter()
            .all(|s| s.len() <= 15));
    }
}
