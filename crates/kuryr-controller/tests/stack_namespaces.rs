//! Namespace networks (`[kubernetes] pod_subnets_driver = namespace`) against the REAL local
//! stack: kuryr-controller (in-process, or as a process for kill -9) with the stack's kuryr.conf
//! switched to the namespace driver (`[namespace_subnet] pod_router = kuryr-router`,
//! `pod_subnet_pool = kuryr-namespaces`), watching only the test's namespace. No kuryr-daemon
//! runs: pods stay ContainerCreating, their ports DOWN (the e2e `tests/e2e/tests/namespaces.rs`
//! wires pods and pings).
//!
//! Run: `cargo test -p kuryr-controller --test stack_namespaces -- --ignored --test-threads=1`

mod common;

use common::{controller_command, state_file, unique, wait_for, ControllerProcess, Stack, StatusWriteBlock};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use kuryr_controller::{start, Options, Running};
use kuryr_core::config::{Config, Role};
use kuryr_core::crd::{KuryrNetwork, KuryrPort};
use kuryr_core::vif::Vif;
use kuryr_openstack::neutron::Network;
use kuryr_openstack::Query;
use serde_json::json;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);
const CLUSTER: &str = "kuryr-rs-test";

/// The stack's kuryr.conf with the namespace subnet driver and its handlers (the
/// `[namespace_subnet]` section is already there).
fn namespace_conf_text() -> String {
    let base = std::fs::read_to_string(state_file("kuryr.conf")).expect("kuryr.conf");
    let mut out = String::new();
    for line in base.lines() {
        let l = line.trim_start();
        if l.starts_with("pod_subnets_driver") || l.starts_with("enabled_handlers") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if l == "[kubernetes]" {
            out.push_str("pod_subnets_driver = namespace\nenabled_handlers = vif,kuryrport,namespace,kuryrnetwork\n");
        }
    }
    out
}

fn options(stack: &Stack, ns: &str) -> Options {
    let config = Config::parse(&namespace_conf_text(), Role::Controller).expect("namespace kuryr.conf");
    let mut o = Options::from_config(&config, stack.kube.clone(), CLUSTER).expect("options");
    assert!(o.namespaces.is_some(), "the namespace driver is on");
    o.namespace = Some(ns.to_string());
    o.install_crds = true;
    o.gc = None;
    o.health_addr = Some("127.0.0.1:0".parse().expect("addr"));
    o.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
    o
}

async fn create_namespace(stack: &Stack, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kuryr-rs-test": "namespaces"}}})).expect("ns");
    Api::<Namespace>::all(stack.client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
}

async fn create_pod(stack: &Stack, ns: &str, name: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "localhost/kuryr/busybox:1.35", "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]
        }
    }))
    .expect("pod");
    Api::<Pod>::namespaced(stack.client.clone(), ns).create(&PostParams::default(), &pod).await.expect("create pod")
}

async fn ready_network(stack: &Stack, ns: &str) -> KuryrNetwork {
    let api: Api<KuryrNetwork> = Api::namespaced(stack.client.clone(), ns);
    wait_for(&format!("KuryrNetwork {ns} ready"), WAIT, || async {
        let k = api.get_opt(ns).await.expect("get kuryrnetwork")?;
        let s = k.status.as_ref()?;
        (s.net_id.is_some() && s.subnet_id.is_some() && s.router_id.is_some()).then_some(k)
    })
    .await
}

async fn vif_of(stack: &Stack, ns: &str, name: &str) -> Vif {
    let api: Api<KuryrPort> = Api::namespaced(stack.client.clone(), ns);
    wait_for(&format!("KuryrPort {ns}/{name} with a VIF"), WAIT, || async {
        let kp = api.get_opt(name).await.expect("get kuryrport")?;
        let (_, vif) = kp.status.as_ref()?.default_vif()?;
        Some(vif.expect("readable VIF"))
    })
    .await
}

/// The networks the controller stamped for namespace `ns` (any KuryrNetwork incarnation).
async fn stamped_networks(stack: &Stack, ns: &str) -> Vec<Network> {
    let prefix = format!("kuryr-rs namespace network: cluster {CLUSTER}, {ns}/{ns} (KuryrNetwork uid ");
    let all = stack.neutron.list_networks(&Query::new()).await.expect("list networks");
    all.into_iter().filter(|n| n.description.starts_with(&prefix)).collect()
}

async fn router_interfaces_on(stack: &Stack, subnet: &str) -> usize {
    let q = Query::new().eq("device_id", &stack.env["ROUTER_ID"]);
    let ports = stack.neutron.list_ports(&q).await.expect("router ports");
    ports.iter().filter(|p| p.fixed_ips.iter().any(|ip| ip.subnet_id == subnet)).count()
}

