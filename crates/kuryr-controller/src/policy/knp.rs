//! KuryrNetworkPolicy reconciler (`crate::policy::knp`; upstream `KuryrNetworkPolicyHandler`).
//!
//! A pass, under the domain lock: the policy translated from the caches; the base groups
//! ensured; the policy's Neutron objects found (first pass of this process, or after a failed
//! one) and converged (groups and address groups created before the rules naming them); the
//! ports of the pods selected before or now re-grouped (only those whose list changes); groups
//! and address groups no longer wanted deleted; status written when it changed; notes → one
//! Warning Event each.
//!
//! Deletion (upstream's finalizer on the KuryrNetworkPolicy): the pods' ports lose this policy's
//! groups first, then its groups (with their rules) and address groups are deleted (found again
//! by description), then the finalizer goes (its NetworkPolicy's follows, see
//! [`crate::policy::networkpolicy`]).

use crate::policy::model::{self, Cluster, ModelSettings, PolicyState};
use crate::policy::neutron::{self, Applied, Known};
use crate::policy::Policy;
use crate::runtime::error::{is_not_found, Error};
use crate::runtime::finalizers::{json_patch, remove_finalizer_patch};
use crate::runtime::policy::error_action;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use kuryr_core::crd::{KuryrNetworkPolicy, KuryrNetworkPolicyStatus};
use kuryr_core::names::NETWORKPOLICY_FINALIZER;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tracing::Instrument;

pub const CONTROLLER: &str = "kuryrnetworkpolicy";

pub fn error_policy(knp: Arc<KuryrNetworkPolicy>, err: &Error, p: Arc<Policy>) -> Action {
    // A policy Neutron could not be made to enforce (a refused call, a quota) is news to the
    // user of the NetworkPolicy, not only to the controller's log.
    if !matches!(err.inner(), Error::NotLeader) {
        p.ctx.events.warning(
            networkpolicy_ref(&knp),
            "PolicyNotApplied",
            "Apply",
            format!("the policy is not (fully) enforced yet: {err}"),
        );
    }
    error_action(CONTROLLER, &knp.namespace().unwrap_or_default(), &knp.name_any(), err, &p.ctx)
}

/// The NetworkPolicy a KuryrNetworkPolicy stands for (same namespace and name; uid from its
/// owner reference).
fn networkpolicy_ref(knp: &KuryrNetworkPolicy) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("networking.k8s.io/v1".into()),
        kind: Some("NetworkPolicy".into()),
        namespace: knp.namespace(),
        name: Some(knp.name_any()),
        uid: owner_uid(knp),
        ..Default::default()
    }
}

/// The uid of the NetworkPolicy owning `knp`, if it names one.
pub fn owner_uid(knp: &KuryrNetworkPolicy) -> Option<String> {
    knp.owner_references().iter().find(|o| o.kind == "NetworkPolicy").map(|o| o.uid.clone())
}

pub async fn reconcile(knp: Arc<KuryrNetworkPolicy>, p: Arc<Policy>) -> Result<Action, Error> {
    p.wait_synced().await;
    let ns = knp.namespace().ok_or_else(|| Error::Invalid("KuryrNetworkPolicy without namespace".into()))?;
    let name = knp.name_any();
    let span = tracing::info_span!("kuryrnetworkpolicy", policy = %format!("{ns}/{name}"));
    async {
        p.ctx.leader.ensure()?;
        let owner = owner_uid(&knp);
        let np = p.policies.get(&ObjectRef::new(&name).within(&ns));
        let live =
            np.clone().filter(|np| np.metadata.deletion_timestamp.is_none() && owner.as_ref().is_none_or(|u| np.uid().as_ref() == Some(u)));
        if knp.metadata.deletion_timestamp.is_some() {
            cleanup(&p, &knp, np.as_deref(), &ns, &name).await?;
            p.ctx.backoff.succeeded(&format!("{CONTROLLER}/{ns}/{name}"));
            return Ok(Action::await_change());
        }
        let Some(np) = live else {
            // Its NetworkPolicy is gone or going: the deletion runs behind this object's finalizer.
            let api: Api<KuryrNetworkPolicy> = Api::namespaced(p.ctx.client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::kube("delete", format!("kuryrnetworkpolicy {ns}/{name}"), e)),
            }
            return Ok(Action::await_change());
        };
        apply(&p, &knp, &np).await?;
        p.ctx.backoff.succeeded(&format!("{CONTROLLER}/{ns}/{name}"));
        Ok(Action::await_change())
    }
    .instrument(span)
    .await
}

