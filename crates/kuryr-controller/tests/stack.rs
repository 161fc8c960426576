//! kuryr-controller against the REAL local stack (Kubernetes 1.34 + Keystone/Neutron/OVN from
//! `hack/stack/stack up`): the controller runs in-process with `/var/lib/kuryr-stack/kuryr.conf`
//! and the admin kubeconfig; pods are created in fresh namespaces.
//!
//! No kuryr-daemon runs here, so pods stay ContainerCreating and ports stay DOWN unless a test
//! plugs the port itself (veth + OVSDB `iface-id`, as the daemon would).
//!
//! Tests run one at a time (a process-wide lock): each starts its own controller, and two
//! controllers must not act on the cluster at once. Everything a test creates (namespaces,
//! pods, Neutron ports, OVS ports, netns) is removed even when it fails.
//!
//! Run: `cargo test -p kuryr-controller --test stack -- --include-ignored`

mod common;

use common::{controller_command, push, state_file, take, unique, wait_for, ControllerProcess, Stack, StatusWriteBlock};
use futures_util::FutureExt;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use kuryr_controller::runtime::lease::LeaseConfig;
use kuryr_controller::{start, Options, Running};
use kuryr_core::crd::KuryrPort;
use kuryr_core::names::{DEVICE_OWNER, KURYRPORT_FINALIZER, NODE_NAME_LABEL, POD_FINALIZER};
use kuryr_core::vif::{Binding, Vif};
use kuryr_openstack::neutron::{FixedIpRequest, Port, PortCreate};
use kuryr_openstack::Query;
use serde_json::json;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// Tests run one at a time (each has its own runtime; a tokio mutex works across them).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Stack {
    async fn new() -> Stack {
        let others = running_controllers();
        assert!(others.is_empty(), "another kuryr-controller is running against the cluster (pids {others:?}); stop it first");
        Stack::connect().await
    }

    /// A controller for the test's namespace only: the cluster is shared with other tests
    /// (kuryr-daemon's create KuryrPorts of their own) that a cluster-wide controller would touch.
    fn options(&self, namespace: &str) -> Options {
        let mut o = Options::from_config(&self.config, self.kube.clone(), "kuryr-rs-test").expect("options");
        o.namespace = Some(namespace.to_string());
        o.install_crds = true;
        o.health_addr = Some("127.0.0.1:0".parse().expect("addr"));
        o.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
        o
    }

    fn node(&self) -> String {
        self.env.get("STACK_HOST").cloned().unwrap_or_else(|| "vm".into())
    }
}

/// Live (non-zombie) processes named `kuryr-controller` (truncated to 15 characters by the
/// kernel).
fn running_controllers() -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
        if comm == "kuryr-controlle" && state != "Z" && state != "X" {
            pids.push(pid);
        }
    }
    pids
}

/// What a test made, for the cleanup.
#[derive(Default)]
struct Scratch {
    namespaces: Mutex<Vec<String>>,
    pod_uids: Mutex<Vec<String>>,
    ports: Mutex<Vec<String>>,
    taps: Mutex<Vec<String>>,
    netns: Mutex<Vec<String>>,
}

/// Polls `f` every 100 ms until it yields a value; panics with `what` after `timeout`.
async fn create_namespace(stack: &Stack, scratch: &Scratch, prefix: &str) -> String {
    let name = unique(prefix);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kuryr-rs-test": "controller"}}})).expect("ns");
    Api::<Namespace>::all(stack.client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    push(&scratch.namespaces, &name);
    name
}

async fn create_pod(stack: &Stack, scratch: &Scratch, ns: &str, name: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            // The node is NotReady without a CNI; the test pods go there anyway.
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}]
        }
    }))
    .expect("pod");
    let pod = Api::<Pod>::namespaced(stack.client.clone(), ns).create(&PostParams::default(), &pod).await.expect("create pod");
    push(&scratch.pod_uids, &pod.uid().expect("uid"));
    pod
}

/// The KuryrPort of a pod once its default VIF is written (and satisfies `pred`).
async fn kuryrport_with_vif(stack: &Stack, ns: &str, name: &str, uid: &str, pred: impl Fn(&Vif) -> bool) -> (KuryrPort, Vif) {
    let api: Api<KuryrPort> = Api::namespaced(stack.client.clone(), ns);
    wait_for(&format!("KuryrPort {ns}/{name} with a VIF for pod {uid}"), WAIT, || async {
        let kp = api.get_opt(name).await.expect("get kuryrport")?;
        if kp.spec.pod_uid != uid {
            return None;
        }
        let (_, vif) = kp.status.as_ref()?.default_vif()?;
        let vif = vif.expect("readable VIF");
        pred(&vif).then_some((kp, vif))
    })
    .await
}

async fn port_gone(stack: &Stack, id: &str) -> bool {
    match stack.neutron.get_port(id).await {
        Err(e) if e.is_not_found() => true,
        Ok(_) => false,
        Err(e) => panic!("GET port {id}: {e}"),
    }
}

async fn ports_of_pod(stack: &Stack, uid: &str) -> Vec<Port> {
    let q = Query::new().eq("device_id", uid).eq("device_owner", DEVICE_OWNER);
    stack.neutron.list_ports(&q).await.expect("list ports of pod")
}

async fn event_reasons(stack: &Stack, ns: &str, pod: &str) -> Vec<String> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
    let evs = Api::<Event>::namespaced(stack.client.clone(), ns).list(&lp).await.expect("list events");
    evs.items.into_iter().filter_map(|e| e.reason).collect()
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Deletes the pod and waits until pod, KuryrPort and Neutron port are all gone.
async fn delete_pod_and_wait(stack: &Stack, ns: &str, name: &str, port_id: &str) {
    let pods: Api<Pod> = Api::namespaced(stack.client.clone(), ns);
    let kps: Api<KuryrPort> = Api::namespaced(stack.client.clone(), ns);
    pods.delete(name, &DeleteParams::default()).await.expect("delete pod");
    wait_for(&format!("pod {ns}/{name} gone"), WAIT, || async { pods.get_opt(name).await.expect("get pod").is_none().then_some(()) }).await;
    wait_for(&format!("KuryrPort {ns}/{name} gone"), WAIT, || async { kps.get_opt(name).await.expect("get kp").is_none().then_some(()) })
        .await;
    assert!(port_gone(stack, port_id).await, "Neutron port {port_id} still exists after the KuryrPort is gone");
}

