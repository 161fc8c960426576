//! NetworkPolicy reconciler (`crate::policy::networkpolicy`; upstream `NetworkPolicyHandler`):
//! the NetworkPolicy finalizer and its KuryrNetworkPolicy (same name and namespace, owner
//! reference, upstream's finalizer and `networkPolicyLink` annotation, spec in upstream's shape:
//! `ingressSgRules` / `egressSgRules` with `sgRule`, `podSelector`, `policyTypes`). Every pass
//! also wakes the KuryrNetworkPolicy reconciler (an edit that moves only addresses leaves the
//! spec as it is). Deletion: the KuryrNetworkPolicy is deleted (its finalizer tears Neutron
//! down), and once it is gone the NetworkPolicy finalizer goes.

use crate::policy::model::{self, Cluster, Dir, ModelSettings, Remote};
use crate::policy::Policy;
use crate::runtime::error::{is_conflict, is_not_found, Error};
use crate::runtime::finalizers::{add_finalizer_patch, json_patch, remove_finalizer_patch};
use crate::runtime::policy::error_action;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use kuryr_core::crd::{KuryrNetworkPolicy, KuryrNetworkPolicySpec};
use kuryr_core::names::NETWORKPOLICY_FINALIZER;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::Instrument;

pub const CONTROLLER: &str = "networkpolicy";

/// Annotation on the KuryrNetworkPolicy: the API path of its NetworkPolicy (upstream's).
pub const LINK_ANNOTATION: &str = "networkPolicyLink";

pub fn error_policy(np: Arc<NetworkPolicy>, err: &Error, p: Arc<Policy>) -> Action {
    error_action(CONTROLLER, &np.namespace().unwrap_or_default(), &np.name_any(), err, &p.ctx)
}

/// The KuryrNetworkPolicy spec for `np`: its rules as upstream lists them (`sgRule` fields; a
/// peer set is named by `remoteAddressGroup`, its address group's key, and each rule by the
/// `securityGroup` key it belongs to), `podSelector`, `policyTypes`.
pub fn spec_of(np: &NetworkPolicy, cluster: &Cluster<'_>, m: &ModelSettings) -> KuryrNetworkPolicySpec {
    let st = model::desired(np, cluster, m);
    let (mut ingress, mut egress) = (Vec::new(), Vec::new());
    for (key, rules) in &st.groups {
        for r in rules {
            let mut sg_rule = json!({
                "direction": match r.direction { Dir::Ingress => "ingress", Dir::Egress => "egress" },
                "ethertype": r.ethertype.neutron(),
                "description": format!("kuryr-rs network policy {}/{}", st.namespace, st.name),
            });
            if let Some(proto) = r.protocol {
                sg_rule["protocol"] = json!(proto.neutron());
            }
            if let Some((a, b)) = r.ports {
                sg_rule["port_range_min"] = json!(a);
                sg_rule["port_range_max"] = json!(b);
            }
            let mut entry = json!({"securityGroup": key.as_string()});
            match &r.remote {
                Remote::Any => {}
                Remote::Prefix(n) => sg_rule["remote_ip_prefix"] = json!(n.to_string()),
                Remote::AddressGroup(k) => entry["remoteAddressGroup"] = json!(k.as_str()),
            }
            entry["sgRule"] = sg_rule;
            match r.direction {
                Dir::Ingress => ingress.push(entry),
                Dir::Egress => egress.push(entry),
            }
        }
    }
    let (i, e) = model::policy_types(np);
    let mut types = Vec::new();
    if i {
        types.push("Ingress".to_string());
    }
    if e {
        types.push("Egress".to_string());
    }
    KuryrNetworkPolicySpec {
        ingress_sg_rules: ingress,
        egress_sg_rules: egress,
        pod_selector: np.spec.as_ref().and_then(|s| serde_json::to_value(&s.pod_selector).ok()).unwrap_or(Value::Null),
        policy_types: types,
    }
}

