//! The pod path's reconcile branches and GC's decisions without the stack: each test drives a
//! reconciler (or a GC pass) against a mock API server and the in-process Neutron double (see
//! `fixtures`) and asserts the exact requests it made. Here: the KuryrPort reconciler with the
//! neutron-vif driver and GC; `reconcile/pods.rs`: the Pod reconciler; `reconcile/nested_vlan.rs`:
//! the KuryrPort reconciler with the nested-vlan driver. They complement the stack tests
//! (`stack.rs`), which prove the same paths against real services.

mod fixtures;
#[path = "reconcile/namespaces.rs"]
mod namespaces;
#[path = "reconcile/nested_vlan.rs"]
mod nested_vlan;
#[path = "reconcile/pods.rs"]
mod pods;

use fixtures::*;
use kube::runtime::controller::Action;
use kuryr_controller::gc::{self, Kind, Marks};
use kuryr_controller::pod::driver::neutron::create_batch;
use kuryr_controller::pod::pool::{pool_description, pool_port_name, PoolKey};
use kuryr_controller::pod::{activator, kuryrport, pool};
use kuryr_controller::runtime::error::Error;
use kuryr_controller::runtime::hooks::SweepHooks;
use kuryr_controller::runtime::settings::PoolSettings;
use kuryr_core::crd::KuryrPort;
use kuryr_openstack::neutron::{Port, PortCreate};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

const KP_PATH: &str = "/apis/openstack.org/v1/namespaces/ns/kuryrports/web-0";
const ADOPTION_LOOKUP: &str = "GET /v2.0/ports?device_id=6f1d2a4e-0000-4000-8000-000000000001&device_owner=compute%3Akuryr";

/// API server answers for the KuryrPort reconciler: the pod is missing (404), writes to the
/// KuryrPort succeed (answered with `kp`).
fn kp_server(kp: &KuryrPort) -> impl Fn(&Call) -> (u16, Value) + Send + Sync + 'static {
    let kp = serde_json::to_value(kp).unwrap();
    move |c: &Call| match (c.method.as_str(), c.target.split('?').next().unwrap_or_default()) {
        ("PATCH", p) if p.starts_with(KP_PATH) => (200, kp.clone()),
        ("DELETE", p) if p == KP_PATH => status(200, "Success"),
        _ => default_kube(c),
    }
}

/// A pod whose KuryrPort's pod is gone: the KuryrPort is deleted, guarded by its UID, and no
/// Neutron call is made.
#[tokio::test]
async fn orphaned_kuryrport_is_deleted_with_its_uid_as_precondition() {
    let neutron = NeutronSim::start().await;
    let kp = kuryrport();
    let (client, api) = ApiServer::start(kp_server(&kp));
    let h = Harness::new(client, &neutron, settings(None)).await;

    let action = kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert_eq!(api.lines(), [format!("GET /api/v1/namespaces/{NS}/pods/web-0"), format!("DELETE {KP_PATH}?")]);
    assert_eq!(api.calls()[1].body["preconditions"]["uid"], "kp-uid-1", "only this KuryrPort, not a re-created one");
    assert!(neutron.lines().is_empty(), "no Neutron call for an orphan: {:?}", neutron.lines());
    api.wait_event("MissingPod").await;
}

/// Neutron could not bind the new port: it is deleted (a fresh one is made on retry), the
/// reconcile fails with a binding error and no VIF is written.
#[tokio::test]
async fn binding_failure_releases_the_port() {
    let neutron = NeutronSim::start().await;
    neutron.bind_as("binding_failed");
    let kp = kuryrport();
    let (client, api) = ApiServer::start(kp_server(&kp));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod());

    let err = kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect_err("binding fails");

    let binding = match &err {
        Error::Finalizer(f) => match f.as_ref() {
            kube::runtime::finalizer::Error::ApplyFailed(e) => Some(e),
            _ => None,
        },
        _ => None,
    };
    assert!(matches!(binding, Some(Error::Binding { port_id, .. }) if port_id == "port-new-1"), "{err:?}");
    assert_eq!(
        neutron.lines(),
        [
            format!("GET /v2.0/subnets/{SUBNET}"),
            ADOPTION_LOOKUP.to_string(),
            "POST /v2.0/ports".into(),
            "PUT /v2.0/ports/port-new-1/tags".into(),
            format!("GET /v2.0/networks/{NETWORK}"),
            "DELETE /v2.0/ports/port-new-1".into(),
        ]
    );
    assert!(neutron.port("port-new-1").is_none(), "the unbound port is gone");
    assert!(api.lines().is_empty(), "no VIF written: {:?}", api.lines());
    api.wait_event("KuryrPortBindingFailed").await;
}

