//! Service reconciler (upstream `ServiceHandler` + `EndpointsHandler`): Service and its
//! EndpointSlices → KuryrLoadBalancer spec.
//!
//! * A Service that needs a load balancer ([`model::plan`]) gets the Service finalizer, then a
//!   KuryrLoadBalancer of the same name (owner: the Service; finalizer: the KuryrLoadBalancer
//!   one) whose spec is kept equal to the plan: ClusterIP, ports, timeouts and the ready
//!   endpoints of its EndpointSlices. What is asked for and not provided (node ports, a second
//!   IP family, source ranges) gets one Warning Event per change.
//! * A Service being deleted, or one that no longer needs a load balancer: its
//!   KuryrLoadBalancer is deleted (its finalizer deletes the Octavia load balancer); once it is
//!   gone the Service finalizer is removed.
//!
//! The KuryrLoadBalancer reconciler ([`super::klb`]) owns everything on the Octavia side.

use super::model::{self, Plan, SpecDefaults};
use super::Lb;
use crate::runtime::error::{is_conflict, is_not_found, Error};
use crate::runtime::finalizers::{add_finalizer_patch, json_patch, remove_finalizer_patch};
use crate::runtime::projects::ProjectKind;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use kuryr_core::crd::{KuryrLoadBalancer, KuryrLoadBalancerSpec};
use kuryr_core::names::{KURYRLB_FINALIZER, SERVICE_FINALIZER};
use serde_json::json;
use std::sync::Arc;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "service";

#[tracing::instrument(
    skip_all,
    fields(controller = CONTROLLER, namespace = %svc.namespace().unwrap_or_default(), name = %svc.name_any())
)]
pub async fn reconcile(svc: Arc<Service>, lb: Arc<Lb>) -> Result<Action, Error> {
    let ctx = &lb.ctx;
    ctx.metrics.reconciled(CONTROLLER);
    if !ctx.leader.is_leader() {
        return Ok(Action::await_change());
    }
    lb.wait_synced().await;
    let ns = svc.namespace().ok_or_else(|| Error::Invalid(format!("service {} has no namespace", svc.name_any())))?;
    let name = svc.name_any();
    let what = format!("{ns}/{name}");
    let fut = async {
        if svc.metadata.deletion_timestamp.is_some() {
            return release(&svc, &ns, &name, &lb).await;
        }
        let slices: Vec<Arc<EndpointSlice>> = lb
            .slices
            .state()
            .into_iter()
            .filter(|s| s.namespace().as_deref() == Some(ns.as_str()) && s.labels().get(model::SERVICE_NAME_LABEL) == Some(&name))
            .collect();
        let refs: Vec<&EndpointSlice> = slices.iter().map(|s| s.as_ref()).collect();
        let mut d = defaults(&lb).await?;
        // `service_project_driver = annotation`: the namespace's project.
        d.project_id = ctx.project_for(ProjectKind::Service, &ns).await;
        match model::plan(&svc, &refs, &d) {
            Plan::Skip(why) => {
                tracing::debug!(service = %what, why, "no load balancer");
                release(&svc, &ns, &name, &lb).await
            }
            Plan::Unserved(why) => {
                note(&svc, std::slice::from_ref(&why), &lb);
                release(&svc, &ns, &name, &lb).await
            }
            Plan::Balance { spec, notes } => {
                note(&svc, &notes, &lb);
                ensure(&svc, &ns, &name, *spec, &lb).await
            }
        }
    };
    let r = tokio::time::timeout(ctx.settings.reconcile_timeout, fut)
        .await
        .map_err(|_| Error::Timeout { what: format!("reconcile of service {what}"), after: ctx.settings.reconcile_timeout })?;
    if r.is_ok() {
        ctx.backoff.succeeded(&format!("{CONTROLLER}/{what}"));
    }
    r
}

pub fn error_policy(svc: Arc<Service>, err: &Error, lb: Arc<Lb>) -> Action {
    crate::runtime::policy::error_action(CONTROLLER, &svc.namespace().unwrap_or_default(), &svc.name_any(), err, &lb.ctx)
}

