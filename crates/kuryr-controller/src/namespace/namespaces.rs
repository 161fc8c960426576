//! Namespace reconciler (`crate::namespace::namespaces`; upstream `NamespaceHandler`): a
//! namespace with something to wire gets its KuryrNetwork (name = namespace, upstream's
//! finalizer, `spec.nsName`, `spec.projectId`, `spec.nsLabels`); the labels are kept in sync.
//! The KuryrNetwork goes with its namespace (Kubernetes deletes a namespace's objects), its
//! finalizer holding the namespace until the Neutron objects are gone.

use crate::namespace::Namespaces;
use crate::runtime::error::{is_conflict, Error};
use crate::runtime::policy::error_action;
use crate::runtime::projects::ProjectKind;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use kuryr_core::crd::{KuryrNetwork, KuryrNetworkSpec};
use kuryr_core::names::KURYRNETWORK_FINALIZER;
use serde_json::json;
use std::sync::Arc;

pub const CONTROLLER: &str = "namespace";

pub fn error_policy(ns: Arc<Namespace>, err: &Error, d: Arc<Namespaces>) -> Action {
    error_action(CONTROLLER, "", &ns.name_any(), err, &d.ctx)
}

/// The KuryrNetwork a namespace gets.
pub fn kuryrnetwork_for(ns: &Namespace, project: &str) -> KuryrNetwork {
    let name = ns.name_any();
    let mut k = KuryrNetwork::new(
        &name,
        KuryrNetworkSpec { ns_name: name.clone(), project_id: project.to_string(), ns_labels: ns.labels().clone() },
    );
    k.metadata.namespace = Some(name);
    k.metadata.finalizers = Some(vec![KURYRNETWORK_FINALIZER.to_string()]);
    k
}

#[tracing::instrument(name = "namespace", skip_all, fields(namespace = %ns.name_any()))]
pub async fn reconcile(ns: Arc<Namespace>, d: Arc<Namespaces>) -> Result<Action, Error> {
    d.ctx.metrics.reconciled(CONTROLLER);
    if !d.ctx.leader.is_leader() {
        return Ok(Action::await_change());
    }
    d.wait_synced().await;
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_some() || d.excluded(&name) {
        return Ok(Action::await_change());
    }
    let api: Api<KuryrNetwork> = Api::namespaced(d.ctx.client.clone(), &name);
    match d.network(&name) {
        // Going (its deletion event reconciles this namespace again).
        Some(k) if k.metadata.deletion_timestamp.is_some() => {}
        Some(k) if &k.spec.ns_labels != ns.labels() => {
            d.ctx.leader.ensure()?;
            let patch = Patch::Merge(json!({"spec": {"nsLabels": ns.labels()}}));
            api.patch(&name, &PatchParams::default(), &patch).await.map_err(|e| Error::kube("patch", format!("kuryrnetwork {name}"), e))?;
        }
        Some(_) => {}
        None if d.needs_network(&name) => {
            // `namespace_project_driver = annotation`: the namespace's project, recorded in
            // `spec.projectId` (the network and subnet are created there).
            let project = d.ctx.project_for(ProjectKind::Namespace, &name).await;
            d.ctx.leader.ensure()?;
            match api.create(&PostParams::default(), &kuryrnetwork_for(&ns, &project)).await {
                Ok(_) => tracing::info!("KuryrNetwork created"),
                // The cache lags: it exists already.
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(Error::kube("create", format!("kuryrnetwork {name}"), e)),
            }
        }
        None => {}
    }
    d.ctx.backoff.succeeded(&format!("{CONTROLLER}//{name}"));
    Ok(Action::await_change())
}
