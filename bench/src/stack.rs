//! The benchmark's side of the local stack: it plays the controller (Neutron ports, KuryrPorts
//! with an active VIF) and the container runtime (network namespaces), like
//! crates/kuryr-daemon/tests/stack.rs, from which this is adapted.
//!
//! Isolation from whatever else uses the cluster:
//! * the daemon serves a made-up node name (`kbench-node-<run>`): no kubelet runs it, and the
//!   daemon only watches KuryrPorts labelled with it;
//! * the Pods are `hostNetwork` and never scheduled (`schedulerName` names no scheduler), so no
//!   kubelet runs them, a kuryr-controller ignores them (no port of its own), and the pod GC
//!   leaves them alone (a pod bound to a node that does not exist is deleted after ~40 s);
//! * everything is labelled `kuryr-bench` in a namespace `kuryr-bench-<run>`, Neutron ports are
//!   named `kbench-<run>-kbench-<i>` (and tagged `kuryr-bench`, `kbench-<run>` where Neutron
//!   keeps tags of a bulk POST; the local stack's does not), network namespaces are named
//!   `kbench-<run>-<i>`; [`sweep`] removes all of it (also leftovers of a crashed run).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use kuryr_core::crd::{KuryrPort, KuryrPortSpec};
use kuryr_core::names::NODE_NAME_LABEL;
use kuryr_core::vif::{host_ifname, Binding, Vif, VifIp};
use kuryr_netplumb::Netns;
use kuryr_openstack::neutron::{FixedIpRequest, Port, PortCreate};
use kuryr_openstack::{CloudConfig, Neutron, Query, Session};
use kuryr_ovsdb::Ovs;
use serde_json::json;

pub use kuryr_test_support::state_file;
/// Label on namespaces and pods, tag on Neutron ports.
pub const TAG: &str = "kuryr-bench";
/// Prefix of network namespaces (and of the per-run tag).
pub const NETNS_PREFIX: &str = "kbench-";
/// How many API calls run at once during setup and cleanup.
const PARALLEL: usize = 8;

/// The stack's `stack.env` (the one parser the stack tests use too).
pub fn stack_env() -> Result<HashMap<String, String>> {
    let p = state_file("stack.env");
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "{} unreadable: is the stack up? (hack/stack/stack up)",
            p.display()
        )
    })?;
    Ok(kuryr_test_support::parse_env(&text))
}