/// Deletes the namespace and waits until it is gone (the controller, if running, handles the
/// finalizers); returns how long that took.
async fn delete_namespace(stack: &Stack, ns: &str) -> Duration {
    let api = Api::<Namespace>::all(stack.client.clone());
    let t = Instant::now();
    let _ = api.delete(ns, &DeleteParams::default()).await;
    wait_for(&format!("namespace {ns} gone"), WAIT, || async { api.get_opt(ns).await.expect("get ns").is_none().then_some(()) }).await;
    t.elapsed()
}

/// Last resort after a failure: finalizers stripped, namespace deleted, stamped networks deleted.
async fn force_cleanup(stack: &Stack, ns: &str) {
    let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let _ = Api::<Namespace>::all(stack.client.clone()).delete(ns, &DeleteParams::default()).await;
    for p in Api::<Pod>::namespaced(stack.client.clone(), ns).list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        let _ = Api::<Pod>::namespaced(stack.client.clone(), ns).patch(&p.name_any(), &PatchParams::default(), &strip).await;
    }
    for k in Api::<KuryrPort>::namespaced(stack.client.clone(), ns).list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default()
    {
        let _ = Api::<KuryrPort>::namespaced(stack.client.clone(), ns).patch(&k.name_any(), &PatchParams::default(), &strip).await;
    }
    for k in
        Api::<KuryrNetwork>::namespaced(stack.client.clone(), ns).list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default()
    {
        let _ = Api::<KuryrNetwork>::namespaced(stack.client.clone(), ns).patch(&k.name_any(), &PatchParams::default(), &strip).await;
    }
    for n in stamped_networks(stack, ns).await {
        for sn in &n.subnets {
            let iface = kuryr_openstack::neutron::RouterInterface::subnet(sn);
            let _ = stack.neutron.remove_router_interface(&stack.env["ROUTER_ID"], &iface).await;
        }
        for p in stack.neutron.list_ports(&Query::new().eq("network_id", &n.id)).await.unwrap_or_default() {
            let _ = stack.neutron.delete_port(&p.id).await;
        }
        let _ = stack.neutron.delete_network(&n.id).await;
        eprintln!("cleanup: deleted leftover network {}", n.id);
    }
}

