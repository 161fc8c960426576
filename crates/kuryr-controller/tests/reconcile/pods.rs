//! The Pod reconciler (`pod::pods`): KuryrPort creation for a scheduled pod, the replacement of
//! an earlier pod's KuryrPort, the release of a completed or deleting pod's KuryrPort and then of
//! its finalizer, and the pods it leaves alone. The Pod reconciler never calls Neutron.

use crate::fixtures::*;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kuryr_controller::pod::pods;
use kuryr_core::crd::KuryrPort;
use kuryr_core::names::POD_FINALIZER;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const POD_PATH: &str = "/api/v1/namespaces/ns/pods/web-0";
const KPS_PATH: &str = "/apis/openstack.org/v1/namespaces/ns/kuryrports";
const KP_PATH: &str = "/apis/openstack.org/v1/namespaces/ns/kuryrports/web-0";

/// API server answers for the Pod reconciler: patches of the pod succeed (answered with `pod`),
/// a KuryrPort create is answered with `create_status` (201: the object posted), the KuryrPort
/// is `in_api` on a GET (else 404) and its deletion succeeds.
fn pod_server(pod: &Pod, create_status: u16, in_api: Option<KuryrPort>) -> impl Fn(&Call) -> (u16, Value) + Send + Sync + 'static {
    let pod = serde_json::to_value(pod).unwrap();
    let in_api = in_api.map(|kp| serde_json::to_value(kp).unwrap());
    move |c: &Call| match (c.method.as_str(), c.target.split('?').next().unwrap_or_default()) {
        ("PATCH", POD_PATH) => (200, pod.clone()),
        ("POST", KPS_PATH) if create_status == 201 => (201, c.body.clone()),
        ("POST", KPS_PATH) => status(create_status, "AlreadyExists"),
        ("GET", KP_PATH) => match &in_api {
            Some(kp) => (200, kp.clone()),
            None => status(404, "NotFound"),
        },
        ("DELETE", KP_PATH) => status(200, "Success"),
        _ => default_kube(c),
    }
}

/// `pod()` changed by `f`.
fn pod_with(f: impl FnOnce(&mut Value)) -> Pod {
    let mut v = serde_json::to_value(pod()).unwrap();
    f(&mut v);
    serde_json::from_value(v).unwrap()
}

fn completed(v: &mut Value) {
    v["status"]["phase"] = json!("Succeeded");
}

