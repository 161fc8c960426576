//! Pod reconciler (upstream `VIFHandler`): Pod → KuryrPort.
//!
//! * A scheduled, Pending, non-hostNetwork pod gets the pod finalizer, then a KuryrPort of the
//!   same name (owner: the pod; finalizer: the KuryrPort one; label: the node).
//! * A KuryrPort of the same name but another pod UID (a StatefulSet pod re-created) is never
//!   reused: it is deleted (its finalizer releases the old port) and the pod requeued.
//! * A completed (Succeeded/Failed) or deleting pod: its KuryrPort is deleted (releasing the
//!   port); once the KuryrPort is gone the pod finalizer is removed.
//!
//! * Standalone containers' KuryrPorts (label `kuryr.openstack.org/standalone=true`, see
//!   [`crate::pod::standalone`]) are never deleted here, whatever pod shares their name, and pods in
//!   the standalone namespace (reserved for those KuryrPorts) are not wired (a Warning Event says
//!   so; kuryr-daemon refuses their CNI ADD).
//!
//! The KuryrPort reconciler owns everything on the Neutron side.

use crate::pod::context::PodContext;
use crate::pod::standalone::is_standalone_kp;
use crate::runtime::error::Error;
use crate::runtime::events::{pod_ref, reason};
pub use crate::runtime::finalizers::{add_finalizer_patch, json_patch, remove_finalizer_patch};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use kuryr_core::crd::{KuryrPort, KuryrPortSpec};
use kuryr_core::names::{CONFIG_SOURCE_ANNOTATION, KURYRPORT_FINALIZER, NODE_NAME_LABEL, POD_FINALIZER};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "pod";

/// What the controller must do for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Not a Kuryr pod (hostNetwork) or not on a node yet.
    Ignore(&'static str),
    /// Pending on a node: needs a KuryrPort (and so a Neutron port).
    Wire,
    /// Running (or Unknown): already wired; nothing to create.
    Keep,
    /// Completed or being deleted: release the KuryrPort, then drop the finalizer.
    Release,
}

/// Pure classification of a pod.
pub fn intent(pod: &Pod) -> Intent {
    if pod.metadata.deletion_timestamp.is_some() {
        return Intent::Release;
    }
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Intent::Ignore("hostNetwork");
    }
    if spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty) {
        return Intent::Ignore("not scheduled");
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") | Some("Failed") => Intent::Release,
        None | Some("Pending") => Intent::Wire,
        Some(_) => Intent::Keep,
    }
}

/// Static (mirror) pod: its API UID differs from the one the CRI passes to the CNI.
pub fn is_static(pod: &Pod) -> bool {
    pod.annotations().get(CONFIG_SOURCE_ANNOTATION).is_some_and(|s| s != "api")
}

fn required<'a>(v: Option<&'a str>, what: &str, pod: &Pod) -> Result<&'a str, Error> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| Error::Invalid(format!("pod {}/{} has no {what}", pod.namespace().unwrap_or_default(), pod.name_any())))
}

/// The KuryrPort for a pod: same name and namespace, node label, owner reference to the pod
/// (controller, blockOwnerDeletion), the KuryrPort finalizer, and the spec.
pub fn kuryrport_for(pod: &Pod) -> Result<KuryrPort, Error> {
    let name = required(pod.metadata.name.as_deref(), "name", pod)?;
    let namespace = required(pod.metadata.namespace.as_deref(), "namespace", pod)?;
    let uid = required(pod.metadata.uid.as_deref(), "uid", pod)?;
    let node = required(pod.spec.as_ref().and_then(|s| s.node_name.as_deref()), "spec.nodeName", pod)?;
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut kp = KuryrPort::new(name, KuryrPortSpec { pod_uid: uid.into(), pod_node_name: node.into(), pod_static: is_static(pod) });
    kp.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(BTreeMap::from([(NODE_NAME_LABEL.to_string(), node.to_string())])),
        finalizers: Some(vec![KURYRPORT_FINALIZER.to_string()]),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    Ok(kp)
}

fn kp_key(ns: &str, name: &str) -> ObjectRef<KuryrPort> {
    ObjectRef::new(name).within(ns)
}

/// Deletes a KuryrPort, only if it still has `uid` (never a newer one of the same name).
async fn delete_kuryrport(api: &Api<KuryrPort>, kp: &KuryrPort) -> Result<(), Error> {
    if kp.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: kp.metadata.uid.clone(), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(&kp.name_any(), &dp).await {
        Ok(_) => Ok(()),
        // Gone already, or the name now belongs to a newer object.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube("delete", format!("kuryrport {}/{}", kp.namespace().unwrap_or_default(), kp.name_any()), e)),
    }
}

