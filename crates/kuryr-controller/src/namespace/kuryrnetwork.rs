//! KuryrNetwork reconciler (`crate::namespace::kuryrnetwork`; upstream `KuryrNetworkHandler`).
//!
//! Creation, each step written to `status` at once so a restart resumes where it stopped
//! (upstream's order): the network (`netId`), the subnet from the subnet pool (`subnetId`,
//! `subnetCIDR`), the interface on the pod router (`routerId`, `populated: false`). A step whose
//! id is not in the status finds what an earlier attempt made (by the owner stamp, see
//! [`neutron`]) before making anything.
//!
//! Deletion (upstream's finalizer): the router interface goes at once; the network (with its
//! subnet) once the namespace has no KuryrPort left (woken by the KuryrPort watch), found by the
//! status and by its owner stamp (a KuryrNetwork whose status was never written leaves nothing
//! behind); then the finalizer.

use crate::namespace::neutron::{self, Owner};
use crate::namespace::{is_ready, Namespaces};
use crate::runtime::error::Error;
use crate::runtime::finalizers::{add_finalizer_patch, json_patch, remove_finalizer_patch};
use crate::runtime::policy::error_action;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use kuryr_core::crd::KuryrNetwork;
use kuryr_core::names::KURYRNETWORK_FINALIZER;
use serde_json::{json, Value};
use std::sync::Arc;

pub const CONTROLLER: &str = "kuryrnetwork";

pub fn error_policy(k: Arc<KuryrNetwork>, err: &Error, d: Arc<Namespaces>) -> Action {
    error_action(CONTROLLER, &k.namespace().unwrap_or_default(), &k.name_any(), err, &d.ctx)
}

#[tracing::instrument(name = "kuryrnetwork", skip_all, fields(namespace = %k.namespace().unwrap_or_default()))]
pub async fn reconcile(k: Arc<KuryrNetwork>, d: Arc<Namespaces>) -> Result<Action, Error> {
    d.ctx.metrics.reconciled(CONTROLLER);
    if !d.ctx.leader.is_leader() {
        return Ok(Action::await_change());
    }
    d.wait_synced().await;
    let ns = k.namespace().ok_or_else(|| Error::Invalid(format!("kuryrnetwork {} has no namespace", k.name_any())))?;
    let what = format!("kuryrnetwork {ns}/{}", k.name_any());
    let fut = async {
        if k.metadata.deletion_timestamp.is_some() {
            cleanup(&k, &d, &ns).await
        } else {
            apply(&k, &d, &ns).await
        }
    };
    let timeout = d.ctx.settings.reconcile_timeout;
    let r = match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout { what: format!("reconcile of {what}"), after: timeout }),
    };
    if r.is_ok() {
        d.ctx.backoff.succeeded(&format!("{CONTROLLER}/{ns}/{}", k.name_any()));
    }
    r
}

/// Who the KuryrNetwork's Neutron objects are for.
pub fn owner(k: &KuryrNetwork, d: &Namespaces, ns: &str) -> Owner {
    let namespace_uid = d.namespaces.get(&ObjectRef::new(ns)).and_then(|n| n.metadata.uid.clone());
    Owner { namespace: ns.to_string(), uid: k.uid().unwrap_or_default(), namespace_uid, project: k.spec.project_id.clone() }
}

async fn write_status(api: &Api<KuryrNetwork>, name: &str, d: &Namespaces, status: Value) -> Result<(), Error> {
    d.ctx.leader.ensure()?;
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .map_err(|e| Error::kube("patch status of", format!("kuryrnetwork {name}"), e))?;
    Ok(())
}

async fn apply(k: &KuryrNetwork, d: &Namespaces, ns: &str) -> Result<Action, Error> {
    let name = k.name_any();
    let api: Api<KuryrNetwork> = Api::namespaced(d.ctx.client.clone(), ns);
    if !k.finalizers().iter().any(|f| f == KURYRNETWORK_FINALIZER) {
        d.ctx.leader.ensure()?;
        json_patch(&api, &name, add_finalizer_patch(k, KURYRNETWORK_FINALIZER))
            .await
            .map_err(|e| Error::kube("add finalizer to", format!("kuryrnetwork {ns}/{name}"), e))?;
    }
    let status = k.status.clone().unwrap_or_default();
    if is_ready(Some(&status)) {
        return Ok(Action::await_change());
    }
    let s = &d.settings;
    let o = owner(k, d, ns);
    let ctx = &d.ctx;
    let net_id = match status.net_id.clone() {
        Some(id) => id,
        None => {
            let net = neutron::ensure_network(ctx, s, &o).await?;
            write_status(&api, &name, d, json!({"netId": net.id})).await?;
            tracing::info!(network = %net.id, "namespace network recorded");
            net.id
        }
    };
    let subnet = match (&status.subnet_id, &status.subnet_cidr) {
        (Some(id), Some(_)) => ctx.cache.subnet(&ctx.neutron, id).await?.as_ref().clone(),
        _ => {
            let sn = neutron::ensure_subnet(ctx, s, &o, &net_id).await?;
            write_status(&api, &name, d, json!({"subnetId": sn.id, "subnetCIDR": sn.cidr})).await?;
            tracing::info!(subnet = %sn.id, cidr = %sn.cidr, "namespace subnet recorded");
            sn
        }
    };
    if status.router_id.is_none() {
        neutron::ensure_router_interface(ctx, &s.router, &subnet).await?;
        write_status(&api, &name, d, json!({"routerId": s.router, "populated": false})).await?;
    }
    let age = k
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t.0).as_millis())
        .unwrap_or_default();
    tracing::info!(network = %net_id, subnet = %subnet.id, cidr = %subnet.cidr, since_created_ms = age, "namespace network, subnet and router interface ready");
    d.ctx.events.normal(
        k.object_ref(&()),
        "KuryrNetworkReady",
        "CreateNetwork",
        format!("network {net_id}, subnet {} ({}) on router {}", subnet.id, subnet.cidr, s.router),
    );
    Ok(Action::await_change())
}

async fn cleanup(k: &KuryrNetwork, d: &Namespaces, ns: &str) -> Result<Action, Error> {
    let name = k.name_any();
    if !k.finalizers().iter().any(|f| f == KURYRNETWORK_FINALIZER) {
        return Ok(Action::await_change());
    }
    let status = k.status.clone().unwrap_or_default();
    let o = owner(k, d, ns);
    let ctx = &d.ctx;
    let router = status.router_id.clone().unwrap_or_else(|| d.settings.router.clone());
    let networks = neutron::networks_of(ctx, &d.settings, &o, status.net_id.as_deref()).await?;
    neutron::detach(ctx, &router, &networks, status.subnet_id.as_deref()).await?;
    if d.has_kuryrports(ns) {
        tracing::info!("namespace network detached; deleted once the namespace's KuryrPorts are gone");
        return Ok(Action::await_change());
    }
    neutron::delete_networks(ctx, &networks).await?;
    let api: Api<KuryrNetwork> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(p) = remove_finalizer_patch(k, KURYRNETWORK_FINALIZER) {
        ctx.leader.ensure()?;
        json_patch(&api, &name, p).await.map_err(|e| Error::kube("remove finalizer from", format!("kuryrnetwork {ns}/{name}"), e))?;
    }
    tracing::info!(networks = ?networks, "namespace network torn down");
    Ok(Action::await_change())
}
