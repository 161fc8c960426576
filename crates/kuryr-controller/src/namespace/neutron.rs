//! One namespace's Neutron objects (`crate::namespace::neutron`): its network, the subnet from
//! the configured subnet pool, the interface on the pod router, and their teardown.
//!
//! Crash safety: the network's description names the cluster, the namespace and the
//! KuryrNetwork's UID ([`network_description`]), written in the create itself, so a network
//! whose id never reached the KuryrNetwork status (kill -9 between create and status write) is
//! found again by it (`GET /networks?description=…`), adopted by the next reconcile or deleted by
//! the teardown; it is never looked up by name. Tags (`PUT …/tags` after the create: Neutron's
//! create body takes none) are re-applied on adoption. Any subnet on our network is ours; the
//! router interface is found from the router's ports.

use crate::namespace::settings::NamespaceSettings;
use crate::runtime::context::Context;
use crate::runtime::error::Error;
use kuryr_core::names::resource_description;
use kuryr_openstack::neutron::{Network, NetworkCreate, RouterInterface, Subnet, SubnetCreate, TagResource};
use kuryr_openstack::Query;
use std::collections::BTreeSet;

/// Who a namespace network is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The namespace (= the KuryrNetwork's name and namespace).
    pub namespace: String,
    /// The KuryrNetwork's UID: the owner stamp (a re-created namespace's KuryrNetwork has another).
    pub uid: String,
    /// The Namespace's UID, for upstream's network and subnet name `<ns uid>/<ns>` (humans).
    pub namespace_uid: Option<String>,
    /// `spec.projectId` (empty: the settings' project).
    pub project: String,
}

/// The network's description: names kuryr-rs, the cluster, the namespace and the KuryrNetwork
/// UID (read back by GC with [`kuryr_core::names::description_owner`]).
pub fn network_description(cluster: &str, o: &Owner) -> String {
    resource_description("namespace network", cluster, &o.namespace, &format!("{} (KuryrNetwork uid {})", o.namespace, o.uid))
}

/// The subnet's description (same form).
pub fn subnet_description(cluster: &str, o: &Owner) -> String {
    resource_description("namespace subnet", cluster, &o.namespace, &format!("{} (KuryrNetwork uid {})", o.namespace, o.uid))
}

/// Upstream's name of a namespace's network and subnet: `<namespace uid>/<namespace>`.
pub fn name(o: &Owner) -> String {
    match &o.namespace_uid {
        Some(uid) => format!("{uid}/{}", o.namespace),
        None => o.namespace.clone(),
    }
}

/// `POST /networks` body.
pub fn network_create(s: &NamespaceSettings, o: &Owner) -> NetworkCreate {
    NetworkCreate {
        name: name(o),
        description: network_description(&s.cluster_name, o),
        admin_state_up: Some(true),
        mtu: (s.network_device_mtu > 0).then_some(s.network_device_mtu),
        project_id: if o.project.is_empty() { s.project.clone() } else { o.project.clone() },
        ..NetworkCreate::default()
    }
}

/// The networks stamped for this KuryrNetwork (normally none or one).
pub async fn find_networks(ctx: &Context, s: &NamespaceSettings, o: &Owner) -> Result<Vec<Network>, Error> {
    Ok(ctx.neutron.list_networks(&Query::new().eq("description", network_description(&s.cluster_name, o))).await?)
}

/// Tags to PUT so `current` carries all of `wanted` (keeping its others), or `None`.
fn missing_tags(current: &[String], wanted: &[String]) -> Option<Vec<String>> {
    if wanted.iter().all(|t| current.contains(t)) {
        return None;
    }
    let mut all = current.to_vec();
    all.extend(wanted.iter().filter(|t| !current.contains(t)).cloned());
    Some(all)
}

/// The namespace's network: the one stamped for this KuryrNetwork (adopted, tags completed) or a
/// new one (tagged). Checks the leader gate before every write.
pub async fn ensure_network(ctx: &Context, s: &NamespaceSettings, o: &Owner) -> Result<Network, Error> {
    let found = find_networks(ctx, s, o).await?;
    let mut net = match found.into_iter().min_by(|a, b| a.id.cmp(&b.id)) {
        Some(n) => {
            tracing::info!(network = %n.id, "adopting the namespace's network (made before a crash)");
            ctx.metrics.adopted("network");
            n
        }
        None => {
            ctx.leader.ensure()?;
            ctx.neutron.create_network(&network_create(s, o)).await?
        }
    };
    if let Some(tags) = missing_tags(&net.tags, &s.tags) {
        ctx.leader.ensure()?;
        net.tags = ctx.neutron.set_tags(TagResource::Network, &net.id, &tags).await?;
    }
    Ok(net)
}

/// The namespace's subnet on `network_id`: one already there (ours: the network is), or a new
/// one from the subnet pool (the pool's default prefix length, no DHCP), tagged.
pub async fn ensure_subnet(ctx: &Context, s: &NamespaceSettings, o: &Owner, network_id: &str) -> Result<Subnet, Error> {
    let existing = ctx.neutron.list_subnets(&Query::new().eq("network_id", network_id)).await?;
    let mut subnet = match existing.into_iter().min_by(|a, b| a.id.cmp(&b.id)) {
        Some(sn) => sn,
        None => {
            let pool = ctx.neutron.get_subnetpool(&s.subnet_pool).await?;
            let req = SubnetCreate {
                network_id: network_id.to_string(),
                ip_version: if pool.ip_version == 0 { 4 } else { pool.ip_version },
                subnetpool_id: Some(s.subnet_pool.clone()),
                name: name(o),
                description: subnet_description(&s.cluster_name, o),
                enable_dhcp: Some(false),
                project_id: if o.project.is_empty() { s.project.clone() } else { o.project.clone() },
                ..SubnetCreate::default()
            };
            ctx.leader.ensure()?;
            ctx.neutron.create_subnet(&req).await?
        }
    };
    if let Some(tags) = missing_tags(&subnet.tags, &s.tags) {
        ctx.leader.ensure()?;
        subnet.tags = ctx.neutron.set_tags(TagResource::Subnet, &subnet.id, &tags).await?;
    }
    Ok(subnet)
}