/// Fills in the desired state of every live policy of `namespaces` that has none yet (after a
/// restart), so port groups are never computed without a policy that selects the pod.
fn fill_missing(p: &Policy, st: &mut crate::policy::State, namespaces: &BTreeSet<String>, m: &ModelSettings) {
    let (pods, nss) = p.cluster_snapshot();
    let svcs = p.services_snapshot();
    let cluster = Cluster { pods: &pods, namespaces: &nss, services: &svcs };
    for ns in namespaces {
        for np in p.live_policies(ns) {
            let key = format!("{ns}/{}", np.name_any());
            st.desired.entry(key).or_insert_with(|| model::desired(&np, &cluster, m));
        }
    }
}

fn namespaces_of(pods: &BTreeSet<String>) -> BTreeSet<String> {
    pods.iter().filter_map(|k| k.split_once('/').map(|(ns, _)| ns.to_string())).collect()
}

/// One pass for a live policy.
pub async fn apply(p: &Policy, knp: &KuryrNetworkPolicy, np: &NetworkPolicy) -> Result<Applied, Error> {
    let ns = np.namespace().unwrap_or_default();
    let name = np.name_any();
    let key = format!("{ns}/{name}");
    let nn = &p.ctx.neutron;
    let mut st = p.state.lock().await;
    let m = p.model_settings(&mut st).await?;
    if st.desired.is_empty() {
        // No policy in force: GC may have collected the base groups meanwhile; find them again.
        st.base.clear();
    }
    if let Err(e) = neutron::ensure_base(nn, &p.settings, &m, &mut st.base).await {
        st.base.clear();
        return Err(e);
    }
    let (pods, nss) = p.cluster_snapshot();
    let svcs = p.services_snapshot();
    let desired = model::desired(np, &Cluster { pods: &pods, namespaces: &nss, services: &svcs }, &m);
    let uid = desired.uid.clone();
    // `network_policy_project_driver = annotation`: the policy's groups go to its namespace's project.
    let settings = p.settings_for(&ns).await;
    let mut known = match st.known.remove(&uid) {
        Some(k) => k,
        None => neutron::discover(nn, &settings, &ns, &name).await?,
    };
    let mut applied = Applied::default();
    // The state Neutron is converged to (the same, unless the cloud lacks address groups).
    let eff = if known.no_address_groups { neutron::without_address_groups(&desired) } else { desired.clone() };
    p.ctx.leader.ensure()?;
    // On a failure `known` is dropped: the next pass finds the objects again.
    neutron::converge(nn, &settings, &mut known, &eff, &mut applied).await?;
    st.known.insert(uid.clone(), known);
    let old = st.desired.insert(key.clone(), desired.clone());
    let mut affected: BTreeSet<String> = desired.pods.keys().cloned().collect();
    affected.extend(old.iter().flat_map(|o| o.pods.keys().cloned()));
    fill_missing(p, &mut st, &namespaces_of(&affected), &m);
    applied.calls += p.sync_ports(&mut st, &affected).await?;
    let mut known = st.known.remove(&uid).unwrap_or_default();
    p.ctx.leader.ensure()?;
    neutron::prune(nn, &mut known, &eff, &mut applied).await?;
    let status = status_of(np, &eff, &known, &st.base);
    st.known.insert(uid, known);
    drop(st);
    p.publish_notes(np, &eff);
    if knp.status.as_ref() != Some(&status) {
        let api: Api<KuryrNetworkPolicy> = Api::namespaced(p.ctx.client.clone(), &ns);
        let patch: json_patch::Patch = serde_json::from_value(json!([{"op": "add", "path": "/status", "value": status}]))
            .map_err(|e| Error::Invalid(format!("status patch: {e}")))?;
        match api.patch_status(&name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube("patch status of", format!("kuryrnetworkpolicy {key}"), e)),
        }
    }
    tracing::debug!(calls = applied.calls, pods = desired.pods.len(), "policy converged");
    Ok(applied)
}