/// What the spec takes from `kuryr.conf`; with more than one service subnet (dual-stack), each
/// one's IP family is read from Neutron (cached).
async fn defaults(lb: &Lb) -> Result<SpecDefaults, Error> {
    let s = &lb.settings;
    let mut family_subnets = std::collections::BTreeMap::new();
    if !s.extra_service_subnets.is_empty() {
        for id in s.service_subnets() {
            let subnet = lb.ctx.cache.subnet(&lb.ctx.neutron, id).await?;
            let family = if subnet.ip_version == 6 { "IPv6" } else { "IPv4" };
            if let Some(other) = family_subnets.insert(family, id.clone()) {
                return Err(Error::Config(format!(
                    "[neutron_defaults] service_subnets: {other} and {id} are both {family} subnets (one per IP family)"
                )));
            }
        }
    }
    Ok(SpecDefaults {
        project_id: s.project.clone(),
        subnet_id: s.service_subnet.clone(),
        family_subnets,
        provider: s.provider.clone(),
        timeout_client_data: s.timeout_client_data,
        timeout_member_data: s.timeout_member_data,
        public_ips: s.external_net.is_some(),
    })
}

/// One Warning Event per distinct set of notes of a Service (not one per reconcile).
fn note(svc: &Service, notes: &[String], lb: &Lb) {
    let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.uid().unwrap_or_default());
    let joined = notes.join("\n");
    {
        let mut seen = lb.noted.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(&key) == Some(&joined) {
            return;
        }
        if notes.is_empty() {
            seen.remove(&key);
            return;
        }
        seen.insert(key, joined);
    }
    for n in notes {
        tracing::info!(service = %svc.name_any(), note = %n, "not provided");
        lb.ctx.events.warning(svc.object_ref(&()), "KuryrServiceNotProvided", "EnsureLB", n.clone());
    }
}