/// A crash after `POST /ports` left a port stamped with the pod UID: the next reconcile adopts
/// it (no second port) and writes it as the VIF.
#[tokio::test]
async fn port_left_by_a_crash_is_adopted_not_created() {
    let neutron = NeutronSim::start().await;
    neutron.add_port(port_json("port-old", UID, NODE, "DOWN"));
    let kp = kuryrport();
    let (client, api) = ApiServer::start(kp_server(&kp));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod());

    kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(
        neutron.lines(),
        [format!("GET /v2.0/subnets/{SUBNET}"), ADOPTION_LOOKUP.to_string(), format!("GET /v2.0/networks/{NETWORK}")]
    );
    assert_eq!(api.lines(), [format!("PATCH {KP_PATH}/status?")]);
    let vif = &api.calls()[0].body["status"]["vifs"]["eth0"];
    assert_eq!((&vif["default"], &vif["vif"]["versioned_object.data"]["id"]), (&json!(true), &json!("port-old")), "{vif}");
    let note = api.wait_event("KuryrPortUpdatedWithVIFs").await["note"].clone();
    assert!(note.as_str().unwrap_or_default().contains("adopted"), "{note}");
}

/// A standalone container's KuryrPort outside the standalone namespace is refused: a Warning
/// Event on it, no Neutron port, no write, and no retry until it is edited.
#[tokio::test]
async fn standalone_kuryrport_outside_its_namespace_is_refused() {
    let neutron = NeutronSim::start().await;
    let mut kp = kuryrport();
    kp.metadata.labels.get_or_insert_with(Default::default).insert("kuryr.openstack.org/standalone".into(), "true".into());
    let (client, api) = ApiServer::start(kp_server(&kp));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_kuryrport(&kp);

    let action = kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert!(neutron.lines().is_empty(), "{:?}", neutron.lines());
    assert!(api.lines().is_empty(), "{:?}", api.lines());
    let ev = api.wait_event("StandaloneKuryrPortInvalid").await;
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["regarding"]["kind"], "KuryrPort");
}

/// Pod ports asked for together go out in one bulk `POST /ports`. When a bulk fails (all or
/// nothing: one pod's request is bad), the ports it may have made are looked up by the pods'
/// UIDs, then each pod's port is created on its own: the bad one fails alone.
#[tokio::test]
async fn ports_asked_for_together_share_one_bulk_and_a_bad_one_fails_alone() {
    let neutron = NeutronSim::start().await;
    let (client, _api) = ApiServer::start(default_kube);
    let h = Harness::new(client, &neutron, settings(None)).await;
    let body = |uid: &str, net: &str| PortCreate {
        network_id: net.into(),
        device_id: uid.into(),
        device_owner: "compute:kuryr".into(),
        ..PortCreate::default()
    };

    let made = create_batch(&h.ctx, vec![body("u1", NETWORK), body("u2", NETWORK)]).await;
    let ids: Vec<String> = made.into_iter().map(|r| r.expect("created").device_id).collect();
    assert_eq!(ids, ["u1", "u2"], "answers in request order");
    assert_eq!(neutron.lines(), ["POST /v2.0/ports"]);
    assert_eq!(neutron.body("POST /v2.0/ports")["ports"].as_array().map(Vec::len), Some(2));

    let made = create_batch(&h.ctx, vec![body("u3", NETWORK), body("u4", MISSING_NETWORK), body("u5", NETWORK)]).await;
    assert_eq!(made[0].as_ref().expect("u3").device_id, "u3");
    match &made[1] {
        Err(Error::OpenStack(e)) => assert!(e.is_not_found(), "{e}"),
        other => panic!("the bad request fails on its own: {other:?}"),
    }
    assert_eq!(made[2].as_ref().expect("u5").device_id, "u5");
    assert_eq!(
        neutron.lines()[1..],
        [
            "POST /v2.0/ports".to_string(),
            "GET /v2.0/ports?device_id=u3&device_id=u4&device_id=u5&device_owner=compute%3Akuryr".into(),
            "POST /v2.0/ports".into(),
            "POST /v2.0/ports".into(),
            "POST /v2.0/ports".into(),
        ]
    );
    assert_eq!(neutron.ports().iter().filter(|p| p["device_id"] == json!("u3")).count(), 1, "no duplicate");
}

