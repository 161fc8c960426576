//! The nested-vlan driver (`[kubernetes] pod_vif_driver = nested-vlan`): pods inside OpenStack VMs. The
//! node VM's Neutron port is the parent of a trunk; each pod gets a port on the pod subnet that
//! is attached to that trunk as a VLAN subport, and kuryr-daemon puts a VLAN sub-interface of the
//! VM's NIC into the pod.
//!
//! * Parent port: the Node's `InternalIP` (a cached GET of the Node) →
//!   `GET /ports?fixed_ips=ip_address=<ip>`, restricted to `[pod_vif_nested] worker_nodes_subnets`
//!   when set → `trunk_details.trunk_id`. No trunk there is [`Error::NodeTrunk`] (a deployment
//!   problem), not an OpenStack error.
//! * The pod's port: the neutron-vif request without `binding:host_id` and `device_id`.
//!   Neutron rewrites a subport's `device_owner` to `trunk:subport` (ML2/OVN leaves `device_id`
//!   and `binding:host_id` empty), so the idempotency key is the port's exact description, which
//!   names the cluster and the pod UID ([`crate::pod::ports::description`]): a crash between create and
//!   the status write is adopted (`GET /ports?description=…`), never duplicated.
//! * VLAN ids are per trunk: the trunk's current `sub_ports[].segmentation_id`s are in use, a
//!   per-trunk cursor moves past the last id handed out (a just-freed id is not reused at once:
//!   the node may still hold a VLAN interface with it). Attachments are serialized per trunk and
//!   batched: every port waiting while a `PUT add_subports` is in flight goes into the next one,
//!   so concurrent pods of a node never pick the same id. A 409 re-reads the trunk: if an id
//!   tried was taken behind our back, other ids are tried at once ([`MAX_ATTACH_ATTEMPTS`] in
//!   all, no sleeps); otherwise (a port already on another trunk) the batch fails. A failed batch
//!   of several ports is retried port by port, so one bad port does not fail the others.
//! * Release: `PUT /trunks/{id}/remove_subports` (404 = not a subport any more) then
//!   `DELETE /ports/{id}`.

use crate::pod::context::PodContext;
use crate::pod::driver::neutron;
use crate::pod::ports::{self, tags_to_set, Acquired, PodPortRequest};
use crate::runtime::batch::Coalescer;
use crate::runtime::error::Error;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kuryr_core::vif::Binding;
use kuryr_openstack::neutron::{Port, PortCreate, SubPort, TagResource};
use kuryr_openstack::Query;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `device_owner` Neutron gives a port attached to a trunk.
pub use kuryr_core::names::SUBPORT_OWNER;
/// `PUT add_subports` attempts for one batch (a 409 re-reads the trunk and picks other ids).
pub const MAX_ATTACH_ATTEMPTS: usize = 3;
/// Highest 802.1Q VLAN id.
pub const MAX_VLAN: u16 = 4094;
/// How long a node's parent port and trunk are remembered (a trunk 404 forgets them at once).
const PARENT_TTL: Duration = Duration::from_secs(300);

/// A node's trunk parent port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeParent {
    pub node: String,
    pub ip: String,
    pub port_id: String,
    pub trunk_id: String,
}

/// The Node's first `InternalIP`.
pub fn internal_ip(node: &Node) -> Option<String> {
    node.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP" && !a.address.is_empty()).map(|a| a.address.clone())
}

/// The ports holding `ip`.
pub fn parent_query(ip: &str) -> Query {
    Query::new().eq("fixed_ips", format!("ip_address={ip}"))
}

/// Why a node has no usable parent port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParentError {
    #[error("no Neutron port has this IP (is the node a VM on this cloud, visible to kuryr's project?)")]
    NoPort,
    #[error("the ports with this IP are on subnets {0:?}, none of them in [pod_vif_nested] worker_nodes_subnets")]
    NotInWorkerSubnets(Vec<String>),
    #[error("no trunk on the parent port {0} (create a trunk on the node VM's port)")]
    NoTrunk(String),
    #[error("several ports with this IP have trunks ({0:?}); set [pod_vif_nested] worker_nodes_subnets")]
    Ambiguous(Vec<String>),
}

