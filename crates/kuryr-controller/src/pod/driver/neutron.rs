//! The plain Neutron driver (`[kubernetes] pod_vif_driver = neutron-vif`): the pod's port is a
//! Neutron port bound to the pod's node (`binding:host_id`); its binding is the one Neutron reports.
//!
//! Idempotency key: the pod UID is stamped as the port's `device_id` (with `device_owner =
//! compute:kuryr`), so a crash between `POST /ports` and the KuryrPort status write leaves a
//! port that the next reconcile finds (`GET /ports?device_id=<uid>&device_owner=compute:kuryr`)
//! and adopts instead of creating a second one. With warm pools ([`crate::pod::pool`]) a pod's
//! port is claimed from its node's pool before one is created, and goes back into it on release.

use crate::pod::context::PodContext;
use crate::pod::pool::Recycled;
use crate::pod::ports::{self, tags_to_set, Acquired, PodPortRequest};
use crate::runtime::error::Error;
use crate::runtime::projects::ProjectKind;
use crate::runtime::settings::Settings;
use kuryr_core::names::DEVICE_OWNER;
use kuryr_openstack::neutron::{Port, PortCreate, PortUpdate, Subnet, TagResource};
use kuryr_openstack::Query;

/// `POST /v2.0/ports` body for a pod (tags are set by a separate PUT, see [`acquire`]).
pub fn port_create(s: &Settings, req: &PodPortRequest, network_id: &str) -> PortCreate {
    PortCreate {
        network_id: network_id.to_string(),
        name: format!("{}/{}", req.namespace, req.name),
        description: ports::description(&s.cluster_name, req),
        admin_state_up: Some(true),
        fixed_ips: Some(s.fixed_ips_on(&s.pod_subnet)),
        device_id: req.pod_uid.clone(),
        device_owner: DEVICE_OWNER.to_string(),
        binding_host_id: req.node.clone(),
        security_groups: Some(s.pod_security_groups.clone()),
        project_id: s.project.clone(),
        ..PortCreate::default()
    }
}

/// The ports a previous attempt may have created for this pod.
pub fn adoption_query(pod_uid: &str) -> Query {
    Query::new().eq("device_id", pod_uid).eq("device_owner", DEVICE_OWNER)
}

/// Outcome of [`select_adoptable`].
#[derive(Debug, Default, PartialEq)]
pub struct Adoption {
    /// The port to use.
    pub keep: Option<Port>,
    /// Other ports of the same pod (a leak from a lost race): to delete.
    pub extras: Vec<Port>,
}

/// Chooses which of the pod's existing ports to adopt: on the pod network, then ACTIVE, then
/// bound to the pod's node, then the oldest revision. Ports on other networks are left alone
/// (not ours to judge); further ports on the pod network are extras.
pub fn select_adoptable(ports: Vec<Port>, node: &str, network_id: &str) -> Adoption {
    let mut candidates: Vec<Port> = ports.into_iter().filter(|p| p.device_owner == DEVICE_OWNER && p.network_id == network_id).collect();
    candidates.sort_by_key(|p| (p.status != "ACTIVE", p.binding_host_id != node, p.revision_number.unwrap_or(0), p.id.clone()));
    let mut it = candidates.into_iter();
    Adoption { keep: it.next(), extras: it.collect() }
}

/// Adopts the pod's existing port or creates one; makes sure it is bound to the node and
/// tagged. Checks the leader gate before every write.
pub async fn acquire(ctx: &PodContext, req: &PodPortRequest) -> Result<Acquired, Error> {
    // `pod_subnet`, or the namespace's subnet (namespace networks; the KuryrPort reconciler
    // waited for it).
    let subnet_id = ctx.pod_subnet(&req.namespace).ok_or_else(|| Error::NotReady(format!("the network of namespace {}", req.namespace)))?;
    let subnet = ctx.cache.subnet(&ctx.neutron, &subnet_id).await?;
    // A KuryrPort this replica created in this term, first attempt: nothing to adopt, no lookup.
    let existing = if ctx.take_fresh(&req.pod_uid) {
        ctx.metrics.adoption_lookup(false);
        Vec::new()
    } else {
        ctx.metrics.adoption_lookup(true);
        ctx.neutron.list_ports(&adoption_query(&req.pod_uid)).await?
    };
    let Adoption { keep, extras } = select_adoptable(existing, &req.node, &subnet.network_id);
    for extra in extras {
        ctx.leader.ensure()?;
        tracing::warn!(port = %extra.id, pod_uid = %req.pod_uid, "deleting a duplicate port of the pod");
        ctx.neutron.delete_port(&extra.id).await?;
    }
    let (mut port, adopted, pooled) = match keep {
        Some(p) => {
            tracing::info!(port = %p.id, status = %p.status, "adopting the pod's existing Neutron port");
            (p, true, false)
        }
        None => match &ctx.pools {
            Some(pools) if !req.standalone => match crate::pod::pool::claim(ctx, pools, req, &subnet.network_id).await? {
                Some(p) => (p, false, true),
                None => {
                    let port = create(ctx, req, &subnet).await;
                    crate::pod::pool::missed(ctx, pools, &req.node, &subnet.network_id, port.as_ref().ok());
                    (port?, false, false)
                }
            },
            _ => (create(ctx, req, &subnet).await?, false, false),
        },
    };
    if pooled {
        // Bound to the node and published (so built as a VIF) already; tags come with the stamp.
        return Ok(Acquired { port, adopted, pooled, binding: None });
    }
    if port.binding_host_id != req.node {
        ctx.leader.ensure()?;
        let upd = PortUpdate { binding_host_id: Some(req.node.clone()), ..PortUpdate::default() };
        port = ctx.neutron.update_port(&port.id, &upd).await?;
    } else if port.binding_vif_type == "unbound" {
        // Neutron can answer a create before binding finished (LP#1696051): look once more.
        port = ctx.neutron.get_port(&port.id).await?;
    }
    if let Some(tags) = tags_to_set(&port.tags, &ctx.settings.tags) {
        ctx.leader.ensure()?;
        port.tags = ctx.neutron.set_tags(TagResource::Port, &port.id, &tags).await?;
    }
    Ok(Acquired { port, adopted, pooled, binding: None })
}