/// Reconciles one pod. Idempotent; followers (no lease) do nothing.
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(
        controller = CONTROLLER,
        namespace = %pod.namespace().unwrap_or_default(),
        name = %pod.name_any(),
        uid = %pod.uid().unwrap_or_default(),
    )
)]
pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<PodContext>) -> Result<Action, Error> {
    ctx.metrics.reconciled(CONTROLLER);
    if !ctx.leader.is_leader() {
        return Ok(Action::await_change());
    }
    // Decisions need the complete caches (an unlisted KuryrPort would look missing): the
    // watches wake this once both initial lists are in.
    ctx.wait_synced().await;
    let ns = required(pod.metadata.namespace.as_deref(), "namespace", &pod)?.to_string();
    let name = pod.name_any();
    let what = format!("{ns}/{name}");
    let fut = async {
        match intent(&pod) {
            Intent::Ignore(_) | Intent::Keep => Ok(Action::await_change()),
            Intent::Wire if ns == ctx.settings.standalone_namespace => {
                let note = format!(
                    "namespace {ns} is reserved for the KuryrPorts of standalone containers ([cni_daemon] standalone_namespace): \
                     kuryr does not wire pods in it; run the pod in another namespace"
                );
                tracing::warn!(pod = %what, "{note}");
                ctx.events.warning(
                    pod_ref(&ns, &name, pod.metadata.uid.as_deref().unwrap_or_default()),
                    reason::POD_IN_STANDALONE_NAMESPACE,
                    "CreatePort",
                    note,
                );
                Ok(Action::await_change())
            }
            Intent::Wire => wire(&pod, &ns, &name, &ctx).await,
            Intent::Release => release(&pod, &ns, &name, &ctx).await,
        }
    };
    let r = tokio::time::timeout(ctx.settings.reconcile_timeout, fut)
        .await
        .map_err(|_| Error::Timeout { what: format!("reconcile of pod {what}"), after: ctx.settings.reconcile_timeout })?;
    if r.is_ok() {
        ctx.backoff.succeeded(&format!("{CONTROLLER}/{what}"));
    }
    r
}

async fn wire(pod: &Pod, ns: &str, name: &str, ctx: &PodContext) -> Result<Action, Error> {
    let uid = required(pod.metadata.uid.as_deref(), "uid", pod)?;
    ctx.timeline.pod_seen(uid);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    if !pod.finalizers().iter().any(|f| f == POD_FINALIZER) {
        ctx.leader.ensure()?;
        if json_patch(&pods, name, add_finalizer_patch(pod, POD_FINALIZER))
            .await
            .map_err(|e| Error::kube("add finalizer to", format!("pod {ns}/{name}"), e))?
            .is_none()
        {
            return Ok(Action::await_change());
        }
    }
    let kps: Api<KuryrPort> = Api::namespaced(ctx.client.clone(), ns);
    match ctx.kuryrports.get(&kp_key(ns, name)) {
        // Not this pod's to replace (only outside the standalone namespace, where it is refused).
        Some(kp) if is_standalone_kp(&kp) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), "a standalone container's KuryrPort has this pod's name; not wiring the pod");
            Ok(Action::await_change())
        }
        Some(kp) if kp.spec.pod_uid != uid => {
            tracing::info!(pod = %format!("{ns}/{name}"), old_uid = %kp.spec.pod_uid, "KuryrPort belongs to an earlier pod of this name; deleting it first");
            ctx.leader.ensure()?;
            delete_kuryrport(&kps, &kp).await?;
            // Its deletion (after the old port is released) triggers this pod again.
            Ok(Action::requeue(Duration::from_secs(10)))
        }
        Some(_) => Ok(Action::await_change()),
        None => {
            ctx.leader.ensure()?;
            let kp = kuryrport_for(pod)?;
            match kps.create(&PostParams::default(), &kp).await {
                Ok(_) => {
                    ctx.mark_fresh(&kp.spec.pod_uid);
                    tracing::debug!(pod = %format!("{ns}/{name}"), "created KuryrPort");
                    Ok(Action::await_change())
                }
                // The cache had not seen it yet; look again once it has.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::requeue(Duration::from_secs(1))),
                Err(e) => Err(Error::kube("create", format!("kuryrport {ns}/{name}"), e)),
            }
        }
    }
}

