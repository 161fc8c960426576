//! What both port drivers ([`crate::pod::driver`]) and the warm pools share about a pod's port:
//! who it is for ([`PodPortRequest`]), its description (the key GC and nested-vlan adoption
//! read), tags, the [`Acquired`] outcome, a plain delete, and the typed VIF built from the port,
//! its network and subnets (read through [`crate::runtime::cache`]).

use crate::pod::context::PodContext;
use crate::pod::vif::{build_vif, build_vif_with, VifBuildError, VifDefaults};
use crate::runtime::error::Error;
use kuryr_core::vif::{Binding, Vif};
use kuryr_openstack::neutron::Port;
use std::collections::BTreeSet;

/// Who a port is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPortRequest {
    pub namespace: String,
    pub name: String,
    /// The pod's UID, or the `spec.podUid` a standalone container's KuryrPort was given.
    pub pod_uid: String,
    pub node: String,
    /// For a standalone container (podman, ctr), not a pod: see [`crate::pod::standalone`].
    pub standalone: bool,
}

/// The port's description: names kuryr-rs, the cluster and the pod or standalone container (for
/// humans and for GC).
pub fn description(cluster: &str, req: &PodPortRequest) -> String {
    if req.standalone {
        format!("kuryr-rs standalone container port: cluster {cluster}, KuryrPort {}/{} (uid {})", req.namespace, req.name, req.pod_uid)
    } else {
        format!("kuryr-rs pod port: cluster {cluster}, pod {}/{} (uid {})", req.namespace, req.name, req.pod_uid)
    }
}

/// Tags to PUT so the port carries all of `wanted` (keeping its others), or `None` if it does.
pub fn tags_to_set(current: &[String], wanted: &[String]) -> Option<Vec<String>> {
    if wanted.iter().all(|t| current.contains(t)) {
        return None;
    }
    let mut all = current.to_vec();
    all.extend(wanted.iter().filter(|t| !current.contains(t)).cloned());
    Some(all)
}

/// A port for the pod, and whether it was adopted rather than created.
#[derive(Debug)]
pub struct Acquired {
    pub port: Port,
    pub adopted: bool,
    /// Claimed from a warm pool.
    pub pooled: bool,
    /// The binding the driver chose (nested-vlan: the subport's VLAN id); `None`: the one
    /// `binding:vif_type` says (see [`vif_with`]).
    pub binding: Option<Binding>,
}

/// Deletes a port; `Ok(false)` if it was already gone.
pub async fn release(ctx: &PodContext, port_id: &str) -> Result<bool, Error> {
    ctx.leader.ensure()?;
    Ok(ctx.neutron.delete_port(port_id).await?)
}

/// The typed VIF of `port`, its network and subnets read through the cache. `Ok(Err(_))`: the
/// port cannot be a VIF (e.g. not bound yet); `Err(_)`: reading the network or a subnet failed.
pub async fn vif_of(ctx: &PodContext, port: &Port) -> Result<Result<Vif, VifBuildError>, Error> {
    vif_with(ctx, port, None).await
}

/// [`vif_of`] with the binding chosen by the controller (`Some`: nested-vlan) instead of the one
/// `binding:vif_type` says.
pub async fn vif_with(ctx: &PodContext, port: &Port, binding: Option<Binding>) -> Result<Result<Vif, VifBuildError>, Error> {
    let network = ctx.cache.network(&ctx.neutron, &port.network_id).await?;
    let subnet_ids: BTreeSet<&str> = port.fixed_ips.iter().map(|f| f.subnet_id.as_str()).collect();
    let mut subnets = Vec::with_capacity(subnet_ids.len());
    for id in subnet_ids {
        subnets.push((*ctx.cache.subnet(&ctx.neutron, id).await?).clone());
    }
    let defaults = VifDefaults { ovs_bridge: ctx.settings.ovs_bridge.clone(), network_device_mtu: ctx.settings.network_device_mtu };
    Ok(match binding {
        Some(b) => build_vif_with(port, &network, &subnets, &defaults, b),
        None => build_vif(port, &network, &subnets, &defaults),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_merged() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(tags_to_set(&t(&[]), &t(&[])), None);
        assert_eq!(tags_to_set(&t(&["a"]), &t(&["a"])), None);
        assert_eq!(tags_to_set(&t(&["x"]), &t(&["a", "b"])), Some(t(&["x", "a", "b"])));
    }
}