pub async fn kube_client() -> Result<Client> {
    let path = state_file("kubeconfig");
    let kc = Kubeconfig::read_from(&path).with_context(|| format!("read {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("kubeconfig")?;
    Client::try_from(cfg).context("Kubernetes client")
}

/// A Keystone session as the stack's `kuryr` cloud (clouds.yaml).
pub async fn session() -> Result<Session> {
    let cloud = CloudConfig::from_clouds_yaml(state_file("clouds.yaml"), "kuryr")
        .context("clouds.yaml")?
        .with_timeout(Duration::from_secs(300));
    Session::from_cloud(&cloud).await.context("Keystone")
}

pub async fn neutron() -> Result<Neutron> {
    Ok(Neutron::new(session().await?))
}

pub async fn octavia() -> Result<kuryr_openstack::Octavia> {
    Ok(kuryr_openstack::Octavia::new(session().await?))
}

/// One benchmark pod: its API objects, its sandbox, its port.
#[derive(Clone, Debug)]
pub struct BenchPod {
    pub name: String,
    pub uid: String,
    pub container_id: String,
    pub netns_name: String,
    pub netns_path: PathBuf,
    pub vif: Option<Vif>,
}

pub struct Stack {
    pub env: HashMap<String, String>,
    pub client: Client,
    pub neutron: Neutron,
    pub run_id: String,
    pub node: String,
    pub ns: String,
    pub mtu: u32,
}

impl Stack {
    pub async fn connect(run_id: &str) -> Result<Stack> {
        let env = stack_env()?;
        let client = kube_client().await?;
        let neutron = neutron().await?;
        let net = neutron
            .get_network(&env["POD_NET_ID"])
            .await
            .context("pod network")?;
        Ok(Stack {
            mtu: net.mtu.unwrap_or(1442),
            env,
            client,
            neutron,
            run_id: run_id.to_owned(),
            node: format!("kbench-node-{run_id}"),
            ns: format!("kuryr-bench-{run_id}"),
        })
    }

    fn kps(&self) -> Api<KuryrPort> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn create_namespace(&self) -> Result<()> {
        let ns: Namespace = serde_json::from_value(
            json!({"metadata": {"name": self.ns, "labels": {TAG: "true"}}}),
        )?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .context("create namespace")?;
        Ok(())
    }

    /// Creates `n` never-scheduled hostNetwork pods `kbench-<first..first+n>`; returns them
    /// with container ids and netns names filled in (netns not created yet).
    pub async fn create_pods(&self, first: usize, n: usize) -> Result<Vec<BenchPod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let run = self.run_id.clone();
        let results: Vec<Result<BenchPod>> = stream::iter(first..first + n)
            .map(|i| {
                let api = api.clone();
                let run = run.clone();
                async move {
                    let name = format!("kbench-{i}");
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": name, "labels": {TAG: "true"}},
                        "spec": {"hostNetwork": true, "schedulerName": "kuryr-bench-no-such-scheduler",
                                 "terminationGracePeriodSeconds": 0,
                                 "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}))?;
                    let p = api
                        .create(&PostParams::default(), &pod)
                        .await
                        .with_context(|| format!("create pod {name}"))?;
                    let uid = p.metadata.uid.ok_or_else(|| anyhow!("pod {name} has no uid"))?;
                    let netns_name = format!("{NETNS_PREFIX}{run}-{i}");
                    Ok(BenchPod {
                        container_id: format!("{:0>64}", format!("{run}{i:06x}").replace('-', "")),
                        netns_path: PathBuf::from("/run/netns").join(&netns_name),
                        netns_name,
                        name,
                        uid,
                        vif: None,
                    })
                }
            })
            .buffered(PARALLEL)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// All ports in one bulk POST, bound to the stack host (so that OVN claims them when the
    /// daemon plugs them into br-int); fills in `vif` (active) of every pod.
    pub async fn create_ports(&self, pods: &mut [BenchPod]) -> Result<()> {
        let e = &self.env;
        let reqs: Vec<PortCreate> = pods
            .iter()
            .map(|p| PortCreate {
                network_id: e["POD_NET_ID"].clone(),
                name: format!("{NETNS_PREFIX}{}-{}", self.run_id, p.name),
                fixed_ips: Some(vec![FixedIpRequest::subnet(e["POD_SUBNET_ID"].clone())]),
                device_owner: kuryr_core::names::DEVICE_OWNER.into(),
                device_id: p.uid.clone(),
                binding_host_id: e["STACK_HOST"].clone(),
                security_groups: Some(vec![e["POD_SG_ID"].clone()]),
                tags: vec![TAG.into(), format!("{NETNS_PREFIX}{}", self.run_id)],
                ..Default::default()
            })
            .collect();
        let ports = self
            .neutron
            .create_ports(&reqs)
            .await
            .context("bulk-create Neutron ports")?;
        if ports.len() != pods.len() {
            return Err(anyhow!(
                "asked for {} ports, got {}",
                pods.len(),
                ports.len()
            ));
        }
        for (pod, port) in pods.iter_mut().zip(ports) {
            pod.vif = Some(self.vif(&port)?);
        }
        Ok(())
    }

    fn vif(&self, p: &Port) -> Result<Vif> {
        let e = &self.env;
        Ok(Vif {
            port_id: p.id.clone(),
            network_id: p.network_id.clone(),
            mac: p.mac_address.clone(),
            mtu: self.mtu,
            ips: vec![VifIp {
                address: p
                    .ip()
                    .ok_or_else(|| anyhow!("port {} has no fixed IP", p.id))?
                    .parse()?,
                subnet_cidr: e["POD_CIDR"].clone(),
                subnet_id: Some(e["POD_SUBNET_ID"].clone()),
                gateway: Some(e["POD_GW"].parse()?),
                routes: vec![],
                dns: vec![],
            }],
            binding: Binding::Ovs {
                bridge: e
                    .get("OVS_BRIDGE")
                    .cloned()
                    .unwrap_or_else(|| "br-int".into()),
            },
            host_ifname: host_ifname(&p.id),
            // The controller's activation already happened: ADD does not wait for Neutron.
            active: true,
            port_filter: true,
        })
    }

    /// One KuryrPort per pod, labelled with the made-up node, then the controller's status
    /// write (the typed VIF, active).
    pub async fn create_kuryrports(&self, pods: &[BenchPod]) -> Result<()> {
        let results: Vec<Result<()>> = stream::iter(pods)
            .map(|p| async move {
                let mut kp = KuryrPort::new(
                    &p.name,
                    KuryrPortSpec {
                        pod_uid: p.uid.clone(),
                        pod_node_name: self.node.clone(),
                        pod_static: false,
                    },
                );
                kp.metadata.labels = Some(
                    [
                        (NODE_NAME_LABEL.to_string(), self.node.clone()),
                        (TAG.to_string(), "true".to_string()),
                    ]
                    .into(),
                );
                self.kps()
                    .create(&PostParams::default(), &kp)
                    .await
                    .with_context(|| format!("create KuryrPort {}", p.name))?;
                let vif = p.vif.as_ref().ok_or_else(|| anyhow!("{} has no VIF", p.name))?;
                let patch = json!({"status": {"vifs": {"eth0": {"default": true, "vif": vif.to_status_value()}}}});
                self.kps()
                    .patch_status(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("write the VIF of KuryrPort {}", p.name))?;
                Ok(())
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// The node's pool KuryrPort (what kuryr-controller publishes) holding the pods' VIFs, as
    /// pool ports (key = port id, not default); returns its name.
    pub async fn create_pool_kuryrport(&self, pods: &[BenchPod]) -> Result<String> {
        let mut kp = KuryrPort::pool(&self.node);
        let name = kp.metadata.name.clone().unwrap_or_default();
        // Also the bench's own label, for its sweep.
        kp.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(TAG.to_string(), "true".to_string());
        self.kps()
            .create(&PostParams::default(), &kp)
            .await
            .context("create the pool KuryrPort")?;
        let mut vifs = serde_json::Map::new();
        for p in pods {
            let vif = p
                .vif
                .as_ref()
                .ok_or_else(|| anyhow!("{} has no VIF", p.name))?;
            vifs.insert(
                vif.port_id.clone(),
                json!({"default": false, "vif": vif.to_status_value()}),
            );
        }
        self.kps()
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"vifs": vifs}})),
            )
            .await
            .context("write the pool KuryrPort's VIFs")?;
        Ok(name)
    }

    /// The pods' ports leave the pool (after their KuryrPorts claimed them), in one patch.
    pub async fn remove_from_pool(&self, pool: &str, pods: &[BenchPod]) -> Result<()> {
        let vifs: serde_json::Map<String, serde_json::Value> = pods
            .iter()
            .filter_map(|p| p.vif.as_ref())
            .map(|v| (v.port_id.clone(), serde_json::Value::Null))
            .collect();
        self.kps()
            .patch_status(
                pool,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"vifs": vifs}})),
            )
            .await
            .context("remove the claimed ports from the pool")?;
        Ok(())
    }

    pub fn create_netns(&self, pods: &[BenchPod]) -> Result<()> {
        for p in pods {
            Netns::create_named(&p.netns_name)
                .with_context(|| format!("create netns {}", p.netns_name))?;
        }
        Ok(())
    }

    /// How many of the ports Neutron reports ACTIVE.
    pub async fn active_ports(&self, ids: &[String]) -> Result<usize> {
        let ports = self
            .neutron
            .list_ports_by_id(ids, &["id", "status"])
            .await
            .context("list ports")?;
        Ok(ports.iter().filter(|p| p.status == "ACTIVE").count())
    }
}

