//! kuryr-controller with `[kubernetes] pod_vif_driver = nested-vlan` against the REAL local stack
//! (Kubernetes 1.34 + Neutron ML2/OVN with the `trunk` service plugin, `hack/stack/stack up`).
//!
//! The test builds what a Kubernetes node VM on OpenStack has: a worker network and subnet, the
//! "VM" port on it and a trunk with that port as parent (plus pre-existing subports), and a Node
//! object (a made-up name; the stack's kubelet node is not touched) whose InternalIP is the VM
//! port's IP. Pods are bound to that Node through `spec.nodeName` in a fresh namespace: no kubelet
//! runs them, the controller only needs the Pod objects. The controller runs in-process, scoped
//! to the namespace, with the stack's kuryr.conf switched to nested-vlan.
//!
//! Everything the test creates (namespace, pods, Nodes, Neutron ports, trunk, network, the OVS
//! port and netns of the plugged "VM") is removed even when it fails.
//!
//! Run (one in-process controller on the stack at a time):
//! `flock /tmp/kuryr-controller-stack.lock cargo test -p kuryr-controller --test nested -- --include-ignored`

mod common;

use common::{push, take, unique, wait_for, Stack};
use futures_util::FutureExt;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use kuryr_controller::pod::driver::nested::SUBPORT_OWNER;
use kuryr_controller::pod::ports::{description, PodPortRequest};
use kuryr_controller::{start, Options, Running};
use kuryr_core::config::PodVifDriver;
use kuryr_core::crd::KuryrPort;
use kuryr_core::vif::{Binding, Vif};
use kuryr_openstack::neutron::{FixedIpRequest, NetworkCreate, PortCreate, SubPort, SubnetCreate, TrunkCreate};
use kuryr_openstack::Query;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);
/// VLAN ids of the subports the trunk has before the controller starts.
const PRE_EXISTING: [u32; 2] = [1, 3];

/// What the test made, for the cleanup.
#[derive(Default)]
struct Scratch {
    namespaces: Mutex<Vec<String>>,
    nodes: Mutex<Vec<String>>,
    /// Neutron port names (`<ns>/<pod>` for pods' ports).
    port_names: Mutex<Vec<String>>,
    ports: Mutex<Vec<String>>,
    trunks: Mutex<Vec<String>>,
    subnets: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    ovs_ports: Mutex<Vec<String>>,
    netns: Mutex<Vec<String>>,
}

impl Stack {
    fn var(&self, k: &str) -> String {
        self.env.get(k).cloned().unwrap_or_else(|| panic!("{k} missing from stack.env"))
    }

    /// The stack's kuryr.conf with `pod_vif_driver = nested-vlan` and the worker subnet, for the
    /// test's namespace only.
    fn options(&self, namespace: &str, worker_subnet: &str) -> Options {
        let mut config = self.config.clone();
        config.kubernetes.pod_vif_driver = PodVifDriver::NestedVlan;
        config.worker_nodes_subnets = vec![worker_subnet.to_string()];
        let mut o = Options::from_config(&config, self.kube.clone(), "kuryr-rs-test").expect("options");
        o.namespace = Some(namespace.to_string());
        o.install_crds = true;
        o.health_addr = None;
        o.metrics_addr = None;
        o.gc = None;
        o
    }
}

async fn create_node(stack: &Stack, scratch: &Scratch, name: &str, ip: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kuryr-rs-test": "nested"}},
        "spec": {"taints": [{"key": "kuryr-rs-test/no-kubelet", "effect": "NoSchedule"}]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}
    }))
    .expect("node");
    let api = Api::<Node>::all(stack.client.clone());
    let created = api.create(&PostParams::default(), &node).await.expect("create node");
    push(&scratch.nodes, name);
    if created.status.as_ref().and_then(|s| s.addresses.as_ref()).is_none_or(|a| a.is_empty()) {
        let patch = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("node status");
    }
}