fn deleting(v: &mut Value) {
    v["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    v["status"]["phase"] = json!("Running");
}

fn standalone(mut kp: KuryrPort) -> KuryrPort {
    kp.metadata.labels.get_or_insert_with(Default::default).insert("kuryr.openstack.org/standalone".into(), "true".into());
    kp
}

/// A scheduled Pending pod without the finalizer: the finalizer is added first (a JSON patch
/// testing the empty list), then its KuryrPort is created; the pod is marked fresh (its first
/// port acquire skips the adoption lookup). No Neutron call.
#[tokio::test]
async fn scheduled_pod_gets_its_finalizer_then_its_kuryrport() {
    let neutron = NeutronSim::start().await;
    let pod = pod_with(|v| {
        v["metadata"].as_object_mut().unwrap().remove("finalizers");
    });
    let (client, api) = ApiServer::start(pod_server(&pod, 201, None));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod);

    let action = pods::reconcile(Arc::new(pod), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert_eq!(api.lines(), [format!("PATCH {POD_PATH}?"), format!("POST {KPS_PATH}?")]);
    assert_eq!(
        api.calls()[0].body,
        json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
               {"op": "add", "path": "/metadata/finalizers", "value": [POD_FINALIZER]}])
    );
    let kp = &api.calls()[1].body;
    assert_eq!((&kp["apiVersion"], &kp["kind"]), (&json!("openstack.org/v1"), &json!("KuryrPort")));
    assert_eq!((&kp["metadata"]["name"], &kp["metadata"]["namespace"]), (&json!("web-0"), &json!(NS)));
    assert_eq!(kp["metadata"]["labels"], json!({"kuryr.openstack.org/nodeName": NODE}));
    assert_eq!(kp["metadata"]["finalizers"], json!(["kuryr.openstack.org/kuryrport-finalizer"]));
    assert_eq!(
        kp["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "web-0", "uid": UID, "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(kp["spec"], json!({"podUid": UID, "podNodeName": NODE}));
    assert!(h.ctx.take_fresh(UID), "the KuryrPort is this replica's, made in this term");
    assert!(neutron.lines().is_empty(), "{:?}", neutron.lines());
}

/// A pod with its finalizer whose KuryrPort is in the cache: nothing to write.
#[tokio::test]
async fn pod_with_its_kuryrport_needs_nothing() {
    let neutron = NeutronSim::start().await;
    let (client, api) = ApiServer::start(pod_server(&pod(), 201, None));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod());
    h.add_kuryrport(&kuryrport());

    let action = pods::reconcile(Arc::new(pod()), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert!(api.lines().is_empty(), "{:?}", api.lines());
    assert!(!h.ctx.take_fresh(UID));
}

/// The cache has not seen a KuryrPort the API already has: the create's 409 requeues the pod
/// shortly, and it is not marked fresh (an earlier attempt may have left a port).
#[tokio::test]
async fn kuryrport_create_conflict_requeues_the_pod() {
    let neutron = NeutronSim::start().await;
    let (client, api) = ApiServer::start(pod_server(&pod(), 409, None));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod());

    let action = pods::reconcile(Arc::new(pod()), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    assert_eq!(api.lines(), [format!("POST {KPS_PATH}?")], "the finalizer is there already");
    assert!(!h.ctx.take_fresh(UID));
}

/// A KuryrPort of the pod's name but an earlier pod's UID (a StatefulSet pod re-created) is never
/// reused: it is deleted, guarded by its own UID, and the pod requeued; no new one yet.
#[tokio::test]
async fn kuryrport_of_an_earlier_pod_is_deleted_not_reused() {
    let neutron = NeutronSim::start().await;
    let mut old = kuryrport();
    old.spec.pod_uid = "6f1d2a4e-0000-4000-8000-0000000000aa".into();
    let (client, api) = ApiServer::start(pod_server(&pod(), 201, None));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod());
    h.add_kuryrport(&old);

    let action = pods::reconcile(Arc::new(pod()), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    assert_eq!(api.lines(), [format!("DELETE {KP_PATH}?")]);
    assert_eq!(api.calls()[0].body["preconditions"]["uid"], "kp-uid-1", "only that KuryrPort, not a newer one");
}

/// A standalone container's KuryrPort with the pod's name is not the pod's: neither replaced
/// nor reused, and the pod is not wired.
#[tokio::test]
async fn standalone_kuryrport_with_the_pods_name_is_left_alone() {
    let neutron = NeutronSim::start().await;
    let (client, api) = ApiServer::start(pod_server(&pod(), 201, None));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod());
    let mut kp = standalone(kuryrport());
    kp.spec.pod_uid = "6f1d2a4e-0000-4000-8000-0000000000bb".into();
    h.add_kuryrport(&kp);

    let action = pods::reconcile(Arc::new(pod()), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert!(api.lines().is_empty(), "{:?}", api.lines());
}

/// A pod in the namespace reserved for standalone containers' KuryrPorts is not wired: a
/// Warning Event on the pod, no write.
#[tokio::test]
async fn pod_in_the_standalone_namespace_is_not_wired() {
    let neutron = NeutronSim::start().await;
    let pod = pod_with(|v| v["metadata"]["namespace"] = json!("kuryr-standalone"));
    let (client, api) = ApiServer::start(pod_server(&pod, 201, None));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod);

    let action = pods::reconcile(Arc::new(pod), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert!(api.lines().is_empty(), "{:?}", api.lines());
    let ev = api.wait_event("PodInStandaloneNamespace").await;
    assert_eq!((&ev["type"], &ev["regarding"]["kind"], &ev["regarding"]["uid"]), (&json!("Warning"), &json!("Pod"), &json!(UID)));
}

/// hostNetwork, unscheduled and Running pods: nothing to do, nothing written.
#[tokio::test]
async fn pods_not_to_wire_are_left_alone() {
    let neutron = NeutronSim::start().await;
    let cases = [
        pod_with(|v| v["spec"]["hostNetwork"] = json!(true)),
        pod_with(|v| v["spec"]["nodeName"] = Value::Null),
        pod_with(|v| v["status"]["phase"] = json!("Running")),
    ];
    let (client, api) = ApiServer::start(pod_server(&pod(), 201, None));
    let h = Harness::new(client, &neutron, settings(None)).await;

    for pod in cases {
        assert_eq!(pods::reconcile(Arc::new(pod), h.ctx.clone()).await.expect("reconcile"), Action::await_change());
    }

    assert!(api.lines().is_empty(), "{:?}", api.lines());
}

/// A completed pod: its KuryrPort is deleted (guarded by its UID; its finalizer releases the
/// port) and the pod requeued; the pod finalizer stays until the KuryrPort is gone.
#[tokio::test]
async fn completed_pod_deletes_its_kuryrport_first() {
    let neutron = NeutronSim::start().await;
    let pod = pod_with(completed);
    let (client, api) = ApiServer::start(pod_server(&pod, 201, None));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod);
    h.add_kuryrport(&kuryrport());

    let action = pods::reconcile(Arc::new(pod), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    assert_eq!(api.lines(), [format!("DELETE {KP_PATH}?")]);
    assert_eq!(api.calls()[0].body["preconditions"]["uid"], "kp-uid-1");
}

/// A deleting pod whose KuryrPort is being deleted already: no second delete, the pod waits.
#[tokio::test]
async fn deleting_pod_waits_for_its_kuryrport_being_deleted() {
    let neutron = NeutronSim::start().await;
    let pod = pod_with(deleting);
    let mut kp = kuryrport();
    kp.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2025-01-01T00:00:00Z".parse().unwrap()));
    let (client, api) = ApiServer::start(pod_server(&pod, 201, None));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod);
    h.add_kuryrport(&kp);

    let action = pods::reconcile(Arc::new(pod), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    assert!(api.lines().is_empty(), "{:?}", api.lines());
}

/// A deleting pod whose KuryrPort only the API knows yet (the cache lags): the API is asked
/// before letting go, and the KuryrPort is deleted; the finalizer stays.
#[tokio::test]
async fn deleting_pod_asks_the_api_before_dropping_its_finalizer() {
    let neutron = NeutronSim::start().await;
    let pod = pod_with(deleting);
    let (client, api) = ApiServer::start(pod_server(&pod, 201, Some(kuryrport())));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod);

    let action = pods::reconcile(Arc::new(pod), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    assert_eq!(api.lines(), [format!("GET {KP_PATH}"), format!("DELETE {KP_PATH}?")]);
    assert_eq!(api.calls()[1].body["preconditions"]["uid"], "kp-uid-1");
}

/// A deleting pod whose KuryrPort is gone: the pod finalizer is removed (a JSON patch testing
/// its position), which lets the pod go.
#[tokio::test]
async fn deleting_pod_without_kuryrport_loses_its_finalizer() {
    let neutron = NeutronSim::start().await;
    let pod = pod_with(|v| {
        deleting(v);
        v["metadata"]["finalizers"] = json!(["other", POD_FINALIZER]);
    });
    let (client, api) = ApiServer::start(pod_server(&pod, 201, None));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod);

    let action = pods::reconcile(Arc::new(pod), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert_eq!(api.lines(), [format!("GET {KP_PATH}"), format!("PATCH {POD_PATH}?")]);
    assert_eq!(
        api.calls()[1].body,
        json!([{"op": "test", "path": "/metadata/finalizers/1", "value": POD_FINALIZER},
               {"op": "remove", "path": "/metadata/finalizers/1"}])
    );
    assert!(neutron.lines().is_empty(), "{:?}", neutron.lines());
}

/// A completed pod sharing its name with a standalone container's KuryrPort: that KuryrPort is
/// not the pod's to delete; the pod's finalizer is removed.
#[tokio::test]
async fn completed_pod_never_deletes_a_standalone_kuryrport() {
    let neutron = NeutronSim::start().await;
    let pod = pod_with(completed);
    let kp = standalone(kuryrport());
    let (client, api) = ApiServer::start(pod_server(&pod, 201, Some(kp.clone())));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod);
    h.add_kuryrport(&kp);

    let action = pods::reconcile(Arc::new(pod), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert_eq!(api.lines(), [format!("GET {KP_PATH}"), format!("PATCH {POD_PATH}?")]);
}

/// A completed pod without the finalizer and without a KuryrPort: nothing to do.
#[tokio::test]
async fn released_pod_without_finalizer_needs_nothing() {
    let neutron = NeutronSim::start().await;
    let pod = pod_with(|v| {
        completed(v);
        v["metadata"]["finalizers"] = json!([]);
    });
    let (client, api) = ApiServer::start(pod_server(&pod, 201, None));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod);

    let action = pods::reconcile(Arc::new(pod), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert!(api.lines().is_empty(), "{:?}", api.lines());
}