async fn create(ctx: &PodContext, req: &PodPortRequest, subnet: &Subnet) -> Result<Port, Error> {
    let mut body = port_create(&ctx.settings, req, &subnet.network_id);
    body.fixed_ips = Some(ctx.settings.fixed_ips_on(&subnet.id));
    body.security_groups = Some(new_port_groups(ctx, req).await?);
    // `pod_project_driver = annotation`: the namespace's project (else `[neutron_defaults] project`).
    body.project_id = ctx.project_for(ProjectKind::Pod, &req.namespace).await;
    ctx.leader.ensure()?;
    // `port_bulk_max` > 1: pods whose ports are asked for while another creation is in flight
    // share the next request; 1 (the default): side by side, one request each. Counted either
    // way, so a warm-pool refill waits until no pod's creation is in flight.
    let project = body.project_id.clone();
    ctx.creates.submit(project, body, |bodies| create_batch(ctx, bodies)).await.unwrap_or_else(|| {
        Err(Error::Interrupted(format!(
            "creating the port of pod {}/{} (in one request with other pods' ports, whose caller was cancelled)",
            req.namespace, req.name
        )))
    })
}

/// Creates the ports of pods that asked together: one bulk `POST /ports`. A bulk is all or
/// nothing, so if it fails each pod's port is made on its own (one pod's bad request must not
/// fail the others), after adopting those a failed bulk may still have created (a timed-out POST
/// can have taken effect; each port carries its pod's UID as `device_id`).
pub async fn create_batch(ctx: &PodContext, bodies: Vec<PortCreate>) -> Vec<Result<Port, Error>> {
    if let [one] = bodies.as_slice() {
        return vec![ctx.neutron.create_port(one).await.map_err(Error::from)];
    }
    if ctx.leader.ensure().is_err() {
        return bodies.iter().map(|_| Err(Error::NotLeader)).collect();
    }
    let e = match ctx.neutron.create_ports(&bodies).await {
        Ok(ports) if ports.len() == bodies.len() => {
            tracing::info!(ports = ports.len(), "created the ports of pods that asked together in one bulk request");
            ctx.metrics.pool_event("bulk_created", ports.len() as u64);
            return ports.into_iter().map(Ok).collect();
        }
        Ok(ports) => format!("the bulk create answered {} ports for {} requests", ports.len(), bodies.len()),
        Err(e) => e.to_string(),
    };
    tracing::warn!(ports = bodies.len(), error = %e, "bulk port creation failed; creating the pods' ports one by one");
    let uids = bodies.iter().map(|b| b.device_id.as_str());
    let made = match ctx.neutron.list_ports(&Query::new().any_of("device_id", uids).eq("device_owner", DEVICE_OWNER)).await {
        Ok(found) => found,
        Err(e2) => {
            let why = format!("bulk port creation failed ({e}) and the ports it may have created cannot be listed ({e2})");
            return bodies.iter().map(|_| Err(Error::Interrupted(why.clone()))).collect();
        }
    };
    let mut out = Vec::with_capacity(bodies.len());
    for body in &bodies {
        match made.iter().find(|p| p.device_id == body.device_id && p.network_id == body.network_id) {
            Some(p) => out.push(Ok(p.clone())),
            None => out.push(ctx.neutron.create_port(body).await.map_err(Error::from)),
        }
    }
    out
}

/// The security groups a new port of the pod gets: the NetworkPolicy domain's answer (through
/// the runtime hook) for a pod, the configured defaults for a standalone container.
pub async fn new_port_groups(ctx: &PodContext, req: &PodPortRequest) -> Result<Vec<String>, Error> {
    if req.standalone {
        return Ok(ctx.settings.pod_security_groups.clone());
    }
    ctx.port_security_groups(&req.namespace, &req.name).await
}