/// How many of `taps` are on the bridge with the given iface-ids.
pub async fn plugged(bridge: &str, taps: &[(String, String)]) -> Result<usize> {
    let ovs = Ovs::connect_default().await.context("OVSDB")?;
    let ports = ovs.list_ports(bridge).await.context("list OVS ports")?;
    let mut n = 0;
    for (tap, port_id) in taps {
        if ports.iter().any(|p| {
            p.name == *tap
                && p.interfaces
                    .iter()
                    .any(|i| i.external_ids.get("iface-id") == Some(port_id))
        }) {
            n += 1;
        }
    }
    Ok(n)
}

/// What [`sweep`] removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Swept {
    pub neutron_ports: usize,
    pub ovs_ports: usize,
    pub namespaces: usize,
    pub netns: usize,
    pub errors: Vec<String>,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        self.neutron_ports + self.ovs_ports + self.namespaces + self.netns == 0
    }
}

/// Unplugs `ports` from `bridge` (OVS port and host veth `tap…`), then deletes them in Neutron;
/// counts into `s`.
pub async fn remove_ports(n: &Neutron, bridge: &str, ports: &[Port], s: &mut Swept) {
    // OVS first, so that nothing stays plugged for a port that is gone.
    let taps: Vec<String> = ports.iter().map(|p| host_ifname(&p.id)).collect();
    match Ovs::connect_default().await {
        Ok(ovs) => {
            for t in &taps {
                match ovs.del_port(bridge, t).await {
                    Ok(true) => s.ovs_ports += 1,
                    Ok(false) => {}
                    Err(e) => s.errors.push(format!("OVS del-port {t}: {e}")),
                }
            }
        }
        Err(e) => s.errors.push(format!("OVSDB: {e}")),
    }
    for t in &taps {
        if Path::new("/sys/class/net").join(t).exists() {
            let _ = Command::new("ip").args(["link", "del", t]).output();
        }
    }
    let deleted: Vec<std::result::Result<bool, String>> = stream::iter(ports)
        .map(|port| {
            let n = n.clone();
            async move {
                n.delete_port(&port.id)
                    .await
                    .map_err(|e| format!("delete port {}: {e}", port.id))
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    for d in deleted {
        match d {
            Ok(true) => s.neutron_ports += 1,
            Ok(false) => {}
            Err(e) => s.errors.push(e),
        }
    }
}

/// Removes everything any kuryr-bench run created: OVS ports and host veths of the Neutron
/// ports named `kbench-*` (device_owner `compute:kuryr`) or tagged `kuryr-bench`, those ports, namespaces labelled `kuryr-bench=true` (their
/// KuryrPorts and Pods first), `/run/netns/kbench-*`. Best effort: errors are collected.
pub async fn sweep(bridge: &str) -> Swept {
    let mut s = Swept::default();
    let ports: Vec<Port> = match neutron().await {
        // By name: Neutron keeps no tags given in a bulk POST here (tags are set as well, for
        // operators, where Neutron honours them).
        Ok(n) => match n
            .list_ports(
                &Query::new()
                    .eq("device_owner", kuryr_core::names::DEVICE_OWNER)
                    .fields(["id", "name", "tags"]),
            )
            .await
        {
            Ok(p) => {
                let p: Vec<Port> = p
                    .into_iter()
                    .filter(|p| p.name.starts_with(NETNS_PREFIX) || p.tags.iter().any(|t| t == TAG))
                    .collect();
                remove_ports(&n, bridge, &p, &mut s).await;
                p
            }
            Err(e) => {
                s.errors.push(format!("list tagged ports: {e}"));
                vec![]
            }
        },
        Err(e) => {
            s.errors.push(format!("Neutron: {e:#}"));
            vec![]
        }
    };
    drop(ports);

    match kube_client().await {
        Ok(client) => {
            let nss = Api::<Namespace>::all(client.clone());
            match nss
                .list(&ListParams::default().labels(&format!("{TAG}=true")))
                .await
            {
                Ok(list) => {
                    for ns in list.items {
                        let name = ns.metadata.name.clone().unwrap_or_default();
                        if ns.metadata.deletion_timestamp.is_none() {
                            s.namespaces += 1;
                        }
                        sweep_namespace(&client, &name, &mut s).await;
                    }
                }
                Err(e) => s.errors.push(format!("list namespaces: {e}")),
            }
        }
        Err(e) => s.errors.push(format!("{e:#}")),
    }

    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(NETNS_PREFIX) {
                match Netns::delete_named(&name) {
                    Ok(true) => s.netns += 1,
                    Ok(false) => {}
                    Err(e) => s.errors.push(format!("delete netns {name}: {e}")),
                }
            }
        }
    }
    s
}

async fn sweep_namespace(client: &Client, ns: &str, s: &mut Swept) {
    let kps: Api<KuryrPort> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default();
    // A controller that ran meanwhile may have put its finalizer on them.
    if let Ok(list) = kps.list(&lp).await {
        for kp in list.items {
            if kp
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty())
            {
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
    if let Err(e) = kps.delete_collection(&DeleteParams::default(), &lp).await {
        s.errors.push(format!("delete KuryrPorts in {ns}: {e}"));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Err(e) = pods
        .delete_collection(&DeleteParams::default().grace_period(0), &lp)
        .await
    {
        s.errors.push(format!("delete pods in {ns}: {e}"));
    }
    match Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => s.errors.push(format!("delete namespace {ns}: {e}")),
    }
}