/// The parent port among the ports holding `ip` and its trunk id.
pub fn select_parent<'a>(ports: &'a [Port], ip: &str, worker_subnets: &[String]) -> Result<(&'a Port, &'a str), ParentError> {
    if ports.is_empty() {
        return Err(ParentError::NoPort);
    }
    let candidates: Vec<&Port> = ports
        .iter()
        .filter(|p| p.fixed_ips.iter().any(|f| f.ip_address == ip && (worker_subnets.is_empty() || worker_subnets.contains(&f.subnet_id))))
        .collect();
    if candidates.is_empty() {
        let subnets: BTreeSet<String> = ports.iter().flat_map(|p| p.fixed_ips.iter().map(|f| f.subnet_id.clone())).collect();
        return Err(ParentError::NotInWorkerSubnets(subnets.into_iter().collect()));
    }
    let trunked: Vec<(&Port, &str)> = candidates
        .iter()
        .filter_map(|p| p.trunk_details.as_ref().filter(|t| !t.trunk_id.is_empty()).map(|t| (*p, t.trunk_id.as_str())))
        .collect();
    match trunked.as_slice() {
        [] => Err(ParentError::NoTrunk(candidates.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", "))),
        [one] => Ok(*one),
        many => Err(ParentError::Ambiguous(many.iter().map(|(p, _)| p.id.clone()).collect())),
    }
}

/// Up to `n` VLAN ids not in `used`, scanning 1..=4094 upwards from `start` and wrapping.
pub fn pick_vlans(used: &BTreeSet<u16>, start: u16, n: usize) -> Vec<u16> {
    let start = if (1..=MAX_VLAN).contains(&start) { start } else { 1 };
    (start..=MAX_VLAN).chain(1..start).filter(|id| !used.contains(id)).take(n).collect()
}

/// `POST /ports` body of a pod's subport: the neutron-vif one without host and device id.
pub fn port_create(s: &crate::runtime::settings::Settings, req: &PodPortRequest, network_id: &str) -> PortCreate {
    PortCreate { device_id: String::new(), binding_host_id: String::new(), ..neutron::port_create(s, req, network_id) }
}

/// The ports a previous attempt may have created for this pod (exact description).
pub fn adoption_query(description: &str, network_id: &str) -> Query {
    Query::new().eq("description", description).eq("network_id", network_id)
}

/// Which of the pod's existing ports to keep: a subport of the node's trunk first, then ACTIVE,
/// then the oldest revision. The others are extras (a lost race): to release.
pub fn select_adoptable(mut ports: Vec<Port>, parent_port_id: &str) -> (Option<Port>, Vec<Port>) {
    ports.sort_by_key(|p| (parent_of(p) != Some(parent_port_id), p.status != "ACTIVE", p.revision_number.unwrap_or(0), p.id.clone()));
    let mut it = ports.into_iter();
    (it.next(), it.collect())
}

/// The parent port a subport hangs off (`binding:profile.parent_name`, ML2/OVN).
pub fn parent_of(port: &Port) -> Option<&str> {
    port.trunk_parent()
}

/// One failure answering every port of a batch.
#[derive(Clone, Debug)]
struct AttachFailure {
    reason: String,
    transient: bool,
}

impl AttachFailure {
    fn from_os(e: &kuryr_openstack::Error) -> AttachFailure {
        AttachFailure { reason: e.to_string(), transient: e.is_transient() || e.is_conflict() }
    }
}

/// Subports per `PUT add_subports`.
const ATTACH_BATCH: usize = 64;

/// nested-vlan state: node parents and per-trunk attachment queues.
pub struct Nested {
    parents: Mutex<HashMap<String, (Instant, Arc<NodeParent>)>>,
    /// Per trunk: where the next VLAN id search starts (0 = past the trunk's highest id).
    next_vlan: Mutex<HashMap<String, u16>>,
    /// Per trunk: ports waiting to be attached, one `PUT add_subports` at a time.
    attach: Coalescer<String, String, Result<u16, AttachFailure>>,
}

impl Default for Nested {
    fn default() -> Self {
        Nested { parents: Mutex::default(), next_vlan: Mutex::default(), attach: Coalescer::new(ATTACH_BATCH) }
    }
}

impl std::fmt::Debug for Nested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nested").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Nested {
    fn forget_trunk(&self, trunk_id: &str) {
        lock(&self.parents).retain(|_, (_, p)| p.trunk_id != trunk_id);
    }

    fn trunk_of_parent(&self, parent_port_id: &str) -> Option<String> {
        lock(&self.parents).values().find(|(_, p)| p.port_id == parent_port_id).map(|(_, p)| p.trunk_id.clone())
    }
}

