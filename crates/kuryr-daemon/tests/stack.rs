//! kuryr-daemon in-process against the local stack (real API server, OVS br-int, Neutron/OVN).
//!
//! The test plays the controller: per pod it creates a Pod object (hostNetwork, bound to a
//! made-up node name so that no kubelet runs it and kuryr-controller leaves it alone), a
//! KuryrPort labelled with that node, a real Neutron port on the pod network bound to host
//! `vm`, writes the typed VIF into the KuryrPort status and flips `active` once Neutron
//! reports the port ACTIVE (if a kuryr-controller is running it may do either first; the
//! assertions use whatever VIF the KuryrPort ends up with). The daemon watches that node
//! name, so it only ever sees the test's objects. The CNI runtime part is played by direct
//! calls on the daemon's socket with network namespaces the test creates.
//!
//! Everything is removed afterwards, also when an assertion fails: Kubernetes objects (the
//! namespace), Neutron ports, OVS ports, network namespaces. No conflist is written into
//! /etc/cni/net.d (a temporary directory is used).

mod common;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cni, eventually, http, http_tcp, pod_args, request, unique};
use futures_util::FutureExt;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use kuryr_core::config::{Config, Role};
use kuryr_core::crd::{KuryrPort, KuryrPortSpec};
use kuryr_core::names::NODE_NAME_LABEL;
use kuryr_core::vif::{host_ifname, Binding, Vif, VifIp};
use kuryr_daemon::daemon::{kube_client, ConflistOptions};
use kuryr_daemon::{Daemon, DaemonOptions};
use kuryr_netplumb::Netns;
use kuryr_openstack::neutron::{FixedIpRequest, PortCreate};
use kuryr_openstack::{CloudConfig, Neutron, Session};
use kuryr_ovsdb::Ovs;
use serde_json::{json, Value};

use kuryr_test_support::{stack_env, state_file};

#[derive(Default)]
struct Leftovers {
    ports: Vec<String>,
    /// Pods created: a running kuryr-controller may have made ports for them (device_id = uid).
    pod_uids: Vec<String>,
    taps: Vec<String>,
    netns: Vec<String>,
    /// Subnets and security groups a test added (removed after the ports).
    subnets: Vec<String>,
    security_groups: Vec<String>,
}

struct Stack {
    env: HashMap<String, String>,
    client: Client,
    neutron: Neutron,
    config: Config,
    /// The made-up node this test's daemon serves.
    node: String,
    ns: String,
    mtu: u32,
    left: Mutex<Leftovers>,
}

