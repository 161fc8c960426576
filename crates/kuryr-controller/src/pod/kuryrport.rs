//! KuryrPort reconciler (upstream `KuryrPortHandler`): owns the Neutron side.
//!
//! Apply (no default VIF yet): the port driver ([`crate::pod::driver`]) adopts the pod's port if
//! a previous attempt left one, else makes it; build the typed VIF (with the driver's binding);
//! merge-patch `status.vifs = {eth0: {default: true, vif}}` on the status subresource; hand the
//! port to the activator. With an inactive VIF already written: (re)hand it to the activator.
//! A VIF still in the legacy kuryr-rs/v1 form (written by an earlier release) is rewritten in the
//! os-vif form first, so a cluster that ran those releases can still roll back to upstream.
//!
//! Cleanup (the KuryrPort is deleted; its finalizer): the driver releases every port recorded in
//! the status and every port of the pod it finds unrecorded (a crash before the status write),
//! 404 = done. neutron-vif finds them by the pod UID and recycles them into the warm pool or
//! deletes them; nested-vlan also by their description, and detaches them from the trunk first.
//!
//! Orphans: a KuryrPort whose pod is gone (force-deleted) or was re-created with another UID is
//! deleted, which runs the cleanup above.
//!
//! Standalone containers ([`crate::pod::standalone`]): a KuryrPort labelled
//! `kuryr.openstack.org/standalone=true` has no pod. It is checked instead of looked up (a refusal
//! is a Warning Event on the KuryrPort, no port), then wired exactly like a pod's (`device_id` =
//! `spec.podUid`, host = `spec.podNodeName`), and never deleted as an orphan: only its creator
//! deletes it, which releases the port through the same finalizer.

use crate::pod::activator::{escape, Pending};
use crate::pod::context::PodContext;
use crate::pod::ports::{self, Acquired, PodPortRequest};
use crate::pod::standalone::{self, is_standalone_kp};
use crate::pod::vif;
use crate::runtime::error::Error;
use crate::runtime::events::{pod_ref, reason};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use kuryr_core::crd::KuryrPort;
use kuryr_core::names::KURYRPORT_FINALIZER;
use kuryr_core::vif::{Binding, StoredForm, Vif};
use kuryr_openstack::neutron::Port;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "kuryrport";
/// The pod's default interface.
pub const DEFAULT_IFNAME: &str = "eth0";

/// Reconciles one KuryrPort. Idempotent; followers (no lease) do nothing.
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(
        controller = CONTROLLER,
        namespace = %kp.namespace().unwrap_or_default(),
        name = %kp.name_any(),
        uid = %kp.uid().unwrap_or_default(),
        pod_uid = %kp.spec.pod_uid,
    )
)]
pub async fn reconcile(kp: Arc<KuryrPort>, ctx: Arc<PodContext>) -> Result<Action, Error> {
    ctx.metrics.reconciled(CONTROLLER);
    // A node's pool KuryrPort is written by the pools, not reconciled as a pod's.
    if !ctx.leader.is_leader() || kuryr_core::names::is_pool(kp.metadata.labels.as_ref()) {
        return Ok(Action::await_change());
    }
    // Decisions need the complete caches (an unlisted KuryrPort would look missing): the
    // watches wake this once both initial lists are in.
    ctx.wait_synced().await;
    let ns = kp.namespace().ok_or_else(|| Error::Invalid(format!("kuryrport {} has no namespace", kp.name_any())))?;
    let what = format!("{ns}/{}", kp.name_any());
    let api: Api<KuryrPort> = Api::namespaced(ctx.client.clone(), &ns);
    let c = ctx.clone();
    let fut = finalizer(&api, KURYRPORT_FINALIZER, kp, |event| async move {
        match event {
            FinalizerEvent::Apply(kp) => apply(kp, &c).await,
            FinalizerEvent::Cleanup(kp) => cleanup(kp, &c).await,
        }
    });
    let r = match tokio::time::timeout(ctx.settings.reconcile_timeout, fut).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(Error::Timeout { what: format!("reconcile of kuryrport {what}"), after: ctx.settings.reconcile_timeout }),
    };
    if r.is_ok() {
        ctx.backoff.succeeded(&format!("{CONTROLLER}/{what}"));
    }
    r
}

/// Requeue with per-object back-off; count the error.
pub fn error_policy(kp: Arc<KuryrPort>, err: &Error, ctx: Arc<PodContext>) -> Action {
    crate::runtime::policy::error_action(CONTROLLER, &kp.namespace().unwrap_or_default(), &kp.name_any(), err, &ctx)
}