/// The node's parent port and trunk (cached for [`PARENT_TTL`]).
pub async fn node_parent(ctx: &PodContext, node: &str) -> Result<Arc<NodeParent>, Error> {
    if let Some((at, p)) = lock(&ctx.nested.parents).get(node) {
        if at.elapsed() < PARENT_TTL {
            return Ok(p.clone());
        }
    }
    let nt = |ip: &str, reason: String| Error::NodeTrunk { node: node.to_string(), ip: ip.to_string(), reason };
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let n = nodes
        .get_opt(node)
        .await
        .map_err(|e| Error::kube("get", format!("node {node}"), e))?
        .ok_or_else(|| nt("?", "the Node object does not exist".into()))?;
    let ip = internal_ip(&n).ok_or_else(|| nt("?", "the Node has no InternalIP address".into()))?;
    let ports = ctx.neutron.list_ports(&parent_query(&ip)).await?;
    let (port, trunk_id) = select_parent(&ports, &ip, &ctx.settings.worker_nodes_subnets).map_err(|e| nt(&ip, e.to_string()))?;
    let parent = Arc::new(NodeParent { node: node.to_string(), ip: ip.clone(), port_id: port.id.clone(), trunk_id: trunk_id.to_string() });
    tracing::debug!(node, %ip, parent = %parent.port_id, trunk = %parent.trunk_id, "found the node's trunk");
    lock(&ctx.nested.parents).insert(node.to_string(), (Instant::now(), parent.clone()));
    Ok(parent)
}

/// Adopts the pod's port or creates one, tags it, and attaches it to the node's trunk. Returns
/// the port with its VLAN id as the binding.
pub async fn acquire(ctx: &PodContext, req: &PodPortRequest) -> Result<Acquired, Error> {
    // A node without a trunk fails before any port is created.
    let parent = node_parent(ctx, &req.node).await?;
    let subnet = ctx.cache.subnet(&ctx.neutron, &ctx.settings.pod_subnet).await?;
    let description = ports::description(&ctx.settings.cluster_name, req);
    let existing: Vec<Port> = ctx
        .neutron
        .list_ports(&adoption_query(&description, &subnet.network_id))
        .await?
        .into_iter()
        .filter(|p| p.description == description)
        .collect();
    let (keep, extras) = select_adoptable(existing, &parent.port_id);
    for extra in extras {
        tracing::warn!(port = %extra.id, pod_uid = %req.pod_uid, "releasing a duplicate port of the pod");
        release_port(ctx, &extra, Some(&req.node)).await?;
    }
    let (mut port, adopted) = match keep {
        Some(p) => {
            tracing::info!(port = %p.id, status = %p.status, device_owner = %p.device_owner, "adopting the pod's existing Neutron port");
            (p, true)
        }
        None => {
            let mut body = port_create(&ctx.settings, req, &subnet.network_id);
            body.security_groups = Some(super::neutron::new_port_groups(ctx, req).await?);
            ctx.leader.ensure()?;
            (ctx.neutron.create_port(&body).await?, false)
        }
    };
    if let Some(tags) = tags_to_set(&port.tags, &ctx.settings.tags) {
        ctx.leader.ensure()?;
        port.tags = ctx.neutron.set_tags(TagResource::Port, &port.id, &tags).await?;
    }
    let vlan_id = attach(ctx, &parent.trunk_id, &port.id).await?;
    tracing::info!(port = %port.id, trunk = %parent.trunk_id, vlan_id, node = %req.node, "port is a subport of the node's trunk");
    Ok(Acquired { port, adopted, pooled: false, binding: Some(Binding::NestedVlan { vlan_id }) })
}

/// The pod's ports a previous attempt may have left: those stamped with its UID (as the neutron
/// driver finds them), then, as a subport has no `device_id`, those with its exact description
/// on the pod network. Cleanup releases them with the recorded ones.
pub async fn adoption_candidates(ctx: &PodContext, req: &PodPortRequest) -> Result<Vec<String>, Error> {
    let mut ids = neutron::adoption_candidates(ctx, &req.pod_uid).await?;
    let description = ports::description(&ctx.settings.cluster_name, req);
    let network_id = ctx.cache.subnet(&ctx.neutron, &ctx.settings.pod_subnet).await?.network_id.clone();
    for p in ctx.neutron.list_ports(&adoption_query(&description, &network_id)).await? {
        if p.description == description {
            ids.push(p.id);
        }
    }
    Ok(ids)
}