/// The KuryrLoadBalancer of a Service: same name and namespace, owner reference to the
/// Service, the KuryrLoadBalancer finalizer.
pub fn klb_for(svc: &Service, spec: KuryrLoadBalancerSpec) -> Result<KuryrLoadBalancer, Error> {
    let uid = svc.uid().ok_or_else(|| Error::Invalid(format!("service {} has no uid", svc.name_any())))?;
    Ok(KuryrLoadBalancer {
        metadata: ObjectMeta {
            name: Some(svc.name_any()),
            namespace: svc.namespace(),
            finalizers: Some(vec![KURYRLB_FINALIZER.into()]),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: svc.name_any(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}

async fn ensure(svc: &Service, ns: &str, name: &str, spec: KuryrLoadBalancerSpec, lb: &Lb) -> Result<Action, Error> {
    let ctx = &lb.ctx;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    if !svc.finalizers().iter().any(|f| f == SERVICE_FINALIZER) {
        ctx.leader.ensure()?;
        if json_patch(&services, name, add_finalizer_patch(svc, SERVICE_FINALIZER))
            .await
            .map_err(|e| Error::kube("add finalizer to", format!("service {ns}/{name}"), e))?
            .is_none()
        {
            return Ok(Action::await_change());
        }
    }
    let klbs: Api<KuryrLoadBalancer> = Api::namespaced(ctx.client.clone(), ns);
    let existing = lb.klbs.get(&ObjectRef::new(name).within(ns));
    match existing {
        Some(k) if k.metadata.deletion_timestamp.is_some() => {
            // The old one is being released; its final deletion triggers this Service again.
            Ok(Action::await_change())
        }
        Some(k) if !owned_by(&k, svc) => {
            // A KuryrLoadBalancer of a deleted Service of the same name: release it first.
            ctx.leader.ensure()?;
            delete_klb(&klbs, &k).await?;
            Ok(Action::await_change())
        }
        Some(k) if k.spec == spec => Ok(Action::await_change()),
        Some(_) => {
            ctx.leader.ensure()?;
            // The whole spec replaced (this reconciler is its only writer; no resourceVersion
            // guard: the status writes of the KuryrLoadBalancer reconciler bump it, and a lost
            // race must not lose an endpoint change). A JSON patch, so removed fields go too.
            let patch: json_patch::Patch = serde_json::from_value(json!([{"op": "replace", "path": "/spec", "value": spec}]))
                .map_err(|e| Error::Invalid(format!("kuryrloadbalancer {ns}/{name}: spec patch: {e}")))?;
            lb.spec_changed(&format!("{ns}/{name}"));
            match klbs.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
                Ok(_) => {
                    tracing::debug!(klb = %format!("{ns}/{name}"), "spec updated");
                    Ok(Action::await_change())
                }
                // Gone meanwhile: its deletion event brings this Service back.
                Err(e) if is_not_found(&e) => Ok(Action::await_change()),
                Err(e) => Err(Error::kube("patch", format!("kuryrloadbalancer {ns}/{name}"), e)),
            }
        }
        None => {
            ctx.leader.ensure()?;
            lb.spec_changed(&format!("{ns}/{name}"));
            match klbs.create(&PostParams::default(), &klb_for(svc, spec)?).await {
                Ok(_) => {
                    tracing::info!(klb = %format!("{ns}/{name}"), "kuryrloadbalancer created");
                    Ok(Action::await_change())
                }
                // The cache had not seen it yet: its watch event brings us back (every
                // KuryrLoadBalancer event triggers its Service), and a retry in case it was
                // already seen.
                Err(e) if is_conflict(&e) => Ok(Action::requeue(std::time::Duration::from_millis(500))),
                Err(e) => Err(Error::kube("create", format!("kuryrloadbalancer {ns}/{name}"), e)),
            }
        }
    }
}

fn owned_by(k: &KuryrLoadBalancer, svc: &Service) -> bool {
    let Some(uid) = svc.uid() else { return false };
    // Upstream's KuryrLoadBalancers carry the same owner reference; one without any is adopted.
    k.owner_references().is_empty() || k.owner_references().iter().any(|o| o.uid == uid)
}

async fn delete_klb(api: &Api<KuryrLoadBalancer>, k: &KuryrLoadBalancer) -> Result<(), Error> {
    let name = k.name_any();
    let dp = DeleteParams {
        preconditions: k.uid().map(|uid| Preconditions { uid: Some(uid), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(Error::kube("delete", format!("kuryrloadbalancer {}/{name}", k.namespace().unwrap_or_default()), e)),
    }
}

/// No load balancer wanted (any more): delete the KuryrLoadBalancer, then drop the Service
/// finalizer once it is gone.
async fn release(svc: &Service, ns: &str, name: &str, lb: &Lb) -> Result<Action, Error> {
    let ctx = &lb.ctx;
    if let Some(k) = lb.klbs.get(&ObjectRef::new(name).within(ns)) {
        if k.metadata.deletion_timestamp.is_none() && owned_by(&k, svc) {
            ctx.leader.ensure()?;
            delete_klb(&Api::namespaced(ctx.client.clone(), ns), &k).await?;
        }
        if owned_by(&k, svc) {
            // Its final deletion triggers this Service again.
            return Ok(Action::await_change());
        }
    }
    if let Some(patch) = remove_finalizer_patch(svc, SERVICE_FINALIZER) {
        ctx.leader.ensure()?;
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
        json_patch(&services, name, patch).await.map_err(|e| Error::kube("remove finalizer from", format!("service {ns}/{name}"), e))?;
    }
    Ok(Action::await_change())
}

/// The Service an EndpointSlice belongs to.
pub fn slice_service(slice: &EndpointSlice) -> Option<ObjectRef<Service>> {
    let name = slice.labels().get(model::SERVICE_NAME_LABEL)?;
    Some(ObjectRef::new(name).within(&slice.namespace()?))
}

/// The Service a KuryrLoadBalancer belongs to (same name and namespace).
pub fn klb_service(k: &KuryrLoadBalancer) -> Option<ObjectRef<Service>> {
    Some(ObjectRef::new(&k.name_any()).within(&k.namespace()?))
}