fn kp_ref(kp: &KuryrPort) -> ObjectReference {
    kp.object_ref(&())
}

/// The pod a KuryrPort belongs to.
enum Owner {
    Live(Arc<Pod>),
    Gone(&'static str),
}

async fn owner(kp: &KuryrPort, ns: &str, ctx: &PodContext) -> Result<Owner, Error> {
    let name = kp.name_any();
    let uid_ok = |p: &Pod| p.metadata.uid.as_deref() == Some(kp.spec.pod_uid.as_str());
    if let Some(pod) = ctx.pods.get(&ObjectRef::new(&name).within(ns)) {
        if uid_ok(&pod) {
            return Ok(Owner::Live(pod));
        }
    }
    // The cache says missing (or another UID): ask the API before deleting anything.
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(&name).await.map_err(|e| Error::kube("get", format!("pod {ns}/{name}"), e))? {
        Some(pod) if uid_ok(&pod) => Ok(Owner::Live(Arc::new(pod))),
        Some(_) => Ok(Owner::Gone("its pod was re-created with another UID")),
        None => Ok(Owner::Gone("its pod no longer exists")),
    }
}

/// Checks a standalone container's KuryrPort; `Some(action)` if it is refused.
fn refuse_standalone(kp: &KuryrPort, ctx: &PodContext) -> Option<Action> {
    let all = ctx.kuryrports.state();
    let refusal = standalone::check(kp, &ctx.settings.standalone_namespace, all.iter().map(|k| k.as_ref())).err()?;
    let what = format!("{}/{}", kp.namespace().unwrap_or_default(), kp.name_any());
    tracing::warn!(kuryrport = %what, why = %refusal.why, "standalone KuryrPort refused: no Neutron port");
    ctx.events.warning(kp_ref(kp), reason::STANDALONE_INVALID, "CreatePort", refusal.why);
    // A UID held by another KuryrPort may be freed by its deletion; anything else needs an edit,
    // which triggers a reconcile by itself.
    Some(if refusal.retry { Action::requeue(std::time::Duration::from_secs(30)) } else { Action::await_change() })
}

async fn apply(kp: Arc<KuryrPort>, ctx: &PodContext) -> Result<Action, Error> {
    let ns = kp.namespace().unwrap_or_default();
    let name = kp.name_any();
    let uid = kp.spec.pod_uid.clone();
    let standalone = is_standalone_kp(&kp);

    // The pod (None for a standalone container, which has none and is never an orphan).
    let pod = if standalone {
        if let Some(action) = refuse_standalone(&kp, ctx) {
            return Ok(action);
        }
        None
    } else {
        match owner(&kp, &ns, ctx).await? {
            Owner::Live(pod) => Some(pod),
            Owner::Gone(why) => return delete_orphan(&kp, &ns, &name, why, ctx).await,
        }
    };

    // Already has its VIF: only activation may be missing.
    if let Some((ifname, entry)) = kp.status.as_ref().and_then(|s| s.vifs.iter().find(|(_, e)| e.default)) {
        if upgrade_legacy_vifs(ctx, &kp, &ns, &name).await? {
            // The rewrite wakes this KuryrPort again, with the VIF in its new form.
            return Ok(Action::await_change());
        }
        track_written(ctx, &ns, &name, &uid, ifname, &entry.vif, standalone);
        return Ok(Action::await_change());
    }

    // A completed or deleting pod gets no new port (the pod reconciler deletes this KuryrPort).
    if pod.is_some_and(|pod| matches!(crate::pod::pods::intent(&pod), crate::pod::pods::Intent::Release)) {
        return Ok(Action::await_change());
    }

    // Namespace networks: the namespace's network may not be ready yet. The domain was asked for
    // it and re-triggers this KuryrPort once it is (no polling, no back-off).
    if ctx.pod_subnet(&ns).is_none() {
        tracing::info!(kuryrport = %format!("{ns}/{name}"), "waiting for the namespace's network (KuryrNetwork)");
        return Ok(Action::await_change());
    }
    let req =
        PodPortRequest { namespace: ns.clone(), name: name.clone(), pod_uid: uid.clone(), node: kp.spec.pod_node_name.clone(), standalone };
    // Events go to the pod, or to a standalone container's KuryrPort.
    let pref = if standalone { kp_ref(&kp) } else { pod_ref(&ns, &name, &uid) };
    let Acquired { port, adopted, pooled, binding } = acquire(ctx, &req, &pref).await?;
    ctx.timeline.port_ready(&uid, &ctx.metrics);
    let vif = port_vif(ctx, &req, &port, binding, &pref).await?;
    write_vif(ctx, &req, &vif).await?;
    announce_vif(ctx, &req, &vif, adopted, pooled, &pref);
    activate(ctx, req, &vif, pref);
    Ok(Action::await_change())
}

/// Deletes a KuryrPort whose pod is gone (`why`), which releases its port through the finalizer.
async fn delete_orphan(kp: &KuryrPort, ns: &str, name: &str, why: &'static str, ctx: &PodContext) -> Result<Action, Error> {
    tracing::info!(kuryrport = %format!("{ns}/{name}"), why, "deleting orphaned KuryrPort");
    ctx.events.normal(kp_ref(kp), reason::MISSING_POD, "ReleasePort", format!("KuryrPort deleted: {why}"));
    ctx.leader.ensure()?;
    let api: Api<KuryrPort> = Api::namespaced(ctx.client.clone(), ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: kp.metadata.uid.clone(), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(Error::kube("delete", format!("kuryrport {ns}/{name}"), e)),
    }
}

/// (Re)hands an already written VIF to the activator unless it is active (the activator
/// already recorded its timings then).
fn track_written(ctx: &PodContext, ns: &str, name: &str, uid: &str, ifname: &str, vif: &serde_json::Value, standalone: bool) {
    if vif::is_active(vif) {
        return;
    }
    if let Some(port_id) = vif::port_id_of(vif) {
        ctx.activator.track(Pending {
            port_id,
            namespace: ns.to_string(),
            name: name.to_string(),
            ifname: ifname.to_string(),
            pod_uid: uid.to_string(),
            form: StoredForm::of(vif),
            standalone,
        });
    }
}

/// The port driver's port for the pod (adopted, pooled or created); a failure is a Warning
/// Event on `pref`.
async fn acquire(ctx: &PodContext, req: &PodPortRequest, pref: &ObjectReference) -> Result<Acquired, Error> {
    match ctx.driver.acquire(ctx, req).await {
        Ok(a) => {
            if a.adopted {
                ctx.metrics.adopted("port");
            }
            Ok(a)
        }
        Err(e) => {
            if !matches!(e, Error::NotLeader) {
                ctx.events.warning(pref.clone(), reason::PORT_CREATE_FAILED, "CreatePort", e.to_string());
            }
            Err(e)
        }
    }
}

/// The typed VIF of `port`; a port Neutron could not bind is deleted (a fresh one is created
/// on retry), a failure is a Warning Event on `pref`.
async fn port_vif(
    ctx: &PodContext,
    req: &PodPortRequest,
    port: &Port,
    binding: Option<Binding>,
    pref: &ObjectReference,
) -> Result<Vif, Error> {
    match ports::vif_with(ctx, port, binding).await? {
        Ok(v) => Ok(v),
        Err(e) if e.is_binding() => {
            let err = Error::Binding { port_id: port.id.clone(), host: req.node.clone(), vif_type: port.binding_vif_type.clone() };
            tracing::warn!(kuryrport = %format!("{}/{}", req.namespace, req.name), error = %err, "deleting the unbound port; a fresh one is created on retry");
            ctx.events.warning(pref.clone(), reason::PORT_BINDING_FAILED, "CreatePort", err.to_string());
            // A plain delete whatever the driver (only Neutron's own binding can fail this way).
            ports::release(ctx, &port.id).await?;
            Err(err)
        }
        Err(e) => {
            let err = Error::BadPort { port_id: port.id.clone(), reason: e.to_string() };
            ctx.events.warning(pref.clone(), reason::PORT_CREATE_FAILED, "CreatePort", err.to_string());
            Err(err)
        }
    }
}

/// The JSON patch rewriting every readable legacy (kuryr-rs/v1) VIF of the status in the os-vif
/// form, each only if it still holds the same port; `None` when there is none.
pub fn upgrade_patch(kp: &KuryrPort) -> Option<serde_json::Value> {
    let ops: Vec<serde_json::Value> = kp
        .status
        .iter()
        .flat_map(|s| s.vifs.iter())
        .filter(|(_, e)| StoredForm::of(&e.vif) == StoredForm::Legacy)
        .filter_map(|(ifname, e)| Some((ifname, e.vif().ok()?)))
        .flat_map(|(ifname, vif)| {
            let base = format!("/status/vifs/{}/vif", escape(ifname));
            [
                json!({"op": "test", "path": format!("{base}/portId"), "value": vif.port_id}),
                json!({"op": "replace", "path": base, "value": vif.to_status_value()}),
            ]
        })
        .collect();
    (!ops.is_empty()).then_some(serde_json::Value::Array(ops))
}

/// Applies [`upgrade_patch`]; true when there was something to rewrite.
async fn upgrade_legacy_vifs(ctx: &PodContext, kp: &KuryrPort, ns: &str, name: &str) -> Result<bool, Error> {
    let Some(patch) = upgrade_patch(kp) else { return Ok(false) };
    ctx.leader.ensure()?;
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(|e| Error::Invalid(format!("VIF rewrite patch: {e}")))?;
    let api: Api<KuryrPort> = Api::namespaced(ctx.client.clone(), ns);
    match api.patch_status(name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(_) => tracing::info!(kuryrport = %format!("{ns}/{name}"), "legacy kuryr-rs/v1 VIFs rewritten in the os-vif form"),
        // Gone, or its VIFs changed meanwhile (the test op failed): that change wakes it again.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => {}
        Err(e) => return Err(Error::kube("patch status of", format!("kuryrport {ns}/{name}"), e)),
    }
    Ok(true)
}

/// Writes the VIF as the default interface into the KuryrPort's status; the node's pool
/// KuryrPort may then drop the port.
async fn write_vif(ctx: &PodContext, req: &PodPortRequest, vif: &Vif) -> Result<(), Error> {
    let (ns, name) = (&req.namespace, &req.name);
    ctx.leader.ensure()?;
    let api: Api<KuryrPort> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"status": {"vifs": {DEFAULT_IFNAME: {"default": true, "vif": vif.to_status_value()}}}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube("patch status of", format!("kuryrport {ns}/{name}"), e))?;
    ctx.timeline.vif_written(&req.pod_uid, &ctx.metrics);
    if let Some(pools) = &ctx.pools {
        // The pod's KuryrPort lists the port now: the node's pool KuryrPort may drop it.
        crate::pod::pool::recorded(pools, &vif.port_id);
    }
    Ok(())
}