/// Attaches `port_id` to `trunk_id` (or finds it attached) and returns its VLAN id. Joins the
/// trunk's next batch.
pub async fn attach(ctx: &PodContext, trunk_id: &str, port_id: &str) -> Result<u16, Error> {
    let sub = |reason: String, transient: bool| Error::Subport {
        port_id: port_id.to_string(),
        trunk_id: trunk_id.to_string(),
        reason,
        transient,
    };
    match ctx.nested.attach.submit(trunk_id.to_string(), port_id.to_string(), |ids| attach_batch(ctx, trunk_id, ids)).await {
        Some(Ok(id)) => Ok(id),
        Some(Err(f)) => Err(sub(f.reason, f.transient)),
        None => Err(sub("the attachment was interrupted (its reconcile was cancelled)".into(), true)),
    }
}

async fn attach_batch(ctx: &PodContext, trunk_id: &str, ids: Vec<String>) -> Vec<Result<u16, AttachFailure>> {
    match try_attach(ctx, trunk_id, &ids).await {
        Ok(v) => v.into_iter().map(Ok).collect(),
        // One bad port must not fail the others: attach them one by one.
        Err(f) if ids.len() > 1 => {
            tracing::warn!(trunk = %trunk_id, ports = ids.len(), error = %f.reason, "batched add_subports failed; attaching one by one");
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                out.push(try_attach(ctx, trunk_id, std::slice::from_ref(id)).await.map(|v| v.first().copied().unwrap_or_default()));
            }
            out
        }
        Err(f) => vec![Err(f)],
    }
}

/// Attaches all `port_ids` in one `PUT add_subports` (ports already on the trunk keep their id).
async fn try_attach(ctx: &PodContext, trunk_id: &str, port_ids: &[String]) -> Result<Vec<u16>, AttachFailure> {
    let mut last = AttachFailure { reason: "no attempt".into(), transient: true };
    // The ids of the last attempt, if Neutron answered 409.
    let mut clashed: Vec<u16> = Vec::new();
    for attempt in 1..=MAX_ATTACH_ATTEMPTS {
        let trunk = match ctx.neutron.get_trunk(trunk_id).await {
            Ok(t) => t,
            Err(e) => {
                if e.is_not_found() {
                    ctx.nested.forget_trunk(trunk_id);
                }
                return Err(AttachFailure::from_os(&e));
            }
        };
        let mut found: HashMap<&str, u16> = HashMap::new();
        let mut used = BTreeSet::new();
        for sp in &trunk.sub_ports {
            let Ok(id) = u16::try_from(sp.segmentation_id) else { continue };
            used.insert(id);
            found.insert(sp.port_id.as_str(), id);
        }
        let missing: Vec<&String> = port_ids.iter().filter(|p| !found.contains_key(p.as_str())).collect();
        if missing.is_empty() {
            return Ok(port_ids.iter().map(|p| found.get(p.as_str()).copied().unwrap_or_default()).collect());
        }
        // A 409 although nobody took the ids tried: not a VLAN clash (e.g. a port already on
        // another trunk); other ids would not help.
        if !clashed.is_empty() && !clashed.iter().any(|v| used.contains(v)) {
            return Err(last);
        }
        let start = match lock(&ctx.nested.next_vlan).get(trunk_id).copied().unwrap_or(0) {
            0 => used.iter().next_back().map_or(1, |m| m.saturating_add(1)),
            next => next,
        };
        let vlans = pick_vlans(&used, start, missing.len());
        if vlans.len() < missing.len() {
            return Err(AttachFailure { reason: format!("trunk has no free VLAN id ({} in use)", used.len()), transient: false });
        }
        let subports: Vec<SubPort> = missing.iter().zip(&vlans).map(|(p, v)| SubPort::vlan(p.as_str(), u32::from(*v))).collect();
        if ctx.leader.ensure().is_err() {
            return Err(AttachFailure { reason: "not the leader: refusing to write".into(), transient: true });
        }
        match ctx.neutron.add_subports(trunk_id, &subports).await {
            Ok(_) => {
                if let Some(top) = vlans.last() {
                    let next = if *top >= MAX_VLAN { 1 } else { top + 1 };
                    lock(&ctx.nested.next_vlan).insert(trunk_id.to_string(), next);
                }
                for (p, v) in missing.iter().zip(&vlans) {
                    found.insert(p.as_str(), *v);
                }
                tracing::debug!(trunk = %trunk_id, subports = ?subports.iter().map(|s| (&s.port_id, s.segmentation_id)).collect::<Vec<_>>(), "add_subports");
                return Ok(port_ids.iter().map(|p| found.get(p.as_str()).copied().unwrap_or_default()).collect());
            }
            Err(e) if e.is_conflict() && attempt < MAX_ATTACH_ATTEMPTS => {
                tracing::info!(trunk = %trunk_id, attempt, error = %e, "add_subports conflict; re-reading the trunk");
                // Past the ids that clashed.
                if let Some(top) = vlans.last() {
                    lock(&ctx.nested.next_vlan).insert(trunk_id.to_string(), top.saturating_add(1).min(MAX_VLAN));
                }
                last = AttachFailure::from_os(&e);
                clashed = vlans;
            }
            Err(e) => {
                if e.is_not_found() {
                    ctx.nested.forget_trunk(trunk_id);
                }
                return Err(AttachFailure::from_os(&e));
            }
        }
    }
    Err(last)
}