async fn create_pod(stack: &Stack, scratch: &Scratch, ns: &str, name: &str, node: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "nodeName": node,
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never"}]
        }
    }))
    .expect("pod");
    push(&scratch.port_names, &format!("{ns}/{name}"));
    Api::<Pod>::namespaced(stack.client.clone(), ns).create(&PostParams::default(), &pod).await.expect("create pod")
}

/// The KuryrPort's default VIF once written (and satisfying `pred`).
async fn vif_of(stack: &Stack, ns: &str, name: &str, pred: impl Fn(&Vif) -> bool) -> Vif {
    let api: Api<KuryrPort> = Api::namespaced(stack.client.clone(), ns);
    wait_for(&format!("KuryrPort {ns}/{name} with a VIF"), WAIT, || async {
        let kp = api.get_opt(name).await.expect("get kuryrport")?;
        let (_, vif) = kp.status.as_ref()?.default_vif()?;
        let vif = vif.expect("readable VIF");
        pred(&vif).then_some(vif)
    })
    .await
}

fn vlan(vif: &Vif) -> u16 {
    match vif.binding {
        Binding::NestedVlan { vlan_id } => vlan_id,
        ref other => panic!("port {}: binding {other:?}, not nested-vlan", vif.port_id),
    }
}

async fn subports(stack: &Stack, trunk: &str) -> Vec<SubPort> {
    stack.neutron.get_trunk(trunk).await.expect("get trunk").sub_ports
}

async fn pod_events(stack: &Stack, ns: &str, pod: &str) -> Vec<(String, String)> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
    let evs = Api::<Event>::namespaced(stack.client.clone(), ns).list(&lp).await.expect("list events");
    evs.items.into_iter().map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default())).collect()
}

/// Force-deletes pods (no kubelet runs them, so a graceful delete would never finish).
async fn force_delete_pods(stack: &Stack, ns: &str) {
    let api = Api::<Pod>::namespaced(stack.client.clone(), ns);
    let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
    for p in api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        let _ = api.delete(&p.name_any(), &dp).await;
    }
}

async fn strip_finalizers(stack: &Stack, ns: &str) {
    let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let pods = Api::<Pod>::namespaced(stack.client.clone(), ns);
    for p in pods.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        let _ = pods.patch(&p.name_any(), &PatchParams::default(), &strip).await;
    }
    let kps = Api::<KuryrPort>::namespaced(stack.client.clone(), ns);
    for k in kps.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        let _ = kps.patch(&k.name_any(), &PatchParams::default(), &strip).await;
    }
}