/// The KuryrNetworkPolicy to create for `np`.
pub fn new_knp(np: &NetworkPolicy, spec: KuryrNetworkPolicySpec) -> KuryrNetworkPolicy {
    let ns = np.namespace().unwrap_or_default();
    let name = np.name_any();
    let owner = OwnerReference {
        api_version: "networking.k8s.io/v1".into(),
        kind: "NetworkPolicy".into(),
        name: name.clone(),
        uid: np.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    KuryrNetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            annotations: Some(BTreeMap::from([(
                LINK_ANNOTATION.to_string(),
                format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}"),
            )])),
            finalizers: Some(vec![NETWORKPOLICY_FINALIZER.to_string()]),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

pub async fn reconcile(np: Arc<NetworkPolicy>, p: Arc<Policy>) -> Result<Action, Error> {
    p.wait_synced().await;
    let ns = np.namespace().ok_or_else(|| Error::Invalid("NetworkPolicy without namespace".into()))?;
    let name = np.name_any();
    let span = tracing::info_span!("networkpolicy", policy = %format!("{ns}/{name}"));
    async {
        p.ctx.leader.ensure()?;
        let np_api: Api<NetworkPolicy> = Api::namespaced(p.ctx.client.clone(), &ns);
        let knp_api: Api<KuryrNetworkPolicy> = Api::namespaced(p.ctx.client.clone(), &ns);
        let what = format!("kuryrnetworkpolicy {ns}/{name}");
        if np.metadata.deletion_timestamp.is_some() {
            if !np.finalizers().iter().any(|f| f == NETWORKPOLICY_FINALIZER) {
                return Ok(Action::await_change());
            }
            // The cache may lag behind a create: ask the API server.
            let knp = knp_api.get_opt(&name).await.map_err(|e| Error::kube("get", what.clone(), e))?;
            match knp {
                Some(k) if k.metadata.deletion_timestamp.is_none() => {
                    match knp_api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(Error::kube("delete", what, e)),
                    }
                    Ok(Action::await_change())
                }
                // Its finalizer is running; its final deletion wakes this reconciler.
                Some(_) => Ok(Action::await_change()),
                None => {
                    if let Some(patch) = remove_finalizer_patch(np.as_ref(), NETWORKPOLICY_FINALIZER) {
                        json_patch(&np_api, &name, patch)
                            .await
                            .map_err(|e| Error::kube("remove finalizer of", format!("networkpolicy {ns}/{name}"), e))?;
                    }
                    p.ctx.backoff.succeeded(&format!("{CONTROLLER}/{ns}/{name}"));
                    Ok(Action::await_change())
                }
            }
        } else {
            if !np.finalizers().iter().any(|f| f == NETWORKPOLICY_FINALIZER) {
                let patch = add_finalizer_patch(np.as_ref(), NETWORKPOLICY_FINALIZER);
                json_patch(&np_api, &name, patch)
                    .await
                    .map_err(|e| Error::kube("add finalizer to", format!("networkpolicy {ns}/{name}"), e))?;
            }
            let m = ModelSettings { families: p.families().await?, always_allow_ingress: Vec::new() };
            let (pods, nss) = p.cluster_snapshot();
            let svcs = p.services_snapshot();
            let spec = spec_of(&np, &Cluster { pods: &pods, namespaces: &nss, services: &svcs }, &m);
            match p.knps.get(&ObjectRef::new(&name).within(&ns)) {
                None => match knp_api.create(&PostParams::default(), &new_knp(&np, spec)).await {
                    Ok(_) => {}
                    // Made by an earlier pass the cache has not shown yet: its event comes.
                    Err(e) if is_conflict(&e) => {}
                    Err(e) => return Err(Error::kube("create", what, e)),
                },
                Some(k) if k.metadata.deletion_timestamp.is_some() => return Ok(Action::await_change()),
                Some(k) if crate::policy::knp::owner_uid(&k).is_some_and(|u| Some(u) != np.uid()) => {
                    // Left by a NetworkPolicy of the same name that is gone: delete it; its final
                    // deletion wakes this reconciler, which creates this one's.
                    match knp_api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(Error::kube("delete", what, e)),
                    }
                    return Ok(Action::await_change());
                }
                Some(k) if k.spec != spec => {
                    let patch: json_patch::Patch = serde_json::from_value(json!([{"op": "add", "path": "/spec", "value": spec}]))
                        .map_err(|e| Error::Invalid(format!("spec patch: {e}")))?;
                    knp_api
                        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
                        .await
                        .map_err(|e| Error::kube("patch spec of", what, e))?;
                }
                Some(_) => {}
            }
            p.trigger(&ns, &name);
            p.ctx.backoff.succeeded(&format!("{CONTROLLER}/{ns}/{name}"));
            Ok(Action::await_change())
        }
    }
    .instrument(span)
    .await
}