/// The pod's ports stamped with its UID (cleanup releases them with the recorded ones: a crash
/// before the status write leaves one unrecorded).
pub async fn adoption_candidates(ctx: &PodContext, pod_uid: &str) -> Result<Vec<String>, Error> {
    Ok(ctx.neutron.list_ports(&adoption_query(pod_uid)).await?.into_iter().map(|p| p.id).collect())
}

/// A released pod's port: back into its node's warm pool if there is room, else deleted.
/// `Ok(false)` if it was already gone, or is another pod's now (the pool gave it away after an
/// earlier release of this one whose KuryrPort outlived it; nothing is done to it).
pub async fn release_or_recycle(ctx: &PodContext, port_id: &str, pod_uid: &str) -> Result<bool, Error> {
    if let Some(pools) = &ctx.pools {
        match crate::pod::pool::recycle(ctx, pools, port_id, pod_uid).await? {
            Recycled::Pooled => return Ok(true),
            Recycled::Gone | Recycled::Foreign => return Ok(false),
            Recycled::Unfit => {}
        }
    }
    ports::release(ctx, port_id).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings {
            project: "proj".into(),
            pod_subnet: "sub-1".into(),
            pod_security_groups: vec!["sg-1".into()],
            resource_tags: vec!["kuryr-rs-local".into()],
            cluster_name: "c1".into(),
            ..Settings::defaults()
        }
    }

    fn req() -> PodPortRequest {
        PodPortRequest { namespace: "ns".into(), name: "web-0".into(), pod_uid: "uid-1".into(), node: "vm".into(), standalone: false }
    }

    #[test]
    fn create_body_stamps_the_pod() {
        let body = serde_json::to_value(port_create(&settings(), &req(), "net-1")).expect("json");
        assert_eq!(
            body,
            json!({
                "network_id": "net-1", "name": "ns/web-0",
                "description": "kuryr-rs pod port: cluster c1, pod ns/web-0 (uid uid-1)",
                "admin_state_up": true, "fixed_ips": [{"subnet_id": "sub-1"}],
                "device_id": "uid-1", "device_owner": "compute:kuryr", "binding:host_id": "vm",
                "security_groups": ["sg-1"], "project_id": "proj"
            })
        );
        let standalone = PodPortRequest { namespace: "kuryr-standalone".into(), name: "web-1".into(), standalone: true, ..req() };
        let body = serde_json::to_value(port_create(&settings(), &standalone, "net-1")).expect("json");
        assert_eq!(body["description"], "kuryr-rs standalone container port: cluster c1, KuryrPort kuryr-standalone/web-1 (uid uid-1)");
        assert_eq!(
            (&body["name"], &body["device_id"], &body["binding:host_id"]),
            (&json!("kuryr-standalone/web-1"), &json!("uid-1"), &json!("vm"))
        );
        assert_eq!(body["security_groups"], json!(["sg-1"]));
        assert_eq!(
            adoption_query("uid-1").pairs(),
            &[("device_id".to_string(), "uid-1".to_string()), ("device_owner".to_string(), "compute:kuryr".to_string())]
        );
    }

    fn port(id: &str, net: &str, status: &str, host: &str, rev: u64) -> Port {
        serde_json::from_value(json!({"id": id, "network_id": net, "status": status, "binding:host_id": host,
            "device_owner": "compute:kuryr", "device_id": "uid-1", "revision_number": rev}))
        .expect("port")
    }

    #[test]
    fn adoption_prefers_active_then_node_then_oldest() {
        assert_eq!(select_adoptable(vec![], "vm", "net-1"), Adoption::default());
        let a = select_adoptable(
            vec![
                port("p-other-net", "net-2", "ACTIVE", "vm", 1),
                port("p-down-other-host", "net-1", "DOWN", "x", 1),
                port("p-down", "net-1", "DOWN", "vm", 5),
                port("p-active", "net-1", "ACTIVE", "vm", 9),
            ],
            "vm",
            "net-1",
        );
        assert_eq!(a.keep.map(|p| p.id).as_deref(), Some("p-active"));
        let extras: Vec<_> = a.extras.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(extras, ["p-down", "p-down-other-host"], "the other network's port is not ours to delete");

        let a = select_adoptable(vec![port("b", "net-1", "DOWN", "vm", 3), port("a", "net-1", "DOWN", "vm", 2)], "vm", "net-1");
        assert_eq!(a.keep.map(|p| p.id).as_deref(), Some("a"));
        let mut foreign = port("f", "net-1", "DOWN", "vm", 1);
        foreign.device_owner = "compute:nova".into();
        assert_eq!(select_adoptable(vec![foreign], "vm", "net-1"), Adoption::default());
    }
}
