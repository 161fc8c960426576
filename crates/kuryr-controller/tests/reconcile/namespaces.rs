//! Namespace networks without the stack (`pod_subnets_driver = namespace`): the KuryrNetwork
//! reconciler's create steps (each recorded in status), adoption of a network a crash left,
//! teardown with and without a status (found by the owner stamp), the wait for the namespace's
//! last KuryrPort; the Namespace reconciler's KuryrNetwork; and the pod path waiting,
//! event-driven, for its namespace's network.

use super::fixtures::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer, ObjectRef};
use kube::runtime::watcher;
use kuryr_controller::namespace::neutron::{network_description, Owner};
use kuryr_controller::namespace::{kuryrnetwork, namespaces, NamespaceSettings, Namespaces, Triggers};
use kuryr_controller::pod::kuryrport;
use kuryr_core::crd::KuryrNetwork;
use serde_json::{json, Value};
use std::sync::Arc;

const ROUTER: &str = "router-1";
const POOL: &str = "pool-1";
const KN_PATH: &str = "/apis/openstack.org/v1/namespaces/ns/kuryrnetworks/ns";

fn ns_settings() -> NamespaceSettings {
    NamespaceSettings {
        cluster_name: CLUSTER.into(),
        project: "proj".into(),
        tags: vec!["kuryr-rs-test".into(), format!("kuryr-rs-cluster={CLUSTER}")],
        router: ROUTER.into(),
        subnet_pool: POOL.into(),
        network_device_mtu: 0,
        excluded: vec!["kuryr-pool".into()],
    }
}

struct Domain {
    d: Arc<Namespaces>,
    triggers: Triggers,
    namespaces: Writer<Namespace>,
    networks: Writer<KuryrNetwork>,
}

fn domain(h: &Harness) -> Domain {
    let (ns_store, namespaces) = reflector::store::<Namespace>();
    let (kn_store, networks) = reflector::store::<KuryrNetwork>();
    let (d, triggers) = Namespaces::new(h.ctx.rt.clone(), ns_settings(), ns_store, kn_store);
    d.set_synced();
    let d = Arc::new(d);
    h.ctx.rt.set_pod_subnets(d.clone());
    Domain { d, triggers, namespaces, networks }
}

fn namespace() -> Namespace {
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "uid": "ns-uid-1", "labels": {"team": "a"}}}),
    )
    .unwrap()
}

fn kuryrnetwork(status: Value) -> KuryrNetwork {
    serde_json::from_value(json!({
        "apiVersion": "openstack.org/v1", "kind": "KuryrNetwork",
        "metadata": {"name": NS, "namespace": NS, "uid": "kn-uid-1", "resourceVersion": "1",
            "finalizers": ["kuryrnetwork.finalizers.kuryr.openstack.org"]},
        "spec": {"nsName": NS, "projectId": "proj", "nsLabels": {"team": "a"}},
        "status": status
    }))
    .unwrap()
}

fn deleting(mut k: KuryrNetwork) -> KuryrNetwork {
    k.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2025-01-01T00:00:00Z".parse().unwrap()));
    k
}

fn owner() -> Owner {
    Owner { namespace: NS.into(), uid: "kn-uid-1".into(), namespace_uid: Some("ns-uid-1".into()), project: "proj".into() }
}

/// API server: writes to the KuryrNetwork succeed (answered with `k`).
fn kn_server(k: &KuryrNetwork) -> impl Fn(&Call) -> (u16, Value) + Send + Sync + 'static {
    let k = serde_json::to_value(k).unwrap();
    let kp = serde_json::to_value(kuryrport()).unwrap();
    move |c: &Call| match (c.method.as_str(), c.target.split('?').next().unwrap_or_default()) {
        ("PATCH", p) if p.starts_with(KN_PATH) => (200, k.clone()),
        ("POST", "/apis/openstack.org/v1/namespaces/ns/kuryrnetworks") => (201, c.body.clone()),
        ("PATCH", p) if p.starts_with("/apis/openstack.org/v1/namespaces/ns/kuryrports/") => (200, kp.clone()),
        _ => default_kube(c),
    }
}