async fn release(pod: &Pod, ns: &str, name: &str, ctx: &PodContext) -> Result<Action, Error> {
    let has_finalizer = pod.finalizers().iter().any(|f| f == POD_FINALIZER);
    let kps: Api<KuryrPort> = Api::namespaced(ctx.client.clone(), ns);
    // A standalone container's KuryrPort of the same name is not the pod's to release.
    if let Some(kp) = ctx.kuryrports.get(&kp_key(ns, name)).filter(|kp| !is_standalone_kp(kp)) {
        ctx.leader.ensure()?;
        delete_kuryrport(&kps, &kp).await?;
        // The KuryrPort's final deletion triggers this pod again.
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    if !has_finalizer {
        return Ok(Action::await_change());
    }
    // The cache can lag behind a KuryrPort created just now: ask the API before letting go.
    if let Some(kp) =
        kps.get_opt(name).await.map_err(|e| Error::kube("get", format!("kuryrport {ns}/{name}"), e))?.filter(|kp| !is_standalone_kp(kp))
    {
        ctx.leader.ensure()?;
        delete_kuryrport(&kps, &kp).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    ctx.leader.ensure()?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(patch) = remove_finalizer_patch(pod, POD_FINALIZER) {
        json_patch(&pods, name, patch).await.map_err(|e| Error::kube("remove finalizer from", format!("pod {ns}/{name}"), e))?;
        tracing::debug!(pod = %format!("{ns}/{name}"), "removed the pod finalizer");
    }
    if let Some(uid) = pod.metadata.uid.as_deref() {
        ctx.timeline.forget(uid);
    }
    Ok(Action::await_change())
}

/// Requeue with per-object back-off; count the error.
pub fn error_policy(pod: Arc<Pod>, err: &Error, ctx: Arc<PodContext>) -> Action {
    crate::runtime::policy::error_action(CONTROLLER, &pod.namespace().unwrap_or_default(), &pod.name_any(), err, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        let mut base = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "ns", "uid": "uid-1"},
            "spec": {"nodeName": "vm", "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Pending"}
        });
        merge(&mut base, v);
        serde_json::from_value(base).expect("pod")
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn classifies_pods() {
        assert_eq!(intent(&pod(json!({}))), Intent::Wire);
        assert_eq!(intent(&pod(json!({"status": {"phase": null}}))), Intent::Wire);
        assert_eq!(intent(&pod(json!({"spec": {"hostNetwork": true}}))), Intent::Ignore("hostNetwork"));
        assert_eq!(intent(&pod(json!({"spec": {"nodeName": null}}))), Intent::Ignore("not scheduled"));
        assert_eq!(intent(&pod(json!({"spec": {"nodeName": ""}}))), Intent::Ignore("not scheduled"));
        assert_eq!(intent(&pod(json!({"status": {"phase": "Running"}}))), Intent::Keep);
        assert_eq!(intent(&pod(json!({"status": {"phase": "Succeeded"}}))), Intent::Release);
        assert_eq!(intent(&pod(json!({"status": {"phase": "Failed"}}))), Intent::Release);
        assert_eq!(
            intent(&pod(json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Running"}}))),
            Intent::Release
        );
    }

    #[test]
    fn builds_the_kuryrport() {
        let kp = kuryrport_for(&pod(json!({}))).expect("kp");
        assert_eq!(kp.metadata.name.as_deref(), Some("web-0"));
        assert_eq!(kp.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(kp.labels().get(NODE_NAME_LABEL).map(String::as_str), Some("vm"));
        assert_eq!(kp.finalizers(), [KURYRPORT_FINALIZER]);
        let owner = &kp.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("Pod", "web-0", "uid-1"));
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        assert_eq!(kp.spec, KuryrPortSpec { pod_uid: "uid-1".into(), pod_node_name: "vm".into(), pod_static: false });
        let v = serde_json::to_value(&kp).expect("json");
        assert_eq!(v["apiVersion"], "openstack.org/v1");
        assert_eq!(v["kind"], "KuryrPort");
        assert_eq!(v["spec"], json!({"podUid": "uid-1", "podNodeName": "vm"}));

        let st = kuryrport_for(&pod(json!({"metadata": {"annotations": {"kubernetes.io/config.source": "file"}}}))).expect("kp");
        assert!(st.spec.pod_static);
        let api = kuryrport_for(&pod(json!({"metadata": {"annotations": {"kubernetes.io/config.source": "api"}}}))).expect("kp");
        assert!(!api.spec.pod_static);

        let err = kuryrport_for(&pod(json!({"spec": {"nodeName": null}}))).expect_err("no node");
        assert!(err.to_string().contains("spec.nodeName"), "{err}");
    }

    #[test]
    fn finalizer_patches() {
        let p = pod(json!({}));
        assert_eq!(
            add_finalizer_patch(&p, POD_FINALIZER),
            json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                   {"op": "add", "path": "/metadata/finalizers", "value": [POD_FINALIZER]}])
        );
        assert_eq!(remove_finalizer_patch(&p, POD_FINALIZER), None);
        let p = pod(json!({"metadata": {"finalizers": ["other", POD_FINALIZER]}}));
        assert_eq!(add_finalizer_patch(&p, "x")[1], json!({"op": "add", "path": "/metadata/finalizers/-", "value": "x"}));
        assert_eq!(
            remove_finalizer_patch(&p, POD_FINALIZER),
            Some(json!([{"op": "test", "path": "/metadata/finalizers/1", "value": POD_FINALIZER},
                        {"op": "remove", "path": "/metadata/finalizers/1"}]))
        );
        for patch in [add_finalizer_patch(&p, "x"), remove_finalizer_patch(&p, POD_FINALIZER).expect("some")] {
            let _: json_patch::Patch = serde_json::from_value(patch).expect("valid JSON patch");
        }
    }
}