async fn guarded<F: std::future::Future<Output = ()>>(stack: &Stack, nss: &[&str], controllers: Vec<Running>, body: F) {
    use futures_util::FutureExt;
    let r = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    if r.is_err() {
        for ns in nss {
            force_cleanup(stack, ns).await;
        }
    }
    for c in controllers {
        c.shutdown().await;
    }
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// Namespace → KuryrNetwork with network, subnet (from the pool) and router interface, recorded
/// in its status; the namespace's pods get ports on that subnet; deleting the namespace removes
/// router interface, subnet and network; a namespace re-created with the same name at once gets
/// a new network. Times printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn namespace_gets_its_network_pods_use_it_and_deletion_removes_it() {
    let stack = Stack::connect().await;
    let ns = unique("kns");
    create_namespace(&stack, &ns).await;
    let running = start(options(&stack, &ns)).await.expect("controller");
    let body = async {
        let t = Instant::now();
        let p0 = create_pod(&stack, &ns, "p0").await;
        let k = ready_network(&stack, &ns).await;
        let t_ready = t.elapsed();
        let vif = vif_of(&stack, &ns, "p0").await;
        let t_vif = t.elapsed();
        let st = k.status.clone().expect("status");
        let (net, subnet) = (st.net_id.clone().expect("netId"), st.subnet_id.clone().expect("subnetId"));
        eprintln!(
            "first pod created → KuryrNetwork ready {t_ready:?}, → VIF written {t_vif:?} (network {net}, subnet {subnet} {:?})",
            st.subnet_cidr
        );
        assert_eq!(st.router_id.as_deref(), Some(stack.env["ROUTER_ID"].as_str()));
        assert_eq!(k.finalizers(), ["kuryrnetwork.finalizers.kuryr.openstack.org"]);
        assert_eq!(k.spec.ns_name, ns);
        assert_eq!(k.spec.project_id, stack.env["K8S_PROJECT_ID"]);

        let n = stack.neutron.get_network(&net).await.expect("network");
        assert!(n.tags.contains(&format!("kuryr-rs-cluster={CLUSTER}")), "{:?}", n.tags);
        let ns_uid = Api::<Namespace>::all(stack.client.clone()).get(&ns).await.expect("ns").uid().expect("uid");
        assert_eq!(n.name, format!("{ns_uid}/{ns}"), "upstream's name");
        let sn = stack.neutron.get_subnet(&subnet).await.expect("subnet");
        assert_eq!(sn.subnetpool_id.as_deref(), Some(stack.env["SUBNETPOOL_ID"].as_str()));
        assert_eq!(Some(sn.cidr.clone()), st.subnet_cidr);
        assert!(sn.cidr.starts_with("10.12") && sn.cidr.ends_with("/24"), "from kuryr-namespaces (10.128.0.0/14): {}", sn.cidr);
        assert_eq!(router_interfaces_on(&stack, &subnet).await, 1);

        // The pods' ports are on the namespace's subnet.
        let port = stack.neutron.get_port(&vif.port_id).await.expect("port");
        assert_eq!(port.network_id, net);
        assert!(port.fixed_ips.iter().all(|ip| ip.subnet_id == subnet), "{:?}", port.fixed_ips);
        assert_eq!(port.device_id, p0.uid().expect("uid"));
        let t = Instant::now();
        create_pod(&stack, &ns, "p1").await;
        let vif1 = vif_of(&stack, &ns, "p1").await;
        eprintln!("second pod (network ready) created → VIF written {:?}", t.elapsed());
        assert_eq!(stack.neutron.get_port(&vif1.port_id).await.expect("port").network_id, net);

        // Deletion: the namespace waits for its KuryrNetwork's finalizer; then nothing is left.
        let t = Instant::now();
        let _ = Api::<Namespace>::all(stack.client.clone()).delete(&ns, &DeleteParams::default()).await;
        let kn_api: Api<KuryrNetwork> = Api::namespaced(stack.client.clone(), &ns);
        wait_for("the KuryrNetwork deleted", WAIT, || async {
            kn_api.get_opt(&ns).await.expect("get kuryrnetwork").is_none_or(|k| k.metadata.deletion_timestamp.is_some()).then_some(())
        })
        .await;
        let t_kn = t.elapsed();
        wait_for("network gone", WAIT, || async { stack.neutron.get_network(&net).await.is_err_and(|e| e.is_not_found()).then_some(()) })
            .await;
        let t_net = t.elapsed();
        let took = t_net + delete_namespace(&stack, &ns).await;
        eprintln!(
            "namespace deleted → KuryrNetwork deleting {t_kn:?}, network gone {t_net:?}, namespace gone {took:?} (Kubernetes' namespace controller)"
        );
        assert!(stack.neutron.get_network(&net).await.is_err_and(|e| e.is_not_found()), "network {net} left");
        assert!(stack.neutron.get_subnet(&subnet).await.is_err_and(|e| e.is_not_found()), "subnet {subnet} left");
        assert_eq!(router_interfaces_on(&stack, &subnet).await, 0);
        assert!(stamped_networks(&stack, &ns).await.is_empty());

        // Re-created with the same name: a new network at once.
        create_namespace(&stack, &ns).await;
        let t = Instant::now();
        create_pod(&stack, &ns, "p0").await;
        let k2 = ready_network(&stack, &ns).await;
        let vif2 = vif_of(&stack, &ns, "p0").await;
        eprintln!("re-created namespace: pod created → VIF written {:?}", t.elapsed());
        let net2 = k2.status.and_then(|s| s.net_id).expect("netId");
        assert_ne!(net2, net);
        assert_eq!(stack.neutron.get_port(&vif2.port_id).await.expect("port").network_id, net2);
        delete_namespace(&stack, &ns).await;
        assert!(stamped_networks(&stack, &ns).await.is_empty(), "second network left");
    };
    guarded(&stack, &[&ns], vec![running], body).await;
}

fn controller_process(conf: &std::path::Path, ns: &str) -> ControllerProcess {
    ControllerProcess::spawn(&mut controller_command(conf, CLUSTER, ns))
}

/// kill -9 of the controller between `POST /networks` and the KuryrNetwork status write (made
/// deterministic with a ValidatingAdmissionPolicy that denies the status writes in the test
/// namespace): the namespace is then deleted while no controller runs; a new controller (the
/// status still never written) finds the network by its owner stamp, removes its router
/// interface, subnet and network, and lets the namespace go. Nothing is left in Neutron.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn kill_9_between_network_create_and_status_write_leaves_nothing_behind() {
    kill_9_case(false).await;
}

/// The same crash window, then the status writes allowed again and a new controller started:
/// it adopts the network the killed one made (by its owner stamp: one network, the status names
/// it), finishes subnet and router interface, and the pod gets its port there; deleting the
/// namespace afterwards leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn kill_9_between_network_create_and_status_write_then_restart_adopts_the_network() {
    kill_9_case(true).await;
}