/// Whether `router` has an interface on `subnet`.
async fn router_has_interface(ctx: &Context, router: &str, subnet: &Subnet) -> Result<bool, Error> {
    let q = Query::new().eq("device_id", router).eq("network_id", &subnet.network_id);
    let ports = ctx.neutron.list_ports(&q).await?;
    Ok(ports.iter().any(|p| p.fixed_ips.iter().any(|ip| ip.subnet_id == subnet.id)))
}

/// Attaches `subnet` to the pod router. Neutron refuses a second interface on the same subnet
/// (400): then the router's ports tell whether it is already attached.
pub async fn ensure_router_interface(ctx: &Context, router: &str, subnet: &Subnet) -> Result<(), Error> {
    ctx.leader.ensure()?;
    match ctx.neutron.add_router_interface(router, &RouterInterface::subnet(&subnet.id)).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(400 | 409)) => {
            if router_has_interface(ctx, router, subnet).await? {
                Ok(())
            } else {
                Err(e.into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The networks of a KuryrNetwork: the one its status names and those stamped for it.
pub async fn networks_of(ctx: &Context, s: &NamespaceSettings, o: &Owner, status_net: Option<&str>) -> Result<BTreeSet<String>, Error> {
    let mut ids: BTreeSet<String> = status_net.map(str::to_string).into_iter().collect();
    ids.extend(find_networks(ctx, s, o).await?.into_iter().map(|n| n.id));
    Ok(ids)
}

/// Teardown, first half: the router interfaces of the networks' subnets (and of `status_subnet`)
/// removed; an interface or subnet already gone is fine.
pub async fn detach(ctx: &Context, router: &str, networks: &BTreeSet<String>, status_subnet: Option<&str>) -> Result<(), Error> {
    let mut subnets: BTreeSet<String> = status_subnet.map(str::to_string).into_iter().collect();
    for net in networks {
        subnets.extend(ctx.neutron.list_subnets(&Query::new().eq("network_id", net)).await?.into_iter().map(|s| s.id));
    }
    for subnet in &subnets {
        ctx.leader.ensure()?;
        match ctx.neutron.remove_router_interface(router, &RouterInterface::subnet(subnet)).await {
            Ok(_) => tracing::info!(router, subnet = %subnet, "router interface removed"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Teardown, second half (once no KuryrPort of the namespace is left): ports a pod left on the
/// networks (`device_owner` `compute:kuryr`, `trunk:subport` or none: upstream's list) deleted,
/// then the networks (their subnets go with them). A 409 (a port still in use) is an error:
/// retried with back-off.
pub async fn delete_networks(ctx: &Context, networks: &BTreeSet<String>) -> Result<(), Error> {
    for net in networks {
        for p in ctx.neutron.list_ports(&Query::new().eq("network_id", net)).await? {
            if ["", kuryr_core::names::DEVICE_OWNER, kuryr_core::names::SUBPORT_OWNER].contains(&p.device_owner.as_str()) {
                ctx.leader.ensure()?;
                tracing::warn!(port = %p.id, network = %net, "deleting a port left on the namespace's network");
                ctx.neutron.delete_port(&p.id).await?;
            }
        }
        ctx.leader.ensure()?;
        if ctx.neutron.delete_network(net).await? {
            tracing::info!(network = %net, "namespace network deleted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner { namespace: "team-a".into(), uid: "kn-uid".into(), namespace_uid: Some("ns-uid".into()), project: String::new() }
    }

    #[test]
    fn descriptions_name_cluster_namespace_and_owner() {
        let d = network_description("c1", &owner());
        assert_eq!(d, "kuryr-rs namespace network: cluster c1, team-a/team-a (KuryrNetwork uid kn-uid)");
        assert_eq!(kuryr_core::names::description_owner(&d), Some(("c1", "team-a")), "GC scopes it by namespace");
        assert_ne!(d, network_description("c1", &Owner { uid: "other".into(), ..owner() }), "a re-created namespace has its own");
        assert_eq!(name(&owner()), "ns-uid/team-a", "upstream's name");
    }

    #[test]
    fn network_body() {
        let s = NamespaceSettings {
            cluster_name: "c1".into(),
            project: "p1".into(),
            tags: vec!["t".into()],
            router: "r".into(),
            subnet_pool: "sp".into(),
            network_device_mtu: 1400,
            excluded: vec![],
        };
        let b = serde_json::to_value(network_create(&s, &owner())).expect("json");
        assert_eq!(b["project_id"], "p1");
        assert_eq!(b["mtu"], 1400);
        assert_eq!(b["name"], "ns-uid/team-a");
        let b = serde_json::to_value(network_create(&s, &Owner { project: "p2".into(), ..owner() })).expect("json");
        assert_eq!(b["project_id"], "p2", "spec.projectId wins");
    }
}
