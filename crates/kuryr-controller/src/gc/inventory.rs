//! What GC looks at (`crate::gc::inventory`): lists of this cluster's OpenStack resources and
//! of the cluster's objects (no writes).

use super::orphans::{find_orphans, Inventory, Referenced, Scope};
use super::{Orphan, ROUTER_INTERFACE_OWNERS, SUBPORT_OWNER};
use crate::runtime::context::Context;
use crate::runtime::error::Error;
use kube::api::{Api, ListParams};
use kuryr_core::crd::{KuryrLoadBalancer, KuryrNetwork, KuryrNetworkPolicy};
use kuryr_core::names::DEVICE_OWNER;
use kuryr_openstack::Query;
use std::collections::{BTreeSet, HashSet};

/// Lists what this cluster may own in Neutron and Octavia (no writes).
pub async fn inventory(ctx: &Context, scope: &Scope) -> Result<Inventory, Error> {
    // With a project driver on `annotation` resources live in namespaces' projects too: listed by
    // tag (and judged by owner) in every project the credentials see, not just the default one.
    let project = |q: Query| {
        if ctx.settings.project.is_empty() || ctx.multi_project() {
            q
        } else {
            q.eq("project_id", &ctx.settings.project)
        }
    };
    let tagged = || project(Query::new().tags(ctx.settings.tags.iter()));
    let neutron = &ctx.neutron;
    let mut ports_q = project(Query::new().eq("device_owner", DEVICE_OWNER));
    if !ctx.settings.resource_tags.is_empty() {
        ports_q = ports_q.tags(ctx.settings.resource_tags.iter());
    }
    let ports_q = ports_q.fields(["id", "name", "description", "device_id", "device_owner", "tags"]);
    // Free warm-pool ports carry no tags (they get them when claimed): found by their empty
    // device_id, judged by their pool stamp.
    let pool_q = project(Query::new().eq("device_owner", DEVICE_OWNER).eq("device_id", "")).fields([
        "id",
        "name",
        "description",
        "device_id",
        "device_owner",
        "tags",
    ]);
    let tagged_q = tagged();
    let subports_q = tagged().eq("device_owner", SUBPORT_OWNER);
    let (mut ports, pool_ports, subports, networks, subnets, security_groups, floating_ips) = tokio::try_join!(
        neutron.list_ports(&ports_q),
        neutron.list_ports(&pool_q),
        neutron.list_ports(&subports_q),
        neutron.list_networks(&tagged_q),
        neutron.list_subnets(&tagged_q),
        neutron.list_security_groups(&tagged_q),
        neutron.list_floating_ips(&tagged_q),
    )?;
    let known: HashSet<String> = ports.iter().map(|p| p.id.clone()).collect();
    ports.extend(pool_ports.into_iter().filter(|p| !known.contains(&p.id)));
    let mut inv = Inventory { ports, subports, networks, subnets, security_groups, floating_ips, ..Inventory::default() };
    // Router interfaces can only be ours on one of our subnets: ask for those networks' only.
    let our_networks: BTreeSet<&str> =
        inv.subnets.iter().filter(|s| scope.owned(&s.id, &s.tags, &s.description)).map(|s| s.network_id.as_str()).collect();
    if !our_networks.is_empty() {
        let q = Query::new().any_of("device_owner", ROUTER_INTERFACE_OWNERS).any_of("network_id", our_networks);
        inv.router_ports = neutron.list_ports(&q).await?;
    }
    if !inv.security_groups.is_empty() {
        let q = Query::new().any_of("security_group_id", inv.security_groups.iter().map(|g| g.id.as_str()));
        inv.security_group_rules = neutron.list_security_group_rules(&q).await?;
    }
    // No tags on address groups (see kuryr_openstack's address_groups): the project's, judged by
    // description. A cloud without the extension answers 404: none of ours.
    inv.address_groups = match neutron.list_address_groups(&project(Query::new())).await {
        Ok(g) => g,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    inv.load_balancers = match ctx.octavia.list_load_balancers(&tagged_q).await {
        Ok(lbs) => lbs,
        // A cloud without Octavia has no load balancers of ours.
        Err(kuryr_openstack::Error::NoEndpoint { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(inv)
}

/// The KuryrNetworks, KuryrNetworkPolicies and KuryrLoadBalancers (listed at each pass: GC is
/// their only reader in the controller so far).
async fn list_crds(
    ctx: &Context,
    namespace: Option<&str>,
) -> Result<(Vec<KuryrNetwork>, Vec<KuryrNetworkPolicy>, Vec<KuryrLoadBalancer>), Error> {
    async fn list<K>(ctx: &Context, namespace: Option<&str>, what: &str) -> Result<Vec<K>, Error>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = match namespace {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        Ok(api.list(&ListParams::default()).await.map_err(|e| Error::kube("list", what.to_string(), e))?.items)
    }
    Ok(tokio::try_join!(
        list::<KuryrNetwork>(ctx, namespace, "kuryrnetworks"),
        list::<KuryrNetworkPolicy>(ctx, namespace, "kuryrnetworkpolicies"),
        list::<KuryrLoadBalancer>(ctx, namespace, "kuryrloadbalancers"),
    )?)
}

/// The names of the cluster's Nodes.
async fn list_nodes(ctx: &Context) -> Result<HashSet<String>, Error> {
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(ctx.client.clone());
    let nodes = api.list_metadata(&ListParams::default()).await.map_err(|e| Error::kube("list", "nodes", e))?;
    Ok(nodes.items.into_iter().filter_map(|n| n.metadata.name).collect())
}

/// The ids kuryr.conf names (never collected).
pub fn protected(ctx: &Context) -> HashSet<String> {
    let s = &ctx.settings;
    let mut p: HashSet<String> = s.pod_security_groups.iter().cloned().collect();
    p.insert(s.pod_subnet.clone());
    p.retain(|id| !id.is_empty());
    p
}

/// Lists this cluster's resources and computes the orphans against the caches and CRDs (no
/// writes).
pub async fn orphans(ctx: &Context, namespace: Option<&str>) -> Result<Vec<Orphan>, Error> {
    let mut scope =
        Scope { cluster: ctx.settings.cluster_name.clone(), namespace: namespace.map(str::to_string), protected: protected(ctx) };
    if !ctx.settings.pod_subnet.is_empty() {
        scope.protected.insert(ctx.cache.subnet(&ctx.neutron, &ctx.settings.pod_subnet).await?.network_id.clone());
    }
    let (inv, (networks, policies, lbs), nodes) = tokio::try_join!(inventory(ctx, &scope), list_crds(ctx, namespace), list_nodes(ctx))?;
    let mut refs = Referenced::collect(ctx.pods.state().iter().map(|p| p.as_ref()), ctx.kuryrports.state().iter().map(|k| k.as_ref()));
    refs.add_crds(&networks, &policies, &lbs);
    refs.nodes = Some(nodes);
    Ok(find_orphans(&inv, &scope, &refs))
}