async fn kill_9_case(adopt: bool) {
    let stack = Stack::connect().await;
    let ns = unique(if adopt { "kns-adopt" } else { "kns-kill" });
    // The probe below needs the CRDs (the controller processes install them too).
    kuryr_controller::runtime::crds::install(&stack.client).await.expect("install CRDs");
    create_namespace(&stack, &ns).await;
    let conf = std::env::temp_dir().join(format!("kuryr-kns-kill-{}.conf", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&conf).expect("conf");
        std::io::Write::write_all(&mut f, namespace_conf_text().as_bytes()).expect("write conf");
    }
    let body = async {
        // Status writes denied before anything is created: the controller stays in the window.
        let probe = json!({"apiVersion": "openstack.org/v1", "kind": "KuryrNetwork",
            "metadata": {"name": "probe"}, "spec": {"nsName": "probe", "projectId": "x", "nsLabels": {}}});
        let block = StatusWriteBlock::install(&stack.client, &ns, "kuryrnetworks", probe, json!({"status": {"netId": "x"}})).await;
        let mut first = controller_process(&conf, &ns);
        create_pod(&stack, &ns, "p0").await;
        let net = wait_for("a stamped network whose id the status does not hold", WAIT, || async {
            stamped_networks(&stack, &ns).await.into_iter().next()
        })
        .await;
        assert_eq!(stamped_networks(&stack, &ns).await.len(), 1, "one network however often the status write failed");
        first.kill();
        // The window, at the kill: the network exists, the status does not name it.
        let k = Api::<KuryrNetwork>::namespaced(stack.client.clone(), &ns).get(&ns).await.expect("kuryrnetwork");
        assert!(k.status.as_ref().is_none_or(|s| s.net_id.is_none()), "the status was written before the kill: {:?}", k.status);
        stack.neutron.get_network(&net.id).await.unwrap_or_else(|e| panic!("the crash-window network {}: {e}", net.id));
        eprintln!("SIGKILLed the controller: network {} exists, the KuryrNetwork status names nothing", net.id);

        if adopt {
            block.remove().await;
            // Status writes go through again once the binding is gone.
            let mut second = controller_process(&conf, &ns);
            let t = Instant::now();
            let ready = tokio::time::timeout(WAIT + Duration::from_secs(5), ready_network(&stack, &ns)).await;
            let vif = match ready {
                Ok(_) => tokio::time::timeout(WAIT, vif_of(&stack, &ns, "p0")).await.ok(),
                Err(_) => None,
            };
            let k = Api::<KuryrNetwork>::namespaced(stack.client.clone(), &ns).get(&ns).await.expect("kuryrnetwork");
            eprintln!("restarted controller: KuryrNetwork ready {:?} after the restart", t.elapsed());
            let adopted = second.sample(r#"kuryr_controller_adopted_total{kind="network"}"#).await;
            let nets = stamped_networks(&stack, &ns).await;
            let took = if vif.is_some() { Some(delete_namespace(&stack, &ns).await) } else { None };
            second.kill();
            let st = k.status.expect("status");
            assert_eq!(st.net_id.as_deref(), Some(net.id.as_str()), "the crash-window network is adopted");
            assert_eq!(nets.len(), 1, "no second network: {nets:?}");
            // At least once: a retry whose status write met the block before its removal was
            // seen adopts again (still one network, checked above).
            assert!(
                adopted.is_some_and(|n| n >= 1.0),
                "the restarted controller adopted no network (kuryr_controller_adopted_total{{kind=\"network\"}} = {adopted:?})"
            );
            eprintln!("restarted controller: kuryr_controller_adopted_total{{kind=\"network\"}} = {adopted:?}");
            let vif = vif.expect("the pod's VIF");
            let port = stack.neutron.get_port(&vif.port_id).await;
            assert!(port.is_err_and(|e| e.is_not_found()), "the pod's port went with the namespace");
            eprintln!("namespace deleted → gone {:?}", took.expect("deleted"));
        } else {
            // Deleted while no controller runs; a new one converges.
            let _ = Api::<Namespace>::all(stack.client.clone()).delete(&ns, &DeleteParams::default()).await;
            let mut second = controller_process(&conf, &ns);
            let t = Instant::now();
            let api = Api::<Namespace>::all(stack.client.clone());
            let gone = wait_for("namespace gone", WAIT, || async { api.get_opt(&ns).await.expect("get ns").is_none().then_some(()) });
            let r = tokio::time::timeout(WAIT + Duration::from_secs(5), gone).await;
            second.kill();
            r.expect("namespace deleted");
            eprintln!("restarted controller tore the unrecorded network down; namespace gone {:?} after the restart", t.elapsed());
            block.remove().await;
        }
        assert!(stack.neutron.get_network(&net.id).await.is_err_and(|e| e.is_not_found()), "network {} left", net.id);
        assert!(stamped_networks(&stack, &ns).await.is_empty());
    };
    // A block left by a failure goes with its Drop (cluster-scoped clutter otherwise).
    let r = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(guarded(&stack, &[&ns], vec![], body))).await;
    let _ = std::fs::remove_file(&conf);
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}
