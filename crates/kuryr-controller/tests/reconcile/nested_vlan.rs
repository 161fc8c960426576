//! The nested-vlan driver through the KuryrPort reconciler (`pod_vif_driver = nested-vlan`): the
//! node's parent port found by the Node's InternalIP, its trunk, the pod's port created and
//! attached as a VLAN subport; no parent port → no port at all; release detaches each subport
//! from its trunk before deleting it, and finds unrecorded ports by their description; GC's hook
//! releases an orphaned subport the same way, whatever the driver.

use crate::fixtures::*;
use kube::runtime::controller::Action;
use kuryr_controller::pod::driver::PortDriver;
use kuryr_controller::pod::kuryrport;
use kuryr_controller::runtime::error::Error;
use kuryr_controller::runtime::hooks::SweepHooks;
use kuryr_controller::runtime::settings::{PodVif, Settings};
use kuryr_core::crd::KuryrPort;
use kuryr_core::vif::{Binding, Vif};
use serde_json::{json, Value};
use std::sync::Arc;

const KP_PATH: &str = "/apis/openstack.org/v1/namespaces/ns/kuryrports/web-0";
const NODE_PATH: &str = "/api/v1/nodes/node-1";
const VM_IP: &str = "192.168.77.10";
const PARENT: &str = "port-vm";
const TRUNK: &str = "trunk-1";
const ADOPTION_LOOKUP: &str = "GET /v2.0/ports?device_id=6f1d2a4e-0000-4000-8000-000000000001&device_owner=compute%3Akuryr";

fn nested_settings() -> Settings {
    Settings { pod_vif: PodVif::NestedVlan, ..settings(None) }
}

/// The description of pod `web-0`'s port, its nested-vlan idempotency key.
fn description() -> String {
    format!("kuryr-rs pod port: cluster {CLUSTER}, pod {NS}/web-0 (uid {UID})")
}

/// The adoption lookup by description on the pod network, query decoded.
fn description_lookup() -> String {
    format!("GET /v2.0/ports?description={}&network_id={NETWORK}", description())
}

/// API server answers: Node `node-1` with the VM's InternalIP, writes to the KuryrPort succeed.
fn nested_server(kp: &KuryrPort) -> impl Fn(&Call) -> (u16, Value) + Send + Sync + 'static {
    let kp = serde_json::to_value(kp).unwrap();
    move |c: &Call| match (c.method.as_str(), c.target.split('?').next().unwrap_or_default()) {
        ("GET", NODE_PATH) => (
            200,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
                   "status": {"addresses": [{"type": "Hostname", "address": NODE}, {"type": "InternalIP", "address": VM_IP}]}}),
        ),
        ("PATCH", p) if p.starts_with(KP_PATH) => (200, kp.clone()),
        _ => default_kube(c),
    }
}

/// The node VM's port with its trunk, which already has a subport on VLAN 3.
fn node_vm(neutron: &NeutronSim) {
    neutron.add_port(json!({
        "id": PARENT, "name": "vm", "network_id": "net-workers", "status": "ACTIVE", "device_owner": "compute:nova",
        "fixed_ips": [{"subnet_id": "subnet-workers", "ip_address": VM_IP}],
        "trunk_details": {"trunk_id": TRUNK, "sub_ports": [{"port_id": "port-other", "segmentation_type": "vlan", "segmentation_id": 3}]}
    }));
    neutron.add_trunk(json!({
        "id": TRUNK, "port_id": PARENT, "status": "ACTIVE", "admin_state_up": true,
        "sub_ports": [{"port_id": "port-other", "segmentation_type": "vlan", "segmentation_id": 3}]
    }));
}