/// The status: every group the policy's pods carry for it (base groups included, so GC keeps
/// them), its rules in upstream's flat shape, its address groups.
pub fn status_of(
    np: &NetworkPolicy,
    desired: &PolicyState,
    known: &Known,
    base: &BTreeMap<model::BaseGroup, String>,
) -> KuryrNetworkPolicyStatus {
    let mut security_groups: BTreeMap<String, String> =
        known.sgs.iter().filter(|(k, _)| desired.groups.contains_key(*k)).map(|(k, v)| (k.as_string(), v.id.clone())).collect();
    for (g, id) in base {
        security_groups.insert(neutron::base_name(*g).trim_start_matches("kuryr-np-").to_string(), id.clone());
    }
    let first = known
        .sgs
        .iter()
        .filter(|(k, _)| desired.groups.contains_key(*k))
        .min_by_key(|(k, _)| (k.direction, k.variant.clone()))
        .map(|(_, v)| v.id.clone());
    let mut rules: Vec<Value> = Vec::new();
    for (k, g) in &known.sgs {
        if !desired.groups.contains_key(k) {
            continue;
        }
        let mut rs: Vec<_> = g.rules.iter().collect();
        rs.sort_by(|a, b| a.id.cmp(&b.id));
        for r in rs {
            rules.push(json!({
                "id": r.id, "security_group_id": r.security_group_id, "direction": r.direction, "ethertype": r.ethertype,
                "protocol": r.protocol, "port_range_min": r.port_range_min, "port_range_max": r.port_range_max,
                "remote_ip_prefix": r.remote_ip_prefix, "remote_address_group_id": r.remote_address_group_id,
            }));
        }
    }
    let pod_selector = np.spec.as_ref().and_then(|s| serde_json::to_value(&s.pod_selector).ok()).unwrap_or(Value::Null);
    KuryrNetworkPolicyStatus {
        security_group_id: first,
        security_group_rules: rules,
        pod_selector,
        security_groups,
        address_groups: known.ags.iter().map(|(k, v)| (k.to_string(), v.id.clone())).collect(),
    }
}

/// The teardown behind the finalizer.
async fn cleanup(p: &Policy, knp: &KuryrNetworkPolicy, np: Option<&NetworkPolicy>, ns: &str, name: &str) -> Result<(), Error> {
    if !knp.finalizers().iter().any(|f| f == NETWORKPOLICY_FINALIZER) {
        return Ok(());
    }
    let key = format!("{ns}/{name}");
    let uid = owner_uid(knp).or_else(|| np.and_then(|n| n.uid()));
    let nn = &p.ctx.neutron;
    let mut applied = Applied::default();
    {
        let mut st = p.state.lock().await;
        let m = p.model_settings(&mut st).await?;
        let old = st.desired.remove(&key);
        // The pods that may carry its groups: those it selected (as last applied, or as the
        // caches say after a restart), else every pod of the namespace.
        let affected: BTreeSet<String> = match (&old, np) {
            (Some(o), _) => o.pods.keys().cloned().collect(),
            (None, Some(np)) => {
                let (pods, nss) = p.cluster_snapshot();
                let svcs = p.services_snapshot();
                model::desired(np, &Cluster { pods: &pods, namespaces: &nss, services: &svcs }, &m).pods.keys().cloned().collect()
            }
            (None, None) => p.cluster_snapshot().0.iter().filter(|i| i.namespace == ns).map(|i| i.key()).collect(),
        };
        fill_missing(p, &mut st, &BTreeSet::from([ns.to_string()]), &m);
        // `fill_missing` must not bring this one back.
        if np.is_some_and(|n| n.metadata.deletion_timestamp.is_none() && n.uid() != uid) {
            // A re-created NetworkPolicy of the same name: its state stays.
        } else {
            st.desired.remove(&key);
        }
        if neutron::ensure_base(nn, &p.settings, &m, &mut st.base).await.is_err() {
            st.base.clear();
        }
        applied.calls += p.sync_ports(&mut st, &affected).await?;
        let mut known = neutron::discover(nn, &p.settings, ns, name).await?;
        if let Some(u) = &uid {
            // Only this incarnation's groups (a re-created policy of the same name keeps its own).
            let (mine, theirs): (BTreeMap<_, _>, BTreeMap<_, _>) = known.sgs.into_iter().partition(|(k, _)| &k.policy_uid == u);
            known.sgs = mine;
            let _ = theirs;
            let prefix = format!("{u}/");
            known.ags.retain(|k, _| k.as_str().starts_with(&prefix));
        }
        p.ctx.leader.ensure()?;
        neutron::prune(nn, &mut known, &PolicyState::default(), &mut applied).await?;
        if let Some(u) = &uid {
            st.known.remove(u);
        }
    }
    p.forget_notes(&key);
    if let Some(patch) = remove_finalizer_patch(knp, NETWORKPOLICY_FINALIZER) {
        let api: Api<KuryrNetworkPolicy> = Api::namespaced(p.ctx.client.clone(), ns);
        json_patch(&api, name, patch).await.map_err(|e| Error::kube("remove finalizer of", format!("kuryrnetworkpolicy {key}"), e))?;
    }
    tracing::info!(calls = applied.calls, "policy torn down");
    Ok(())
}