/// The trunk a subport is attached to, if any (from its parent port, through the cache of node
/// parents when possible; else the node's trunk when `node` is given).
async fn trunk_of(ctx: &PodContext, port: &Port, node: Option<&str>) -> Result<Option<String>, Error> {
    if port.device_owner != SUBPORT_OWNER {
        return Ok(None);
    }
    if let Some(parent) = parent_of(port) {
        if let Some(t) = ctx.nested.trunk_of_parent(parent) {
            return Ok(Some(t));
        }
        match ctx.neutron.get_port(parent).await {
            Ok(p) => return Ok(p.trunk_details.map(|t| t.trunk_id).filter(|t| !t.is_empty())),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    match node {
        Some(n) => Ok(Some(node_parent(ctx, n).await?.trunk_id.clone())),
        None => Ok(None),
    }
}

/// Detaches the port from its trunk and deletes it; `Ok(false)` if it was already gone.
pub async fn release(ctx: &PodContext, port_id: &str, node: Option<&str>) -> Result<bool, Error> {
    let port = match ctx.neutron.get_port(port_id).await {
        Ok(p) => p,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    release_port(ctx, &port, node).await
}

async fn release_port(ctx: &PodContext, port: &Port, node: Option<&str>) -> Result<bool, Error> {
    if let Some(trunk_id) = trunk_of(ctx, port, node).await? {
        ctx.leader.ensure()?;
        match ctx.neutron.remove_subports(&trunk_id, &[port.id.as_str()]).await {
            Ok(_) => tracing::debug!(port = %port.id, trunk = %trunk_id, "removed the subport"),
            // Not (or no longer) a subport of that trunk, or the trunk is gone.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.leader.ensure()?;
    Ok(ctx.neutron.delete_port(&port.id).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn port(v: serde_json::Value) -> Port {
        serde_json::from_value(v).expect("port")
    }

    fn parent(id: &str, subnet: &str, trunk: Option<&str>) -> Port {
        let mut v = json!({"id": id, "network_id": "workers", "fixed_ips": [{"subnet_id": subnet, "ip_address": "192.168.77.10"}]});
        if let Some(t) = trunk {
            v["trunk_details"] = json!({"trunk_id": t, "sub_ports": []});
        }
        port(v)
    }

    #[test]
    fn finds_the_parent_and_its_trunk() {
        let ip = "192.168.77.10";
        assert_eq!(select_parent(&[], ip, &[]), Err(ParentError::NoPort));
        let ports = [parent("p1", "ws", Some("t1"))];
        let (p, t) = select_parent(&ports, ip, &[]).expect("parent");
        assert_eq!((p.id.as_str(), t), ("p1", "t1"));
        let err = select_parent(&[parent("p1", "ws", None)], ip, &[]).expect_err("no trunk");
        assert_eq!(err, ParentError::NoTrunk("p1".into()));
        assert!(err.to_string().contains("no trunk on the parent port p1"), "{err}");
        let err = select_parent(&ports, ip, &["other".into()]).expect_err("subnet");
        assert_eq!(err, ParentError::NotInWorkerSubnets(vec!["ws".into()]));
        assert!(err.to_string().contains("[pod_vif_nested] worker_nodes_subnets"));
        // The same IP on another network (a pod port, a second cloud network): subnets decide.
        let two = [parent("p1", "ws", Some("t1")), parent("p2", "other", Some("t2"))];
        assert!(matches!(select_parent(&two, ip, &[]), Err(ParentError::Ambiguous(v)) if v == ["p1", "p2"]));
        assert_eq!(select_parent(&two, ip, &["other".into()]).expect("p2").1, "t2");
        let with_plain = [parent("p0", "x", None), parent("p1", "ws", Some("t1"))];
        assert_eq!(select_parent(&with_plain, ip, &[]).expect("p1").0.id, "p1");
        // Another IP on the port does not count.
        assert!(select_parent(&two, "192.168.77.11", &[]).is_err());
    }

    #[test]
    fn reads_the_internal_ip() {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": "w"}, "status": {"addresses": [
            {"type": "Hostname", "address": "w"}, {"type": "InternalIP", "address": "192.168.77.10"}]}}))
        .expect("node");
        assert_eq!(internal_ip(&n).as_deref(), Some("192.168.77.10"));
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "w"}})).expect("node");
        assert_eq!(internal_ip(&bare), None);
        assert_eq!(parent_query("10.0.0.1").pairs(), &[("fixed_ips".to_string(), "ip_address=10.0.0.1".to_string())]);
    }

    #[test]
    fn vlan_ids_skip_used_and_wrap() {
        let used: BTreeSet<u16> = [1, 2, 3, 5].into();
        assert_eq!(pick_vlans(&used, 1, 3), [4, 6, 7]);
        assert_eq!(pick_vlans(&used, 0, 1), [4]);
        assert_eq!(pick_vlans(&used, 4094, 3), [4094, 4, 6]);
        assert_eq!(pick_vlans(&BTreeSet::new(), 5000, 1), [1]);
        let full: BTreeSet<u16> = (1..=4094).collect();
        assert!(pick_vlans(&full, 7, 1).is_empty());
        let all_but_one: BTreeSet<u16> = (1..=4094).filter(|i| *i != 77).collect();
        assert_eq!(pick_vlans(&all_but_one, 100, 2), [77]);
    }

    #[test]
    fn subport_request_and_adoption() {
        let s = crate::runtime::settings::Settings {
            project: "proj".into(),
            pod_subnet: "sub-1".into(),
            pod_security_groups: vec!["sg-1".into()],
            cluster_name: "c1".into(),
            ..crate::runtime::settings::Settings::defaults()
        };
        let req =
            PodPortRequest { namespace: "ns".into(), name: "web-0".into(), pod_uid: "uid-1".into(), node: "w1".into(), standalone: false };
        let body = serde_json::to_value(port_create(&s, &req, "net-1")).expect("json");
        assert_eq!(
            body,
            json!({"network_id": "net-1", "name": "ns/web-0",
                   "description": "kuryr-rs pod port: cluster c1, pod ns/web-0 (uid uid-1)",
                   "admin_state_up": true, "fixed_ips": [{"subnet_id": "sub-1"}],
                   "device_owner": "compute:kuryr", "security_groups": ["sg-1"], "project_id": "proj"})
        );
        assert_eq!(adoption_query("d", "n").pairs(), &[("description".into(), "d".into()), ("network_id".into(), "n".into())]);

        let sub = |id: &str, parent: &str, status: &str| {
            port(json!({"id": id, "network_id": "n", "device_owner": SUBPORT_OWNER, "status": status,
                        "binding:profile": {"parent_name": parent, "tag": 7}}))
        };
        let fresh = port(json!({"id": "a-fresh", "network_id": "n", "device_owner": "compute:kuryr", "status": "DOWN"}));
        assert_eq!(parent_of(&fresh), None);
        assert_eq!(parent_of(&sub("x", "par", "DOWN")), Some("par"));
        let (keep, extras) =
            select_adoptable(vec![fresh.clone(), sub("b-other", "elsewhere", "ACTIVE"), sub("c-ours", "par", "DOWN")], "par");
        assert_eq!(keep.map(|p| p.id).as_deref(), Some("c-ours"));
        assert_eq!(extras.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["b-other", "a-fresh"]);
        assert_eq!(select_adoptable(vec![], "par"), (None, vec![]));
    }
}