/// The error inside the finalizer's apply.
fn apply_error(err: &Error) -> Option<&Error> {
    match err {
        Error::Finalizer(f) => match f.as_ref() {
            kube::runtime::finalizer::Error::ApplyFailed(e) => Some(e),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn the_driver_is_chosen_from_the_settings() {
    assert_eq!(PortDriver::from_settings(&nested_settings()), PortDriver::NestedVlan);
    assert_eq!(PortDriver::from_settings(&settings(None)), PortDriver::Neutron);
}

/// Node InternalIP → parent port → trunk; the pod's port is created without host and device id
/// (a subport's are Neutron's), tagged, then attached on the first VLAN id past the trunk's
/// highest one; the VIF written is a nested-vlan one with that id.
#[tokio::test]
async fn pod_port_becomes_a_vlan_subport_of_its_nodes_trunk() {
    let neutron = NeutronSim::start().await;
    node_vm(&neutron);
    let kp = kuryrport();
    let (client, api) = ApiServer::start(nested_server(&kp));
    let mut h = Harness::new(client, &neutron, nested_settings()).await;
    assert_eq!(h.ctx.driver, PortDriver::NestedVlan);
    h.add_pod(&pod());

    let action = kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert_eq!(
        neutron.decoded_lines(),
        [
            format!("GET /v2.0/ports?fixed_ips=ip_address={VM_IP}"),
            format!("GET /v2.0/subnets/{SUBNET}"),
            description_lookup(),
            "POST /v2.0/ports".into(),
            "PUT /v2.0/ports/port-new-1/tags".into(),
            format!("GET /v2.0/trunks/{TRUNK}"),
            format!("PUT /v2.0/trunks/{TRUNK}/add_subports"),
            format!("GET /v2.0/networks/{NETWORK}"),
        ]
    );
    let create = &neutron.body("POST /v2.0/ports")["port"];
    assert_eq!(create["description"], json!(description()));
    assert_eq!((&create["network_id"], &create["device_owner"]), (&json!(NETWORK), &json!("compute:kuryr")));
    assert!(create.get("device_id").is_none() && create.get("binding:host_id").is_none(), "{create}");
    assert_eq!(
        neutron.body(&format!("PUT /v2.0/trunks/{TRUNK}/add_subports")),
        json!({"sub_ports": [{"port_id": "port-new-1", "segmentation_type": "vlan", "segmentation_id": 4}]})
    );
    let subports = neutron.trunk(TRUNK).expect("trunk")["sub_ports"].clone();
    assert!(subports.as_array().unwrap().iter().any(|s| s["port_id"] == "port-new-1" && s["segmentation_id"] == 4), "{subports}");

    assert_eq!(api.lines(), [format!("GET {NODE_PATH}"), format!("PATCH {KP_PATH}/status?")]);
    let entry = &api.calls()[1].body["status"]["vifs"]["eth0"];
    assert_eq!(entry["default"], true);
    assert_eq!(entry["vif"]["versioned_object.name"], "VIFVlanNested", "upstream's os-vif class");
    let vif = Vif::from_status_value(&entry["vif"]).expect("VIF");
    assert_eq!((vif.port_id.as_str(), &vif.binding), ("port-new-1", &Binding::NestedVlan { vlan_id: 4 }));
    api.wait_event("KuryrPortUpdatedWithVIFs").await;
}

/// No Neutron port holds the Node's InternalIP: the reconcile fails with the deployment error
/// (the node, its IP, why) before any port is created, and the pod gets a Warning Event.
#[tokio::test]
async fn node_without_a_parent_port_gets_no_pod_port() {
    let neutron = NeutronSim::start().await;
    let kp = kuryrport();
    let (client, api) = ApiServer::start(nested_server(&kp));
    let mut h = Harness::new(client, &neutron, nested_settings()).await;
    h.add_pod(&pod());

    let err = kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect_err("no parent port");

    match apply_error(&err) {
        Some(Error::NodeTrunk { node, ip, reason }) => {
            assert_eq!((node.as_str(), ip.as_str()), (NODE, VM_IP));
            assert!(reason.contains("no Neutron port has this IP"), "{reason}");
        }
        other => panic!("expected NodeTrunk, got {other:?} ({err:?})"),
    }
    assert_eq!(neutron.decoded_lines(), [format!("GET /v2.0/ports?fixed_ips=ip_address={VM_IP}")], "no port created");
    assert_eq!(api.lines(), [format!("GET {NODE_PATH}")], "no VIF written");
    let ev = api.wait_event("KuryrPortCreateFailed").await;
    assert_eq!((&ev["type"], &ev["regarding"]["kind"]), (&json!("Warning"), &json!("Pod")));
    assert!(ev["note"].as_str().unwrap_or_default().contains(VM_IP), "{ev}");
}

/// A pod port as nested-vlan makes it: no device id, the exact description; `vlan`: attached
/// to the node's trunk with that id.
fn pod_subport(neutron: &NeutronSim, id: &str, vlan: Option<u32>) {
    let mut p = port_json(id, "", "", "ACTIVE");
    p["description"] = json!(description());
    if let Some(vlan) = vlan {
        p["device_owner"] = json!("trunk:subport");
        p["binding:profile"] = json!({"parent_name": PARENT, "tag": vlan});
        let mut t = neutron.trunk(TRUNK).expect("trunk");
        t["sub_ports"].as_array_mut().unwrap().push(json!({"port_id": id, "segmentation_type": "vlan", "segmentation_id": vlan}));
        neutron.add_trunk(t);
    }
    neutron.add_port(p);
}

/// The KuryrPort is deleted: its recorded subport is found again by description, detached from
/// the trunk its parent port names, then deleted; a port of the pod that a crash left unrecorded
/// and unattached (found by description only) is deleted; then the finalizer goes.
#[tokio::test]
async fn release_detaches_each_subport_before_deleting_it() {
    let neutron = NeutronSim::start().await;
    node_vm(&neutron);
    pod_subport(&neutron, "port-sub", Some(4));
    pod_subport(&neutron, "port-left", None);
    let mut kp = kuryrport();
    kp.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2025-01-01T00:00:00Z".parse().unwrap()));
    kp.status =
        serde_json::from_value(json!({"vifs": {"eth0": {"default": true, "vif": {"portId": "port-sub", "active": true}}}})).unwrap();
    let (client, api) = ApiServer::start(nested_server(&kp));
    let h = Harness::new(client, &neutron, nested_settings()).await;

    kuryrport::reconcile(Arc::new(kp), h.ctx.clone()).await.expect("reconcile");

    assert_eq!(
        neutron.decoded_lines(),
        [
            // Ports stamped with the pod UID (none: subports have no device id), then by description.
            ADOPTION_LOOKUP.replace("%3A", ":"),
            format!("GET /v2.0/subnets/{SUBNET}"),
            description_lookup(),
            // Not a subport: deleted at once.
            "GET /v2.0/ports/port-left".into(),
            "DELETE /v2.0/ports/port-left".into(),
            // A subport: its parent port names the trunk; detached, then deleted.
            "GET /v2.0/ports/port-sub".into(),
            format!("GET /v2.0/ports/{PARENT}"),
            format!("PUT /v2.0/trunks/{TRUNK}/remove_subports"),
            "DELETE /v2.0/ports/port-sub".into(),
        ]
    );
    assert_eq!(neutron.body(&format!("PUT /v2.0/trunks/{TRUNK}/remove_subports")), json!({"sub_ports": [{"port_id": "port-sub"}]}));
    assert!(neutron.port("port-sub").is_none() && neutron.port("port-left").is_none());
    let subports = neutron.trunk(TRUNK).expect("trunk")["sub_ports"].clone();
    assert_eq!(
        subports,
        json!([{"port_id": "port-other", "segmentation_type": "vlan", "segmentation_id": 3}]),
        "only the other subport stays"
    );
    assert_eq!(api.lines(), [format!("PATCH {KP_PATH}?")], "the finalizer goes last; the Node was not needed");
}

/// GC's sweep hook (whatever the driver: here neutron-vif): an orphaned subport is detached from
/// the trunk its parent port names, then deleted; one already gone is reported as such.
#[tokio::test]
async fn gc_hook_detaches_an_orphaned_subport_then_deletes_it() {
    let neutron = NeutronSim::start().await;
    node_vm(&neutron);
    pod_subport(&neutron, "port-sub", Some(5));
    let (client, api) = ApiServer::start(default_kube);
    let h = Harness::new(client, &neutron, settings(None)).await;
    assert_eq!(h.ctx.driver, PortDriver::Neutron);

    assert!(h.ctx.release_subport("port-sub").await.expect("released"), "it existed");

    assert_eq!(
        neutron.lines(),
        [
            "GET /v2.0/ports/port-sub".to_string(),
            format!("GET /v2.0/ports/{PARENT}"),
            format!("PUT /v2.0/trunks/{TRUNK}/remove_subports"),
            "DELETE /v2.0/ports/port-sub".into(),
        ]
    );
    assert!(neutron.port("port-sub").is_none());
    assert!(!h.ctx.release_subport("port-sub").await.expect("gone"), "already gone");
    assert!(api.lines().is_empty(), "{:?}", api.lines());
}