fn pools_on() -> Option<PoolSettings> {
    Some(PoolSettings { min: 1, max: 4, batch: 1 })
}

/// A free warm-pool port of the node (left by an earlier leader): recovered from Neutron and
/// claimed for the pod instead of creating a port.
#[tokio::test]
async fn warm_pool_port_is_claimed_instead_of_created() {
    let neutron = NeutronSim::start().await;
    let mut free = port_json("port-pool-1", "", NODE, "ACTIVE");
    free["name"] = json!(pool_port_name(NODE));
    free["description"] = json!(pool_description(CLUSTER, NODE));
    free["tags"] = json!([]);
    neutron.add_port(free);
    let kp = kuryrport();
    let (client, api) = ApiServer::start(kp_server(&kp));
    let mut h = Harness::new(client, &neutron, settings(pools_on())).await;
    h.add_pod(&pod());

    kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(
        neutron.lines(),
        [
            format!("GET /v2.0/subnets/{SUBNET}"),
            ADOPTION_LOOKUP.to_string(),
            "GET /v2.0/ports?device_owner=compute%3Akuryr".into(),
            format!("GET /v2.0/networks/{NETWORK}"),
        ],
        "recovery lists the pool ports; no POST /ports"
    );
    assert_eq!(api.lines(), [format!("PATCH {KP_PATH}/status?")]);
    assert_eq!(api.calls()[0].body["status"]["vifs"]["eth0"]["vif"]["versioned_object.data"]["id"], "port-pool-1");
    let key = PoolKey { node: NODE.into(), network_id: NETWORK.into() };
    assert_eq!(h.ctx.pools.as_ref().expect("pools").free(&key), 0);
}

/// Pods that missed their (empty) pool have their own ports: the refill waits until every such
/// port of that pool is ACTIVE (or gone), since Neutron's worker records their status behind any
/// refill bulk in flight; a miss whose creation failed refills at once.
#[tokio::test]
async fn a_missed_pool_is_refilled_once_the_missing_pods_ports_are_active() {
    let neutron = NeutronSim::start().await;
    let (client, _api) = ApiServer::start(default_kube);
    let h = Harness::new(client, &neutron, settings(pools_on())).await;
    let pools = h.ctx.pools.clone().expect("pools");
    let key = PoolKey { node: NODE.into(), network_id: NETWORK.into() };
    let down = |id: &str| -> Port { serde_json::from_value(port_json(id, UID, NODE, "DOWN")).unwrap() };

    pool::missed(&h.ctx, &pools, NODE, NETWORK, Some(&down("p1")));
    pool::missed(&h.ctx, &pools, NODE, NETWORK, Some(&down("p2")));
    assert!(!pools.refilling(&key), "waits for the missing pods' ports");
    activator::settled(&h.ctx, "p1");
    assert!(!pools.refilling(&key), "p2 still activating");
    activator::settled(&h.ctx, "unrelated");
    assert!(!pools.refilling(&key));
    activator::settled(&h.ctx, "p2");
    assert!(pools.refilling(&key), "both ACTIVE: refill");

    let other = PoolKey { node: "node-2".into(), network_id: NETWORK.into() };
    pool::missed(&h.ctx, &pools, "node-2", NETWORK, None);
    assert!(pools.refilling(&other), "the pod's own creation failed: refill at once");
}