fn stamped_network(id: &str) -> Value {
    json!({"id": id, "name": "ns-uid-1/ns", "description": network_description(CLUSTER, &owner()), "status": "ACTIVE",
        "admin_state_up": true, "mtu": 1442, "subnets": [], "tags": [], "project_id": "proj"})
}

/// A new KuryrNetwork: network (stamped, then tagged), subnet from the pool (tagged), router
/// interface; each id written to status as soon as it exists, in upstream's order.
#[tokio::test]
async fn kuryrnetwork_makes_network_subnet_router_interface_and_records_each_step() {
    let neutron = NeutronSim::start().await;
    let k = kuryrnetwork(Value::Null);
    let (client, api) = ApiServer::start(kn_server(&k));
    let h = Harness::new(client, &neutron, settings(None)).await;
    let mut dom = domain(&h);
    dom.namespaces.apply_watcher_event(&watcher::Event::Apply(namespace()));

    let action = kuryrnetwork::reconcile(Arc::new(k), dom.d.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    let desc = network_description(CLUSTER, &owner());
    assert_eq!(
        neutron.decoded_lines(),
        [
            format!("GET /v2.0/networks?description={desc}"),
            "POST /v2.0/networks".to_string(),
            "PUT /v2.0/networks/net-ns-1/tags".into(),
            "GET /v2.0/subnets?network_id=net-ns-1".into(),
            format!("GET /v2.0/subnetpools/{POOL}"),
            "POST /v2.0/subnets".into(),
            "PUT /v2.0/subnets/subnet-ns-2/tags".into(),
            format!("PUT /v2.0/routers/{ROUTER}/add_router_interface"),
        ]
    );
    let net = neutron.network("net-ns-1").expect("network");
    assert_eq!((&net["name"], &net["description"], &net["project_id"]), (&json!("ns-uid-1/ns"), &json!(desc), &json!("proj")));
    assert_eq!(net["tags"], json!(["kuryr-rs-test", "kuryr-rs-cluster=c1"]));
    let post = neutron.body("POST /v2.0/subnets");
    assert_eq!((&post["subnet"]["subnetpool_id"], &post["subnet"]["enable_dhcp"]), (&json!(POOL), &json!(false)));
    assert!(neutron.ports().iter().any(|p| p["device_id"] == ROUTER && p["fixed_ips"][0]["subnet_id"] == "subnet-ns-2"));
    let statuses: Vec<Value> =
        api.calls().iter().filter(|c| c.target.starts_with(&format!("{KN_PATH}/status"))).map(|c| c.body["status"].clone()).collect();
    assert_eq!(
        statuses,
        [
            json!({"netId": "net-ns-1"}),
            json!({"subnetId": "subnet-ns-2", "subnetCIDR": "10.128.2.0/24"}),
            json!({"routerId": ROUTER, "populated": false})
        ],
        "one status write per step, as it happens"
    );
}

/// kill -9 between `POST /networks` and the status write left a stamped, untagged network:
/// the next reconcile adopts it (tags it), never makes a second one; a status that already
/// names the subnet resumes at the router step.
#[tokio::test]
async fn network_left_by_a_crash_is_adopted_and_status_resumes() {
    let neutron = NeutronSim::start().await;
    neutron.add_network(stamped_network("net-old"));
    let k = kuryrnetwork(Value::Null);
    let (client, api) = ApiServer::start(kn_server(&k));
    let h = Harness::new(client, &neutron, settings(None)).await;
    let dom = domain(&h);

    kuryrnetwork::reconcile(Arc::new(k), dom.d.clone()).await.expect("reconcile");

    let lines = neutron.decoded_lines();
    assert!(!lines.contains(&"POST /v2.0/networks".to_string()), "{lines:?}");
    assert_eq!(lines[1], "PUT /v2.0/networks/net-old/tags");
    assert_eq!(api.calls()[0].body["status"], json!({"netId": "net-old"}));

    // A status written up to the subnet: only the router interface is left to do.
    let neutron2 = NeutronSim::start().await;
    neutron2.add_network(stamped_network("net-old"));
    neutron2.add_subnet(
        json!({"id": "sn-old", "network_id": "net-old", "cidr": "10.128.7.0/24", "gateway_ip": "10.128.7.1", "ip_version": 4, "tags": []}),
    );
    let k = kuryrnetwork(json!({"netId": "net-old", "subnetId": "sn-old", "subnetCIDR": "10.128.7.0/24"}));
    let (client, api) = ApiServer::start(kn_server(&k));
    let h = Harness::new(client, &neutron2, settings(None)).await;
    let dom = domain(&h);
    kuryrnetwork::reconcile(Arc::new(k), dom.d.clone()).await.expect("reconcile");
    assert_eq!(neutron2.lines(), ["GET /v2.0/subnets/sn-old".to_string(), format!("PUT /v2.0/routers/{ROUTER}/add_router_interface")]);
    assert_eq!(api.calls()[0].body["status"], json!({"routerId": ROUTER, "populated": false}));
}

/// A KuryrNetwork deleted before its status was ever written: the network its owner stamp finds
/// is detached from the router and deleted with its subnet, then the finalizer goes.
#[tokio::test]
async fn deleted_kuryrnetwork_without_status_leaves_nothing_behind() {
    let neutron = NeutronSim::start().await;
    let k = kuryrnetwork(Value::Null);
    let (client, _api) = ApiServer::start(kn_server(&k));
    let h = Harness::new(client, &neutron, settings(None)).await;
    let dom = domain(&h);
    // What a crashed first attempt made: all three, none recorded.
    kuryrnetwork::reconcile(Arc::new(k.clone()), dom.d.clone()).await.expect("create");
    assert!(neutron.network("net-ns-1").is_some());

    let k = deleting(k);
    let (client, api) = ApiServer::start(kn_server(&k));
    let h = Harness::new(client, &neutron, settings(None)).await;
    let dom = domain(&h);
    let before = neutron.lines().len();
    kuryrnetwork::reconcile(Arc::new(k), dom.d.clone()).await.expect("cleanup");

    let lines: Vec<String> = neutron.decoded_lines().split_off(before);
    assert!(lines.contains(&format!("PUT /v2.0/routers/{ROUTER}/remove_router_interface")), "{lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("DELETE /v2.0/networks/net-ns-1"), "{lines:?}");
    assert!(neutron.network("net-ns-1").is_none() && neutron.subnet("subnet-ns-2").is_none());
    assert!(neutron.ports().is_empty(), "router interface gone: {:?}", neutron.ports());
    assert_eq!(api.lines(), [format!("PATCH {KN_PATH}?")], "then the finalizer");
    assert!(api.calls()[0].body.to_string().contains("remove"));
}

/// The namespace still has a KuryrPort: the router interface goes, the network waits (no
/// delete, finalizer kept); the KuryrPort's deletion event wakes the KuryrNetwork.
#[tokio::test]
async fn network_deletion_waits_for_the_namespaces_last_kuryrport() {
    let neutron = NeutronSim::start().await;
    let status = json!({"netId": "net-ns-1", "subnetId": "subnet-ns-2", "subnetCIDR": "10.128.2.0/24", "routerId": ROUTER});
    let k = kuryrnetwork(Value::Null);
    let (client, _first) = ApiServer::start(kn_server(&k));
    let h = Harness::new(client, &neutron, settings(None)).await;
    let dom = domain(&h);
    kuryrnetwork::reconcile(Arc::new(k), dom.d.clone()).await.expect("create");

    let k = deleting(kuryrnetwork(status));
    let (client, api) = ApiServer::start(kn_server(&k));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_kuryrport(&kuryrport());
    let mut dom = domain(&h);
    dom.networks.apply_watcher_event(&watcher::Event::Apply(k.clone()));
    let action = kuryrnetwork::reconcile(Arc::new(k), dom.d.clone()).await.expect("cleanup");

    assert_eq!(action, Action::await_change());
    assert!(neutron.network("net-ns-1").is_some(), "the network waits for the KuryrPort");
    assert!(!neutron.ports().iter().any(|p| p["device_id"] == ROUTER), "detached at once");
    assert!(api.lines().is_empty(), "finalizer kept: {:?}", api.lines());
    dom.d.on_kuryrport_event(&watcher::Event::Delete(kuryrport()));
    let woken = dom.triggers.networks.try_recv().expect("the KuryrNetwork is woken");
    assert_eq!(woken, ObjectRef::new(NS).within(NS));
}

/// A KuryrPort whose namespace has no network: no Neutron call, no error (no back-off); the
/// Namespace is triggered and makes the KuryrNetwork; once it is ready the KuryrPort is
/// re-triggered and its port goes on the namespace's subnet.
#[tokio::test]
async fn kuryrport_waits_for_its_namespace_network_and_is_woken_when_ready() {
    let neutron = NeutronSim::start().await;
    let kp = kuryrport();
    let (client, api) = ApiServer::start(kn_server(&kuryrnetwork(Value::Null)));
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    h.add_pod(&pod());
    h.add_kuryrport(&kp);
    let (kp_tx, mut kp_rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = h.ctx.rt.hooks.kuryrport_trigger.set(kp_tx);
    let mut dom = domain(&h);
    dom.namespaces.apply_watcher_event(&watcher::Event::Apply(namespace()));

    let action = kuryrport::reconcile(Arc::new(kp.clone()), h.ctx.clone()).await.expect("waits, no error");
    assert_eq!(action, Action::await_change());
    assert!(neutron.lines().is_empty(), "{:?}", neutron.lines());
    let asked = dom.triggers.namespaces.try_recv().expect("the namespace is asked for its network");
    assert_eq!(asked, ObjectRef::new(NS));

    // The Namespace reconcile makes the KuryrNetwork (the namespace has a KuryrPort).
    namespaces::reconcile(Arc::new(namespace()), dom.d.clone()).await.expect("namespace");
    let post = api.calls().into_iter().find(|c| c.method == "POST").expect("KuryrNetwork created");
    assert_eq!(post.body["metadata"]["finalizers"], json!(["kuryrnetwork.finalizers.kuryr.openstack.org"]));
    assert_eq!(post.body["spec"], json!({"nsName": NS, "projectId": "proj", "nsLabels": {"team": "a"}}));

    // Ready: the waiting KuryrPort is triggered once.
    let ready = kuryrnetwork(json!({"netId": "net-9", "subnetId": "subnet-9", "subnetCIDR": "10.128.9.0/24", "routerId": ROUTER}));
    dom.networks.apply_watcher_event(&watcher::Event::Apply(ready.clone()));
    dom.d.on_network_event(&watcher::Event::Apply(ready.clone()));
    assert_eq!(kp_rx.try_recv().expect("woken"), ObjectRef::from_obj(&kp));
    dom.d.on_network_event(&watcher::Event::Apply(ready));
    assert!(kp_rx.try_recv().is_err(), "once per readiness");

    kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect("port");
    let body = neutron.body("POST /v2.0/ports");
    assert_eq!(body["port"]["fixed_ips"], json!([{"subnet_id": "subnet-9"}]), "on the namespace's subnet");
}

/// A namespace with nothing to wire gets no KuryrNetwork (upstream made one only for a namespace
/// with pods); nor does the warm pools' namespace.
#[tokio::test]
async fn namespace_without_pods_gets_no_network() {
    let neutron = NeutronSim::start().await;
    let (client, api) = ApiServer::start(default_kube);
    let h = Harness::new(client, &neutron, settings(None)).await;
    let dom = domain(&h);
    namespaces::reconcile(Arc::new(namespace()), dom.d.clone()).await.expect("namespace");
    let mut pool_ns = namespace();
    pool_ns.metadata.name = Some("kuryr-pool".into());
    namespaces::reconcile(Arc::new(pool_ns), dom.d.clone()).await.expect("pool namespace");
    assert!(api.lines().is_empty(), "{:?}", api.lines());
}

/// A namespace whose pods are all wired already (a cluster switched from the default driver, or
/// pods another configuration wired) needs no network until a new pod comes.
#[tokio::test]
async fn namespace_with_wired_pods_only_gets_no_network() {
    let neutron = NeutronSim::start().await;
    let (client, api) = ApiServer::start(default_kube);
    let mut h = Harness::new(client, &neutron, settings(None)).await;
    let mut kp = kuryrport();
    kp.status =
        serde_json::from_value(json!({"vifs": {"eth0": {"default": true, "vif": {"portId": "port-used", "active": true}}}})).unwrap();
    h.add_pod(&pod());
    h.add_kuryrport(&kp);
    let dom = domain(&h);
    namespaces::reconcile(Arc::new(namespace()), dom.d.clone()).await.expect("namespace");
    assert!(api.lines().is_empty(), "{:?}", api.lines());
    assert!(!dom.d.needs_network(NS));
    h.add_kuryrport(&kuryrport());
    assert!(dom.d.needs_network(NS), "a KuryrPort without its VIF needs it");
}

/// A namespace network no KuryrNetwork names any more (its KuryrNetwork removed by hand, say):
/// GC finds it by the cluster tag the reconciler put on it, marks it, and on its second pass
/// removes the router interface, then the subnet and the network.
#[tokio::test]
async fn gc_collects_a_namespace_network_nothing_references() {
    let neutron = NeutronSim::start().await;
    let k = kuryrnetwork(Value::Null);
    let (client, _first) = ApiServer::start(kn_server(&k));
    let h = Harness::new(client, &neutron, settings(None)).await;
    let dom = domain(&h);
    kuryrnetwork::reconcile(Arc::new(k), dom.d.clone()).await.expect("create");

    // GC's view of the cluster: no KuryrNetwork at all.
    let (client, _api) = ApiServer::start(|c: &Call| match c.target.split('?').next().unwrap_or_default() {
        p if p.starts_with("/apis/openstack.org/v1/") => {
            (200, json!({"apiVersion": "openstack.org/v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}))
        }
        "/api/v1/nodes" => (
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "1"}, "items": []}),
        ),
        _ => default_kube(c),
    });
    let h = Harness::new(client, &neutron, settings(None)).await;
    let mut marks = kuryr_controller::gc::Marks::default();
    let r = kuryr_controller::gc::pass(&h.ctx.rt, &*h.ctx, &mut marks, None, false).await.expect("pass 1");
    let mut kinds: Vec<_> = r.marked.iter().map(|o| (o.kind, o.id.clone())).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            (kuryr_controller::gc::Kind::RouterInterface, "rif-3".to_string()),
            (kuryr_controller::gc::Kind::Subnet, "subnet-ns-2".into()),
            (kuryr_controller::gc::Kind::Network, "net-ns-1".into())
        ]
    );
    assert!(neutron.network("net-ns-1").is_some(), "marked, not deleted");
    let r = kuryr_controller::gc::pass(&h.ctx.rt, &*h.ctx, &mut marks, None, false).await.expect("pass 2");
    assert_eq!(r.swept.len(), 3, "all three swept, in dependency order: {r:?}");
    assert!(neutron.network("net-ns-1").is_none() && neutron.subnet("subnet-ns-2").is_none());
    assert!(neutron.ports().is_empty(), "router interface gone: {:?}", neutron.ports());
}