/// Removes everything the test made; the controller (if given) still runs during the first
/// step so finalizers are handled the normal way.
async fn cleanup(stack: &Stack, scratch: &Scratch, controllers: Vec<Running>) {
    let nss = take(&scratch.namespaces);
    let ns_api = Api::<Namespace>::all(stack.client.clone());
    for ns in &nss {
        let _ = ns_api.delete(ns, &DeleteParams::default()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for ns in &nss {
        while Instant::now() < deadline && matches!(ns_api.get_opt(ns).await, Ok(Some(_))) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !controllers.is_empty() {
                continue;
            }
            // No controller: strip the finalizers it would have removed.
            let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
            for p in
                Api::<Pod>::namespaced(stack.client.clone(), ns).list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default()
            {
                let _ = Api::<Pod>::namespaced(stack.client.clone(), ns).patch(&p.name_any(), &PatchParams::default(), &strip).await;
            }
            for k in Api::<KuryrPort>::namespaced(stack.client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let _ = Api::<KuryrPort>::namespaced(stack.client.clone(), ns).patch(&k.name_any(), &PatchParams::default(), &strip).await;
            }
        }
    }
    for c in controllers {
        c.shutdown().await;
    }
    // Anything still left: strip finalizers so the namespaces can go.
    for ns in &nss {
        if matches!(ns_api.get_opt(ns).await, Ok(Some(_))) {
            let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
            for p in
                Api::<Pod>::namespaced(stack.client.clone(), ns).list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default()
            {
                let _ = Api::<Pod>::namespaced(stack.client.clone(), ns).patch(&p.name_any(), &PatchParams::default(), &strip).await;
            }
            for k in Api::<KuryrPort>::namespaced(stack.client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let _ = Api::<KuryrPort>::namespaced(stack.client.clone(), ns).patch(&k.name_any(), &PatchParams::default(), &strip).await;
            }
        }
    }
    if let Ok(ovs) = kuryr_ovsdb::Ovs::connect_default().await {
        for tap in take(&scratch.taps) {
            let _ = ovs.del_port("br-int", &tap).await;
        }
    }
    for n in take(&scratch.netns) {
        let _ = kuryr_netplumb::Netns::delete_named(&n);
    }
    let mut ports = take(&scratch.ports);
    for uid in take(&scratch.pod_uids) {
        ports.extend(ports_of_pod(stack, &uid).await.into_iter().map(|p| p.id));
    }
    for p in ports {
        if let Ok(true) = stack.neutron.delete_port(&p).await {
            eprintln!("cleanup: deleted leftover Neutron port {p}");
        }
    }
}

/// Starts a controller; on failure cleans up what the test made so far, then panics.
async fn start_in(stack: &Stack, scratch: &Scratch, opts: Options) -> Running {
    match start(opts).await {
        Ok(r) => r,
        Err(e) => {
            cleanup(stack, scratch, vec![]).await;
            panic!("cannot start the controller: {e}");
        }
    }
}

/// Runs `body`, then the cleanup, then re-raises a failure of `body`.
async fn run<F: Future<Output = ()>>(stack: &Stack, scratch: &Scratch, controllers: Vec<Running>, body: F) {
    let r = AssertUnwindSafe(body).catch_unwind().await;
    cleanup(stack, scratch, controllers).await;
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

// ------------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn pod_gets_kuryrport_and_bound_neutron_port_then_releases_it() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-pod").await;
    let ctl = start_in(&stack, &scratch, stack.options(&ns)).await;
    let (health, metrics) = (ctl.health_addr.expect("health"), ctl.metrics_addr.expect("metrics"));
    run(&stack, &scratch, vec![ctl], async {
        wait_for("/ready", WAIT, || async { (http_get(health, "/ready").await.0 == 200).then_some(()) }).await;
        assert_eq!(http_get(health, "/alive").await.0, 200);

        let t0 = Instant::now();
        let pod = create_pod(&stack, &scratch, &ns, "web").await;
        let uid = pod.uid().expect("uid");
        let (kp, vif) = kuryrport_with_vif(&stack, &ns, "web", &uid, |_| true).await;
        eprintln!("VIF written {:?} after the pod was created", t0.elapsed());

        // The KuryrPort.
        assert_eq!(kp.labels().get(NODE_NAME_LABEL), Some(&stack.node()));
        assert!(kp.finalizers().iter().any(|f| f == KURYRPORT_FINALIZER), "{:?}", kp.finalizers());
        let owner = &kp.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("Pod", "web", uid.as_str()));
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        assert_eq!(kp.spec.pod_node_name, stack.node());
        assert!(!kp.spec.pod_static);
        let pod_now = Api::<Pod>::namespaced(stack.client.clone(), &ns).get("web").await.expect("pod");
        assert!(pod_now.finalizers().iter().any(|f| f == POD_FINALIZER), "pod finalizer: {:?}", pod_now.finalizers());

        // The VIF.
        assert_eq!(vif.binding, Binding::Ovs { bridge: "br-int".into() });
        assert!(!vif.active, "nothing plugged the port, it cannot be ACTIVE");
        assert_eq!(vif.network_id, stack.env["POD_NET_ID"]);
        assert_eq!(vif.ips.len(), 1);
        assert_eq!(vif.ips[0].subnet_cidr, stack.env["POD_CIDR"]);
        assert_eq!(vif.ips[0].gateway.map(|g| g.to_string()), Some(stack.env["POD_GW"].clone()));

        // The Neutron port.
        let port = stack.neutron.get_port(&vif.port_id).await.expect("port exists in Neutron");
        assert_eq!(port.device_id, uid);
        assert_eq!(port.device_owner, DEVICE_OWNER);
        assert_eq!(port.binding_host_id, stack.node());
        assert_eq!(port.security_groups, vec![stack.env["POD_SG_ID"].clone()]);
        assert_eq!(port.name, format!("{ns}/web"));
        assert!(port.description.contains("kuryr-rs") && port.description.contains("kuryr-rs-test"), "{}", port.description);
        assert!(port.tags.contains(&"kuryr-rs-local".to_string()), "resource_tags: {:?}", port.tags);
        assert!(port.tags.contains(&"kuryr-rs-cluster=kuryr-rs-test".to_string()), "cluster tag: {:?}", port.tags);
        assert_eq!(port.mac_address, vif.mac);
        assert_eq!(port.ip(), Some(vif.ips[0].address.to_string()).as_deref());
        assert_eq!(ports_of_pod(&stack, &uid).await.len(), 1, "exactly one port per pod");

        let reasons = wait_for("KuryrPortUpdatedWithVIFs event", Duration::from_secs(10), || async {
            let r = event_reasons(&stack, &ns, "web").await;
            r.iter().any(|r| r == "KuryrPortUpdatedWithVIFs").then_some(r)
        })
        .await;
        eprintln!("events: {reasons:?}");

        let (code, text) = http_get(metrics, "/metrics").await;
        assert_eq!(code, 200);
        for want in [
            r#"kuryr_openstack_requests_total{service="neutron",method="POST",path="/v2.0/ports",status="201"}"#,
            r#"kuryr_openstack_requests_total{service="neutron",method="PUT",path="/v2.0/ports/{id}/tags",status="200"}"#,
            r#"kuryr_controller_stage_duration_seconds_count{stage="pod_to_port"}"#,
            r#"kuryr_controller_stage_duration_seconds_count{stage="port_to_vif"}"#,
            "kuryr_controller_pending_activations 1",
            // This replica created the KuryrPort: nothing to adopt, no lookup on the pod's path.
            r#"kuryr_controller_adoption_lookups_total{outcome="skipped"} 1"#,
        ] {
            assert!(text.contains(want), "metrics lack {want:?}:\n{text}");
        }

        delete_pod_and_wait(&stack, &ns, "web", &vif.port_id).await;
    })
    .await;
}
/// Plugs `vif` as kuryr-daemon would: a veth into a fresh netns, its host end on br-int with the
/// port's iface-id, so OVN binds the port and Neutron turns it ACTIVE. The tap and netns are left
/// to `scratch`'s cleanup.
async fn plug_like_the_daemon(scratch: &Scratch, vif: &Vif, pod_uid: &str) -> kuryr_ovsdb::Ovs {
    let ns_name = unique("kc-plug");
    push(&scratch.netns, &ns_name);
    push(&scratch.taps, &vif.host_ifname);
    let (tap, mac, mtu, nsn) = (vif.host_ifname.clone(), vif.mac.clone(), vif.mtu, ns_name.clone());
    tokio::task::spawn_blocking(move || {
        let netns = kuryr_netplumb::Netns::create_named(&nsn).expect("create netns");
        let host = kuryr_netplumb::Netns::current().expect("host netns");
        let peer_mac: kuryr_netplumb::MacAddr = mac.parse().expect("mac");
        kuryr_netplumb::plug_veth(
            &host,
            &netns,
            &kuryr_netplumb::VethPlug {
                host_ifname: tap,
                peer_ifname: "eth0".into(),
                mtu: Some(mtu),
                host_mac: None,
                peer_mac: Some(peer_mac),
            },
        )
        .expect("plug veth");
    })
    .await
    .expect("plug task");
    let ovs = kuryr_ovsdb::Ovs::connect_default().await.expect("OVSDB");
    ovs.add_port(
        &kuryr_ovsdb::PortSpec::new("br-int", &vif.host_ifname)
            .iface_id(&vif.port_id)
            .attached_mac(&vif.mac)
            .iface_status("active")
            .vm_uuid(pod_uid)
            .wait_vswitchd(Duration::from_secs(10)),
    )
    .await
    .expect("add the tap to br-int");
    ovs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn plugged_port_goes_active_and_the_activator_goes_idle() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-active").await;
    let ctl = start_in(&stack, &scratch, stack.options(&ns)).await;
    let metrics = ctl.metrics_addr.expect("metrics");
    run(&stack, &scratch, vec![ctl], async {
        let pod = create_pod(&stack, &scratch, &ns, "web").await;
        let uid = pod.uid().expect("uid");
        let (_, vif) = kuryrport_with_vif(&stack, &ns, "web", &uid, |_| true).await;
        assert!(!vif.active);

        let t_plug = Instant::now();
        let ovs = plug_like_the_daemon(&scratch, &vif, &uid).await;

        let (_, active) = kuryrport_with_vif(&stack, &ns, "web", &uid, |v| v.active).await;
        eprintln!("VIF active {:?} after plugging", t_plug.elapsed());
        assert_eq!(active.port_id, vif.port_id, "same port, now active");
        assert_eq!(stack.neutron.get_port(&vif.port_id).await.expect("port").status, "ACTIVE");
        wait_for("KuryrPortUpdatedWithActiveVIFs event", Duration::from_secs(10), || async {
            event_reasons(&stack, &ns, "web").await.iter().any(|r| r == "KuryrPortUpdatedWithActiveVIFs").then_some(())
        })
        .await;

        // Idle: nothing pending, and no more polls.
        let polls = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("kuryr_controller_activation_polls_total"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
                .expect("activation polls metric")
        };
        let text = http_get(metrics, "/metrics").await.1;
        assert!(text.contains("kuryr_controller_pending_activations 0"), "{text}");
        assert!(text.contains(r#"kuryr_controller_stage_duration_seconds_count{stage="vif_to_active"} 1"#), "{text}");
        assert!(text.contains(r#"kuryr_controller_stage_duration_seconds_count{stage="pod_to_active"} 1"#), "{text}");
        assert!(text.contains("kuryr_pod_creation_latency_count 1"), "{text}");
        let before = polls(&text);
        assert!(before >= 1);
        // Negative check: for 1 s (4 poll intervals) the idle activator must not poll.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(polls(&http_get(metrics, "/metrics").await.1), before, "the activator polls Neutron while idle");

        let _ = ovs.del_port("br-int", &vif.host_ifname).await;
        delete_pod_and_wait(&stack, &ns, "web", &vif.port_id).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn existing_port_of_the_pod_is_adopted_not_duplicated() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    run(&stack, &scratch, vec![], async {
        // The pod exists and a port stamped with its UID too, as if a controller crashed between
        // POST /ports and the KuryrPort status write. No controller runs yet.
        let ns = create_namespace(&stack, &scratch, "kc-adopt").await;
        let pod = create_pod(&stack, &scratch, &ns, "web").await;
        let uid = pod.uid().expect("uid");
        let pre = stack
            .neutron
            .create_port(&PortCreate {
                network_id: stack.env["POD_NET_ID"].clone(),
                fixed_ips: Some(vec![FixedIpRequest::subnet(&stack.env["POD_SUBNET_ID"])]),
                device_owner: DEVICE_OWNER.into(),
                device_id: uid.clone(),
                binding_host_id: stack.node(),
                security_groups: Some(vec![stack.env["POD_SG_ID"].clone()]),
                ..PortCreate::default()
            })
            .await
            .expect("pre-create the pod's port");
        push(&scratch.ports, &pre.id);
        // The crashed controller had created the pod's KuryrPort (it always does before asking
        // Neutron), without a VIF.
        let mut kp =
            KuryrPort::new("web", kuryr_core::crd::KuryrPortSpec { pod_uid: uid.clone(), pod_node_name: stack.node(), pod_static: false });
        kp.metadata.labels = Some([(NODE_NAME_LABEL.to_string(), stack.node())].into());
        Api::<KuryrPort>::namespaced(stack.client.clone(), &ns).create(&PostParams::default(), &kp).await.expect("KuryrPort");

        let ctl = start_in(&stack, &scratch, stack.options(&ns)).await;
        let metrics = ctl.metrics_addr.expect("metrics");
        let r = AssertUnwindSafe(async {
            let (_, vif) = kuryrport_with_vif(&stack, &ns, "web", &uid, |_| true).await;
            assert_eq!(vif.port_id, pre.id, "the existing port is adopted");
            let (_, text) = http_get(metrics, "/metrics").await;
            assert!(text.contains(r#"kuryr_controller_adoption_lookups_total{outcome="done"} 1"#), "{text}");
            let ports = ports_of_pod(&stack, &uid).await;
            assert_eq!(ports.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [pre.id.as_str()], "no second port");
            let port = stack.neutron.get_port(&pre.id).await.expect("port");
            assert!(port.tags.contains(&"kuryr-rs-local".to_string()), "adopted port tagged: {:?}", port.tags);
            delete_pod_and_wait(&stack, &ns, "web", &pre.id).await;
        })
        .catch_unwind()
        .await;
        cleanup(&stack, &scratch, vec![ctl]).await;
        if let Err(p) = r {
            std::panic::resume_unwind(p);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn kuryrport_of_an_earlier_pod_is_not_reused_and_orphans_are_released() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-sts").await;
    let ctl = start_in(&stack, &scratch, stack.options(&ns)).await;
    run(&stack, &scratch, vec![ctl], async {
        let pods: Api<Pod> = Api::namespaced(stack.client.clone(), &ns);
        let kps: Api<KuryrPort> = Api::namespaced(stack.client.clone(), &ns);

        // web-0, then force it away behind the controller's back (finalizer stripped by hand,
        // grace 0), and re-create it at once like a StatefulSet would.
        let old = create_pod(&stack, &scratch, &ns, "web-0").await;
        let old_uid = old.uid().expect("uid");
        let (_, old_vif) = kuryrport_with_vif(&stack, &ns, "web-0", &old_uid, |_| true).await;
        pods.patch("web-0", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
            .await
            .expect("strip finalizer");
        pods.delete("web-0", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await.expect("force delete");
        wait_for("old web-0 gone", WAIT, || async { pods.get_opt("web-0").await.expect("get").is_none().then_some(()) }).await;
        let new = create_pod(&stack, &scratch, &ns, "web-0").await;
        let new_uid = new.uid().expect("uid");
        assert_ne!(old_uid, new_uid);

        let (kp, new_vif) = kuryrport_with_vif(&stack, &ns, "web-0", &new_uid, |_| true).await;
        assert_eq!(kp.spec.pod_uid, new_uid);
        assert_ne!(new_vif.port_id, old_vif.port_id, "a fresh port for the new pod");
        assert_eq!(stack.neutron.get_port(&new_vif.port_id).await.expect("new port").device_id, new_uid);
        wait_for("the old pod's port released", WAIT, || async { port_gone(&stack, &old_vif.port_id).await.then_some(()) }).await;

        // An orphan: strip the finalizer and force-delete, no re-creation.
        let orphan = create_pod(&stack, &scratch, &ns, "lonely").await;
        let orphan_uid = orphan.uid().expect("uid");
        let (_, orphan_vif) = kuryrport_with_vif(&stack, &ns, "lonely", &orphan_uid, |_| true).await;
        pods.patch("lonely", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
            .await
            .expect("strip finalizer");
        pods.delete("lonely", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await.expect("force delete");
        wait_for("orphaned KuryrPort gone", WAIT, || async { kps.get_opt("lonely").await.expect("get").is_none().then_some(()) }).await;
        assert!(port_gone(&stack, &orphan_vif.port_id).await, "orphan's port released");

        delete_pod_and_wait(&stack, &ns, "web-0", &new_vif.port_id).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn completed_pod_releases_its_port_but_stays() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-done").await;
    let ctl = start_in(&stack, &scratch, stack.options(&ns)).await;
    run(&stack, &scratch, vec![ctl], async {
        let pods: Api<Pod> = Api::namespaced(stack.client.clone(), &ns);
        let kps: Api<KuryrPort> = Api::namespaced(stack.client.clone(), &ns);
        let pod = create_pod(&stack, &scratch, &ns, "job").await;
        let uid = pod.uid().expect("uid");
        let (_, vif) = kuryrport_with_vif(&stack, &ns, "job", &uid, |_| true).await;
        // Without a CNI the pod cannot run to completion; mark it Succeeded as the kubelet would.
        // The kubelet (which cannot start the sandbox) may write its own view (Pending) back
        // once; re-mark until the controller has released the port.
        let succeeded = Patch::Merge(json!({"status": {"phase": "Succeeded"}}));
        pods.patch_status("job", &PatchParams::default(), &succeeded).await.expect("mark Succeeded");
        wait_for("KuryrPort of the completed pod gone", WAIT, || async {
            let phase = pods.get("job").await.expect("get pod").status.and_then(|s| s.phase);
            if phase.as_deref() != Some("Succeeded") {
                eprintln!("the kubelet reset the phase to {phase:?}; marking Succeeded again");
                pods.patch_status("job", &PatchParams::default(), &succeeded).await.expect("mark Succeeded");
            }
            kps.get_opt("job").await.expect("get").is_none().then_some(())
        })
        .await;
        assert!(port_gone(&stack, &vif.port_id).await, "completed pod's port released");
        let pod = wait_for("pod finalizer removed", WAIT, || async {
            let p = pods.get_opt("job").await.expect("get pod")?;
            (!p.finalizers().iter().any(|f| f == POD_FINALIZER)).then_some(p)
        })
        .await;
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Succeeded"), "the pod itself stays");
    })
    .await;
}

/// Margin on the lease hand-over bounds: the follower's GET + PUT of the Lease on a loaded
/// 2-vCPU stack, and the test's 100 ms polling.
const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// From holding the Lease to the new leader's first write (reconcile of what its caches hold:
/// a Neutron port created, the KuryrPort status written).
const FIRST_WRITE_MARGIN: Duration = Duration::from_secs(10);

/// Two in-process replicas on one Lease: only the holder writes; when it shuts down it releases
/// the Lease, so the follower takes over at its next attempt: within `retry_period` +
/// [`LEASE_MARGIN`] of the leader's stop (without the release it would wait out the whole
/// `lease_duration`), and writes the next pod's VIF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn only_the_lease_holder_writes_and_a_follower_takes_over() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-lease").await;
    let lease_config = |id: &str| {
        let mut l = LeaseConfig::new(&ns, "kuryr-controller-test", id);
        l.retry_period = Duration::from_millis(500);
        l
    };
    let lease = |id: &str| {
        let mut o = stack.options(&ns);
        o.leader_election = Some(lease_config(id));
        o
    };
    let cfg = lease_config("-");
    let a = start(lease("replica-a")).await.expect("start a");
    let ga = a.context.leader.clone();
    wait_for("replica a leads", WAIT, || async { ga.is_leader().then_some(()) }).await;
    let mut b_opts = lease("replica-b");
    b_opts.install_crds = false;
    let b = start(b_opts).await.expect("start b");
    let gb = b.context.leader.clone();
    let b_metrics = b.metrics_addr.expect("metrics");
    run(&stack, &scratch, vec![b], async {
        let r = AssertUnwindSafe(async {
            // Negative check: four retry periods of b's, and it must not have taken the lease.
            tokio::time::sleep(4 * cfg.retry_period).await;
            assert!(!gb.is_leader(), "two leaders");
            let p1 = create_pod(&stack, &scratch, &ns, "one").await;
            let (_, vif1) = kuryrport_with_vif(&stack, &ns, "one", &p1.uid().expect("uid"), |_| true).await;
            let text = http_get(b_metrics, "/metrics").await.1;
            assert!(
                !text.contains("kuryr_openstack_requests_total{service=\"neutron\",method=\"POST\""),
                "the follower wrote to Neutron:\n{text}"
            );
            assert!(text.contains("kuryr_controller_leader 0"), "{text}");
            vif1
        })
        .catch_unwind()
        .await;
        // The leader steps down (releasing the lease); the follower must take over.
        let t = Instant::now();
        a.shutdown().await;
        let vif1 = match r {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        };
        let bound = cfg.retry_period + LEASE_MARGIN;
        wait_for("replica b leads", cfg.lease_duration + WAIT, || async { gb.is_leader().then_some(()) }).await;
        let handover = t.elapsed();
        eprintln!(
            "hand-over: leader stopped → follower leads after {handover:?} (bound {bound:?}: retry {:?} + margin {LEASE_MARGIN:?}; lease {:?})",
            cfg.retry_period, cfg.lease_duration
        );
        assert!(handover <= bound, "hand-over took {handover:?}, more than retry + margin = {bound:?}: was the lease released?");
        let p2 = create_pod(&stack, &scratch, &ns, "two").await;
        let (_, vif2) = kuryrport_with_vif(&stack, &ns, "two", &p2.uid().expect("uid"), |_| true).await;
        let acted = t.elapsed();
        eprintln!("first write of the new leader: VIF of a pod created after the hand-over {acted:?} after the leader stopped");
        assert!(acted <= bound + FIRST_WRITE_MARGIN, "the new leader wrote {acted:?} after the stop, more than {:?}", bound + FIRST_WRITE_MARGIN);
        assert!(http_get(b_metrics, "/metrics").await.1.contains("kuryr_controller_leader 1"));
        delete_pod_and_wait(&stack, &ns, "one", &vif1.port_id).await;
        delete_pod_and_wait(&stack, &ns, "two", &vif2.port_id).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn neutron_failure_becomes_a_pod_event_and_backs_off() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-fail").await;
    let mut opts = stack.options(&ns);
    // A security group that does not exist: Neutron refuses the port.
    opts.settings.pod_security_groups = vec!["00000000-0000-4000-8000-000000000000".into()];
    let ctl = start_in(&stack, &scratch, opts).await;
    let metrics = ctl.metrics_addr.expect("metrics");
    run(&stack, &scratch, vec![ctl], async {
        let pod = create_pod(&stack, &scratch, &ns, "web").await;
        let note = wait_for("KuryrPortCreateFailed event", WAIT, || async {
            let lp = ListParams::default().fields("involvedObject.name=web");
            let evs = Api::<Event>::namespaced(stack.client.clone(), &ns).list(&lp).await.expect("events");
            evs.items.into_iter().find(|e| e.reason.as_deref() == Some("KuryrPortCreateFailed")).and_then(|e| e.message)
        })
        .await;
        eprintln!("event: {note}");
        assert!(note.starts_with("neutron POST /v2.0/ports failed: HTTP 404"), "event names the call and status: {note}");
        assert!(ports_of_pod(&stack, &pod.uid().expect("uid")).await.is_empty());
        // A permanent error backs off (10 s first), it does not hot-loop. Negative check: 4 s
        // in which at most the first attempt and one retry may happen.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let text = http_get(metrics, "/metrics").await.1;
        let posts: u64 = text
            .lines()
            .filter(|l| l.starts_with(r#"kuryr_openstack_requests_total{service="neutron",method="POST",path="/v2.0/ports""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!((1..=2).contains(&posts), "POST /v2.0/ports attempts in ~5 s: {posts}\n{text}");
        assert!(text.contains(r#"kuryr_controller_reconcile_errors_total{controller="kuryrport",error="openstack_request"}"#), "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn port_not_active_in_time_gets_a_warning_and_slower_polls() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-slow").await;
    let mut opts = stack.options(&ns);
    opts.settings.activation_deadline = Duration::from_secs(1);
    opts.settings.activation_slow_interval = Duration::from_secs(3);
    let ctl = start_in(&stack, &scratch, opts).await;
    let metrics = ctl.metrics_addr.expect("metrics");
    run(&stack, &scratch, vec![ctl], async {
        let pod = create_pod(&stack, &scratch, &ns, "web").await;
        let (_, vif) = kuryrport_with_vif(&stack, &ns, "web", &pod.uid().expect("uid"), |_| true).await;
        wait_for("ActivatePortFailed event", WAIT, || async {
            event_reasons(&stack, &ns, "web").await.iter().any(|r| r == "ActivatePortFailed").then_some(())
        })
        .await;
        let polls = || async {
            let text = http_get(metrics, "/metrics").await.1;
            assert!(text.contains("kuryr_port_readiness_total 1"), "{text}");
            text.lines()
                .find(|l| l.starts_with("kuryr_controller_activation_polls_total"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .expect("polls")
        };
        // Past the deadline the port is polled every 3 s instead of every 250 ms.
        let before = polls().await;
        // A rate measured over a fixed 3 s window (no event to wait for).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let delta = polls().await - before;
        assert!(delta <= 2, "{delta} polls in 3 s for a port past its deadline");
        delete_pod_and_wait(&stack, &ns, "web", &vif.port_id).await;
    })
    .await;
}

/// A standalone container's KuryrPort (podman, ctr: no Pod) made by hand in the standalone
/// namespace gets a Neutron port exactly like a pod's, is never released as an orphan, and gives
/// its port back when deleted. Unusable ones are refused with a Warning Event and no port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn standalone_kuryrport_gets_a_port_without_a_pod_and_releases_it_when_deleted() {
    use kuryr_core::names::STANDALONE_LABEL;
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-sa").await;
    let mut opts = stack.options(&ns);
    opts.settings.standalone_namespace = ns.clone();
    let ctl = start_in(&stack, &scratch, opts).await;
    run(&stack, &scratch, vec![ctl], async {
        let kps: Api<KuryrPort> = Api::namespaced(stack.client.clone(), &ns);
        let uuid = || std::fs::read_to_string("/proc/sys/kernel/random/uuid").expect("uuid").trim().to_string();
        let standalone = |name: &str, uid: &str| -> KuryrPort {
            serde_json::from_value(json!({
                "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {STANDALONE_LABEL: "true", NODE_NAME_LABEL: stack.node()}},
                "spec": {"podUid": uid, "podNodeName": stack.node()}
            }))
            .expect("kuryrport")
        };

        let uid = uuid();
        push(&scratch.pod_uids, &uid);
        let t0 = Instant::now();
        kps.create(&PostParams::default(), &standalone("web-1", &uid)).await.expect("create KuryrPort");
        let (kp, vif) = kuryrport_with_vif(&stack, &ns, "web-1", &uid, |_| true).await;
        eprintln!("standalone VIF written {:?} after the KuryrPort was created", t0.elapsed());
        assert!(kp.finalizers().iter().any(|f| f == KURYRPORT_FINALIZER), "{:?}", kp.finalizers());
        assert!(kp.owner_references().is_empty());
        let port = stack.neutron.get_port(&vif.port_id).await.expect("port exists in Neutron");
        assert_eq!((port.device_id.as_str(), port.device_owner.as_str()), (uid.as_str(), DEVICE_OWNER));
        assert_eq!(port.binding_host_id, stack.node());
        assert_eq!(port.security_groups, vec![stack.env["POD_SG_ID"].clone()]);
        assert_eq!(port.name, format!("{ns}/web-1"));
        assert!(port.description.contains("standalone container"), "{}", port.description);
        assert!(port.tags.contains(&"kuryr-rs-local".to_string()), "resource_tags: {:?}", port.tags);
        assert_eq!(ports_of_pod(&stack, &uid).await.len(), 1);

        // No Pod exists, yet it is no orphan: another reconcile keeps it and its port.
        kps.patch("web-1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"touched": "1"}}})))
            .await
            .expect("touch");
        // Negative check: 2 s after the touch, it must still not be released.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = kps.get("web-1").await.expect("still there");
        assert!(again.metadata.deletion_timestamp.is_none(), "a standalone KuryrPort must never be released as an orphan");
        assert_eq!(again.status.as_ref().and_then(|s| s.default_vif()).map(|(_, v)| v.expect("vif").port_id), Some(vif.port_id.clone()));

        // Refused: a podUid that is not a UUID, and one an older KuryrPort holds.
        kps.create(&PostParams::default(), &standalone("bad-uid", "web-1")).await.expect("create");
        kps.create(&PostParams::default(), &standalone("twin", &uid)).await.expect("create");
        for (name, piece) in [("bad-uid", "is not a UUID"), ("twin", "is already used by KuryrPort")] {
            let note = wait_for(&format!("a StandaloneKuryrPortInvalid event on {name}"), WAIT, || async {
                let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
                let evs = Api::<Event>::namespaced(stack.client.clone(), &ns).list(&lp).await.expect("events");
                evs.items.into_iter().find(|e| e.reason.as_deref() == Some("StandaloneKuryrPortInvalid")).and_then(|e| e.message)
            })
            .await;
            assert!(note.contains(piece), "{name}: {note}");
            let kp = kps.get(name).await.expect("refused, not deleted");
            assert!(kp.status.is_none_or(|s| s.vifs.is_empty()), "{name} must get no VIF");
        }
        assert_eq!(ports_of_pod(&stack, &uid).await.len(), 1, "the twin got no port of its own");

        // Deleting the twin (same UID, no recorded port) must not release web-1's port.
        kps.delete("twin", &DeleteParams::default()).await.expect("delete twin");
        wait_for("twin gone", WAIT, || async { kps.get_opt("twin").await.expect("get").is_none().then_some(()) }).await;
        assert!(!port_gone(&stack, &vif.port_id).await, "deleting a refused twin released the other KuryrPort's port");

        // Deleting the KuryrPort releases the port.
        kps.delete("web-1", &DeleteParams::default()).await.expect("delete");
        wait_for("web-1 gone", WAIT, || async { kps.get_opt("web-1").await.expect("get").is_none().then_some(()) }).await;
        assert!(port_gone(&stack, &vif.port_id).await, "Neutron port {} still exists after the KuryrPort is gone", vif.port_id);
        kps.delete("bad-uid", &DeleteParams::default()).await.expect("delete");
    })
    .await;
}

/// Plants a Neutron port that looks like this controller's (owner, tags, description naming
/// `cluster`) for a pod `ns/name` with UID `uid` that does not exist.
async fn plant_port(stack: &Stack, scratch: &Scratch, cluster: &str, ns: &str, name: &str) -> String {
    let mut settings = kuryr_controller::Settings::from_config(&stack.config, cluster).expect("settings");
    settings.cluster_name = cluster.to_string();
    let req = kuryr_controller::pod::ports::PodPortRequest {
        namespace: ns.to_string(),
        name: name.to_string(),
        pod_uid: format!("gc-test-{}", unique("uid")),
        node: stack.node(),
        standalone: false,
    };
    let body = kuryr_controller::pod::driver::neutron::port_create(&settings, &req, &stack.env["POD_NET_ID"]);
    let port = stack.neutron.create_port(&body).await.expect("plant port");
    push(&scratch.ports, &port.id);
    stack.neutron.set_tags(kuryr_openstack::neutron::TagResource::Port, &port.id, &settings.tags).await.expect("tag planted port");
    port.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn gc_sweeps_a_planted_orphan_on_the_second_pass_and_nothing_else() {
    use kuryr_controller::gc::{self, Marks};
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-gc").await;
    let mut opts = stack.options(&ns);
    opts.gc = None; // passes are driven by the test
    let ctl = start_in(&stack, &scratch, opts).await;
    let ctx = ctl.context.clone();
    let hooks = ctl.pod.clone();
    run(&stack, &scratch, vec![ctl], async {
        // A live pod with its port: never a candidate.
        let pod = create_pod(&stack, &scratch, &ns, "live").await;
        let uid = pod.uid().expect("uid");
        let (_, live) = kuryrport_with_vif(&stack, &ns, "live", &uid, |_| true).await;
        // The orphan, and look-alikes that are not ours to collect.
        let orphan = plant_port(&stack, &scratch, "kuryr-rs-test", &ns, "ghost").await;
        let other_cluster = plant_port(&stack, &scratch, "some-other-cluster", &ns, "ghost2").await;
        let other_ns = plant_port(&stack, &scratch, "kuryr-rs-test", "not-watched-here", "ghost3").await;
        wait_for("caches synced", WAIT, || async { ctx.synced().then_some(()) }).await;

        // Dry run: lists the orphan on the second pass, deletes nothing.
        let mut marks = Marks::default();
        let ids = |v: &[gc::Orphan]| v.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
        let r = gc::pass(&ctx, &*hooks, &mut marks, Some(&ns), true).await.expect("dry pass 1");
        assert_eq!(ids(&r.marked), std::slice::from_ref(&orphan), "{r:?}");
        assert!(r.swept.is_empty(), "first pass only marks: {r:?}");
        let r = gc::pass(&ctx, &*hooks, &mut marks, Some(&ns), true).await.expect("dry pass 2");
        assert_eq!(ids(&r.swept), std::slice::from_ref(&orphan), "{r:?}");
        assert!(!port_gone(&stack, &orphan).await, "dry run deleted the orphan");

        // The operator's view: `kuryr-controller --gc-list` prints it and exits 3.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kuryr-controller"))
            .arg("--config-file")
            .arg(state_file("kuryr.conf"))
            .arg("--kubeconfig")
            .arg(state_file("kubeconfig"))
            .args(["--cluster-name", "kuryr-rs-test", "--watch-namespace", &ns, "--gc-list"])
            .output()
            .expect("run kuryr-controller --gc-list");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&orphan), "{stdout}");
        for keep in [&live.port_id, &other_cluster, &other_ns] {
            assert!(!stdout.contains(keep.as_str()), "--gc-list names {keep}: {stdout}");
        }

        // For real: the first pass marks, the second deletes the orphan and nothing else.
        let mut marks = Marks::default();
        let r = gc::pass(&ctx, &*hooks, &mut marks, Some(&ns), false).await.expect("pass 1");
        assert!(r.swept.is_empty(), "{r:?}");
        assert!(!port_gone(&stack, &orphan).await, "deleted on the first pass");
        let r = gc::pass(&ctx, &*hooks, &mut marks, Some(&ns), false).await.expect("pass 2");
        assert_eq!(ids(&r.swept), std::slice::from_ref(&orphan), "{r:?}");
        assert!(port_gone(&stack, &orphan).await, "orphan {orphan} survived the sweep");
        for keep in [&live.port_id, &other_cluster, &other_ns] {
            assert!(!port_gone(&stack, keep).await, "GC deleted {keep}, which is not an orphan of this cluster/namespace");
        }
        delete_pod_and_wait(&stack, &ns, "live", &live.port_id).await;
    })
    .await;
}

/// One resource planted for the every-kind GC test, and how to remove it afterwards.
#[derive(Clone, Debug)]
enum Planted {
    LoadBalancer(String),
    FloatingIp(String),
    RouterInterface {
        router: String,
        subnet: String,
    },
    Router(String),
    /// A trunk, then its parent and sub ports.
    Trunk(String),
    Port(String),
    SecurityGroup(String),
    Subnet(String),
    Network(String),
}

/// Whether a Neutron resource of `kind` with `id` exists (a filtered list: an empty answer is
/// "gone", whatever the kind's GET would say).
async fn exists(stack: &Stack, kind: kuryr_controller::gc::Kind, id: &str) -> bool {
    use kuryr_controller::gc::Kind;
    let n = &stack.neutron;
    let q = Query::new().eq("id", id);
    let found = match kind {
        Kind::Network => n.list_networks(&q).await.map(|v| v.len()),
        Kind::Subnet => n.list_subnets(&q).await.map(|v| v.len()),
        Kind::SecurityGroup => n.list_security_groups(&q).await.map(|v| v.len()),
        Kind::SecurityGroupRule => n.list_security_group_rules(&q).await.map(|v| v.len()),
        Kind::AddressGroup => n.list_address_groups(&q).await.map(|v| v.len()),
        Kind::FloatingIp => n.list_floating_ips(&q).await.map(|v| v.len()),
        Kind::RouterInterface | Kind::TrunkSubport | Kind::Port => n.list_ports(&q).await.map(|v| v.len()),
        Kind::LoadBalancer => unreachable!("load balancers are checked through Octavia"),
    };
    found.unwrap_or_else(|e| panic!("list {kind:?} {id}: {e}")) > 0
}

/// Removes what the test planted (best effort, in dependency order; GC may have removed some).
async fn remove_planted(stack: &Stack, octavia: &kuryr_openstack::Octavia, planted: &Mutex<Vec<Planted>>) {
    use kuryr_openstack::neutron::RouterInterface;
    let mut all = planted.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let rank = |p: &Planted| match p {
        Planted::LoadBalancer(_) => 0,
        Planted::FloatingIp(_) => 1,
        Planted::RouterInterface { .. } => 2,
        Planted::Router(_) => 3,
        Planted::Trunk(_) => 3,
        Planted::Port(_) => 4,
        Planted::SecurityGroup(_) => 4,
        Planted::Subnet(_) => 5,
        Planted::Network(_) => 6,
    };
    all.sort_by_key(rank);
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in all {
        let r = match &p {
            Planted::LoadBalancer(id) => {
                let r = octavia.delete_load_balancer(id, true).await.map(|_| ());
                // Its VIP port must be gone before the subnet can go.
                while Instant::now() < deadline && octavia.get_load_balancer(id).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                r
            }
            Planted::FloatingIp(id) => stack.neutron.delete_floating_ip(id).await.map(|_| ()),
            Planted::RouterInterface { router, subnet } => {
                stack.neutron.remove_router_interface(router, &RouterInterface::subnet(subnet)).await.map(|_| ())
            }
            Planted::Router(id) => stack.neutron.delete_router(id).await.map(|_| ()),
            Planted::Trunk(id) => stack.neutron.delete_trunk(id).await.map(|_| ()),
            Planted::Port(id) => stack.neutron.delete_port(id).await.map(|_| ()),
            Planted::SecurityGroup(id) => stack.neutron.delete_security_group(id).await.map(|_| ()),
            Planted::Subnet(id) => stack.neutron.delete_subnet(id).await.map(|_| ()),
            Planted::Network(id) => stack.neutron.delete_network(id).await.map(|_| ()),
        };
        match r {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => eprintln!("cleanup: cannot remove {p:?}: {e}"),
        }
    }
}

/// GC over every kind it knows: an orphan of each kind (tagged with this cluster, described as
/// belonging to the test's namespace, named by no CRD) is swept on the second pass, in dependency
/// order (a router interface before its subnet before its network); the same kinds referenced
/// by a KuryrNetwork / KuryrNetworkPolicy / KuryrLoadBalancer status, without the cluster tag,
/// of another cluster, or made by Neutron itself (a group's default rules) are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn gc_sweeps_an_orphan_of_every_kind_and_nothing_else() {
    use kuryr_controller::gc::{self, Kind, Marks};
    use kuryr_core::crd::{KuryrLoadBalancer, KuryrNetwork, KuryrNetworkPolicy};
    use kuryr_core::names::resource_description;
    use kuryr_openstack::neutron::{
        Direction, EtherType, FloatingIpCreate, NetworkCreate, RouterCreate, RouterInterface, SecurityGroupCreate, SecurityGroupRuleCreate,
        SubnetCreate, TagResource,
    };
    use kuryr_openstack::octavia::LoadBalancerCreate;
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-gc-all").await;
    let mut opts = stack.options(&ns);
    opts.gc = None; // passes are driven by the test
    let cluster = "kuryr-rs-test";
    let ours = opts.settings.tags.clone();
    assert!(ours.contains(&kuryr_core::names::cluster_tag(cluster)), "{ours:?}");
    let theirs = kuryr_controller::runtime::settings::all_tags(&opts.settings.resource_tags, "some-other-cluster");
    let untagged: Vec<String> = opts.settings.resource_tags.clone();
    let project = opts.settings.project.clone();
    let ctl = start_in(&stack, &scratch, opts).await;
    let ctx = ctl.context.clone();
    let hooks = ctl.pod.clone();
    let octavia = kuryr_openstack::Octavia::new(stack.neutron.session().clone());
    let planted = Mutex::new(Vec::<Planted>::new());
    let plant = |p: Planted| planted.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    let body = async {
        let desc = |what: &str| resource_description(what, cluster, &ns, "gc-test");
        let n = &stack.neutron;
        let tag = |res: TagResource, id: String, tags: Vec<String>| async move {
            n.set_tags(res, &id, &tags).await.unwrap_or_else(|e| panic!("tag {res:?} {id}: {e}"));
        };
        let net = |label: &'static str, tags: Vec<String>| {
            let d = desc("network");
            let project = project.clone();
            async move {
                let req = NetworkCreate { name: format!("gc-{label}"), description: d, project_id: project, ..NetworkCreate::default() };
                let id = n.create_network(&req).await.expect("create network").id;
                tag(TagResource::Network, id.clone(), tags).await;
                id
            }
        };
        let octet = std::process::id() % 200 + 20;
        let subnet = |label: &'static str, network: String, third: u32, tags: Vec<String>| {
            let d = desc("subnet");
            async move {
                let req = SubnetCreate {
                    network_id: network,
                    cidr: Some(format!("10.{octet}.{third}.0/24")),
                    name: format!("gc-{label}"),
                    description: d,
                    ..SubnetCreate::default()
                };
                let id = n.create_subnet(&req).await.expect("create subnet").id;
                tag(TagResource::Subnet, id.clone(), tags).await;
                id
            }
        };
        // Networks, subnets and router interfaces (the router itself is not a kuryr resource).
        let n_keep = net("keep", ours.clone()).await;
        plant(Planted::Network(n_keep.clone()));
        let n_orphan = net("orphan", ours.clone()).await;
        plant(Planted::Network(n_orphan.clone()));
        let n_untagged = net("untagged", untagged.clone()).await;
        plant(Planted::Network(n_untagged.clone()));
        let n_other = net("other-cluster", theirs.clone()).await;
        plant(Planted::Network(n_other.clone()));
        let s_keep = subnet("keep", n_keep.clone(), 1, ours.clone()).await;
        plant(Planted::Subnet(s_keep.clone()));
        let s_orphan = subnet("orphan", n_orphan.clone(), 2, ours.clone()).await;
        plant(Planted::Subnet(s_orphan.clone()));
        let router = n.create_router(&RouterCreate { name: "gc-test-router".into(), ..RouterCreate::default() }).await.expect("router").id;
        plant(Planted::Router(router.clone()));
        for s in [&s_keep, &s_orphan] {
            n.add_router_interface(&router, &RouterInterface::subnet(s.as_str())).await.expect("add router interface");
            plant(Planted::RouterInterface { router: router.clone(), subnet: s.clone() });
        }
        let ri_orphan = n
            .list_ports(&Query::new().eq("device_id", &router).eq("network_id", &n_orphan))
            .await
            .expect("router ports")
            .pop()
            .expect("the orphan subnet's router interface")
            .id;
        // Trunk subports (nested-vlan): one of this namespace's pods that is gone, and one
        // without the cluster tag.
        let subport = |label: &'static str, tags: Vec<String>| {
            let req = kuryr_controller::pod::ports::PodPortRequest {
                namespace: ns.clone(),
                name: format!("gc-{label}"),
                pod_uid: format!("gone-{label}-{}", std::process::id()),
                node: String::new(),
                standalone: false,
            };
            let body = kuryr_openstack::neutron::PortCreate {
                network_id: stack.env["POD_NET_ID"].clone(),
                name: format!("{ns}/gc-{label}"),
                description: kuryr_controller::pod::ports::description(cluster, &req),
                project_id: project.clone(),
                ..kuryr_openstack::neutron::PortCreate::default()
            };
            async move {
                let p = n.create_port(&body).await.expect("create subport");
                tag(TagResource::Port, p.id.clone(), tags).await;
                p.id
            }
        };
        let parent = n
            .create_port(&kuryr_openstack::neutron::PortCreate {
                network_id: stack.env["POD_NET_ID"].clone(),
                name: "gc-test-vm".into(),
                ..kuryr_openstack::neutron::PortCreate::default()
            })
            .await
            .expect("parent port")
            .id;
        plant(Planted::Port(parent.clone()));
        let trunk = n
            .create_trunk(&kuryr_openstack::neutron::TrunkCreate {
                port_id: parent.clone(),
                name: "gc-test-trunk".into(),
                ..Default::default()
            })
            .await
            .expect("trunk")
            .id;
        plant(Planted::Trunk(trunk.clone()));
        let sp_orphan = subport("subport-orphan", ours.clone()).await;
        plant(Planted::Port(sp_orphan.clone()));
        let sp_untagged = subport("subport-untagged", untagged.clone()).await;
        plant(Planted::Port(sp_untagged.clone()));
        n.add_subports(
            &trunk,
            &[kuryr_openstack::neutron::SubPort::vlan(&sp_orphan, 101), kuryr_openstack::neutron::SubPort::vlan(&sp_untagged, 102)],
        )
        .await
        .expect("add subports");

        // Security groups and rules.
        let sg = |label: &'static str, tags: Vec<String>| {
            let d = desc("network policy security group");
            let project = project.clone();
            async move {
                let req = SecurityGroupCreate {
                    name: format!("gc-{label}"),
                    description: d,
                    project_id: project,
                    ..SecurityGroupCreate::default()
                };
                let id = n.create_security_group(&req).await.expect("create sg").id;
                tag(TagResource::SecurityGroup, id.clone(), tags).await;
                id
            }
        };
        let g_keep = sg("keep", ours.clone()).await;
        plant(Planted::SecurityGroup(g_keep.clone()));
        let g_orphan = sg("orphan", ours.clone()).await;
        plant(Planted::SecurityGroup(g_orphan.clone()));
        let g_untagged = sg("untagged", untagged.clone()).await;
        plant(Planted::SecurityGroup(g_untagged.clone()));
        let rule = |group: String, port: u16| {
            let d = desc("network policy rule");
            async move {
                let req = SecurityGroupRuleCreate {
                    security_group_id: group,
                    direction: Direction::Ingress,
                    ethertype: EtherType::IPv4,
                    protocol: Some("tcp".into()),
                    port_range_min: Some(port),
                    port_range_max: Some(port),
                    description: d,
                    ..SecurityGroupRuleCreate::default()
                };
                n.create_security_group_rule(&req).await.expect("create rule").id
            }
        };
        let r_keep = rule(g_keep.clone(), 8080).await;
        let r_orphan = rule(g_keep.clone(), 8081).await;
        let defaults: Vec<String> = n
            .list_security_group_rules(&Query::new().eq("security_group_id", &g_keep))
            .await
            .expect("rules")
            .into_iter()
            .filter(|r| r.id != r_keep && r.id != r_orphan)
            .map(|r| r.id)
            .collect();
        assert!(!defaults.is_empty(), "Neutron made no default rules in a new group");
        // Floating IPs.
        let fip = |tags: Vec<String>| {
            let d = desc("service floating IP");
            let project = project.clone();
            let ext = stack.env["EXT_NET_ID"].clone();
            async move {
                let req = FloatingIpCreate { floating_network_id: ext, description: d, project_id: project, ..FloatingIpCreate::default() };
                let f = n.create_floating_ip(&req).await.expect("create floating ip");
                tag(TagResource::FloatingIp, f.id.clone(), tags).await;
                f
            }
        };
        let f_keep = fip(ours.clone()).await;
        plant(Planted::FloatingIp(f_keep.id.clone()));
        let f_orphan = fip(ours.clone()).await;
        plant(Planted::FloatingIp(f_orphan.id.clone()));
        let f_other = fip(theirs.clone()).await;
        plant(Planted::FloatingIp(f_other.id.clone()));
        // Octavia load balancers (OVN provider) on the service subnet.
        let mut lbs = Vec::new();
        for (label, tags) in [("keep", ours.clone()), ("orphan", ours.clone()), ("untagged", untagged.clone())] {
            let req = LoadBalancerCreate {
                name: format!("gc-{label}"),
                description: desc("service load balancer"),
                vip_subnet_id: stack.env["SERVICE_SUBNET_ID"].clone(),
                provider: "ovn".into(),
                project_id: project.clone(),
                tags,
                ..LoadBalancerCreate::default()
            };
            let lb = octavia.create_load_balancer(&req).await.expect("create load balancer");
            plant(Planted::LoadBalancer(lb.id.clone()));
            lbs.push(lb.id);
        }
        for id in &lbs {
            octavia.wait_for_lb(id, tokio::time::Instant::now() + Duration::from_secs(120)).await.expect("load balancer ACTIVE");
        }
        let (l_keep, l_orphan, l_untagged) = (lbs[0].clone(), lbs[1].clone(), lbs[2].clone());

        // The CRDs that reference the `keep` resources.
        let status = |api_kind: &str, name: &str, spec: serde_json::Value, status: serde_json::Value| json!({"apiVersion": "openstack.org/v1", "kind": api_kind, "metadata": {"name": name, "namespace": ns}, "spec": spec, "status": status});
        let pp = PostParams::default();
        let knets: Api<KuryrNetwork> = Api::namespaced(stack.client.clone(), &ns);
        let knet: KuryrNetwork =
            serde_json::from_value(status("KuryrNetwork", &ns, json!({"nsName": ns, "projectId": project}), json!({}))).expect("knet");
        knets.create(&pp, &knet).await.expect("create KuryrNetwork");
        let st = json!({"status": {"netId": n_keep, "subnetId": s_keep, "routerId": router, "populated": true}});
        knets.patch_status(&ns, &PatchParams::default(), &Patch::Merge(st)).await.expect("KuryrNetwork status");
        let knps: Api<KuryrNetworkPolicy> = Api::namespaced(stack.client.clone(), &ns);
        let knp: KuryrNetworkPolicy = serde_json::from_value(status("KuryrNetworkPolicy", "web", json!({}), json!({}))).expect("knp");
        knps.create(&pp, &knp).await.expect("create KuryrNetworkPolicy");
        let st = json!({"status": {"securityGroupId": g_keep, "securityGroupRules": [{"id": r_keep, "security_group_id": g_keep, "direction": "ingress"}]}});
        knps.patch_status("web", &PatchParams::default(), &Patch::Merge(st)).await.expect("KuryrNetworkPolicy status");
        let klbs: Api<KuryrLoadBalancer> = Api::namespaced(stack.client.clone(), &ns);
        let klb: KuryrLoadBalancer =
            serde_json::from_value(status("KuryrLoadBalancer", "svc", json!({"ports": []}), json!({}))).expect("klb");
        klbs.create(&pp, &klb).await.expect("create KuryrLoadBalancer");
        let st = json!({"status": {"loadbalancer": {"id": l_keep}, "service_pub_ip_info": {"ip_id": f_keep.id, "ip_addr": f_keep.floating_ip_address, "alloc_method": "pool"}}});
        klbs.patch_status("svc", &PatchParams::default(), &Patch::Merge(st)).await.expect("KuryrLoadBalancer status");
        wait_for("caches synced", WAIT, || async { ctx.synced().then_some(()) }).await;

        let want: Vec<(Kind, String)> = vec![
            (Kind::LoadBalancer, l_orphan.clone()),
            (Kind::FloatingIp, f_orphan.id.clone()),
            (Kind::RouterInterface, ri_orphan.clone()),
            (Kind::TrunkSubport, sp_orphan.clone()),
            (Kind::SecurityGroupRule, r_orphan.clone()),
            (Kind::SecurityGroup, g_orphan.clone()),
            (Kind::Subnet, s_orphan.clone()),
            (Kind::Network, n_orphan.clone()),
        ];
        let kinds = |v: &[gc::Orphan]| v.iter().map(|o| (o.kind, o.id.clone())).collect::<Vec<_>>();
        let keep: Vec<String> = [
            &n_keep,
            &n_untagged,
            &n_other,
            &s_keep,
            &g_keep,
            &g_untagged,
            &r_keep,
            &f_keep.id,
            &f_other.id,
            &l_keep,
            &l_untagged,
            &sp_untagged,
            &parent,
        ]
        .into_iter()
        .chain(defaults.iter())
        .cloned()
        .collect();

        // The operator's view first: `--gc-list` prints exactly the orphans.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kuryr-controller"))
            .arg("--config-file")
            .arg(state_file("kuryr.conf"))
            .arg("--kubeconfig")
            .arg(state_file("kubeconfig"))
            .args(["--cluster-name", cluster, "--watch-namespace", &ns, "--gc-list"])
            .output()
            .expect("run kuryr-controller --gc-list");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        for (kind, id) in &want {
            assert!(stdout.lines().any(|l| l.starts_with(&format!("{} {id}", kind.as_str()))), "--gc-list misses {kind:?} {id}: {stdout}");
        }
        for id in &keep {
            let listed = stdout.lines().any(|l| l.split_whitespace().nth(1) == Some(id.as_str()));
            assert!(!listed, "--gc-list lists {id}, which is no orphan: {stdout}");
        }

        // For real: pass 1 marks exactly the orphans and deletes nothing; pass 2 sweeps them in
        // order (the orphan subnet's router interface goes before the subnet, the subnet before
        // its network), with no failed delete.
        let mut marks = Marks::default();
        let r = gc::pass(&ctx, &*hooks, &mut marks, Some(&ns), false).await.expect("pass 1");
        assert_eq!(kinds(&r.marked), want, "{r:?}");
        assert!(r.swept.is_empty() && r.failed.is_empty(), "{r:?}");
        let r = gc::pass(&ctx, &*hooks, &mut marks, Some(&ns), false).await.expect("pass 2");
        assert!(r.failed.is_empty(), "deletes failed: {:?}", r.failed);
        assert_eq!(kinds(&r.swept), want, "{r:?}");

        // What is gone is gone; everything else is still there.
        let lb_status = octavia.get_load_balancer(&l_orphan).await.map(|l| l.provisioning_status);
        assert!(
            matches!(&lb_status, Err(e) if e.is_not_found()) || matches!(lb_status.as_deref(), Ok("PENDING_DELETE" | "DELETED")),
            "{lb_status:?}"
        );
        for (kind, id) in &want {
            if *kind != Kind::LoadBalancer {
                assert!(!exists(&stack, *kind, id).await, "{kind:?} {id} survived the sweep");
            }
        }
        let keep_kinds = [
            (Kind::Network, &n_keep),
            (Kind::Network, &n_untagged),
            (Kind::Network, &n_other),
            (Kind::Subnet, &s_keep),
            (Kind::SecurityGroup, &g_keep),
            (Kind::SecurityGroup, &g_untagged),
            (Kind::SecurityGroupRule, &r_keep),
            (Kind::FloatingIp, &f_keep.id),
            (Kind::FloatingIp, &f_other.id),
            (Kind::TrunkSubport, &sp_untagged),
            (Kind::Port, &parent),
        ];
        for (kind, id) in keep_kinds.into_iter().chain(defaults.iter().map(|d| (Kind::SecurityGroupRule, d))) {
            assert!(exists(&stack, kind, id).await, "GC deleted {kind:?} {id}, which is no orphan");
        }
        let t = n.get_trunk(&trunk).await.expect("trunk");
        let subs: Vec<&str> = t.sub_ports.iter().map(|sp| sp.port_id.as_str()).collect();
        assert_eq!(subs, [sp_untagged.as_str()], "the orphan subport left the trunk, the untagged one stayed");
        let keep_ri = n.list_ports(&Query::new().eq("device_id", &router).eq("network_id", &n_keep)).await.expect("router ports");
        assert_eq!(keep_ri.len(), 1, "the referenced subnet's router interface: {keep_ri:?}");
        for id in [&l_keep, &l_untagged] {
            let lb = octavia.get_load_balancer(id).await.expect("kept load balancer");
            assert_eq!(lb.provisioning_status, "ACTIVE", "load balancer {id}");
        }
    };
    let r = AssertUnwindSafe(body).catch_unwind().await;
    remove_planted(&stack, &octavia, &planted).await;
    run(&stack, &scratch, vec![ctl], async {}).await;
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// The controller binary as a separate process (so it can be killed with SIGKILL), with the
/// stack's kuryr.conf, watching only `ns`.
fn controller_process(ns: &str, extra: &[&str], env: &[(&str, &str)]) -> ControllerProcess {
    let mut c = controller_command(&state_file("kuryr.conf"), "kuryr-rs-test", ns);
    c.args(extra).envs(env.iter().copied());
    ControllerProcess::spawn(&mut c)
}

/// kill -9 of the controller between `POST /ports` and the KuryrPort status write. The window
/// is made certain: a ValidatingAdmissionPolicy denies the KuryrPort status writes of the
/// test's namespace, so the controller creates each pod's port and then fails (and retries) the
/// write that would record it; the kill comes once every pod's port exists, and the test checks
/// at that moment that no KuryrPort names its port. After the block is lifted and a second
/// controller started, every pod has exactly one port (the crash-window port, adopted: the
/// second controller's `kuryr_controller_adopted_total{kind="port"}` counts each), every
/// KuryrPort names it, and deleting the pods leaves no port behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn kill_9_between_port_create_and_status_write_leaves_no_duplicate_or_orphan() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-kill").await;
    run(&stack, &scratch, vec![], async {
        kuryr_controller::runtime::crds::install(&stack.client).await.expect("install CRDs");
        let probe = json!({"apiVersion": "openstack.org/v1", "kind": "KuryrPort", "metadata": {"name": "probe"},
            "spec": {"podUid": "00000000-0000-0000-0000-000000000000", "podNodeName": "probe"}});
        let block = StatusWriteBlock::install(&stack.client, &ns, "kuryrports", probe, json!({"status": {"vifs": {}}})).await;
        let mut first = controller_process(&ns, &[], &[]);
        let names: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
        let mut uids = HashMap::new();
        for n in &names {
            let pod = create_pod(&stack, &scratch, &ns, n).await;
            uids.insert(n.clone(), pod.uid().expect("uid"));
        }
        let kps: Api<KuryrPort> = Api::namespaced(stack.client.clone(), &ns);
        wait_for("a Neutron port for every pod, none recorded (status writes denied)", WAIT, || async {
            for uid in uids.values() {
                if ports_of_pod(&stack, uid).await.is_empty() {
                    return None;
                }
            }
            Some(())
        })
        .await;
        first.kill();
        // The window, at the kill: each pod's port exists (one, however often the write was
        // retried) and its KuryrPort does not name it.
        let mut window = HashMap::new();
        for n in &names {
            let ports = ports_of_pod(&stack, &uids[n]).await;
            assert_eq!(ports.len(), 1, "pod {n} has {} ports before the kill: {ports:?}", ports.len());
            let kp = kps.get(n).await.expect("the pod's KuryrPort");
            assert!(
                kp.status.as_ref().is_none_or(|s| s.vifs.is_empty()),
                "{n}: the KuryrPort status was written before the kill: {:?}",
                kp.status
            );
            window.insert(n.clone(), ports[0].id.clone());
        }
        eprintln!("SIGKILLed the controller while {} ports existed that no KuryrPort status named", window.len());
        block.remove().await;

        let mut second = controller_process(&ns, &[], &[]);
        let t = Instant::now();
        for n in &names {
            let uid = &uids[n];
            let (_, vif) = kuryrport_with_vif(&stack, &ns, n, uid, |_| true).await;
            let ports = ports_of_pod(&stack, uid).await;
            assert_eq!(ports.len(), 1, "pod {n} has {} ports after the crash: {ports:?}", ports.len());
            assert_eq!(vif.port_id, window[n], "pod {n}: the KuryrPort names another port than the crash-window one");
        }
        let adopted = second.sample(r#"kuryr_controller_adopted_total{kind="port"}"#).await;
        eprintln!(
            "restarted controller: all VIFs written {:?} after the restart; kuryr_controller_adopted_total{{kind=\"port\"}} = {adopted:?}",
            t.elapsed()
        );
        // At least one per pod (a retry whose write met the block before its removal was seen
        // adopts again).
        assert!(
            adopted.is_some_and(|a| a >= names.len() as f64),
            "the restarted controller adopted {adopted:?} ports, not the {} of the window",
            names.len()
        );
        for n in &names {
            delete_pod_and_wait(&stack, &ns, n, &window[n]).await;
        }
        for uid in uids.values() {
            assert!(ports_of_pod(&stack, uid).await.is_empty(), "port of pod {uid} leaked");
        }
        second.kill();
    })
    .await;
}

/// Two controller processes with Lease election: SIGKILL of the leader hands over once the
/// lease expires, and pods created afterwards still get their ports, from the other replica.
/// The hand-over (kill → the survivor holds the Lease) must fall within the window the lease
/// settings allow: no earlier than `lease_duration − retry_period` (the killed leader renewed at
/// most one retry period before the kill; earlier would mean two writers) and no later than
/// `lease_duration + retry_period` (the follower looks once per retry period), each with a
/// margin of [`LEASE_MARGIN`]; the survivor's first write (the VIF of a pod created right after
/// the kill) follows within [`FIRST_WRITE_MARGIN`] of that upper bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn two_replicas_leader_killed_pods_keep_getting_ports() {
    use k8s_openapi::api::coordination::v1::Lease;
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-ha").await;
    // The binary's lease settings (`--leader-elect` takes LeaseConfig::new's).
    let cfg = LeaseConfig::new(&ns, "kuryr-controller", "-");
    let spawn = |who: &str| {
        let args = ["--leader-elect", "--leader-elect-namespace", ns.as_str(), "--leader-elect-name", "kuryr-controller"];
        controller_process(&ns, &args, &[("POD_NAME", who)])
    };
    let mut replicas = vec![("ctl-a", spawn("ctl-a")), ("ctl-b", spawn("ctl-b"))];
    let leases: Api<Lease> = Api::namespaced(stack.client.clone(), &ns);
    let lease = || async { leases.get_opt("kuryr-controller").await.expect("get the Lease").and_then(|l| l.spec) };
    let body = async {
        let first = create_pod(&stack, &scratch, &ns, "before").await;
        kuryrport_with_vif(&stack, &ns, "before", &first.uid().expect("uid"), |_| true).await;
        let leader = wait_for("a lease holder", WAIT, || async { lease().await?.holder_identity }).await;
        let spec = lease().await.expect("the Lease");
        let secs = i32::try_from(cfg.lease_duration.as_secs()).expect("lease seconds");
        assert_eq!(spec.lease_duration_seconds, Some(secs), "the Lease carries the binary's duration");
        let idx = replicas.iter().position(|(who, _)| leader.starts_with(&format!("{who}_"))).expect("holder is one of ours");
        let (who, mut child) = replicas.remove(idx);
        let survivor = format!("{}_", replicas[0].0);
        child.kill();
        let t = Instant::now();
        eprintln!("SIGKILLed the leader {who}");
        let pod = create_pod(&stack, &scratch, &ns, "after").await;
        let uid = pod.uid().expect("uid");
        let bound = cfg.lease_duration + cfg.retry_period + LEASE_MARGIN;
        let earliest = cfg.lease_duration.saturating_sub(cfg.retry_period + LEASE_MARGIN);
        let new_leader =
            wait_for("the survivor to hold the Lease", bound + WAIT, || async { lease().await?.holder_identity.filter(|h| *h != leader) })
                .await;
        let handover = t.elapsed();
        eprintln!(
            "hand-over: leader killed → {new_leader} holds the Lease after {handover:?} (allowed {earliest:?}..={bound:?}: lease {:?}, retry {:?}, margin {LEASE_MARGIN:?})",
            cfg.lease_duration, cfg.retry_period
        );
        assert!(new_leader.starts_with(&survivor), "lease now held by {new_leader:?}");
        assert!(handover <= bound, "hand-over took {handover:?}, more than lease + retry + margin = {bound:?}");
        assert!(
            handover >= earliest,
            "hand-over after {handover:?}: before the killed leader's lease ({:?}) could have expired",
            cfg.lease_duration
        );
        let (_, vif) = kuryrport_with_vif(&stack, &ns, "after", &uid, |_| true).await;
        let acted = t.elapsed();
        eprintln!("first write of the survivor: pod created after the kill got port {} {acted:?} after the kill", vif.port_id);
        assert!(
            acted <= bound + FIRST_WRITE_MARGIN,
            "the survivor wrote the VIF {acted:?} after the kill, more than {:?}",
            bound + FIRST_WRITE_MARGIN
        );
        assert_eq!(ports_of_pod(&stack, &uid).await.len(), 1);
    };
    let r = AssertUnwindSafe(body).catch_unwind().await;
    // The survivor handles the finalizers during cleanup.
    cleanup(&stack, &scratch, vec![]).await;
    drop(replicas);
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// `[neutron] cloud = NAME` + `clouds_file`: the controller authenticates with the stack's
/// clouds.yaml (application credential) instead of `[neutron]` options; an unknown cloud is
/// refused naming the option.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn credentials_from_clouds_yaml() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-clouds").await;
    // No controller of this test installs them, and this test may run first on a fresh stack.
    kuryr_controller::runtime::crds::install(&stack.client).await.expect("install the CRDs");
    run(&stack, &scratch, vec![], async {
        let conf = std::fs::read_to_string(state_file("kuryr.conf")).expect("kuryr.conf");
        let with_cloud = |cloud: &str| {
            // [neutron] replaced by a reference into clouds.yaml.
            let mut out = String::new();
            let mut skip = false;
            for l in conf.lines() {
                let t = l.trim();
                if t.starts_with('[') {
                    skip = t == "[neutron]";
                    if skip {
                        out.push_str(&format!("[neutron]\ncloud = {cloud}\nclouds_file = {}\n", state_file("clouds.yaml").display()));
                    }
                }
                if !skip {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            let path = std::env::temp_dir().join(format!("{ns}-{cloud}.conf"));
            std::fs::write(&path, out).expect("write conf");
            path
        };
        let gc_list = |conf: &Path| {
            std::process::Command::new(env!("CARGO_BIN_EXE_kuryr-controller"))
                .arg("--config-file")
                .arg(conf)
                .arg("--kubeconfig")
                .arg(state_file("kubeconfig"))
                .args(["--cluster-name", "kuryr-rs-test", "--watch-namespace", &ns, "--gc-list"])
                .output()
                .expect("run kuryr-controller")
        };
        let ok = gc_list(&with_cloud("kuryr"));
        assert_eq!(
            ok.status.code(),
            Some(0),
            "authenticated through clouds.yaml and found no orphan in an empty namespace: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let bad = gc_list(&with_cloud("no-such-cloud"));
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(!bad.status.success() && err.contains("[neutron] cloud = no-such-cloud"), "{err}");
    })
    .await;
}

/// TLS to the API server is verified against the CA the kubeconfig names: the stack's real
/// kube-apiserver through the controller's own client code (`kube_config` + `kube_client`, what
/// the binary runs) with a kubeconfig naming another CA is refused at once, naming the server
/// and the certificate problem; the binary exits non-zero with that message instead of running
/// with watches that cannot work; with the stack's CA the same code reaches the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn api_server_certificate_is_verified_against_the_kubeconfig_ca() {
    use kuryr_controller::runtime::settings::{kube_client, kube_config};
    if !kuryr_test_support::certs::openssl_available() {
        kuryr_test_support::skip!("no openssl CLI to make the test CA");
    }
    // The binary must not overlap another test's controller (they check for none).
    let _serial = SERIAL.lock().await;
    let stack = Stack::connect().await;
    let dir = std::env::temp_dir().join(unique("kc-tls"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let other_ca = kuryr_test_support::certs::make_ca(&dir, "other");
    let wrong = dir.join("kubeconfig");
    kuryr_test_support::certs::stack_kubeconfig_with_ca(&other_ca, &wrong);
    let k = &stack.config.kubernetes;

    let cfg = kube_config(Some(&wrong), k).await.expect("a kubeconfig with another CA is a valid kubeconfig");
    let server = cfg.cluster_url.to_string();
    let started = Instant::now();
    let err = match kube_client(cfg).await {
        Ok(_) => panic!("connected to {server} with a CA that did not sign its certificate"),
        Err(e) => e.to_string(),
    };
    eprintln!("refused after {:?}: {err}", started.elapsed());
    for want in [server.as_str(), "TLS certificate verification failed", "UnknownIssuer"] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    let client = kube_client(kube_config(Some(&state_file("kubeconfig")), k).await.expect("kubeconfig")).await.expect("the stack's CA");
    Api::<Namespace>::all(client).list_metadata(&ListParams::default().limit(1)).await.expect("list namespaces with the stack's CA");

    // The binary, confined to a namespace that does not exist should it start after all.
    let stderr_path = dir.join("stderr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kuryr-controller"))
        .arg("--config-file")
        .arg(state_file("kuryr.conf"))
        .arg("--kubeconfig")
        .arg(&wrong)
        .args(["--cluster-name", "kuryr-rs-test", "--watch-namespace", &unique("kc-tls-none"), "--gc-interval-seconds", "0"])
        .args(["--health-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn kuryr-controller");
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.unwrap_or_else(|| panic!("kuryr-controller with a wrong CA still ran after 60 s: {stderr}"));
    assert!(!status.success(), "exit status {status}: {stderr}");
    for want in [server.as_str(), "TLS certificate verification failed"] {
        assert!(stderr.contains(want), "{want:?} not in: {stderr}");
    }
}

// ------------------------------------------------------------------------------ warm pools

const TEST_CLUSTER: &str = "kuryr-rs-test";

/// Free pool ports of the test cluster in Neutron.
async fn pool_ports(stack: &Stack) -> Vec<Port> {
    let all = stack.neutron.list_ports(&Query::new().eq("device_owner", DEVICE_OWNER)).await.expect("list ports");
    all.into_iter().filter(|p| kuryr_controller::pod::pool::is_pool_port(p, TEST_CLUSTER)).collect()
}

/// Port ids the node's pool KuryrPort publishes.
async fn published(stack: &Stack, node: &str) -> std::collections::BTreeSet<String> {
    let api: Api<KuryrPort> = Api::namespaced(stack.client.clone(), kuryr_core::names::POOL_NAMESPACE);
    match api.get_opt(&kuryr_core::names::pool_kuryrport_name(node)).await.expect("get pool kuryrport") {
        Some(kp) => kp.status.map(|s| s.vifs.into_keys().collect()).unwrap_or_default(),
        None => Default::default(),
    }
}

/// Deletes the test cluster's pool ports and the node's pool KuryrPort.
async fn clear_pools(stack: &Stack, node: &str) {
    for p in pool_ports(stack).await {
        let _ = stack.neutron.delete_port(&p.id).await;
    }
    let api: Api<KuryrPort> = Api::namespaced(stack.client.clone(), kuryr_core::names::POOL_NAMESPACE);
    let _ = api.delete(&kuryr_core::names::pool_kuryrport_name(node), &DeleteParams::default()).await;
}

/// `vif_pool_driver = neutron`: the first pod misses, gets its own port, and once that port is
/// ACTIVE the pool is filled (chunks of 1, then up to `ports_pool_batch`), published in the
/// node's pool KuryrPort; the next pod claims a pool port (same id, stamped with its UID, gone
/// from the pool KuryrPort) and the pool is refilled; deleting that pod puts
/// its port back into the pool (not deleted); a restarted controller recovers the pool from
/// Neutron alone and hands a recovered port to the next pod without creating one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn warm_pool_fills_in_bulk_claims_recycles_and_recovers() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let node = stack.node();
    clear_pools(&stack, &node).await;
    let ns = create_namespace(&stack, &scratch, "kc-pool").await;
    let pool_opts = || {
        let mut o = stack.options(&ns);
        o.settings.pool = Some(kuryr_controller::runtime::settings::PoolSettings { min: 2, max: 4, batch: 2 });
        o
    };
    let first = start_in(&stack, &scratch, pool_opts()).await;
    let ctl = Mutex::new(Some(first));
    let body = async {
        // A miss: the pod gets a fresh port. The refill waits until that port is ACTIVE (no
        // refill competes with the port Neutron is binding for the pod), so nothing is in the
        // pool before the port is plugged; then the pool is filled.
        let a = create_pod(&stack, &scratch, &ns, "pool-a").await;
        let a_uid = a.uid().expect("uid");
        let (_, vif_a) = kuryrport_with_vif(&stack, &ns, "pool-a", &a_uid, |_| true).await;
        assert!(!vif_a.active && pool_ports(&stack).await.is_empty(), "the refill started before the missing pod's port was ACTIVE");
        let _ovs = plug_like_the_daemon(&scratch, &vif_a, &a_uid).await;
        let filled = wait_for("2 pool ports published", WAIT, || async {
            let ids: std::collections::BTreeSet<String> = pool_ports(&stack).await.into_iter().map(|p| p.id).collect();
            (ids.len() == 2 && published(&stack, &node).await == ids).then_some(ids)
        })
        .await;
        assert!(!filled.contains(&vif_a.port_id), "the missing pod's own port is not a pool port");
        for p in pool_ports(&stack).await {
            assert_eq!((p.binding_host_id.as_str(), p.name.as_str()), (node.as_str(), format!("kuryr-pool/{node}").as_str()), "{p:?}");
        }

        // A claim: the next pod's port is one of them, stamped with its UID.
        let b = create_pod(&stack, &scratch, &ns, "pool-b").await;
        let b_uid = b.uid().expect("uid");
        let (_, vif_b) = kuryrport_with_vif(&stack, &ns, "pool-b", &b_uid, |_| true).await;
        assert!(filled.contains(&vif_b.port_id), "pod b got {} instead of a pool port {filled:?}", vif_b.port_id);
        // The pod's stamp follows in the background.
        wait_for("pod b's stamp on its port", WAIT, || async {
            let p = stack.neutron.get_port(&vif_b.port_id).await.expect("port b");
            (p.device_id == b_uid && p.name == format!("{ns}/pool-b") && p.tags.iter().any(|t| t == "kuryr-rs-local")).then_some(())
        })
        .await;
        let refilled = wait_for("the claimed port unpublished and the pool refilled to >= 2", WAIT, || async {
            let p = published(&stack, &node).await;
            (!p.contains(&vif_b.port_id) && p.len() >= 2).then_some(p)
        })
        .await;

        // Release: pod b's port goes back to the pool instead of being deleted.
        let pods: Api<Pod> = Api::namespaced(stack.client.clone(), &ns);
        let kps: Api<KuryrPort> = Api::namespaced(stack.client.clone(), &ns);
        pods.delete("pool-b", &DeleteParams::default()).await.expect("delete pod b");
        wait_for("KuryrPort pool-b gone", WAIT, || async { kps.get_opt("pool-b").await.expect("get kp").is_none().then_some(()) }).await;
        let back = stack.neutron.get_port(&vif_b.port_id).await.expect("the recycled port still exists");
        assert!(kuryr_controller::pod::pool::is_pool_port(&back, TEST_CLUSTER), "restamped as a pool port: {back:?}");
        wait_for("the recycled port published again", WAIT, || async {
            published(&stack, &node).await.contains(&vif_b.port_id).then_some(())
        })
        .await;
        let now = published(&stack, &node).await;
        assert!(now.len() <= 4 && now.len() > refilled.len(), "recycled on top of {refilled:?}, within ports_pool_max = 4: {now:?}");

        // Restart: the pool is rebuilt from Neutron; the next pod gets a recovered port.
        let before: std::collections::BTreeSet<String> = pool_ports(&stack).await.into_iter().map(|p| p.id).collect();
        let old = ctl.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(c) = old {
            c.shutdown().await;
        }
        let second = start_in(&stack, &scratch, pool_opts()).await;
        let (health, pools) = (second.health_addr.expect("health"), second.pod.pools.clone().expect("pools on"));
        *ctl.lock().unwrap_or_else(|e| e.into_inner()) = Some(second);
        // Readiness waits for the recovery: once /ready answers 200 the pools already hold every
        // pool port Neutron has, before any pod asked for one.
        wait_for("/ready after the restart", WAIT, || async { (http_get(health, "/ready").await.0 == 200).then_some(()) }).await;
        assert_eq!(pools.node_ports(&node), before, "ready before the pools were recovered from Neutron");
        let c = create_pod(&stack, &scratch, &ns, "pool-c").await;
        let (_, vif_c) = kuryrport_with_vif(&stack, &ns, "pool-c", &c.uid().expect("uid"), |_| true).await;
        assert!(before.contains(&vif_c.port_id), "pod c got {} instead of a recovered pool port {before:?}", vif_c.port_id);
    };
    let r = AssertUnwindSafe(body).catch_unwind().await;
    let controllers: Vec<Running> = ctl.lock().unwrap_or_else(|e| e.into_inner()).take().into_iter().collect();
    cleanup(&stack, &scratch, controllers).await;
    clear_pools(&stack, &node).await;
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// GC of warm-pool ports whose node was deleted: a pool port of a node that no longer exists is
/// swept on the second pass although its pool KuryrPort still lists it, and that KuryrPort goes
/// with it; pool ports of existing nodes stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn gc_collects_the_pool_ports_of_a_deleted_node() {
    use kuryr_controller::gc::{self, Kind, Marks};
    use kuryr_core::names::{pool_kuryrport_name, POOL_NAMESPACE};
    let _serial = SERIAL.lock().await;
    let stack = Stack::new().await;
    let scratch = Scratch::default();
    let ns = create_namespace(&stack, &scratch, "kc-gc-pool").await;
    let mut opts = stack.options(&ns);
    opts.gc = None;
    opts.settings.pool = Some(kuryr_controller::runtime::settings::PoolSettings { min: 0, max: 4, batch: 1 });
    let settings = opts.settings.clone();
    let ctl = start_in(&stack, &scratch, opts).await;
    let ctx = ctl.context.clone();
    let hooks = ctl.pod.clone();
    let gone = unique("kc-gone-node");
    run(&stack, &scratch, vec![ctl], async {
        // Ports as a pool refill for that node makes them, and the node's pool KuryrPort.
        let key = kuryr_controller::pod::pool::PoolKey { node: gone.clone(), network_id: stack.env["POD_NET_ID"].clone() };
        let body = kuryr_controller::pod::pool::pool_port_create(&settings, &key, &settings.pod_security_groups);
        let port = stack.neutron.create_port(&body).await.expect("plant pool port");
        push(&scratch.ports, &port.id);
        let kps: Api<KuryrPort> = Api::namespaced(stack.client.clone(), POOL_NAMESPACE);
        let ns_api = Api::<Namespace>::all(stack.client.clone());
        if ns_api.get_opt(POOL_NAMESPACE).await.expect("get ns").is_none() {
            let pool_ns: Namespace = serde_json::from_value(json!({"metadata": {"name": POOL_NAMESPACE}})).expect("ns");
            ns_api.create(&PostParams::default(), &pool_ns).await.expect("create kuryr-pool namespace");
        }
        kps.create(&PostParams::default(), &KuryrPort::pool(&gone)).await.expect("pool KuryrPort");
        let others: Vec<String> = pool_ports(&stack).await.into_iter().filter(|p| p.id != port.id).map(|p| p.id).collect();
        wait_for("caches synced", WAIT, || async { ctx.synced().then_some(()) }).await;

        let mut marks = Marks::default();
        let r = gc::pass(&ctx, &*hooks, &mut marks, Some(POOL_NAMESPACE), false).await.expect("pass 1");
        let mine: Vec<_> = r.marked.iter().filter(|o| o.kind == Kind::Port).map(|o| o.id.clone()).collect();
        assert_eq!(mine, std::slice::from_ref(&port.id), "{r:?}");
        assert!(!port_gone(&stack, &port.id).await, "deleted on the first pass");
        let r = gc::pass(&ctx, &*hooks, &mut marks, Some(POOL_NAMESPACE), false).await.expect("pass 2");
        assert!(r.failed.is_empty(), "{r:?}");
        assert!(r.swept.iter().any(|o| o.id == port.id && o.via.as_deref() == Some(gone.as_str())), "{r:?}");
        assert!(port_gone(&stack, &port.id).await, "the deleted node's pool port survived");
        assert!(kps.get_opt(&pool_kuryrport_name(&gone)).await.expect("get").is_none(), "the deleted node's pool KuryrPort survived");
        for o in others {
            assert!(!port_gone(&stack, &o).await, "GC deleted pool port {o} of an existing node");
        }
    })
    .await;
    let _ = Api::<KuryrPort>::namespaced(stack.client.clone(), POOL_NAMESPACE)
        .delete(&pool_kuryrport_name(&gone), &DeleteParams::default())
        .await;
}