/// Logs the written VIF and says so in an Event on `pref`.
fn announce_vif(ctx: &PodContext, req: &PodPortRequest, vif: &Vif, adopted: bool, pooled: bool, pref: &ObjectReference) {
    let ips: Vec<String> = vif.ips.iter().map(|i| i.address.to_string()).collect();
    tracing::info!(
        kuryrport = %format!("{}/{}", req.namespace, req.name), port = %vif.port_id, ips = ?ips, adopted = adopted,
        binding = vif.binding.kind(), active = vif.active, "VIF written"
    );
    let how = if adopted {
        "adopted"
    } else if pooled {
        "taken from the warm pool"
    } else {
        "created"
    };
    ctx.events.normal(
        pref.clone(),
        reason::UPDATED_WITH_VIFS,
        "CreatePort",
        format!("Neutron port {} ({}) {how} on host {}", vif.port_id, ips.join(", "), req.node),
    );
}

/// An active VIF is done (timings and an Event); an inactive one goes to the activator.
fn activate(ctx: &PodContext, req: PodPortRequest, vif: &Vif, pref: ObjectReference) {
    if vif.active {
        crate::pod::activator::settled(ctx, &vif.port_id);
        ctx.timeline.active(&req.pod_uid, &ctx.metrics);
        ctx.events.normal(pref, reason::UPDATED_WITH_ACTIVE_VIFS, "ActivatePort", format!("Neutron port {} is ACTIVE", vif.port_id));
    } else {
        ctx.activator.track(Pending {
            port_id: vif.port_id.clone(),
            namespace: req.namespace,
            name: req.name,
            ifname: DEFAULT_IFNAME.into(),
            pod_uid: req.pod_uid,
            // What write_vif wrote (Vif::to_status_value).
            form: StoredForm::OsVif,
            standalone: req.standalone,
        });
    }
}