/// The deleted KuryrPort of a pod whose port was recorded in its status.
fn deleted_kuryrport() -> KuryrPort {
    let mut kp = kuryrport();
    kp.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2025-01-01T00:00:00Z".parse().unwrap()));
    kp.status =
        serde_json::from_value(json!({"vifs": {"eth0": {"default": true, "vif": {"portId": "port-used", "active": true}}}})).unwrap();
    kp
}

/// With pools on, a released pod's port goes back into its node's pool (restamped, not
/// deleted), then the KuryrPort's finalizer is removed.
#[tokio::test]
async fn released_port_is_recycled_into_the_pool() {
    let neutron = NeutronSim::start().await;
    neutron.add_port(port_json("port-used", UID, NODE, "ACTIVE"));
    let kp = deleted_kuryrport();
    let (client, api) = ApiServer::start(kp_server(&kp));
    let h = Harness::new(client, &neutron, settings(pools_on())).await;

    kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(
        neutron.lines(),
        [
            ADOPTION_LOOKUP.to_string(),
            "GET /v2.0/ports?device_owner=compute%3Akuryr".into(),
            "GET /v2.0/ports/port-used".into(),
            "PUT /v2.0/ports/port-used".into(),
        ],
        "recycled, never deleted"
    );
    let port = neutron.port("port-used").expect("kept");
    assert_eq!((&port["device_id"], &port["name"]), (&json!(""), &json!(pool_port_name(NODE))));
    let key = PoolKey { node: NODE.into(), network_id: NETWORK.into() };
    assert_eq!(h.ctx.pools.as_ref().expect("pools").free(&key), 1);
    assert_eq!(api.lines(), [format!("PATCH {KP_PATH}?")], "the finalizer goes last");
    assert!(api.calls()[0].body.to_string().contains("remove"), "{}", api.calls()[0].body);
}

/// Without pools, a released pod's port is deleted.
#[tokio::test]
async fn released_port_is_deleted_without_pools() {
    let neutron = NeutronSim::start().await;
    neutron.add_port(port_json("port-used", UID, NODE, "ACTIVE"));
    let kp = deleted_kuryrport();
    let (client, api) = ApiServer::start(kp_server(&kp));
    let h = Harness::new(client, &neutron, settings(None)).await;

    kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(neutron.lines(), [ADOPTION_LOOKUP.to_string(), "DELETE /v2.0/ports/port-used".into()]);
    assert_eq!(api.lines(), [format!("PATCH {KP_PATH}?")]);
}