/// Removes everything the test made. The controller still runs while the pods go, so their
/// ports are released the normal way; whatever is left is removed directly.
async fn cleanup(stack: &Stack, scratch: &Scratch, controller: Option<Running>) {
    let nss = take(&scratch.namespaces);
    let deadline = Instant::now() + Duration::from_secs(60);
    for ns in &nss {
        force_delete_pods(stack, ns).await;
        let pods = Api::<Pod>::namespaced(stack.client.clone(), ns);
        while controller.is_some()
            && Instant::now() < deadline
            && pods.list(&ListParams::default()).await.is_ok_and(|l| !l.items.is_empty())
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if let Some(c) = controller {
        c.shutdown().await;
    }
    let ns_api = Api::<Namespace>::all(stack.client.clone());
    for ns in &nss {
        strip_finalizers(stack, ns).await;
        force_delete_pods(stack, ns).await;
        let _ = ns_api.delete(ns, &DeleteParams::default()).await;
    }
    let node_api = Api::<Node>::all(stack.client.clone());
    for n in take(&scratch.nodes) {
        let _ = node_api.delete(&n, &DeleteParams::default()).await;
    }
    if let Ok(ovs) = kuryr_ovsdb::Ovs::connect_default().await {
        for p in take(&scratch.ovs_ports) {
            let _ = ovs.del_port("br-int", &p).await;
        }
    }
    for n in take(&scratch.netns) {
        let _ = kuryr_netplumb::Netns::delete_named(&n);
    }
    let mut ports = take(&scratch.ports);
    for name in take(&scratch.port_names) {
        if let Ok(found) = stack.neutron.list_ports(&Query::new().eq("name", &name)).await {
            ports.extend(found.into_iter().map(|p| p.id));
        }
    }
    for t in take(&scratch.trunks) {
        if let Ok(trunk) = stack.neutron.get_trunk(&t).await {
            let ids: Vec<&str> = trunk.sub_ports.iter().map(|s| s.port_id.as_str()).collect();
            if !ids.is_empty() {
                let _ = stack.neutron.remove_subports(&t, &ids).await;
            }
        }
        if let Err(e) = stack.neutron.delete_trunk(&t).await {
            eprintln!("cleanup: trunk {t}: {e}");
        }
    }
    for p in ports {
        if let Ok(true) = stack.neutron.delete_port(&p).await {
            eprintln!("cleanup: deleted Neutron port {p}");
        }
    }
    for s in take(&scratch.subnets) {
        let _ = stack.neutron.delete_subnet(&s).await;
    }
    for n in take(&scratch.networks) {
        if let Err(e) = stack.neutron.delete_network(&n).await {
            eprintln!("cleanup: network {n}: {e}");
        }
    }
}

/// The "VM": a worker network and subnet, its port, and a trunk on it.
struct Vm {
    network: String,
    subnet: String,
    parent: String,
    ip: String,
    trunk: String,
}

async fn make_vm(stack: &Stack, scratch: &Scratch, name: &str, with_trunk: bool, network: Option<(&str, &str)>) -> Vm {
    let project = stack.var("K8S_PROJECT_ID");
    let (net, subnet) = match network {
        Some((n, s)) => (n.to_string(), s.to_string()),
        None => {
            let net = stack
                .neutron
                .create_network(&NetworkCreate { name: name.into(), ..NetworkCreate::default() })
                .await
                .expect("worker network");
            push(&scratch.networks, &net.id);
            let sub = stack
                .neutron
                .create_subnet(&SubnetCreate {
                    network_id: net.id.clone(),
                    name: name.into(),
                    cidr: Some("192.168.250.0/24".into()),
                    enable_dhcp: Some(false),
                    ..SubnetCreate::default()
                })
                .await
                .expect("worker subnet");
            push(&scratch.subnets, &sub.id);
            (net.id, sub.id)
        }
    };
    let port = stack
        .neutron
        .create_port(&PortCreate {
            network_id: net,
            name: name.into(),
            fixed_ips: Some(vec![FixedIpRequest::subnet(&subnet)]),
            project_id: project.clone(),
            ..PortCreate::default()
        })
        .await
        .expect("VM port");
    push(&scratch.ports, &port.id);
    let ip = port.ip().expect("VM port IP").to_string();
    let trunk = if with_trunk {
        let t = stack
            .neutron
            .create_trunk(&TrunkCreate { port_id: port.id.clone(), name: name.into(), project_id: project, ..TrunkCreate::default() })
            .await
            .expect("trunk");
        push(&scratch.trunks, &t.id);
        t.id
    } else {
        String::new()
    };
    Vm { network: port.network_id, subnet, parent: port.id, ip, trunk }
}

/// A port on the pod network (a pre-existing subport, or a planted "crash" port).
async fn pod_net_port(stack: &Stack, scratch: &Scratch, name: &str, description: &str) -> String {
    let p = stack
        .neutron
        .create_port(&PortCreate {
            network_id: stack.var("POD_NET_ID"),
            name: name.into(),
            description: description.into(),
            fixed_ips: Some(vec![FixedIpRequest::subnet(stack.var("POD_SUBNET_ID"))]),
            device_owner: kuryr_core::names::DEVICE_OWNER.into(),
            security_groups: Some(vec![stack.var("POD_SG_ID")]),
            project_id: stack.var("K8S_PROJECT_ID"),
            ..PortCreate::default()
        })
        .await
        .expect("pod network port");
    push(&scratch.ports, &p.id);
    p.id
}

/// Plugs the VM port into br-int (veth, the far end in a netns), as Nova would the VM's NIC.
async fn plug_vm(scratch: &Scratch, port_id: &str, mac: &str) {
    let nsn = unique("kc-nested-vm");
    let tap = format!("kn{}", &port_id[..11]);
    push(&scratch.netns, &nsn);
    push(&scratch.ovs_ports, &tap);
    let (t, m, n) = (tap.clone(), mac.to_string(), nsn.clone());
    tokio::task::spawn_blocking(move || {
        let netns = kuryr_netplumb::Netns::create_named(&n).expect("create netns");
        let host = kuryr_netplumb::Netns::current().expect("host netns");
        let plug = kuryr_netplumb::VethPlug {
            host_ifname: t,
            peer_ifname: "eth0".into(),
            mtu: None,
            host_mac: None,
            peer_mac: Some(m.parse().expect("mac")),
        };
        kuryr_netplumb::plug_veth(&host, &netns, &plug).expect("plug veth");
    })
    .await
    .expect("plug task");
    let ovs = kuryr_ovsdb::Ovs::connect_default().await.expect("OVSDB");
    ovs.add_port(
        &kuryr_ovsdb::PortSpec::new("br-int", &tap)
            .iface_id(port_id)
            .attached_mac(mac)
            .iface_status("active")
            .wait_vswitchd(Duration::from_secs(10)),
    )
    .await
    .expect("add the VM port to br-int");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn nested_vlan_pods_get_subports_of_their_nodes_trunk() {
    let t0 = Instant::now();
    let stack = Stack::connect().await;
    let scratch = Scratch::default();
    let controller: tokio::sync::Mutex<Option<Running>> = tokio::sync::Mutex::new(None);
    let r = AssertUnwindSafe(scenario(&stack, &scratch, &controller)).catch_unwind().await;
    let ctl = controller.lock().await.take();
    cleanup(&stack, &scratch, ctl).await;
    eprintln!("nested-vlan test took {:?} (cleanup included)", t0.elapsed());
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

async fn scenario(stack: &Stack, scratch: &Scratch, controller: &tokio::sync::Mutex<Option<Running>>) {
    let name = unique("kc-nested");
    let vm = make_vm(stack, scratch, &name, true, None).await;
    // Another "VM" on the worker subnet whose port has no trunk.
    let bare = make_vm(stack, scratch, &format!("{name}-bare"), false, Some((&vm.network, &vm.subnet))).await;
    let mut pre = Vec::new();
    for v in PRE_EXISTING {
        let id = pod_net_port(stack, scratch, &format!("{name}-pre-{v}"), "kuryr-rs nested test: pre-existing subport").await;
        pre.push(SubPort::vlan(id, v));
    }
    stack.neutron.add_subports(&vm.trunk, &pre).await.expect("pre-existing subports");
    let node = format!("{name}-node");
    create_node(stack, scratch, &node, &vm.ip).await;
    let bare_node = format!("{name}-bare-node");
    create_node(stack, scratch, &bare_node, &bare.ip).await;

    let ns = name.clone();
    let nsobj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"kuryr-rs-test": "nested"}}})).expect("ns");
    Api::<Namespace>::all(stack.client.clone()).create(&PostParams::default(), &nsobj).await.expect("create namespace");
    push(&scratch.namespaces, &ns);

    // A crash between port create and status write: the pod exists and so does a port with its
    // description, recorded nowhere.
    let crash = create_pod(stack, scratch, &ns, "crash-0", &node).await;
    let req = PodPortRequest {
        namespace: ns.clone(),
        name: "crash-0".into(),
        pod_uid: crash.uid().expect("uid"),
        node: node.clone(),
        standalone: false,
    };
    let crash_description = description("kuryr-rs-test", &req);
    let planted = pod_net_port(stack, scratch, &format!("{ns}/crash-0"), &crash_description).await;

    let ctl = start(stack.options(&ns, &vm.subnet)).await.expect("start the controller");
    *controller.lock().await = Some(ctl);

    // Several pods of the node at once.
    let names: Vec<String> = (0..5).map(|i| format!("web-{i}")).collect();
    let t_pods = Instant::now();
    futures_util::future::join_all(names.iter().map(|n| create_pod(stack, scratch, &ns, n, &node))).await;
    let mut all = names.clone();
    all.push("crash-0".into());
    let mut vifs = HashMap::new();
    for n in &all {
        vifs.insert(n.clone(), vif_of(stack, &ns, n, |_| true).await);
    }
    eprintln!("{} nested-vlan VIFs written {:?} after the pods were created", all.len(), t_pods.elapsed());

    let ids: BTreeSet<u16> = vifs.values().map(vlan).collect();
    assert_eq!(ids.len(), all.len(), "VLAN ids are not unique: {:?}", vifs.iter().map(|(n, v)| (n, vlan(v))).collect::<Vec<_>>());
    for v in PRE_EXISTING {
        assert!(!ids.contains(&(v as u16)), "pre-existing VLAN id {v} handed out again: {ids:?}");
    }
    assert_eq!(vifs["crash-0"].port_id, planted, "the planted port of crash-0 is adopted");
    let same = stack.neutron.list_ports(&Query::new().eq("description", &crash_description)).await.expect("list");
    assert_eq!(same.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [planted.as_str()], "no second port for crash-0");

    let sps = subports(stack, &vm.trunk).await;
    assert_eq!(sps.len(), all.len() + PRE_EXISTING.len(), "trunk sub_ports: {sps:?}");
    for p in &pre {
        assert!(sps.contains(p), "pre-existing subport {p:?} changed: {sps:?}");
    }
    let cluster_tag = kuryr_core::names::cluster_tag("kuryr-rs-test");
    for (n, vif) in &vifs {
        assert!(
            sps.contains(&SubPort::vlan(&vif.port_id, u32::from(vlan(vif)))),
            "{n}: port {} with VLAN {} not on the trunk: {sps:?}",
            vif.port_id,
            vlan(vif)
        );
        let port = stack.neutron.get_port(&vif.port_id).await.expect("port");
        assert_eq!(port.device_owner, SUBPORT_OWNER, "{n}");
        assert_eq!(port.name, format!("{ns}/{n}"));
        assert!(port.tags.contains(&cluster_tag), "{n}: tags {:?}", port.tags);
        assert_eq!(port.security_groups, [stack.var("POD_SG_ID")]);
        assert!(!vif.active, "{n}: ACTIVE before the VM port is plugged");
        eprintln!(
            "{n}: port {} vlan {} device_id={:?} device_owner={:?} binding:host_id={:?} vif_type={:?} profile={} status={}",
            port.id,
            vlan(vif),
            port.device_id,
            port.device_owner,
            port.binding_host_id,
            port.binding_vif_type,
            port.binding_profile,
            port.status
        );
    }

    // The VM's NIC comes up on this chassis: OVN claims the parent and its subports.
    let parent = stack.neutron.get_port(&vm.parent).await.expect("VM port");
    plug_vm(scratch, &vm.parent, &parent.mac_address).await;
    let t_plug = Instant::now();
    for n in &all {
        vif_of(stack, &ns, n, |v| v.active).await;
    }
    eprintln!("all {} subports ACTIVE in the KuryrPorts {:?} after plugging the VM port", all.len(), t_plug.elapsed());

    // Deleting a pod detaches its subport and deletes its port.
    let gone = vifs["web-0"].clone();
    let pods = Api::<Pod>::namespaced(stack.client.clone(), &ns);
    pods.delete("web-0", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await.expect("delete pod");
    let kps = Api::<KuryrPort>::namespaced(stack.client.clone(), &ns);
    wait_for("KuryrPort web-0 gone", WAIT, || async { kps.get_opt("web-0").await.expect("get kp").is_none().then_some(()) }).await;
    match stack.neutron.get_port(&gone.port_id).await {
        Err(e) if e.is_not_found() => {}
        other => panic!("port {} of the deleted pod: {other:?}", gone.port_id),
    }
    let sps = subports(stack, &vm.trunk).await;
    assert!(sps.iter().all(|s| s.port_id != gone.port_id), "deleted pod's subport still on the trunk: {sps:?}");
    assert_eq!(sps.len(), all.len() - 1 + PRE_EXISTING.len());

    // The next pod gets an id in use by nobody, not the one just freed (the node may still hold
    // a VLAN interface with it).
    create_pod(stack, scratch, &ns, "web-late", &node).await;
    let late = vif_of(stack, &ns, "web-late", |_| true).await;
    assert!(
        !ids.contains(&vlan(&late)) && !PRE_EXISTING.contains(&u32::from(vlan(&late))),
        "web-late got VLAN {} (used: {ids:?})",
        vlan(&late)
    );

    // A node whose port has no trunk: a configuration error naming node, IP and cause; no port.
    create_pod(stack, scratch, &ns, "lost-0", &bare_node).await;
    let (reason, message) = wait_for("a KuryrPortCreateFailed event for lost-0", WAIT, || async {
        pod_events(stack, &ns, "lost-0").await.into_iter().find(|(r, _)| r == "KuryrPortCreateFailed")
    })
    .await;
    eprintln!("lost-0: {reason}: {message}");
    for want in ["no trunk on the parent port", bare_node.as_str(), bare.ip.as_str(), bare.parent.as_str()] {
        assert!(message.contains(want), "event message lacks {want:?}: {message}");
    }
    let lost_ports = stack.neutron.list_ports(&Query::new().eq("name", format!("{ns}/lost-0"))).await.expect("list");
    assert!(lost_ports.is_empty(), "a port was created for a node without trunk: {lost_ports:?}");

    // Batching and its failure path, through the controller's own attach: while `a` is being
    // attached, `b` and `c` queue up and go in one add_subports. `b` is a subport of another
    // trunk already, so Neutron answers 409 (TrunkPortInUse) to every try of that batch; after
    // the bounded retries the batch is split, `c` gets its id and only `b` fails.
    let ctx = controller.lock().await.as_ref().expect("controller").pod.clone();
    let other = make_vm(stack, scratch, &format!("{name}-other"), true, Some((&vm.network, &vm.subnet))).await;
    let [a, b, c] = [
        pod_net_port(stack, scratch, &format!("{name}-a"), "kuryr-rs nested test: batch a").await,
        pod_net_port(stack, scratch, &format!("{name}-b"), "kuryr-rs nested test: batch b").await,
        pod_net_port(stack, scratch, &format!("{name}-c"), "kuryr-rs nested test: batch c").await,
    ];
    stack.neutron.add_subports(&other.trunk, &[SubPort::vlan(&b, 100)]).await.expect("b on the other trunk");
    let t_batch = Instant::now();
    let (ra, rb, rc) = tokio::join!(
        kuryr_controller::pod::driver::nested::attach(&ctx, &vm.trunk, &a),
        kuryr_controller::pod::driver::nested::attach(&ctx, &vm.trunk, &b),
        kuryr_controller::pod::driver::nested::attach(&ctx, &vm.trunk, &c),
    );
    eprintln!("batch: a {ra:?}, b {rb:?}, c {rc:?} in {:?}", t_batch.elapsed());
    let (va, vc) = (ra.expect("a attached"), rc.expect("c attached despite b in its batch"));
    let err = rb.expect_err("b is another trunk's subport");
    let msg = err.to_string();
    assert!(msg.contains(&b) && msg.contains(&vm.trunk) && msg.contains("409"), "{msg}");
    assert!(matches!(err, kuryr_controller::Error::Subport { .. }), "{err:?}");
    let sps = subports(stack, &vm.trunk).await;
    assert!(sps.contains(&SubPort::vlan(&a, u32::from(va))) && sps.contains(&SubPort::vlan(&c, u32::from(vc))), "{sps:?}");
    assert!(sps.iter().all(|s| s.port_id != b), "{sps:?}");
    let in_use: Vec<u32> = sps.iter().map(|s| s.segmentation_id).collect();
    assert_eq!(in_use.len(), in_use.iter().collect::<BTreeSet<_>>().len(), "duplicate VLAN ids on the trunk: {sps:?}");
    // Attaching a port that is already a subport answers its id without a second attach.
    assert_eq!(kuryr_controller::pod::driver::nested::attach(&ctx, &vm.trunk, &a).await.expect("again"), va);
}