/// Port ids recorded in a KuryrPort's status, whichever form each VIF is stored in.
pub fn recorded_ports(kp: &KuryrPort) -> BTreeSet<String> {
    kp.status.as_ref().map(|s| s.vifs.values().filter_map(|e| vif::port_id_of(&e.vif)).collect()).unwrap_or_default()
}

async fn cleanup(kp: Arc<KuryrPort>, ctx: &PodContext) -> Result<Action, Error> {
    let ns = kp.namespace().unwrap_or_default();
    let name = kp.name_any();
    let mut ids = recorded_ports(&kp);
    // Ports stamped with the pod UID but never recorded (a crash before the status write) —
    // unless another KuryrPort has the same UID (a refused standalone twin): they are its.
    let shared = standalone::uid_shared(&kp, ctx.kuryrports.state().iter().map(|k| k.as_ref()));
    if shared {
        tracing::warn!(kuryrport = %format!("{ns}/{name}"), pod_uid = %kp.spec.pod_uid, "another KuryrPort has this UID: releasing only the recorded ports");
    }
    if !kp.spec.pod_uid.is_empty() && !shared {
        let req = PodPortRequest {
            namespace: ns.clone(),
            name: name.clone(),
            pod_uid: kp.spec.pod_uid.clone(),
            node: kp.spec.pod_node_name.clone(),
            standalone: is_standalone_kp(&kp),
        };
        ids.extend(ctx.driver.adoption_candidates(ctx, &req).await?);
        // A pool port claimed for the pod whose status write failed, not stamped yet: released
        // with the others (back to the pool), not left claiming for ever.
        if let Some(id) = ctx.pools.as_ref().and_then(|p| crate::pod::pool::open_claim(p, &kp.spec.pod_uid)) {
            ids.insert(id);
        }
    }
    let regarding = if is_standalone_kp(&kp) { kp_ref(&kp) } else { pod_ref(&ns, &name, &kp.spec.pod_uid) };
    for id in &ids {
        ctx.activator.untrack(id);
        match ctx.driver.release(ctx, id, &kp.spec.pod_node_name, &kp.spec.pod_uid).await {
            Ok(existed) => tracing::info!(kuryrport = %format!("{ns}/{name}"), port = %id, existed, "released Neutron port"),
            Err(e) => {
                if !matches!(e, Error::NotLeader) {
                    ctx.events.warning(regarding.clone(), reason::PORT_RELEASE_FAILED, "ReleasePort", e.to_string());
                }
                return Err(e);
            }
        }
    }
    ctx.timeline.forget(&kp.spec.pod_uid);
    ctx.forget_fresh(&kp.spec.pod_uid);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_recorded_ports_in_both_forms() {
        let kp: KuryrPort = serde_json::from_value(json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"podUid": "u", "podNodeName": "vm"},
            "status": {"vifs": {
                "eth0": {"default": true, "vif": {"portId": "p1", "active": false}},
                "eth1": {"default": false, "vif": {"versioned_object.name": "VIFOpenVSwitch", "versioned_object.data": {"id": "p2"}}},
                "eth2": {"default": false, "vif": {}}
            }}
        }))
        .expect("kp");
        assert_eq!(recorded_ports(&kp), BTreeSet::from(["p1".to_string(), "p2".to_string()]));
    }

    #[test]
    fn legacy_vifs_are_rewritten_in_the_os_vif_form() {
        let [ovs, .., macvlan] = kuryr_core::vif::examples();
        let legacy = |v: &Vif| {
            let mut j = serde_json::to_value(v).expect("typed form");
            j["format"] = json!(kuryr_core::vif::LEGACY_FORMAT);
            j
        };
        let mut doc = json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"podUid": "u", "podNodeName": "vm"},
            "status": {"vifs": {
                "eth0": {"default": true, "vif": legacy(&ovs)},
                "eth/1": {"default": false, "vif": legacy(&macvlan)},
                "eth2": {"default": false, "vif": macvlan.to_status_value()},
                "eth3": {"default": false, "vif": {"portId": "broken"}}
            }}
        });
        let kp: KuryrPort = serde_json::from_value(doc.clone()).expect("kp");
        let patch: json_patch::Patch = serde_json::from_value(upgrade_patch(&kp).expect("a patch")).expect("JSON patch");
        assert_eq!(patch.0.len(), 4, "eth0 and eth/1 only: {patch:?}");
        json_patch::patch(&mut doc, &patch.0).expect("applies");
        let kp: KuryrPort = serde_json::from_value(doc).expect("kp");
        let vifs = &kp.status.as_ref().expect("status").vifs;
        for (ifname, want) in [("eth0", &ovs), ("eth/1", &macvlan), ("eth2", &macvlan)] {
            assert_eq!(StoredForm::of(&vifs[ifname].vif), StoredForm::OsVif, "{ifname}");
            assert_eq!(vifs[ifname].vif().as_ref(), Ok(want), "{ifname}");
        }
        assert_eq!(vifs["eth3"].vif, json!({"portId": "broken"}), "an unreadable VIF is left alone");
        assert!(upgrade_patch(&kp).is_none(), "nothing left to rewrite");
    }
}