/// API server answers for GC: empty CRD lists, one live node.
fn gc_server(c: &Call) -> (u16, Value) {
    let list = |kind: &str| {
        (200, json!({"apiVersion": "openstack.org/v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": []}))
    };
    match c.target.split('?').next().unwrap_or_default() {
        "/apis/openstack.org/v1/kuryrnetworks" => list("KuryrNetwork"),
        "/apis/openstack.org/v1/kuryrnetworkpolicies" => list("KuryrNetworkPolicy"),
        "/apis/openstack.org/v1/kuryrloadbalancers" => list("KuryrLoadBalancer"),
        "/api/v1/nodes" => (
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "1"},
                "items": [{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": NODE}}]}),
        ),
        p if c.method == "DELETE" && p.contains("/kuryrports/") => status(200, "Success"),
        _ => default_kube(c),
    }
}

/// A pod port of this cluster whose pod is gone.
fn orphan_port(id: &str, uid: &str) -> Value {
    let mut p = port_json(id, uid, NODE, "ACTIVE");
    p["description"] = json!(format!("kuryr-rs pod port: cluster {CLUSTER}, pod {NS}/gone (uid {uid})"));
    p
}

/// GC sweep hooks that record what they were asked.
#[derive(Default)]
struct Spy(Mutex<Vec<String>>);

impl SweepHooks for Spy {
    fn node_gone(&self, node: &str) {
        self.0.lock().unwrap().push(format!("node_gone {node}"));
    }
    fn release_subport<'a>(&'a self, port_id: &'a str) -> futures_util::future::BoxFuture<'a, Result<bool, Error>> {
        self.0.lock().unwrap().push(format!("release_subport {port_id}"));
        Box::pin(async { Ok(true) })
    }
}

/// GC marks an orphaned pod port on one pass and deletes it on the next only; the port of a
/// live pod is never a candidate. The passes only read the cluster.
#[tokio::test]
async fn gc_deletes_an_orphaned_port_on_its_second_pass_only() {
    let neutron = NeutronSim::start().await;
    neutron.add_port(orphan_port("port-orphan", "dead-uid"));
    neutron.add_port(port_json("port-live", UID, NODE, "ACTIVE"));
    let (client, api) = ApiServer::start(gc_server);
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod());
    let mut marks = Marks::default();

    let r = gc::pass(&h.ctx.rt, &*h.ctx, &mut marks, None, false).await.expect("pass 1");
    let ids = |v: &[gc::Orphan]| v.iter().map(|o| (o.kind, o.id.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&r.marked), [(Kind::Port, "port-orphan".to_string())]);
    assert!(r.swept.is_empty(), "marked, not deleted: {r:?}");
    assert!(!neutron.lines().iter().any(|l| l.starts_with("DELETE")));

    let r = gc::pass(&h.ctx.rt, &*h.ctx, &mut marks, None, false).await.expect("pass 2");
    assert_eq!(ids(&r.swept), [(Kind::Port, "port-orphan".to_string())]);
    let deletes: Vec<String> = neutron.lines().into_iter().filter(|l| l.starts_with("DELETE")).collect();
    assert_eq!(deletes, ["DELETE /v2.0/ports/port-orphan"]);
    assert!(neutron.port("port-live").is_some());
    assert!(api.lines().iter().all(|l| l.starts_with("GET ")), "GC only reads the cluster here: {:?}", api.lines());
}

/// The free pool ports of a deleted node: GC tells the pod path through the hook (before the
/// ports go), deletes them, then the node's pool KuryrPort.
#[tokio::test]
async fn gc_forgets_a_deleted_nodes_pool_through_the_hook() {
    let neutron = NeutronSim::start().await;
    let mut p = port_json("port-pool-gone", "", "node-gone", "DOWN");
    p["name"] = json!(pool_port_name("node-gone"));
    p["description"] = json!(pool_description(CLUSTER, "node-gone"));
    p["tags"] = json!([]);
    neutron.add_port(p);
    let (client, api) = ApiServer::start(gc_server);
    let h = Harness::new(client, &neutron, settings(None)).await;
    let spy = Spy::default();
    let mut marks = Marks::default();

    gc::pass(&h.ctx.rt, &spy, &mut marks, None, false).await.expect("pass 1");
    assert!(spy.0.lock().unwrap().is_empty(), "nothing forgotten on the marking pass");
    let r = gc::pass(&h.ctx.rt, &spy, &mut marks, None, false).await.expect("pass 2");

    assert_eq!(r.swept.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["port-pool-gone"]);
    assert_eq!(*spy.0.lock().unwrap(), ["node_gone node-gone"]);
    assert!(neutron.port("port-pool-gone").is_none());
    let pool_kp = format!(
        "DELETE /apis/openstack.org/v1/namespaces/{}/kuryrports/{}?",
        kuryr_core::names::POOL_NAMESPACE,
        kuryr_core::names::pool_kuryrport_name("node-gone")
    );
    assert_eq!(api.lines().into_iter().filter(|l| !l.starts_with("GET ")).collect::<Vec<_>>(), [pool_kp]);
}