impl Stack {
    async fn new() -> Stack {
        let env = stack_env();
        let config = Config::load(&state_file("kuryr.conf"), Role::Daemon).expect("kuryr.conf");
        let client = kube_client(Some(&state_file("kubeconfig")), &config.kubernetes)
            .await
            .expect("kube client");
        ensure_kuryrport_crd(&client).await;
        let ns = unique("kd-test-");
        let nsobj: Namespace = serde_json::from_value(
            json!({"metadata": {"name": ns, "labels": {"kuryr-daemon-test": "true"}}}),
        )
        .expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &nsobj)
            .await
            .expect("create namespace");
        let cloud =
            CloudConfig::from_clouds_yaml(state_file("clouds.yaml"), "kuryr").expect("clouds.yaml");
        let neutron = Neutron::new(Session::from_cloud(&cloud).await.expect("keystone"));
        let net = neutron
            .get_network(&env["POD_NET_ID"])
            .await
            .expect("pod network");
        Stack {
            mtu: net.mtu.unwrap_or(1442),
            env,
            client,
            neutron,
            config,
            node: unique("kd-node-"),
            ns,
            left: Mutex::default(),
        }
    }

    fn netns(&self, prefix: &str) -> (String, PathBuf) {
        let name = unique(prefix);
        Netns::create_named(&name).expect("create netns");
        self.left.lock().expect("lock").netns.push(name.clone());
        let path = Path::new("/run/netns").join(&name);
        (name, path)
    }

    async fn create_pod(&self, name: &str) -> String {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"nodeName": self.node, "hostNetwork": true, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}))
        .expect("pod");
        let p = Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        let uid = p.metadata.uid.expect("uid");
        self.left.lock().expect("lock").pod_uids.push(uid.clone());
        uid
    }

    async fn delete_pod(&self, name: &str) {
        let dp = DeleteParams::default().grace_period(0);
        Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .delete(name, &dp)
            .await
            .expect("delete pod");
    }

    fn kps(&self) -> Api<KuryrPort> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create_kp(&self, name: &str, pod_uid: &str) {
        let mut kp = KuryrPort::new(
            name,
            KuryrPortSpec {
                pod_uid: pod_uid.into(),
                pod_node_name: self.node.clone(),
                pod_static: false,
            },
        );
        kp.metadata.labels = Some([(NODE_NAME_LABEL.to_string(), self.node.clone())].into());
        self.kps()
            .create(&PostParams::default(), &kp)
            .await
            .expect("create KuryrPort");
    }

    /// The controller's status write (skipped if a running kuryr-controller was faster).
    async fn write_vif(&self, name: &str, vif: &Vif) {
        let kp = self.kps().get(name).await.expect("get KuryrPort");
        if kp
            .status
            .as_ref()
            .is_some_and(|s| s.default_vif().is_some())
        {
            eprintln!(
                "KuryrPort {name} already has a VIF (a kuryr-controller is running); using it"
            );
            return;
        }
        let patch =
            json!({"status": {"vifs": {"eth0": {"default": true, "vif": vif.to_status_value()}}}});
        self.kps()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch status");
    }

    async fn current_vif(&self, name: &str) -> Vif {
        let kp = self.kps().get(name).await.expect("get KuryrPort");
        let (_, v) = kp
            .status
            .as_ref()
            .and_then(|s| s.default_vif())
            .expect("default VIF");
        let v = v.expect("VIF parses");
        self.left
            .lock()
            .expect("lock")
            .taps
            .push(v.host_ifname.clone());
        v
    }

    async fn create_port(&self, name: &str) -> Vif {
        let e = &self.env;
        let p = self
            .neutron
            .create_port(&PortCreate {
                network_id: e["POD_NET_ID"].clone(),
                name: name.into(),
                fixed_ips: Some(vec![FixedIpRequest::subnet(e["POD_SUBNET_ID"].clone())]),
                device_owner: kuryr_core::names::DEVICE_OWNER.into(),
                device_id: name.into(),
                binding_host_id: e["STACK_HOST"].clone(),
                security_groups: Some(vec![e["POD_SG_ID"].clone()]),
                ..Default::default()
            })
            .await
            .expect("create Neutron port");
        self.left.lock().expect("lock").ports.push(p.id.clone());
        self.left
            .lock()
            .expect("lock")
            .taps
            .push(host_ifname(&p.id));
        Vif {
            port_id: p.id.clone(),
            network_id: p.network_id.clone(),
            mac: p.mac_address.clone(),
            mtu: self.mtu,
            ips: vec![VifIp {
                address: p.ip().expect("fixed ip").parse().expect("ip"),
                subnet_cidr: e["POD_CIDR"].clone(),
                subnet_id: Some(e["POD_SUBNET_ID"].clone()),
                gateway: Some(e["POD_GW"].parse().expect("gw")),
                routes: vec![],
                dns: vec![],
            }],
            binding: Binding::Ovs {
                bridge: "br-int".into(),
            },
            host_ifname: host_ifname(&p.id),
            active: false,
            port_filter: true,
        }
    }

    /// Plays the controller's activation: once Neutron says ACTIVE, `vif.active = true`.
    fn activate(self: &Arc<Self>, name: &str) -> tokio::task::JoinHandle<()> {
        let (s, name) = (self.clone(), name.to_owned());
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(120);
            while Instant::now() < end {
                let Ok(kp) = s.kps().get(&name).await else {
                    return;
                };
                if let Some((ifname, Ok(mut vif))) =
                    kp.status.as_ref().and_then(|st| st.default_vif())
                {
                    if vif.active {
                        return;
                    }
                    if s.neutron
                        .get_port(&vif.port_id)
                        .await
                        .is_ok_and(|p| p.status == "ACTIVE")
                    {
                        vif.active = true;
                        let patch = json!({"status": {"vifs": {ifname: {"default": true, "vif": vif.to_status_value()}}}});
                        let _ = s
                            .kps()
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await;
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    async fn events_for(&self, pod: &str) -> Vec<Event> {
        let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
        Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&lp)
            .await
            .expect("list events")
            .items
    }

    async fn cleanup(&self) {
        let left = std::mem::take(&mut *self.left.lock().expect("lock"));
        if let Ok(ovs) = Ovs::connect_default().await {
            for t in &left.taps {
                let _ = ovs.del_port("br-int", t).await;
            }
        }
        for t in &left.taps {
            let _ = Command::new("ip").args(["link", "del", t]).output();
        }
        for p in &left.ports {
            let _ = self.neutron.delete_port(p).await;
        }
        for id in &left.subnets {
            if let Err(e) = self.neutron.delete_subnet(id).await {
                eprintln!("cleanup: cannot delete subnet {id}: {e}");
            }
        }
        for id in &left.security_groups {
            let _ = self.neutron.delete_security_group(id).await;
        }
        // Pods on a node that does not exist only go away when force-deleted; KuryrPorts may
        // carry a running controller's finalizer.
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns);
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for p in list.items {
                let _ = pods
                    .delete(
                        p.metadata.name.as_deref().unwrap_or_default(),
                        &DeleteParams::default().grace_period(0),
                    )
                    .await;
            }
        }
        // Let a running controller release what it made, then make sure nothing blocks.
        let _ = self
            .kps()
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let kps = self.kps();
        let gone = tokio::time::timeout(Duration::from_secs(10), async {
            while kps
                .list(&ListParams::default())
                .await
                .is_ok_and(|l| !l.items.is_empty())
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        if gone.is_err() {
            if let Ok(list) = kps.list(&ListParams::default()).await {
                for kp in list.items {
                    let name = kp.metadata.name.clone().unwrap_or_default();
                    let _ = kps
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                        )
                        .await;
                }
            }
        }
        for uid in &left.pod_uids {
            if let Ok(ports) = self
                .neutron
                .list_ports(&kuryr_openstack::Query::new().eq("device_id", uid))
                .await
            {
                for p in ports {
                    let _ = self.neutron.delete_port(&p.id).await;
                }
            }
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
        for n in &left.netns {
            let _ = Netns::delete_named(n);
        }
    }
}

async fn ensure_kuryrport_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "kuryrports.openstack.org";
    if crds.get_opt(name).await.expect("get CRD").is_none() {
        match crds.create(&PostParams::default(), &KuryrPort::crd()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("create the KuryrPort CRD: {e}"),
        }
    }
    eventually(
        Duration::from_secs(30),
        "the KuryrPort CRD to be established",
        || async {
            let crd = crds.get(name).await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await;
}

/// Runs `f` with a fresh namespace, then cleans up whether it passed or not.
/// Tests share the node; one that takes the node's OVS down ([`with_stack_alone`]) runs with
/// no other test of this binary (hack/test runs them two at a time).
static NODE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn with_stack<F, Fut>(f: F)
where
    F: FnOnce(Arc<Stack>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _shared = NODE.read().await;
    run_with_stack(f).await
}

/// [`with_stack`] for a test that disturbs the whole node (kills ovs-vswitchd).
async fn with_stack_alone<F, Fut>(f: F)
where
    F: FnOnce(Arc<Stack>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _alone = NODE.write().await;
    run_with_stack(f).await
}

async fn run_with_stack<F, Fut>(f: F)
where
    F: FnOnce(Arc<Stack>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let s = Arc::new(Stack::new().await);
    let r = AssertUnwindSafe(f(s.clone())).catch_unwind().await;
    s.cleanup().await;
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

async fn start_daemon(
    s: &Stack,
    dir: &Path,
    vif_timeout: Duration,
    conflist_dir: Option<&Path>,
) -> Daemon {
    start_daemon_with_pool(s, dir, vif_timeout, conflist_dir, None).await
}

/// [`start_daemon`] with pre-plugging into the holding netns `pool_netns`.
async fn start_daemon_with_pool(
    s: &Stack,
    dir: &Path,
    vif_timeout: Duration,
    conflist_dir: Option<&Path>,
    pool_netns: Option<&str>,
) -> Daemon {
    start_daemon_probing(
        s,
        dir,
        vif_timeout,
        conflist_dir,
        pool_netns,
        Duration::from_secs(1),
    )
    .await
}

/// [`start_daemon_with_pool`] with a probe (and OVS port audit) interval.
async fn start_daemon_probing(
    s: &Stack,
    dir: &Path,
    vif_timeout: Duration,
    conflist_dir: Option<&Path>,
    pool_netns: Option<&str>,
    probe_interval: Duration,
) -> Daemon {
    let mut config = s.config.clone();
    config.cni_daemon.vif_annotation_timeout = vif_timeout;
    let opts = DaemonOptions {
        config,
        node_name: s.node.clone(),
        socket_path: dir.join("kuryr-daemon.sock"),
        attachments_dir: dir.join("attachments"),
        del_queue_dir: dir.join("del-queue"),
        conflist: conflist_dir.map(|d| ConflistOptions {
            dir: d.to_path_buf(),
            name: "10-kuryr.conflist".into(),
            chain: vec!["portmap".into()],
            timeout_seconds: 120.0,
            cni_version: "1.0.0".into(),
        }),
        install_cni: None,
        install_plugins: None,
        chain_caps: None,
        health_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
        ovsdb_endpoint: kuryr_ovsdb::DEFAULT_ENDPOINT.into(),
        probe_interval,
        failure_window: Duration::from_secs(300),
        pool_netns: pool_netns.map(str::to_owned),
    };
    let d = Daemon::start(opts, s.client.clone())
        .await
        .expect("start kuryr-daemon");
    let sock = d.socket_path().to_path_buf();
    eventually(Duration::from_secs(30), "kuryr-daemon to be ready", || {
        let sock = sock.clone();
        async move { (http(&sock, "GET", "/v1/ready", None).await.0 == 200).then_some(()) }
    })
    .await;
    d
}

fn ip(args: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ping(from_ns: &str, to: &str) -> bool {
    (0..3).any(|_| {
        Command::new("ip")
            .args([
                "netns", "exec", from_ns, "ping", "-q", "-c", "2", "-i", "0.2", "-W", "2", to,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

async fn ovs_iface_id(tap: &str) -> Option<(String, String)> {
    let ovs = Ovs::connect_default().await.expect("OVSDB");
    let i = ovs.find_interface(tap).await.expect("find interface")?;
    Some((
        i.external_ids.get("iface-id").cloned().unwrap_or_default(),
        i.external_ids.get("vm-uuid").cloned().unwrap_or_default(),
    ))
}

fn add(cid: &str, netns: &Path, ns: &str, pod: &str, uid: &str) -> Value {
    request(
        "ADD",
        cid,
        &netns.display().to_string(),
        "eth0",
        &pod_args(ns, pod, uid, cid),
    )
}

fn verb(v: &str, cid: &str, netns: &Path, ns: &str, pod: &str, uid: &str) -> Value {
    request(
        v,
        cid,
        &netns.display().to_string(),
        "eth0",
        &pod_args(ns, pod, uid, cid),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn add_check_del_restart_and_stale_del_on_the_stack() {
    with_stack(|s| async move {
        let dir = tempfile::tempdir().expect("tmp");
        let conf_dir = dir.path().join("net.d");
        let d = start_daemon(&s, dir.path(), Duration::from_secs(60), Some(&conf_dir)).await;
        let sock = d.socket_path().to_path_buf();

        // The conflist appears once ready and names the socket the daemon listens on.
        let conf_path = conf_dir.join("10-kuryr.conflist");
        let conf: Value = eventually(Duration::from_secs(10), "the conflist", || {
            let p = conf_path.clone();
            async move {
                std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
            }
        })
        .await;
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(
            conf["plugins"][0]["daemon_socket"],
            sock.display().to_string()
        );
        assert_eq!(conf["plugins"][1]["type"], "portmap");

        let (ns, gw) = (s.ns.clone(), s.env["POD_GW"].clone());
        let prefix = s.env["POD_CIDR"]
            .split('/')
            .nth(1)
            .expect("prefix")
            .to_owned();
        let (a, b) = ("kd-a", "kd-b");
        let (uid_a, uid_b) = (s.create_pod(a).await, s.create_pod(b).await);
        s.create_kp(a, &uid_a).await;
        s.create_kp(b, &uid_b).await;
        let (pa, pb) = (s.create_port(a).await, s.create_port(b).await);
        s.write_vif(a, &pa).await;
        s.write_vif(b, &pb).await;
        let (act_a, act_b) = (s.activate(a), s.activate(b));
        let (nsa, nsa_path) = s.netns("kd-a-");
        let (nsb, nsb_path) = s.netns("kd-b-");
        let (cid_a, cid_b) = (unique("kdcida"), unique("kdcidb"));

        let t = Instant::now();
        let (st, body) = cni(&sock, &add(&cid_a, &nsa_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "ADD a: {body}");
        eprintln!("ADD a took {:?} (plug + Neutron ACTIVE)", t.elapsed());
        // Once ACTIVE, the pod announces its address (repeated gratuitous ARPs, after the
        // answer): seen on the host end of its veth.
        let va_now = s.current_vif(a).await;
        let ip_a_v4 = match va_now.ips[0].address {
            std::net::IpAddr::V4(v4) => v4,
            other => panic!("pod network is IPv4 here: {other}"),
        };
        let cap = kuryr_netplumb::announce::PacketSocket::open(
            &va_now.host_ifname,
            kuryr_netplumb::announce::ETH_P_ARP,
        )
        .expect("capture on the pod's host veth end");
        let garp = cap
            .recv_matching(Duration::from_secs(3), |f| {
                // Gratuitous: sender and target IP are both the pod's.
                f.len() >= 42
                    && f[12..14] == [0x08, 0x06]
                    && f[28..32] == ip_a_v4.octets()
                    && f[38..42] == ip_a_v4.octets()
            })
            .expect("recv");
        assert!(
            garp.is_some(),
            "no gratuitous ARP for {ip_a_v4} from the pod after ADD"
        );
        let (st, body_b) = cni(&sock, &add(&cid_b, &nsb_path, &ns, b, &uid_b)).await;
        assert_eq!(st, 200, "ADD b: {body_b}");
        let _ = (act_a.await, act_b.await);
        let (va, vb) = (s.current_vif(a).await, s.current_vif(b).await);
        assert!(va.active && vb.active);

        // The result: tap on the host, eth0 in the sandbox, the IP, the default route.
        let r = &body["result"];
        assert_eq!(r["interfaces"][0]["name"], va.host_ifname.as_str(), "{r}");
        assert!(r["interfaces"][0].get("sandbox").is_none(), "{r}");
        assert_eq!(r["interfaces"][1]["name"], "eth0");
        assert_eq!(r["interfaces"][1]["mac"], va.mac.as_str());
        assert_eq!(
            r["interfaces"][1]["sandbox"],
            nsa_path.display().to_string()
        );
        let ip_a = va.ips[0].address.to_string();
        let ip_b = vb.ips[0].address.to_string();
        assert_eq!(r["ips"][0]["address"], format!("{ip_a}/{prefix}"));
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["ips"][0]["gateway"], gw.as_str());
        assert!(
            r["routes"]
                .as_array()
                .expect("routes")
                .iter()
                .any(|x| x["dst"] == "0.0.0.0/0" && x["gw"] == gw.as_str()),
            "{r}"
        );

        // What is really in the pod netns and in OVS.
        let (_, addr) = ip(&["-n", &nsa, "addr", "show", "eth0"]);
        assert!(
            addr.contains(&va.mac)
                && addr.contains(&format!("{ip_a}/{prefix}"))
                && addr.contains(&format!("mtu {}", va.mtu)),
            "{addr}"
        );
        let (_, routes) = ip(&["-n", &nsa, "route"]);
        assert!(
            routes.contains(&format!("default via {gw} dev eth0")),
            "{routes}"
        );
        assert_eq!(
            ovs_iface_id(&va.host_ifname).await,
            Some((va.port_id.clone(), uid_a.clone()))
        );
        assert!(ping(&nsa, &ip_b), "ping {ip_a} -> {ip_b} failed");
        assert!(ping(&nsb, &ip_a), "ping {ip_b} -> {ip_a} failed");

        // CHECK: fine, then a removed address is reported.
        let (st, body) = cni(&sock, &verb("CHECK", &cid_a, &nsa_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "CHECK a: {body}");
        assert!(
            ip(&[
                "-n",
                &nsa,
                "addr",
                "del",
                &format!("{ip_a}/{prefix}"),
                "dev",
                "eth0"
            ])
            .0
        );
        let (st, body) = cni(&sock, &verb("CHECK", &cid_a, &nsa_path, &ns, a, &uid_a)).await;
        assert_eq!((st, body["code"].as_u64()), (409, Some(113)), "{body}");
        assert!(
            body["details"]
                .as_str()
                .expect("details")
                .contains(&format!("address {ip_a}/{prefix} is missing")),
            "{body}"
        );

        let (_, metrics) = http_tcp(d.metrics_addr(), "/metrics").await;
        assert!(
            metrics.contains(r#"kuryr_cni_requests_total{command="ADD",result="ok"} 2"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"kuryr_cni_stage_duration_seconds_count{stage="wait_active"} 2"#),
            "{metrics}"
        );
        assert!(metrics.contains("kuryr_cni_attachments 2"), "{metrics}");
        assert_eq!(http_tcp(d.health_addr(), "/ready").await.0, 200);
        assert_eq!(http_tcp(d.health_addr(), "/alive").await.0, 200);

        // Restart: the conflist goes with the old daemon; the new one works from the records.
        d.shutdown().await;
        assert!(!conf_path.exists(), "conflist left after shutdown");
        let d = start_daemon(&s, dir.path(), Duration::from_secs(60), None).await;
        let (st, body) = cni(&sock, &verb("CHECK", &cid_b, &nsb_path, &ns, b, &uid_b)).await;
        assert_eq!(st, 200, "CHECK b after restart: {body}");
        for i in 0..2 {
            let (st, body) = cni(&sock, &verb("DEL", &cid_b, &nsb_path, &ns, b, &uid_b)).await;
            assert_eq!(st, 200, "DEL b #{i}: {body}");
        }
        assert_eq!(
            ovs_iface_id(&vb.host_ifname).await,
            None,
            "OVS port of b left"
        );
        assert!(!ip(&["link", "show", &vb.host_ifname]).0, "tap of b left");
        assert!(
            !ip(&["-n", &nsb, "link", "show", "eth0"]).0,
            "eth0 of b left"
        );
        for i in 0..2 {
            let (st, body) = cni(&sock, &verb("DEL", &cid_a, &nsa_path, &ns, a, &uid_a)).await;
            assert_eq!(st, 200, "DEL a #{i}: {body}");
        }
        assert_eq!(ovs_iface_id(&va.host_ifname).await, None);

        // The sandbox is re-created (new container, new netns): the old sandbox's DEL, arriving
        // late, must not unplug the new one.
        let (_nsx, nsx_path) = s.netns("kd-x-");
        let (nsy, nsy_path) = s.netns("kd-y-");
        let (cid_x, cid_y) = (unique("kdcidx"), unique("kdcidy"));
        let (st, body) = cni(&sock, &add(&cid_x, &nsx_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "ADD x: {body}");
        let (st, body) = cni(&sock, &add(&cid_y, &nsy_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "ADD y: {body}");
        let (st, body) = cni(&sock, &verb("DEL", &cid_x, &nsx_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "stale DEL x: {body}");
        assert!(
            ip(&["-n", &nsy, "link", "show", "eth0"]).0,
            "the stale DEL removed the live pod's eth0"
        );
        assert_eq!(
            ovs_iface_id(&va.host_ifname).await.map(|x| x.0),
            Some(va.port_id.clone()),
            "the stale DEL unplugged the live pod"
        );
        let (st, body) = cni(&sock, &verb("CHECK", &cid_y, &nsy_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "CHECK y: {body}");

        // DEL after the runtime already deleted the netns.
        assert!(Netns::delete_named(&nsy).expect("delete netns"));
        let (st, body) = cni(&sock, &verb("DEL", &cid_y, &nsy_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "DEL with the netns gone: {body}");
        assert_eq!(
            ovs_iface_id(&va.host_ifname).await,
            None,
            "OVS port left after DEL with the netns gone"
        );
        assert!(!ip(&["link", "show", &va.host_ifname]).0);

        // GC: the runtime lists the attachments it still has; the others go. Here w was
        // superseded by z (same pod, newer sandbox), so GC drops w without unplugging z.
        let (_nsw, nsw_path) = s.netns("kd-w-");
        let (_nsz, nsz_path) = s.netns("kd-z-");
        let (cid_w, cid_z) = (unique("kdcidw"), unique("kdcidz"));
        let (st, body) = cni(&sock, &add(&cid_w, &nsw_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "ADD w: {body}");
        let (st, body) = cni(&sock, &add(&cid_z, &nsz_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "ADD z: {body}");
        let mut gc = request("GC", "", "", "", "");
        gc["config"]["cni.dev/valid-attachments"] =
            json!([{"containerID": cid_z, "ifname": "eth0"}]);
        let (st, body) = cni(&sock, &gc).await;
        assert_eq!(st, 200, "GC: {body}");
        let keys: Vec<String> = d
            .cni
            .store
            .list()
            .expect("records")
            .iter()
            .map(|a| a.container_id.clone())
            .collect();
        assert_eq!(keys, std::slice::from_ref(&cid_z));
        assert_eq!(
            ovs_iface_id(&va.host_ifname).await.map(|x| x.0),
            Some(va.port_id.clone()),
            "GC unplugged the live sandbox"
        );
        let (st, body) = cni(&sock, &request("STATUS", "", "", "", "")).await;
        assert_eq!(st, 200, "STATUS: {body}");

        // A DEL the shim queued while the daemon was down runs at the next start.
        d.shutdown().await;
        let del_z: kuryr_cni_api::CniRequest =
            serde_json::from_value(verb("DEL", &cid_z, &nsz_path, &ns, a, &uid_a)).expect("req");
        let entry = kuryr_cni_api::DelQueueEntry::new(
            del_z,
            kuryr_daemon::attachments::now_unix_ms(),
            "connect: ECONNREFUSED",
        );
        std::fs::write(
            dir.path().join("del-queue").join(entry.file_name()),
            entry.to_json().expect("json"),
        )
        .expect("queue");
        let d = start_daemon(&s, dir.path(), Duration::from_secs(60), None).await;
        assert_eq!(d.drained.executed, 1, "{:?}", d.drained);
        assert_eq!(
            ovs_iface_id(&va.host_ifname).await,
            None,
            "queued DEL did not unplug"
        );
        assert!(d.cni.store.list().expect("records").is_empty());
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn timeouts_return_code_11_and_leave_events_on_the_pod() {
    with_stack(|s| async move {
        let dir = tempfile::tempdir().expect("tmp");
        let d = start_daemon(&s, dir.path(), Duration::from_secs(3), None).await;
        let sock = d.socket_path().to_path_buf();
        let ns = s.ns.clone();

        // No KuryrPort ever appears.
        let p1 = "kd-nokp";
        let uid1 = s.create_pod(p1).await;
        let (_n1, n1_path) = s.netns("kd-t1-");
        let t = Instant::now();
        let (st, body) = cni(&sock, &add("kdcidt1", &n1_path, &ns, p1, &uid1)).await;
        assert_eq!((st, body["code"].as_u64()), (504, Some(11)), "{body}");
        let msg = body["msg"].as_str().expect("msg");
        assert!(msg.starts_with(&format!("timed out after 3s waiting for KuryrPort {ns}/{p1}")), "{msg}");
        assert!(t.elapsed() >= Duration::from_secs(3) && t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
        let ev = eventually(Duration::from_secs(15), "the KuryrPort timeout event", || async {
            s.events_for(p1).await.into_iter().find(|e| e.reason.as_deref() == Some("CNITimeoutKuryrPortRegistry"))
        })
        .await;
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.involved_object.uid.as_deref(), Some(uid1.as_str()));
        assert!(ev.message.as_deref().unwrap_or_default().contains("timed out"), "{ev:?}");

        // A VIF Neutron never reports ACTIVE (a port id Neutron does not know).
        let p2 = "kd-inactive";
        let uid2 = s.create_pod(p2).await;
        s.create_kp(p2, &uid2).await;
        let fake_id = format!("{:08x}-0000-4d00-8000-00000000kd11", std::process::id());
        let vif = Vif {
            port_id: fake_id.clone(),
            network_id: s.env["POD_NET_ID"].clone(),
            mac: "fa:16:3e:4b:11:11".into(),
            mtu: s.mtu,
            ips: vec![VifIp {
                address: "10.244.254.251".parse().expect("ip"),
                subnet_cidr: s.env["POD_CIDR"].clone(),
                subnet_id: None,
                gateway: Some(s.env["POD_GW"].parse().expect("gw")),
                routes: vec![],
                dns: vec![],
            }],
            binding: Binding::Ovs { bridge: "br-int".into() },
            host_ifname: host_ifname(&fake_id),
            active: false,
            port_filter: false,
        };
        s.left.lock().expect("lock").taps.push(vif.host_ifname.clone());
        s.write_vif(p2, &vif).await;
        let (_n2, n2_path) = s.netns("kd-t2-");
        let (st, body) = cni(&sock, &add("kdcidt2", &n2_path, &ns, p2, &uid2)).await;
        assert_eq!((st, body["code"].as_u64()), (504, Some(11)), "{body}");
        assert_eq!(
            body["msg"].as_str().expect("msg"),
            format!("timed out after 3s waiting for KuryrPort {ns}/{p2} to have an active VIF (controller / Neutron)")
        );
        assert!(body["details"].as_str().expect("details").contains("is not ACTIVE yet"), "{body}");
        eventually(Duration::from_secs(15), "the active-VIF timeout event", || async {
            s.events_for(p2).await.into_iter().find(|e| e.reason.as_deref() == Some("CNITimedOutWaitingForActiveVIFs"))
        })
        .await;
        // It was plugged meanwhile; the runtime's DEL after the failed ADD cleans up.
        assert!(ovs_iface_id(&vif.host_ifname).await.is_some());
        let (st, body) = cni(&sock, &verb("DEL", "kdcidt2", &n2_path, &ns, p2, &uid2)).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(ovs_iface_id(&vif.host_ifname).await, None);

        // Timeouts are the controller's or Neutron's problem, not the daemon's: still alive.
        assert_eq!(http_tcp(d.health_addr(), "/alive").await.0, 200);
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn pod_replaced_or_deleted_while_waiting_fails_fast_with_code_3() {
    with_stack(|s| async move {
        let dir = tempfile::tempdir().expect("tmp");
        let d = start_daemon(&s, dir.path(), Duration::from_secs(30), None).await;
        let sock = d.socket_path().to_path_buf();
        let ns = s.ns.clone();
        let p = "kd-gone";
        let uid = s.create_pod(p).await;
        let (_n, n_path) = s.netns("kd-g-");
        // Let the pod watch see it.
        eventually(
            Duration::from_secs(10),
            "the pod in the daemon's cache",
            || async { d.cni.cluster.pod(&ns, p).map(|_| ()) },
        )
        .await;

        // The CNI request is for an earlier pod of that name.
        let t = Instant::now();
        let (st, body) = cni(
            &sock,
            &add(
                "kdcidg1",
                &n_path,
                &ns,
                p,
                "00000000-0000-0000-0000-000000000000",
            ),
        )
        .await;
        assert_eq!((st, body["code"].as_u64()), (410, Some(3)), "{body}");
        assert!(
            body["msg"].as_str().expect("msg").contains("was replaced"),
            "{body}"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        // The pod is deleted while ADD waits for its KuryrPort.
        let t = Instant::now();
        let s2 = s.clone();
        let metrics = d.metrics_addr();
        let deleter = tokio::spawn(async move {
            // Deleted once the ADD is being served (waiting for the KuryrPort).
            eventually(Duration::from_secs(10), "the ADD in flight", || async {
                let (_, text) = http_tcp(metrics, "/metrics").await;
                text.contains(r#"kuryr_cni_requests_in_flight{command="ADD"} 1"#)
                    .then_some(())
            })
            .await;
            s2.delete_pod(p).await;
        });
        let (st, body) = cni(&sock, &add("kdcidg2", &n_path, &ns, p, &uid)).await;
        deleter.await.expect("deleter");
        assert_eq!((st, body["code"].as_u64()), (410, Some(3)), "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "did not fail fast: {:?}",
            t.elapsed()
        );
        d.shutdown().await;
    })
    .await;
}

/// Kills the child on drop (a failed assertion must not leave a daemon running).
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon binary with the stack's kuryr.conf and `kubeconfig`, a made-up node, and its
/// socket, state, conflist and CNI binaries under `d` (nothing of the host's).
fn daemon_command(d: &Path, kubeconfig: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kuryr-daemon"));
    c.arg("--config-file")
        .arg(state_file("kuryr.conf"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--node-name", &unique("kd-node-")])
        .args(["--health-port", "0", "--metrics-port", "0"])
        .args(["--listen-address", "127.0.0.1"])
        .arg("--socket")
        .arg(d.join("run/kd.sock"))
        .arg("--state-dir")
        .arg(d.join("state"))
        .arg("--cni-conf-dir")
        .arg(d.join("net.d"))
        .arg("--cni-bin-dir")
        .arg(d.join("bin"));
    c
}

/// Waits until `child` exits; panics (and the drop kills it) if it still runs after `within`.
async fn exited(child: &mut Child, within: Duration, when: &str) -> std::process::ExitStatus {
    let end = Instant::now() + within;
    loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            return s;
        }
        assert!(
            Instant::now() < end,
            "kuryr-daemon did not exit {when} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real binary: installs kuryr-cni, writes the conflist once ready, serves STATUS, and
/// on SIGTERM removes the conflist and the socket and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn binary_writes_the_conflist_when_ready_and_removes_it_on_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let shim = d.join("kuryr-cni-src");
    std::fs::write(&shim, b"#!/bin/sh\nexit 0\n").expect("fake shim");
    let sock = d.join("run/kd.sock");
    // Not the default kuryr-pool: another daemon on this host may hold ports there.
    let pool_ns = unique("kd-bin-pool-");
    let child = Child(
        daemon_command(d, &state_file("kubeconfig"))
            .args(["--chain", "portmap"])
            .arg("--install-cni-from")
            .arg(&shim)
            .args(["--pool-netns", &pool_ns])
            .spawn()
            .expect("spawn kuryr-daemon"),
    );
    let conf_path = d.join("net.d/10-kuryr.conflist");
    let conf: Value = eventually(Duration::from_secs(30), "the conflist", || {
        let p = conf_path.clone();
        async move {
            std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        }
    })
    .await;
    assert_eq!(
        conf["plugins"][0]["daemon_socket"],
        sock.display().to_string()
    );
    assert_eq!(
        conf["plugins"][0]["del_queue_dir"],
        d.join("state/del-queue").display().to_string()
    );
    assert_eq!(conf["plugins"][1]["capabilities"]["portMappings"], true);
    assert_eq!(
        std::fs::read(d.join("bin/kuryr-cni")).expect("installed shim"),
        b"#!/bin/sh\nexit 0\n"
    );
    let (st, body) = cni(&sock, &request("STATUS", "", "", "", "")).await;
    assert_eq!(st, 200, "{body}");

    let mut child = child;
    assert!(Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill")
        .success());
    let status = exited(&mut child, Duration::from_secs(30), "after SIGTERM").await;
    assert!(status.success(), "exit status {status}");
    assert!(!conf_path.exists(), "conflist left after SIGTERM");
    assert!(!sock.exists(), "socket left after SIGTERM");
    assert!(
        Netns::delete_named(&pool_ns).expect("delete the holding netns"),
        "the daemon did not create its holding netns"
    );
}

/// TLS to the API server is verified against the CA the kubeconfig names: the stack's real
/// kube-apiserver through the daemon's own client code (`kube_client`, what the binary calls)
/// with a kubeconfig naming another CA is refused at once, naming the server and the
/// certificate problem; the binary exits non-zero with that message (before touching the node)
/// instead of waiting forever for watches that cannot work; with the stack's CA it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn api_server_certificate_is_verified_against_the_kubeconfig_ca() {
    if !kuryr_test_support::certs::openssl_available() {
        kuryr_test_support::skip!("no openssl CLI to make the test CA");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let other_ca = kuryr_test_support::certs::make_ca(d, "other");
    let wrong = d.join("kubeconfig");
    kuryr_test_support::certs::stack_kubeconfig_with_ca(&other_ca, &wrong);
    let kc = kube::config::Kubeconfig::read_from(&wrong).expect("kubeconfig");
    let server = kc.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("server");
    let config = Config::load(&state_file("kuryr.conf"), Role::Daemon).expect("kuryr.conf");

    let started = Instant::now();
    let err = match kube_client(Some(&wrong), &config.kubernetes).await {
        Ok(_) => panic!("connected to {server} with a CA that did not sign its certificate"),
        Err(e) => e.to_string(),
    };
    eprintln!("refused after {:?}: {err}", started.elapsed());
    for want in [
        server.as_str(),
        "TLS certificate verification failed",
        "UnknownIssuer",
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    let client = kube_client(Some(&state_file("kubeconfig")), &config.kubernetes)
        .await
        .expect("the stack's CA");
    Api::<Namespace>::all(client)
        .list_metadata(&ListParams::default().limit(1))
        .await
        .expect("list namespaces with the stack's CA");

    let mut child = Child(
        daemon_command(d, &wrong)
            .args(["--pool-netns", ""])
            .stderr(std::fs::File::create(d.join("stderr")).expect("stderr file"))
            .spawn()
            .expect("spawn kuryr-daemon"),
    );
    let status = exited(&mut child, Duration::from_secs(60), "with a wrong CA").await;
    let stderr = std::fs::read_to_string(d.join("stderr")).expect("stderr");
    assert!(!status.success(), "exit status {status}: {stderr}");
    for want in [server.as_str(), "TLS certificate verification failed"] {
        assert!(stderr.contains(want), "{want:?} not in: {stderr}");
    }
    assert!(
        !d.join("net.d").exists() && !d.join("run/kd.sock").exists(),
        "the daemon started before failing"
    );
}

// ------------------------------------------------------------------------------ warm pool

/// The pod end of a pre-plugged port in the holding netns: (ifindex, MAC, up).
fn held(pool_ns: &str, port_id: &str) -> Option<(u32, String, bool)> {
    let name = kuryr_daemon::pool::held_ifname(port_id);
    let ns = Netns::open_named(pool_ns).expect("open the holding netns");
    ns.with_netlink(async |nl| nl.find_link(&name).await)
        .expect("look into the holding netns")
        .map(|l| {
            (
                l.index,
                l.mac.map(|m| m.to_string()).unwrap_or_default(),
                l.admin_up,
            )
        })
}

fn host_link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

async fn ovs_iface_uuid(tap: &str) -> Option<String> {
    let ovs = Ovs::connect_default().await.expect("OVSDB");
    ovs.find_interface(tap)
        .await
        .expect("find interface")
        .map(|i| format!("{:?}", i.uuid))
}

/// One sample of the daemon's metrics text (0 when absent).
async fn metric(d: &Daemon, series: &str) -> f64 {
    let (_, text) = http_tcp(d.metrics_addr(), "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok()))
        .unwrap_or(0.0)
}

impl Stack {
    /// The node's pool KuryrPort (as the controller writes it), with these VIFs.
    async fn create_pool_kp(&self, vifs: &[&Vif]) -> String {
        let kp = KuryrPort::pool(&self.node);
        let name = kp.metadata.name.clone().unwrap_or_default();
        self.kps()
            .create(&PostParams::default(), &kp)
            .await
            .expect("create the pool KuryrPort");
        for v in vifs {
            self.pool_put(&name, v).await;
        }
        name
    }

    /// A port (re)appears in the pool.
    async fn pool_put(&self, pool: &str, vif: &Vif) {
        let patch = json!({"status": {"vifs": {vif.port_id.clone(): {"default": false, "vif": vif.to_status_value()}}}});
        self.kps()
            .patch_status(pool, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("add to the pool");
    }

    /// A port leaves the pool (claimed or given back).
    async fn pool_remove(&self, pool: &str, port_id: &str) {
        let patch = json!({"status": {"vifs": {port_id: null}}});
        self.kps()
            .patch_status(pool, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("remove from the pool");
    }

    /// What the controller does when a pod claims a pool port: the pod's KuryrPort gets the
    /// VIF (already active), then the port leaves the pool.
    async fn claim(&self, pool: &str, pod: &str, uid: &str, vif: &Vif) {
        self.create_kp(pod, uid).await;
        let mut v = vif.clone();
        v.active = true;
        self.write_vif(pod, &v).await;
        self.pool_remove(pool, &vif.port_id).await;
    }

    async fn wait_active(&self, port_id: &str) {
        eventually(
            Duration::from_secs(90),
            &format!("Neutron to report port {port_id} ACTIVE"),
            || async {
                self.neutron
                    .get_port(port_id)
                    .await
                    .ok()
                    .filter(|p| p.status == "ACTIVE")
                    .map(|_| ())
            },
        )
        .await;
    }
}

/// The warm pool, daemon side: pool ports are pre-plugged into the holding netns and go ACTIVE
/// without any pod; a claimed one is moved into the pod by ADD without touching OVSDB and
/// carries traffic; one given back unclaimed is unplugged; a restart adopts what is held (same
/// ifindex, OVS port re-added if it went missing); DEL of the pod works as usual, and the DEL
/// of an old sandbox leaves alone a port that was re-pre-plugged under the same tap name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn pool_ports_are_preplugged_taken_by_add_unplugged_and_adopted_on_the_stack() {
    with_stack(|s| async move {
        let dir = tempfile::tempdir().expect("tmp");
        // A holding netns of our own (a daemon of the real node may use kuryr-pool).
        let pool_ns = unique("kd-pool-");
        s.left.lock().expect("lock").netns.push(pool_ns.clone());
        let d = start_daemon_with_pool(
            &s,
            dir.path(),
            Duration::from_secs(60),
            None,
            Some(&pool_ns),
        )
        .await;
        let sock = d.socket_path().to_path_buf();
        let ns = s.ns.clone();
        let gw = s.env["POD_GW"].clone();

        // (a) Four pool ports bound to this host: all pre-plugged and ACTIVE, no pod anywhere.
        let p = [
            s.create_port("kd-pool-1").await,
            s.create_port("kd-pool-2").await,
            s.create_port("kd-pool-3").await,
            s.create_port("kd-pool-4").await,
        ];
        let pool = s.create_pool_kp(&p.iter().collect::<Vec<_>>()).await;
        for v in &p {
            // Up is the pre-plug's last step.
            let (_, mac, _) =
                eventually(Duration::from_secs(30), "the port pre-plugged", || async {
                    held(&pool_ns, &v.port_id).filter(|h| h.2)
                })
                .await;
            assert_eq!(mac, v.mac, "pre-plugged end has the port's MAC");
            assert!(
                host_link_exists(&v.host_ifname),
                "host end {}",
                v.host_ifname
            );
            assert_eq!(
                ovs_iface_id(&v.host_ifname).await.map(|x| x.0),
                Some(v.port_id.clone()),
                "tap on br-int with the port's iface-id"
            );
        }
        for v in &p {
            s.wait_active(&v.port_id).await;
        }
        assert_eq!(metric(&d, "kuryr_cni_pool_held").await, 4.0);
        assert_eq!(
            metric(&d, "kuryr_cni_pool_operations_total{op=\"preplug\"}").await,
            4.0
        );

        // (b) A pod claims p[0]: ADD takes the fast path.
        let a = "kd-pool-a";
        let uid_a = s.create_pod(a).await;
        s.claim(&pool, a, &uid_a, &p[0]).await;
        let iface_uuid = ovs_iface_uuid(&p[0].host_ifname)
            .await
            .expect("OVS interface of p0");
        let (nsa, nsa_path) = s.netns("kd-pa-");
        let cid_a = unique("kdpoola");
        let t = Instant::now();
        let (st, body) = cni(&sock, &add(&cid_a, &nsa_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "ADD a: {body}");
        eprintln!("pre-plugged ADD took {:?}", t.elapsed());
        assert_eq!(
            metric(&d, "kuryr_cni_add_path_total{path=\"preplugged\"}").await,
            1.0
        );
        assert_eq!(
            metric(&d, "kuryr_cni_add_path_total{path=\"plug\"}").await,
            0.0
        );
        let r = &body["result"];
        assert_eq!(r["interfaces"][0]["name"], p[0].host_ifname.as_str(), "{r}");
        assert_eq!(r["interfaces"][1]["name"], "eth0", "{r}");
        assert_eq!(r["interfaces"][1]["mac"], p[0].mac.as_str(), "{r}");
        assert!(
            held(&pool_ns, &p[0].port_id).is_none(),
            "still in the holding netns"
        );
        let (ok, out) = ip(&["-n", &nsa, "-o", "addr", "show", "dev", "eth0"]);
        assert!(ok, "{out}");
        assert!(out.contains(&format!("{}/", p[0].ips[0].address)), "{out}");
        let (ok, out) = ip(&["-n", &nsa, "-o", "link", "show", "dev", "eth0"]);
        assert!(ok && out.contains(&p[0].mac), "{out}");
        assert_eq!(
            ovs_iface_uuid(&p[0].host_ifname).await,
            Some(iface_uuid),
            "the fast path touched the OVS Interface row"
        );
        assert!(
            ping(&nsa, &gw),
            "pod on a pre-plugged port cannot ping the gateway {gw}"
        );
        // Claimed ports stay out of the gauge; nothing else moved.
        assert_eq!(metric(&d, "kuryr_cni_pool_held").await, 3.0);

        // (c) p[1] given back without a claim: unplugged (veth and OVS port gone).
        s.pool_remove(&pool, &p[1].port_id).await;
        eventually(
            Duration::from_secs(30),
            "the unclaimed port unplugged",
            || async {
                (held(&pool_ns, &p[1].port_id).is_none() && !host_link_exists(&p[1].host_ifname))
                    .then_some(())
            },
        )
        .await;
        assert_eq!(ovs_iface_id(&p[1].host_ifname).await, None, "OVS port left");
        assert_eq!(
            metric(&d, "kuryr_cni_pool_operations_total{op=\"unplug\"}").await,
            1.0
        );

        // (d) Restart: p[2] and p[3] adopted, same ifindex; p[3]'s OVS port, removed while the
        // daemon was down, is re-added; nothing is pre-plugged again.
        let before = [
            held(&pool_ns, &p[2].port_id).expect("p2 held"),
            held(&pool_ns, &p[3].port_id).expect("p3 held"),
        ];
        d.shutdown().await;
        let ovs = Ovs::connect_default().await.expect("OVSDB");
        assert!(ovs
            .del_port("br-int", &p[3].host_ifname)
            .await
            .expect("del OVS port"));
        let d = start_daemon_with_pool(
            &s,
            dir.path(),
            Duration::from_secs(60),
            None,
            Some(&pool_ns),
        )
        .await;
        let sock = d.socket_path().to_path_buf();
        eventually(
            Duration::from_secs(30),
            "the held ports adopted",
            || async {
                let adopted = metric(&d, "kuryr_cni_pool_operations_total{op=\"adopt\"}").await;
                let replugged =
                    metric(&d, "kuryr_cni_pool_operations_total{op=\"replug_ovs\"}").await;
                (adopted == 1.0 && replugged == 1.0).then_some(())
            },
        )
        .await;
        assert_eq!(
            metric(&d, "kuryr_cni_pool_operations_total{op=\"preplug\"}").await,
            0.0
        );
        assert_eq!(
            held(&pool_ns, &p[2].port_id).map(|h| h.0),
            Some(before[0].0),
            "p2 re-plugged"
        );
        assert_eq!(
            held(&pool_ns, &p[3].port_id).map(|h| h.0),
            Some(before[1].0),
            "p3 re-plugged"
        );
        assert_eq!(
            ovs_iface_id(&p[3].host_ifname).await.map(|x| x.0),
            Some(p[3].port_id.clone())
        );
        assert_eq!(metric(&d, "kuryr_cni_pool_held").await, 2.0);
        // The attachment made before the restart is still served.
        let (st, body) = cni(&sock, &verb("CHECK", &cid_a, &nsa_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "CHECK a after restart: {body}");

        // (e) DEL of the pod: as for a normally plugged one.
        let (st, body) = cni(&sock, &verb("DEL", &cid_a, &nsa_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "DEL a: {body}");
        assert!(!host_link_exists(&p[0].host_ifname), "tap of a left");
        assert_eq!(
            ovs_iface_id(&p[0].host_ifname).await,
            None,
            "OVS port of a left"
        );
        let (ok, out) = ip(&["-n", &nsa, "link", "show", "eth0"]);
        assert!(!ok, "eth0 left in the pod: {out}");

        // DEL safety: pod b takes p[2]; its sandbox dies; the port is recycled into the pool
        // and pre-plugged again under the same tap name; the runtime's late DEL of b must leave
        // the pool's interface and OVS port alone.
        let b = "kd-pool-b";
        let uid_b = s.create_pod(b).await;
        s.claim(&pool, b, &uid_b, &p[2]).await;
        let (nsb, nsb_path) = s.netns("kd-pb-");
        let cid_b = unique("kdpoolb");
        let (st, body) = cni(&sock, &add(&cid_b, &nsb_path, &ns, b, &uid_b)).await;
        assert_eq!(st, 200, "ADD b: {body}");
        assert_eq!(
            metric(&d, "kuryr_cni_add_path_total{path=\"preplugged\"}").await,
            1.0
        );
        Netns::delete_named(&nsb).expect("delete netns b");
        eventually(
            Duration::from_secs(10),
            "b's veth gone with its netns",
            || async { (!host_link_exists(&p[2].host_ifname)).then_some(()) },
        )
        .await;
        s.kps()
            .delete(b, &DeleteParams::default())
            .await
            .expect("delete KuryrPort b");
        s.pool_put(&pool, &p[2]).await;
        let (idx, _, _) = eventually(Duration::from_secs(30), "p2 pre-plugged again", || async {
            held(&pool_ns, &p[2].port_id).filter(|h| h.2)
        })
        .await;
        let (st, body) = cni(&sock, &verb("DEL", &cid_b, &nsb_path, &ns, b, &uid_b)).await;
        assert_eq!(st, 200, "late DEL b: {body}");
        assert_eq!(
            held(&pool_ns, &p[2].port_id).map(|h| h.0),
            Some(idx),
            "late DEL removed the pool's interface"
        );
        assert!(host_link_exists(&p[2].host_ifname));
        assert_eq!(
            ovs_iface_id(&p[2].host_ifname).await.map(|x| x.0),
            Some(p[2].port_id.clone()),
            "late DEL removed the pool's OVS port"
        );
        d.shutdown().await;
    })
    .await;
}

/// Dual-stack pods: the pod network gets an IPv6 subnet (made by the test), two pods get ports
/// with an IPv4 and an IPv6 address; ADD puts both on eth0 (IPv6 enabled in the pod netns, the
/// address usable at once: no DAD wait), the subnets' routes and both default routes, reports
/// both in the CNI result, and the pods reach each other over IPv6 and IPv4 through OVN.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn dual_stack_pods_get_ipv6_and_ping_over_it_on_the_stack() {
    use kuryr_openstack::neutron::{
        Direction, EtherType, SecurityGroupCreate, SecurityGroupRuleCreate, SubnetCreate,
    };
    with_stack(|s| async move {
        let e = &s.env;
        // An IPv6 subnet on the pod network, and a group that lets both families in.
        let cidr6 = format!(
            "fd00:{:x}:{:x}::/64",
            std::process::id() & 0xffff,
            Instant::now().elapsed().subsec_nanos() & 0xffff
        );
        let sub6 = s
            .neutron
            .create_subnet(&SubnetCreate {
                network_id: e["POD_NET_ID"].clone(),
                ip_version: 6,
                cidr: Some(cidr6.clone()),
                name: "kd-test-v6".into(),
                enable_dhcp: Some(false),
                ..SubnetCreate::default()
            })
            .await
            .expect("create IPv6 subnet");
        s.left.lock().expect("lock").subnets.push(sub6.id.clone());
        let gw6: std::net::IpAddr = sub6
            .gateway_ip
            .clone()
            .expect("v6 gateway")
            .parse()
            .expect("gw6");
        let sg = s
            .neutron
            .create_security_group(&SecurityGroupCreate {
                name: "kd-test-v6".into(),
                ..SecurityGroupCreate::default()
            })
            .await
            .expect("create sg");
        s.left
            .lock()
            .expect("lock")
            .security_groups
            .push(sg.id.clone());
        for et in [EtherType::IPv4, EtherType::IPv6] {
            s.neutron
                .create_security_group_rule(&SecurityGroupRuleCreate {
                    security_group_id: sg.id.clone(),
                    direction: Direction::Ingress,
                    ethertype: et,
                    ..SecurityGroupRuleCreate::default()
                })
                .await
                .expect("ingress rule");
        }

        let dir = tempfile::tempdir().expect("tmp");
        let d = start_daemon(&s, dir.path(), Duration::from_secs(60), None).await;
        let sock = d.socket_path().to_path_buf();
        let ns = s.ns.clone();
        let mut pods = Vec::new();
        for name in ["kd-v6-a", "kd-v6-b"] {
            let uid = s.create_pod(name).await;
            s.create_kp(name, &uid).await;
            let p = s
                .neutron
                .create_port(&PortCreate {
                    network_id: e["POD_NET_ID"].clone(),
                    name: name.into(),
                    fixed_ips: Some(vec![
                        FixedIpRequest::subnet(e["POD_SUBNET_ID"].clone()),
                        FixedIpRequest::subnet(sub6.id.clone()),
                    ]),
                    device_owner: kuryr_core::names::DEVICE_OWNER.into(),
                    device_id: name.into(),
                    binding_host_id: e["STACK_HOST"].clone(),
                    security_groups: Some(vec![sg.id.clone()]),
                    ..Default::default()
                })
                .await
                .expect("create dual-stack port");
            {
                let mut left = s.left.lock().expect("lock");
                left.ports.push(p.id.clone());
                left.taps.push(host_ifname(&p.id));
            }
            let ips = p
                .fixed_ips
                .iter()
                .map(|f| {
                    let address: std::net::IpAddr = f.ip_address.parse().expect("ip");
                    let (subnet_cidr, gateway) = if address.is_ipv6() {
                        (cidr6.clone(), Some(gw6))
                    } else {
                        (
                            e["POD_CIDR"].clone(),
                            Some(e["POD_GW"].parse().expect("gw")),
                        )
                    };
                    VifIp {
                        address,
                        subnet_cidr,
                        subnet_id: Some(f.subnet_id.clone()),
                        gateway,
                        routes: vec![],
                        dns: vec![],
                    }
                })
                .collect::<Vec<_>>();
            assert_eq!(ips.len(), 2, "a dual-stack port: {:?}", p.fixed_ips);
            let vif = Vif {
                port_id: p.id.clone(),
                network_id: p.network_id.clone(),
                mac: p.mac_address.clone(),
                mtu: s.mtu,
                ips,
                binding: Binding::Ovs {
                    bridge: "br-int".into(),
                },
                host_ifname: host_ifname(&p.id),
                active: false,
                port_filter: true,
            };
            s.write_vif(name, &vif).await;
            let act = s.activate(name);
            let (netns, path) = s.netns("kd-v6-");
            let cid = unique("kdv6cid");
            let (st, body) = cni(&sock, &add(&cid, &path, &ns, name, &uid)).await;
            assert_eq!(st, 200, "ADD {name}: {body}");
            let _ = act.await;
            pods.push((name, uid, netns, path, cid, vif, body));
        }
        for (name, _, netns, _, _, vif, body) in &pods {
            let v6 = vif
                .ips
                .iter()
                .find(|i| i.address.is_ipv6())
                .expect("v6 ip")
                .address;
            let v4 = vif
                .ips
                .iter()
                .find(|i| i.address.is_ipv4())
                .expect("v4 ip")
                .address;
            // The CNI result names both addresses with their gateways, and both defaults.
            let r = &body["result"];
            let ips: Vec<String> = r["ips"]
                .as_array()
                .expect("ips")
                .iter()
                .map(|i| i["address"].as_str().unwrap_or_default().to_string())
                .collect();
            assert!(
                ips.contains(&format!("{v6}/64"))
                    && ips.iter().any(|i| i.starts_with(&format!("{v4}/"))),
                "{name}: {r}"
            );
            let routes = r["routes"].as_array().expect("routes");
            assert!(
                routes
                    .iter()
                    .any(|x| x["dst"] == "::/0" && x["gw"] == gw6.to_string().as_str()),
                "{name}: {r}"
            );
            // In the pod netns: the address, usable (not tentative), the routes.
            let (_, addr) = ip(&["-n", netns, "-6", "addr", "show", "dev", "eth0"]);
            let line = addr
                .lines()
                .find(|l| l.contains(&format!("{v6}/64")))
                .unwrap_or_else(|| panic!("{name}: no {v6}/64 on eth0: {addr}"));
            assert!(
                !line.contains("tentative") && !line.contains("dadfailed"),
                "{name}: {line}"
            );
            let (_, routes) = ip(&["-n", netns, "-6", "route", "show"]);
            assert!(
                routes.contains(&format!("default via {gw6} dev eth0")),
                "{name}: {routes}"
            );
            assert!(routes.contains(&cidr6), "{name}: {routes}");
        }
        let v6_of = |i: usize| {
            pods[i]
                .5
                .ips
                .iter()
                .find(|x| x.address.is_ipv6())
                .expect("v6")
                .address
                .to_string()
        };
        let v4_of = |i: usize| {
            pods[i]
                .5
                .ips
                .iter()
                .find(|x| x.address.is_ipv4())
                .expect("v4")
                .address
                .to_string()
        };
        assert!(
            ping(&pods[0].2, &v6_of(1)),
            "ping6 a -> b ({}) failed",
            v6_of(1)
        );
        assert!(
            ping(&pods[1].2, &v6_of(0)),
            "ping6 b -> a ({}) failed",
            v6_of(0)
        );
        assert!(ping(&pods[0].2, &v4_of(1)), "ping a -> b over IPv4 failed");
        // CHECK agrees with what ADD made; DEL removes it.
        for (name, uid, _, path, cid, _, _) in &pods {
            let (st, body) = cni(&sock, &verb("CHECK", cid, path, &ns, name, uid)).await;
            assert_eq!(st, 200, "CHECK {name}: {body}");
            let (st, body) = cni(&sock, &verb("DEL", cid, path, &ns, name, uid)).await;
            assert!(st == 200 || st == 204, "DEL {name}: {st} {body}");
        }
        d.shutdown().await;
    })
    .await;
}

// ------------------------------------------------------------------- stale OVS ports (issue 11)

/// The device's promiscuity (ovs-vswitchd makes every device it receives on promiscuous).
fn promiscuity(dev: &str) -> Option<u32> {
    let (ok, out) = ip(&["-d", "link", "show", "dev", dev]);
    if !ok {
        return None;
    }
    out.split_whitespace()
        .skip_while(|w| *w != "promiscuity")
        .nth(1)
        .and_then(|n| n.parse().ok())
}

/// Whether `dev` on the host is administratively up.
fn link_up(dev: &str) -> bool {
    let (ok, out) = ip(&["link", "show", "dev", dev]);
    ok && out
        .split(['<', '>'])
        .nth(1)
        .is_some_and(|flags| flags.split(',').any(|f| f == "UP"))
}

/// (sent, received) of `ping -c count -i 0.2` from `from_ns` to `to`.
fn ping_stats(from_ns: &str, to: &str, count: u32) -> (u32, u32) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            from_ns,
            "ping",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            to,
        ])
        .output()
        .expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    // "5 packets transmitted, 5 received, 0% packet loss, time 801ms"
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default();
    let nums: Vec<u32> = line
        .split(',')
        .filter_map(|p| p.split_whitespace().next()?.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}

/// Waits until vswitchd holds `tap` (promiscuous), then `ping_stats` must lose nothing after
/// the first answer (ARP/MAC learning may eat the first one): returns (sent, received).
async fn wired(from_ns: &str, to: &str, what: &str) -> (u32, u32) {
    // One answer first (bounded), then a clean run.
    let t = Instant::now();
    eventually(
        Duration::from_secs(20),
        &format!("{what}: a first ping answer"),
        || async { ping(from_ns, to).then_some(()) },
    )
    .await;
    let first = t.elapsed();
    let (sent, recv) = ping_stats(from_ns, to, 10);
    eprintln!("{what}: first answer after {first:?}, then {recv}/{sent} pings answered");
    assert_eq!(
        (sent, recv),
        (10, 10),
        "{what}: packet loss after the first answer"
    );
    (sent, recv)
}

/// What issue 11 found on a node, made by hand: the pod's veth is deleted and created again
/// under the same names (tap on the host, eth0 with the same MAC, address and routes in the
/// pod) without touching OVSDB. ovs-vswitchd keeps receiving on the dead device.
fn recreate_veth(tap: &str, pod_ns: &str, vif: &Vif, mtu: u32, prefix: &str, gw: &str) {
    let run = |args: &[&str]| {
        let (ok, out) = ip(args);
        assert!(ok, "ip {args:?}: {out}");
    };
    run(&["link", "del", tap]);
    run(&[
        "link",
        "add",
        tap,
        "mtu",
        &mtu.to_string(),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "mtu",
        &mtu.to_string(),
        "netns",
        pod_ns,
    ]);
    run(&["-n", pod_ns, "link", "set", "eth0", "address", &vif.mac]);
    run(&[
        "-n",
        pod_ns,
        "addr",
        "add",
        &format!("{}/{prefix}", vif.ips[0].address),
        "dev",
        "eth0",
    ]);
    run(&["-n", pod_ns, "link", "set", "eth0", "up"]);
    run(&[
        "-n", pod_ns, "route", "add", "default", "via", gw, "dev", "eth0",
    ]);
    run(&["link", "set", tap, "up"]);
}

/// A stale OVS port (its device re-created under a surviving row: issue 11) is found and
/// repaired: (1) a normal ADD over a row a dead device left re-adds the port (vswitchd holds
/// the new tap, no repair needed); (2) the bug made by hand on a wired pod cuts its traffic,
/// CNI CHECK names the stale port, repairs it and the pod pings again, a second CHECK passes;
/// (3) the same again is found and repaired by the daemon's periodic audit alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn stale_ovs_ports_are_found_and_repaired_on_the_stack() {
    with_stack(|s| async move {
        let dir = tempfile::tempdir().expect("tmp");
        // No audit while the bug is shown by hand: one round at start, the next in an hour.
        let d = start_daemon_probing(
            &s,
            dir.path(),
            Duration::from_secs(60),
            None,
            None,
            Duration::from_secs(3600),
        )
        .await;
        let sock = d.socket_path().to_path_buf();
        let (ns, gw) = (s.ns.clone(), s.env["POD_GW"].clone());
        let prefix = s.env["POD_CIDR"]
            .split('/')
            .nth(1)
            .expect("prefix")
            .to_owned();
        let ovs = Ovs::connect_default().await.expect("OVSDB");

        // (1) A row left by a dead device of the same name, then a normal ADD.
        let (a, b) = ("kd-stale-a", "kd-stale-b");
        let (uid_a, uid_b) = (s.create_pod(a).await, s.create_pod(b).await);
        s.create_kp(a, &uid_a).await;
        s.create_kp(b, &uid_b).await;
        let (pa, pb) = (s.create_port(a).await, s.create_port(b).await);
        let tap_a = pa.host_ifname.clone();
        let (ok, out) = ip(&[
            "link",
            "add",
            &tap_a,
            "type",
            "veth",
            "peer",
            "name",
            "kdstalepeer",
        ]);
        assert!(ok, "{out}");
        ip(&["link", "set", &tap_a, "up"]);
        ovs.add_port(
            &kuryr_ovsdb::PortSpec::new("br-int", &tap_a)
                .iface_id(&pa.port_id)
                .attached_mac(&pa.mac),
        )
        .await
        .expect("add the leftover OVS port");
        ovs.wait_ofport(&tap_a, Duration::from_secs(10))
            .await
            .expect("vswitchd opened the leftover device");
        assert_eq!(promiscuity(&tap_a), Some(1));
        let (ok, out) = ip(&["link", "del", &tap_a]);
        assert!(ok, "{out}");
        s.write_vif(a, &pa).await;
        s.write_vif(b, &pb).await;
        let (act_a, act_b) = (s.activate(a), s.activate(b));
        let (nsa, nsa_path) = s.netns("kd-sa-");
        let (nsb, nsb_path) = s.netns("kd-sb-");
        let (cid_a, cid_b) = (unique("kdstalea"), unique("kdstaleb"));
        let (st, body) = cni(&sock, &add(&cid_a, &nsa_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "ADD a: {body}");
        let (st, body) = cni(&sock, &add(&cid_b, &nsb_path, &ns, b, &uid_b)).await;
        assert_eq!(st, 200, "ADD b: {body}");
        let _ = tokio::join!(act_a, act_b);
        let ip_b = pb.ips[0].address.to_string();
        let ip_a = pa.ips[0].address.to_string();
        eventually(
            Duration::from_secs(10),
            "vswitchd to hold a's new tap",
            || async { (promiscuity(&tap_a) == Some(1)).then_some(()) },
        )
        .await;
        wired(&nsa, &ip_b, "(1) a -> b after ADD over a leftover OVS row").await;
        wired(&nsa, &gw, "(1) a -> gateway").await;
        assert_eq!(
            metric(
                &d,
                "kuryr_cni_ovs_stale_repairs_total{found_by=\"after_add\",result=\"repaired\"}"
            )
            .await,
            0.0,
            "the plug itself must re-add the port, not the after-ADD repair"
        );
        let (st, body) = cni(&sock, &verb("CHECK", &cid_a, &nsa_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "CHECK a: {body}");

        // (2) Issue 11 by hand: a's veth re-created, its OVS row untouched.
        let ofport_before = ovs
            .find_interface(&tap_a)
            .await
            .expect("find")
            .expect("row")
            .ofport;
        recreate_veth(&tap_a, &nsa, &pa, s.mtu, &prefix, &gw);
        assert_eq!(
            promiscuity(&tap_a),
            Some(0),
            "vswitchd opened the re-created device by itself"
        );
        let iface = ovs
            .find_interface(&tap_a)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(
            iface.ofport, ofport_before,
            "the OVS port kept its OpenFlow port"
        );
        let (sent, recv) = ping_stats(&nsa, &ip_b, 5);
        eprintln!("(2) stale port: {recv}/{sent} pings a -> b answered");
        assert_eq!(
            recv, 0,
            "a stale port carried traffic: the bug was not reproduced"
        );
        let t = Instant::now();
        let (st, body) = cni(&sock, &verb("CHECK", &cid_a, &nsa_path, &ns, a, &uid_a)).await;
        eprintln!(
            "(2) CHECK with the stale port took {:?}: {body}",
            t.elapsed()
        );
        assert_ne!(st, 200, "CHECK of a stale port passed: {body}");
        let msg = body.to_string();
        assert!(
            msg.contains(&tap_a) && msg.contains("stale"),
            "CHECK does not name the stale port: {msg}"
        );
        assert_eq!(
            promiscuity(&tap_a),
            Some(1),
            "CHECK did not repair the port"
        );
        wired(&nsa, &ip_b, "(2) a -> b after CHECK repaired the port").await;
        let (st, body) = cni(&sock, &verb("CHECK", &cid_a, &nsa_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "second CHECK a: {body}");
        assert_eq!(
            metric(
                &d,
                "kuryr_cni_ovs_stale_repairs_total{found_by=\"check\",result=\"repaired\"}"
            )
            .await,
            1.0
        );
        let events = s.events_for(a).await;
        assert!(
            events
                .iter()
                .any(|e| e.reason.as_deref() == Some("CNIOVSPortStale")
                    && e.message.as_deref().is_some_and(|m| m.contains(&tap_a))),
            "no CNIOVSPortStale Event naming {tap_a}: {:?}",
            events
                .iter()
                .map(|e| (&e.reason, &e.message))
                .collect::<Vec<_>>()
        );

        // (3) The audit alone: a daemon auditing every second, b's veth re-created.
        d.shutdown().await;
        let d = start_daemon_probing(
            &s,
            dir.path(),
            Duration::from_secs(60),
            None,
            None,
            Duration::from_secs(1),
        )
        .await;
        let tap_b = pb.host_ifname.clone();
        recreate_veth(&tap_b, &nsb, &pb, s.mtu, &prefix, &gw);
        let t = Instant::now();
        eventually(
            Duration::from_secs(30),
            "the audit to repair b's stale port",
            || async {
                (metric(
                    &d,
                    "kuryr_cni_ovs_stale_repairs_total{found_by=\"audit\",result=\"repaired\"}",
                )
                .await
                    == 1.0)
                    .then_some(())
            },
        )
        .await;
        eprintln!(
            "(3) the audit repaired b's stale port {:?} after the veth was re-created",
            t.elapsed()
        );
        assert_eq!(promiscuity(&tap_b), Some(1));
        wired(&nsb, &ip_a, "(3) b -> a after the audit repaired the port").await;

        // (4) A held device that is down (what vswitchd leaves when it writes flags cached for
        // an earlier device of the same name): the audit sets it up, no re-add needed.
        let (ok, out) = ip(&["link", "set", &tap_b, "down"]);
        assert!(ok, "{out}");
        let t = Instant::now();
        eventually(
            Duration::from_secs(30),
            "the audit to set b's device up",
            || async {
                (metric(
                    &d,
                    "kuryr_cni_ovs_stale_repairs_total{found_by=\"audit\",result=\"repaired\"}",
                )
                .await
                    == 2.0)
                    .then_some(())
            },
        )
        .await;
        eprintln!(
            "(4) the audit set b's device up {:?} after it went down",
            t.elapsed()
        );
        assert!(link_up(&tap_b), "{tap_b} is still down");
        wired(&nsb, &ip_a, "(4) b -> a after the audit set the device up").await;
        let (st, text) = http_tcp(d.health_addr(), "/health").await;
        assert_eq!(st, 200, "/health: {text}");
        assert_eq!(metric(&d, "kuryr_cni_ovs_stale_ports").await, 0.0);
        for (cid, nsp, pod, uid) in [
            (&cid_a, &nsa_path, a, &uid_a),
            (&cid_b, &nsb_path, b, &uid_b),
        ] {
            let (st, body) = cni(d.socket_path(), &verb("DEL", cid, nsp, &ns, pod, uid)).await;
            assert_eq!(st, 200, "DEL {pod}: {body}");
        }
        d.shutdown().await;
    })
    .await;
}

/// Recycled pool ports keep their datapath (issue 11): one pool port serves three pods in
/// turn; each pod's sandbox dies before its DEL (the veth goes with the netns, its OVS port
/// stays), the port is recycled into the pool and pre-plugged again under the same tap name
/// (the daemon restarted in the middle of the second round), the late DEL leaves it to the
/// pool; every pod on the recycled port pings a pod plugged before and the gateway with no
/// loss, and vswitchd holds the tap each time without any repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn recycled_pool_ports_keep_their_datapath_on_the_stack() {
    with_stack(|s| async move {
        let dir = tempfile::tempdir().expect("tmp");
        let pool_ns = unique("kd-pool-");
        s.left.lock().expect("lock").netns.push(pool_ns.clone());
        let mut d = start_daemon_with_pool(&s, dir.path(), Duration::from_secs(60), None, Some(&pool_ns)).await;
        let ns = s.ns.clone();
        let gw = s.env["POD_GW"].clone();

        // A reference pod, plugged normally before anything else.
        let r = "kd-rec-ref";
        let uid_r = s.create_pod(r).await;
        s.create_kp(r, &uid_r).await;
        let pr = s.create_port(r).await;
        s.write_vif(r, &pr).await;
        let act = s.activate(r);
        let (nsr, nsr_path) = s.netns("kd-rr-");
        let cid_r = unique("kdrecref");
        let (st, body) = cni(d.socket_path(), &add(&cid_r, &nsr_path, &ns, r, &uid_r)).await;
        assert_eq!(st, 200, "ADD ref: {body}");
        let _ = act.await;
        let ip_r = pr.ips[0].address.to_string();

        let p = s.create_port("kd-rec-pool").await;
        let tap = p.host_ifname.clone();
        let pool = s.create_pool_kp(&[&p]).await;
        let mut results = Vec::new();
        for round in 1..=3 {
            eventually(Duration::from_secs(30), &format!("round {round}: the port pre-plugged"), || async {
                held(&pool_ns, &p.port_id).filter(|h| h.2)
            })
            .await;
            s.wait_active(&p.port_id).await;
            let pod = format!("kd-rec-{round}");
            let uid = s.create_pod(&pod).await;
            s.claim(&pool, &pod, &uid, &p).await;
            let (nsp, nsp_path) = s.netns("kd-rp-");
            let cid = unique("kdrec");
            let sock = d.socket_path().to_path_buf();
            let (st, body) = cni(&sock, &add(&cid, &nsp_path, &ns, &pod, &uid)).await;
            assert_eq!(st, 200, "round {round}: ADD: {body}");
            assert!(held(&pool_ns, &p.port_id).is_none(), "round {round}: not taken from the pool");
            assert_eq!(promiscuity(&tap), Some(1), "round {round}: vswitchd does not hold {tap}");
            let to_ref = wired(&nsp, &ip_r, &format!("round {round}: pod -> reference pod")).await;
            let from_ref = wired(&nsr, &p.ips[0].address.to_string(), &format!("round {round}: reference pod -> pod")).await;
            let to_gw = wired(&nsp, &gw, &format!("round {round}: pod -> gateway")).await;
            results.push((round, to_ref, from_ref, to_gw));

            // The sandbox dies before its DEL: the veth goes, the OVS port stays.
            Netns::delete_named(&nsp).expect("delete the pod netns");
            eventually(Duration::from_secs(10), "the veth gone with its netns", || async {
                (!host_link_exists(&tap)).then_some(())
            })
            .await;
            assert!(ovs_iface_id(&tap).await.is_some(), "the OVS port went with the device");
            if round == 2 {
                // A daemon restart while the dead row is there (the recycle happens while it is down).
                d.shutdown().await;
                s.kps().delete(&pod, &DeleteParams::default()).await.expect("delete KuryrPort");
                s.pool_put(&pool, &p).await;
                d = start_daemon_with_pool(&s, dir.path(), Duration::from_secs(60), None, Some(&pool_ns)).await;
            } else {
                s.kps().delete(&pod, &DeleteParams::default()).await.expect("delete KuryrPort");
                s.pool_put(&pool, &p).await;
            }
            eventually(Duration::from_secs(30), &format!("round {round}: the recycled port pre-plugged"), || async {
                held(&pool_ns, &p.port_id).filter(|h| h.2)
            })
            .await;
            // Pre-plugged means vswitchd holds the new tap (the pre-plug waits for it).
            assert_eq!(promiscuity(&tap), Some(1), "round {round}: the recycled port's tap is not held by vswitchd");
            let (st, body) = cni(d.socket_path(), &verb("DEL", &cid, &nsp_path, &ns, &pod, &uid)).await;
            assert_eq!(st, 200, "round {round}: late DEL: {body}");
            assert!(held(&pool_ns, &p.port_id).is_some(), "round {round}: the late DEL took the pool's interface");
            assert_eq!(promiscuity(&tap), Some(1), "round {round}: the late DEL broke the pool's port");
        }
        eprintln!("recycled pool port rounds (round, to ref, from ref, to gw) as (sent, received): {results:?}");
        let repairs: f64 = futures_util::future::join_all(
            ["after_add", "preplug", "adopt", "check", "audit"].map(|f| {
                let d = &d;
                async move { metric(d, &format!("kuryr_cni_ovs_stale_repairs_total{{found_by=\"{f}\",result=\"repaired\"}}")).await }
            }),
        )
        .await
        .into_iter()
        .sum();
        assert_eq!(repairs, 0.0, "the plugs must not leave stale ports to repair");
        let (st, body) = cni(d.socket_path(), &verb("DEL", &cid_r, &nsr_path, &ns, r, &uid_r)).await;
        assert_eq!(st, 200, "DEL ref: {body}");
        d.shutdown().await;
    })
    .await;
}

// ------------------------------------------------------------- ovs-vswitchd outage (issue 18)

/// Holds ovs-vswitchd down: its supervisor (hack/stack/supervise) is stopped with SIGSTOP so it
/// cannot restart the switch, then the switch is killed with -9 (what its conntrack abort does).
/// Drop lets the supervisor go on: it sees the exit, records the crash and restarts the switch.
struct VswitchdOutage {
    supervisor: String,
}

impl VswitchdOutage {
    fn begin() -> VswitchdOutage {
        let read = |f: &str| {
            std::fs::read_to_string(state_file("pids").join(f))
                .expect(f)
                .trim()
                .to_owned()
        };
        let (supervisor, pid) = (read("ovs-vswitchd.sup"), read("ovs-vswitchd.pid"));
        assert!(Command::new("kill")
            .args(["-STOP", &supervisor])
            .status()
            .expect("kill")
            .success());
        let outage = VswitchdOutage { supervisor };
        // hack/test's summary marks this crash as deliberate.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let line = format!("{now} ovs-vswitchd daemon stack test: vswitchd outage\n");
        let _ = std::io::Write::write_all(
            &mut std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(state_file("expected-kills"))
                .expect("expected-kills"),
            line.as_bytes(),
        );
        assert!(Command::new("kill")
            .args(["-9", &pid])
            .status()
            .expect("kill")
            .success());
        while Path::new(&format!("/proc/{pid}/stat")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        outage
    }
}

impl Drop for VswitchdOutage {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.supervisor])
            .status();
    }
}

/// kuryr-daemon through an ovs-vswitchd crash (issue 18): while the switch is down CNI CHECK
/// says so (and neither calls the pod's port stale nor "repairs" it), an ADD is accepted (its
/// port waits in OVSDB), no attachment is lost; once the supervisor restarted the switch, the
/// pod plugged before and the pod added during the outage both carry traffic, and CHECK passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack (hack/stack/stack up)"]
async fn pods_regain_traffic_after_an_ovs_vswitchd_crash_on_the_stack() {
    with_stack_alone(|s| async move {
        let dir = tempfile::tempdir().expect("tmp");
        let d = start_daemon_probing(
            &s,
            dir.path(),
            Duration::from_secs(60),
            None,
            None,
            Duration::from_secs(1),
        )
        .await;
        let sock = d.socket_path().to_path_buf();
        let ns = s.ns.clone();
        let ovs = Ovs::connect_default().await.expect("OVSDB");
        let (a, b) = ("kd-vsw-a", "kd-vsw-b");
        let (uid_a, uid_b) = (s.create_pod(a).await, s.create_pod(b).await);
        s.create_kp(a, &uid_a).await;
        s.create_kp(b, &uid_b).await;
        let (pa, pb) = (s.create_port(a).await, s.create_port(b).await);
        s.write_vif(a, &pa).await;
        s.write_vif(b, &pb).await;
        let act = s.activate(a);
        let (nsa, nsa_path) = s.netns("kd-va-");
        let cid_a = unique("kdvswa");
        let (st, body) = cni(&sock, &add(&cid_a, &nsa_path, &ns, a, &uid_a)).await;
        assert_eq!(st, 200, "ADD a: {body}");
        let _ = act.await;
        let gw = s.env["POD_GW"].clone();
        wired(&nsa, &gw, "a -> gateway before the crash").await;
        assert!(
            ovs.vswitchd_running().await.expect("lock probe"),
            "vswitchd runs before the outage"
        );

        let outage = VswitchdOutage::begin();
        let t0 = Instant::now();
        eventually(
            Duration::from_secs(10),
            "OVSDB to see vswitchd gone",
            || async { (!ovs.vswitchd_running().await.unwrap_or(true)).then_some(()) },
        )
        .await;
        // CHECK names the outage, does not call the port stale, and repairs nothing.
        let t = Instant::now();
        let (st, body) = cni(&sock, &verb("CHECK", &cid_a, &nsa_path, &ns, a, &uid_a)).await;
        let msg = body.to_string();
        eprintln!("CHECK during the outage ({:?}): {st} {msg}", t.elapsed());
        assert_ne!(st, 200, "CHECK passed while ovs-vswitchd is down: {msg}");
        assert!(
            msg.contains("ovs-vswitchd is not running"),
            "CHECK does not name the outage: {msg}"
        );
        assert!(
            !msg.contains("stale"),
            "CHECK called a port stale during the outage: {msg}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "CHECK waited for a repair during the outage: {:?}",
            t.elapsed()
        );
        // An ADD during the outage waits within its deadline: its port goes into OVSDB at once,
        // but Neutron reports it ACTIVE only once the switch (and so OVN) has it.
        let act = s.activate(b);
        let (nsb, nsb_path) = s.netns("kd-vb-");
        let cid_b = unique("kdvswb");
        let t = Instant::now();
        let adding = {
            let (sock, req) = (sock.clone(), add(&cid_b, &nsb_path, &ns, b, &uid_b));
            tokio::spawn(async move { cni(&sock, &req).await })
        };
        let tap_b = pb.host_ifname.clone();
        eventually(
            Duration::from_secs(20),
            "b's OVS port in OVSDB during the outage",
            || async { ovs.find_interface(&tap_b).await.ok().flatten().map(|_| ()) },
        )
        .await;
        // Negative check: the outage goes on for 2 s, and ADD must not return meanwhile.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !adding.is_finished() || t.elapsed() < Duration::from_secs(1),
            "ADD b returned during the outage"
        );
        // Let the supervisor restart the switch.
        drop(outage);
        eventually(
            Duration::from_secs(30),
            "the supervisor to restart ovs-vswitchd",
            || async { ovs.vswitchd_running().await.unwrap_or(false).then_some(()) },
        )
        .await;
        eprintln!("ovs-vswitchd back {:?} after the kill", t0.elapsed());
        let (st, body) = adding.await.expect("ADD task");
        eprintln!("ADD begun during the outage: {st} after {:?}", t.elapsed());
        assert_eq!(st, 200, "ADD b begun during the outage: {body}");
        let _ = act.await;
        let ip_a = pa.ips[0].address.to_string();
        let ip_b = pb.ips[0].address.to_string();
        wired(
            &nsa,
            &ip_b,
            "a (plugged before) -> b (added during the outage)",
        )
        .await;
        wired(&nsb, &ip_a, "b -> a").await;
        wired(&nsa, &gw, "a -> gateway after the restart").await;
        for (cid, nsp, pod, uid) in [
            (&cid_a, &nsa_path, a, &uid_a),
            (&cid_b, &nsb_path, b, &uid_b),
        ] {
            let (st, body) = cni(&sock, &verb("CHECK", cid, nsp, &ns, pod, uid)).await;
            assert_eq!(st, 200, "CHECK {pod} after the restart: {body}");
        }
        assert_eq!(
            metric(
                &d,
                "kuryr_cni_ovs_stale_repairs_total{found_by=\"check\",result=\"repaired\"}"
            )
            .await,
            0.0,
            "the outage was mistaken for stale ports"
        );
        for (cid, nsp, pod, uid) in [
            (&cid_a, &nsa_path, a, &uid_a),
            (&cid_b, &nsb_path, b, &uid_b),
        ] {
            let (st, body) = cni(&sock, &verb("DEL", cid, nsp, &ns, pod, uid)).await;
            assert_eq!(st, 200, "DEL {pod}: {body}");
        }
        d.shutdown().await;
    })
    .await;
}
