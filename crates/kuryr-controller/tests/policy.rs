//! The NetworkPolicy domain's reconcile branches without the stack: the KuryrNetworkPolicy pass
//! (`policy::knp::apply`), its teardown and the new-port hook, against the mock API server and
//! kuryr-openstack's stateful security-group double (plus pod ports), asserting the exact Neutron
//! requests: create order, a pod event = only the changed calls, delete order, adoption after a
//! crash, ports written only when their groups change.

mod fixtures;

use fixtures::{default_kube, ApiServer, Call, CLUSTER};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, store::Writer, ObjectRef};
use kube::runtime::watcher;
use kube::Client;
use kuryr_controller::policy::model::{Cluster, ModelSettings};
use kuryr_controller::policy::networkpolicy::{new_knp, spec_of};
use kuryr_controller::policy::{knp, PodAddressSource, Policy, PolicySettings};
use kuryr_controller::runtime::cache::NeutronCache;
use kuryr_controller::runtime::context::{Backoff, Context};
use kuryr_controller::runtime::events::Events;
use kuryr_controller::runtime::health::Health;
use kuryr_controller::runtime::lease::LeaderGate;
use kuryr_controller::runtime::metrics::Metrics;
use kuryr_controller::runtime::settings::all_tags;
use kuryr_core::crd::{KuryrNetworkPolicy, KuryrPort, KuryrPortStatus, VifEntry};
use kuryr_core::vif::{Binding, Vif, VifIp};
use kuryr_openstack::fake::{Fake, Reply, SecuritySim};
use kuryr_openstack::neutron::{AddressGroupCreate, EtherType, SecurityGroupCreate};
use kuryr_openstack::{Neutron, Octavia, Session};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const NS: &str = "ns";
const NP_UID: &str = "np-uid";
const DEFAULT_SG: &str = "sg-default";

/// Keystone + the security-group double + pod ports (GET/PUT `security_groups`).
struct Cloud {
    fake: Fake,
    sim: Arc<Mutex<SecuritySim>>,
    ports: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
}

impl Cloud {
    async fn start() -> Cloud {
        Cloud::start_with(true).await
    }

    /// `address_groups = false`: a cloud without the extension (its paths are 404s).
    async fn start_with(address_groups: bool) -> Cloud {
        let sim = Arc::new(Mutex::new(SecuritySim::new("proj")));
        let ports: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
        let (s, p) = (sim.clone(), ports.clone());
        let fake = Fake::start(move |req, base| {
            if req.is_auth() {
                return Reply::token_with_dates(base, "tok", "2025-01-01T00:00:00.000000Z", "2099-01-01T00:00:00.000000Z");
            }
            if !address_groups && req.path().starts_with("/v2.0/address-groups") {
                return Reply::json(404, json!({"NeutronError": {"type": "HTTPNotFound", "message": "no", "detail": ""}}).to_string());
            }
            if let Some(r) = s.lock().unwrap().handle(req) {
                return r;
            }
            let path = req.path().to_string();
            let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let port = |id: &str, sgs: &[String]| {
                json!({"port": {"id": id, "network_id": "net-1", "security_groups": sgs, "fixed_ips": [], "status": "ACTIVE"}}).to_string()
            };
            let mut ports = p.lock().unwrap();
            match (req.method.as_str(), seg.as_slice()) {
                ("GET", ["v2.0", "ports", id]) => match ports.get(*id) {
                    Some(sgs) => Reply::json(200, port(id, sgs)),
                    None => Reply::json(404, json!({"NeutronError": {"type": "PortNotFound", "message": "no", "detail": ""}}).to_string()),
                },
                ("PUT", ["v2.0", "ports", id]) => {
                    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                    let sgs: Vec<String> = serde_json::from_value(body["port"]["security_groups"].clone()).unwrap_or_default();
                    match ports.get_mut(*id) {
                        Some(have) => {
                            *have = sgs.clone();
                            Reply::json(200, port(id, &sgs))
                        }
                        None => {
                            Reply::json(404, json!({"NeutronError": {"type": "PortNotFound", "message": "no", "detail": ""}}).to_string())
                        }
                    }
                }
                _ => Reply::json(404, json!({"NeutronError": {"type": "HTTPNotFound", "message": path, "detail": ""}}).to_string()),
            }
        })
        .await;
        Cloud { fake, sim, ports }
    }

    fn add_port(&self, id: &str, sgs: &[&str]) {
        self.ports.lock().unwrap().insert(id.into(), sgs.iter().map(|s| s.to_string()).collect());
    }

    fn port(&self, id: &str) -> Vec<String> {
        self.ports.lock().unwrap().get(id).cloned().unwrap_or_default()
    }

    /// Requests but Keystone, `METHOD /path`, with the ids of groups, address groups and rules
    /// replaced by `{name}` of the group (or `{rule}`), so expectations read as the design says.
    fn lines(&self) -> Vec<String> {
        let names = self.names();
        self.fake
            .seen()
            .iter()
            .filter(|s| !s.is_auth())
            .map(|s| {
                let path: Vec<String> = s
                    .path()
                    .split('/')
                    .map(|seg| match names.get(seg) {
                        Some(n) => format!("{{{n}}}"),
                        None if seg.starts_with("rule-") => "{rule}".to_string(),
                        None => seg.to_string(),
                    })
                    .collect();
                format!("{} {}", s.method, path.join("/"))
            })
            .collect()
    }

    /// The bodies of the requests, in order.
    fn bodies(&self) -> Vec<Value> {
        self.fake.seen().iter().filter(|s| !s.is_auth()).map(|s| serde_json::from_slice(&s.body).unwrap_or(Value::Null)).collect()
    }

    /// id → name of every group and address group the double holds.
    fn names(&self) -> BTreeMap<String, String> {
        let s = self.sim.lock().unwrap();
        let mut m: BTreeMap<String, String> = s.groups.values().map(|g| (g.id.clone(), g.name.clone())).collect();
        m.extend(s.address_groups.values().map(|g| (g.id.clone(), g.name.clone())));
        m
    }

    fn id_of(&self, name: &str) -> String {
        self.names().into_iter().find(|(_, n)| n == name).map(|(id, _)| id).unwrap_or_else(|| panic!("no group {name}"))
    }

    /// How many requests (Keystone's aside) were made so far: later ones are `lines()[n..]`.
    fn forget_requests(&self) -> usize {
        self.fake.seen().iter().filter(|s| !s.is_auth()).count()
    }
}

struct H {
    policy: Arc<Policy>,
    ctx: Arc<Context>,
    pods: Writer<Pod>,
    kps: Writer<KuryrPort>,
    nps: Writer<NetworkPolicy>,
    #[allow(dead_code)]
    nss: Writer<Namespace>,
    /// The policies the domain asked to reconcile (`namespace/name`), in order.
    triggers: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<KuryrNetworkPolicy>>,
}

impl H {
    fn apply_pod(&mut self, p: &Pod) {
        self.pods.apply_watcher_event(&watcher::Event::Apply(p.clone()));
        self.policy.on_pod_event(&watcher::Event::Apply(p.clone()));
    }
    fn add_kp(&mut self, kp: &KuryrPort) {
        self.kps.apply_watcher_event(&watcher::Event::Apply(kp.clone()));
    }
    /// A KuryrPort written, as the watch delivers it: store first, then the domain's tap.
    fn apply_kp(&mut self, kp: &KuryrPort) {
        self.add_kp(kp);
        self.policy.on_kuryrport_event(&watcher::Event::Apply(kp.clone()));
    }
    fn delete_kp(&mut self, kp: &KuryrPort) {
        self.kps.apply_watcher_event(&watcher::Event::Delete(kp.clone()));
        self.policy.on_kuryrport_event(&watcher::Event::Delete(kp.clone()));
    }
    fn delete_pod(&mut self, p: &Pod) {
        self.pods.apply_watcher_event(&watcher::Event::Delete(p.clone()));
        self.policy.on_pod_event(&watcher::Event::Delete(p.clone()));
    }
    /// The reconciles asked for since the last call (`namespace/name` each).
    fn triggered(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(r) = self.triggers.try_recv() {
            out.push(format!("{}/{}", r.namespace.unwrap_or_default(), r.name));
        }
        out
    }
    fn add_np(&mut self, np: &NetworkPolicy) {
        self.nps.apply_watcher_event(&watcher::Event::Apply(np.clone()));
    }
    fn delete_np(&mut self, np: &NetworkPolicy) {
        self.nps.apply_watcher_event(&watcher::Event::Delete(np.clone()));
    }
}

fn policy_settings() -> PolicySettings {
    PolicySettings {
        cluster_name: CLUSTER.into(),
        project: String::new(),
        multi_project: false,
        tags: all_tags(&["kuryr-rs-test".to_string()], CLUSTER),
        default_groups: vec![DEFAULT_SG.into()],
        infra_subnets: Vec::new(),
        infra_cidrs: vec!["192.168.0.0/24".parse().unwrap()],
        pod_addresses: PodAddressSource::Families(vec![EtherType::IPv4]),
    }
}

async fn harness(client: Client, cloud: &Cloud) -> H {
    let session = Session::new(&cloud.fake.cloud()).unwrap();
    let settings = fixtures::settings(None);
    let (pod_store, pods) = reflector::store::<Pod>();
    let (kp_store, kps) = reflector::store::<KuryrPort>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        neutron: Neutron::new(session.clone()),
        octavia: Octavia::new(session),
        cache: NeutronCache::new(settings.neutron_cache_ttl),
        events: Events::new(client, "test", true),
        settings,
        pods: pod_store,
        kuryrports: kp_store,
        metrics: Arc::new(Metrics::new()),
        leader: LeaderGate::always(),
        health: Health::new(),
        backoff: Backoff::default(),
        synced: tokio::sync::watch::channel(true).0,
        hooks: Default::default(),
    });
    let (np_store, nps) = reflector::store::<NetworkPolicy>();
    let (ns_store, mut nss) = reflector::store::<Namespace>();
    let (knp_store, _knps) = reflector::store::<KuryrNetworkPolicy>();
    let (policy, triggers) = Policy::new(ctx.clone(), policy_settings(), np_store, ns_store, knp_store);
    let policy = Arc::new(policy);
    policy.set_synced();
    ctx.set_port_groups(policy.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS, "labels": {"team": "a"}}})).unwrap();
    nss.apply_watcher_event(&watcher::Event::Apply(ns));
    H { policy, ctx, pods, kps, nps, nss, triggers }
}

fn pod(name: &str, labels: Value, ip: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    }))
    .unwrap()
}

/// Pod `name` scheduled, its status without an address yet (kubelet writes it after the sandbox
/// and the containers started).
fn pending_pod(name: &str, labels: Value) -> Pod {
    let mut p = pod(name, labels, "");
    p.status = Some(serde_json::from_value(json!({"phase": "Pending"})).unwrap());
    p
}

/// The KuryrPort of pod `name` (`uid-<name>`), its VIF written: port `port_id`, address `ip`.
fn kuryrport(name: &str, port_id: &str, ip: &str) -> KuryrPort {
    let vif = Vif {
        port_id: port_id.into(),
        network_id: "net-1".into(),
        mac: "fa:16:3e:00:00:01".into(),
        mtu: 1450,
        ips: vec![VifIp {
            address: ip.parse().unwrap(),
            subnet_cidr: "10.0.0.0/24".into(),
            subnet_id: None,
            gateway: None,
            routes: Vec::new(),
            dns: Vec::new(),
        }],
        binding: Binding::Ovs { bridge: "br-int".into() },
        host_ifname: "tap".into(),
        active: false,
        port_filter: true,
    };
    let mut kp: KuryrPort = serde_json::from_value(json!({
        "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"podUid": format!("uid-{name}"), "podNodeName": "node-1"}
    }))
    .unwrap();
    kp.status = Some(KuryrPortStatus { vifs: BTreeMap::from([("eth0".to_string(), VifEntry::new(true, &vif))]) });
    kp
}

/// `allow`: pods `app=web` accept TCP 80 from pods `role=client` of the namespace.
fn np(ports: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow", "namespace": NS, "uid": NP_UID, "finalizers": ["kuryr.openstack.org/networkpolicy-finalizer"]},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": ports}]}
    }))
    .unwrap()
}

fn knp_of(h: &H, np: &NetworkPolicy) -> KuryrNetworkPolicy {
    let (pods, nss) = h.policy.cluster_snapshot();
    let m = ModelSettings { families: vec![EtherType::IPv4], always_allow_ingress: Vec::new() };
    let mut k = new_knp(np, spec_of(np, &Cluster { pods: &pods, namespaces: &nss, services: &[] }, &m));
    k.metadata.uid = Some("knp-uid".into());
    k.metadata.resource_version = Some("1".into());
    k
}

/// Status and finalizer patches succeed (echoing the object).
fn knp_server(k: &KuryrNetworkPolicy) -> impl Fn(&Call) -> (u16, Value) + Send + Sync + 'static {
    let v = serde_json::to_value(k).unwrap();
    move |c: &Call| match c.method.as_str() {
        "PATCH" if c.target.contains("/kuryrnetworkpolicies/allow") => (200, v.clone()),
        _ => default_kube(c),
    }
}

/// Two pods: `web-0` (selected, port p-web) and `cli-0` (the peer, port p-cli).
async fn two_pods(h: &mut H, cloud: &Cloud) {
    h.apply_pod(&pod("web-0", json!({"app": "web"}), "10.0.0.5"));
    h.apply_pod(&pod("cli-0", json!({"role": "client"}), "10.0.0.6"));
    h.add_kp(&kuryrport("web-0", "p-web", "10.0.0.5"));
    h.add_kp(&kuryrport("cli-0", "p-cli", "10.0.0.6"));
    cloud.add_port("p-web", &[DEFAULT_SG]);
    cloud.add_port("p-cli", &[DEFAULT_SG]);
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// Builds a ready harness with `policy`, its KuryrNetworkPolicy and the two pods.
async fn ready(cloud: &Cloud, policy: &NetworkPolicy) -> (H, ApiServer, KuryrNetworkPolicy) {
    // The KuryrNetworkPolicy is built from the caches, so the API server answers a fixed copy
    // of what the first harness computes.
    let knp = {
        let (client, _api) = ApiServer::start(default_kube);
        let mut h = harness(client, cloud).await;
        h.add_np(policy);
        h.apply_pod(&pod("web-0", json!({"app": "web"}), "10.0.0.5"));
        h.apply_pod(&pod("cli-0", json!({"role": "client"}), "10.0.0.6"));
        knp_of(&h, policy)
    };
    let (client, api) = ApiServer::start(knp_server(&knp));
    let mut h = harness(client, cloud).await;
    h.add_np(policy);
    two_pods(&mut h, cloud).await;
    (h, api, knp)
}

/// First pass: base groups, then the policy's group, its address group (before the rule naming
/// it), ONE bulk rule create, Neutron's default egress rules deleted, the selected pod's port
/// re-grouped (the peer's port untouched), status written.
#[tokio::test]
async fn first_pass_creates_in_order_with_one_bulk_rule_create() {
    let cloud = Cloud::start().await;
    let policy = np(json!([{"port": 80}]));
    let (h, api, knp) = ready(&cloud, &policy).await;

    knp::apply(&h.policy, &knp, &policy).await.expect("pass");

    let lines = cloud.lines();
    let start = lines.iter().position(|l| l == "POST /v2.0/security-groups").expect("groups created");
    // The three base groups come first (found by one tagged list, then made).
    assert!(lines[0].starts_with("GET /v2.0/security-groups"), "{lines:#?}");
    let pol = lines.iter().position(|l| l == "PUT /v2.0/security-groups/{kuryr-np/np-uid/in}/tags").expect("policy group tagged");
    assert_eq!(
        &lines[pol - 1..],
        [
            "POST /v2.0/security-groups",
            "PUT /v2.0/security-groups/{kuryr-np/np-uid/in}/tags",
            "POST /v2.0/address-groups",
            "POST /v2.0/security-group-rules",
            "DELETE /v2.0/security-group-rules/{rule}",
            "DELETE /v2.0/security-group-rules/{rule}",
            "GET /v2.0/ports/p-web",
            "PUT /v2.0/ports/p-web",
        ],
        "{lines:#?}"
    );
    assert!(start < pol);
    // Discovery of the policy's objects (first pass of this process) precedes its creation.
    assert!(lines[..pol].iter().any(|l| l == "GET /v2.0/address-groups"), "{lines:#?}");
    // One rule, naming the address group that holds the peer.
    let bodies = cloud.bodies();
    let rules = &bodies[pol + 2]["security_group_rules"];
    let ag = cloud.id_of("kuryr-np/np-uid/in/0/0");
    assert_eq!(
        rules,
        &json!([{"security_group_id": cloud.id_of("kuryr-np/np-uid/in"), "direction": "ingress",
            "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_address_group_id": ag}])
    );
    assert_eq!(bodies[pol + 1]["address_group"]["addresses"], json!(["10.0.0.6/32"]));
    let want = sorted(&[cloud.id_of("kuryr-np-base/infra"), cloud.id_of("kuryr-np-base/egress-open"), cloud.id_of("kuryr-np/np-uid/in")]);
    assert_eq!(cloud.port("p-web"), want);
    assert_eq!(cloud.port("p-cli"), [DEFAULT_SG], "the peer is not selected");
    // Status: the groups (policy and base) and the address group.
    let patch = api.calls().into_iter().find(|c| c.target.contains("/status")).expect("status written");
    let st = &patch.body[0]["value"];
    assert_eq!(st["securityGroupId"], json!(cloud.id_of("kuryr-np/np-uid/in")));
    assert_eq!(st["securityGroups"]["np-uid/in"], json!(cloud.id_of("kuryr-np/np-uid/in")));
    assert_eq!(st["securityGroups"]["base/infra"], json!(cloud.id_of("kuryr-np-base/infra")));
    assert_eq!(st["addressGroups"]["np-uid/in/0/0"], json!(ag));
    assert_eq!(st["securityGroupRules"].as_array().map(Vec::len), Some(1));
    // Infra: ingress from the configured CIDR only.
    let sim = cloud.sim.lock().unwrap();
    let infra: Vec<_> = sim.rules_of(&cloud_id(&sim, "kuryr-np-base/infra")).into_iter().cloned().collect();
    assert_eq!(infra.len(), 1, "{infra:?}");
    assert_eq!(infra[0].remote_ip_prefix.as_deref(), Some("192.168.0.0/24"));
}

/// `knp` with the status the last status patch wrote.
fn with_status(api: &ApiServer, mut knp: KuryrNetworkPolicy) -> KuryrNetworkPolicy {
    let patch = api.calls().into_iter().rev().find(|c| c.target.contains("/status")).expect("status written");
    knp.status = Some(serde_json::from_value(patch.body[0]["value"].clone()).expect("status"));
    knp
}

fn cloud_id(sim: &SecuritySim, name: &str) -> String {
    sim.groups.values().find(|g| g.name == name).map(|g| g.id.clone()).expect("group")
}

/// A pod leaving the peer set: one `remove_addresses`, nothing else (no list, no rule, no port).
/// Joining again: one `add_addresses`. No change: no request at all.
#[tokio::test]
async fn pod_events_are_only_the_changed_calls() {
    let cloud = Cloud::start().await;
    let policy = np(json!([{"port": 80}]));
    let (mut h, api, knp) = ready(&cloud, &policy).await;
    knp::apply(&h.policy, &knp, &policy).await.expect("first pass");
    // As the cache shows it after the status write.
    let knp = with_status(&api, knp);
    let (n, kube_n) = (cloud.forget_requests(), api.calls().len());

    knp::apply(&h.policy, &knp, &policy).await.expect("idle pass");
    assert_eq!(cloud.forget_requests(), n, "nothing changed, nothing asked: {:?}", &cloud.lines()[n..]);

    h.apply_pod(&pod("cli-0", json!({"role": "other"}), "10.0.0.6"));
    knp::apply(&h.policy, &knp, &policy).await.expect("relabel");
    let lines = cloud.lines();
    assert_eq!(&lines[n..], ["PUT /v2.0/address-groups/{kuryr-np/np-uid/in/0/0}/remove_addresses"]);
    assert_eq!(cloud.bodies()[n], json!({"addresses": ["10.0.0.6/32"]}));

    h.apply_pod(&pod("cli-0", json!({"role": "client"}), "10.0.0.6"));
    knp::apply(&h.policy, &knp, &policy).await.expect("relabel back");
    assert_eq!(&cloud.lines()[n + 1..], ["PUT /v2.0/address-groups/{kuryr-np/np-uid/in/0/0}/add_addresses"]);
    // The status did not change: written once.
    assert!(api.lines()[kube_n..].is_empty(), "{:?}", &api.lines()[kube_n..]);
}

/// A new peer pod joins its peer set as soon as its KuryrPort's VIF is written, before kubelet
/// writes an address into its status: the VIF write triggers the policy, whose pass is one
/// `add_addresses` with the VIF's address. Every other step of the pod's start (created, its
/// KuryrPort without a VIF, the VIF turning active, the status written with the same address)
/// asks Neutron nothing, and only the first two trigger a pass at all. Its deletion: one
/// `remove_addresses`.
#[tokio::test]
async fn a_new_pod_is_a_peer_from_its_vif_write_before_its_status_has_an_address() {
    let cloud = Cloud::start().await;
    let policy = np(json!([{"port": 80}]));
    let (mut h, api, knp) = ready(&cloud, &policy).await;
    knp::apply(&h.policy, &knp, &policy).await.expect("first pass");
    let knp = with_status(&api, knp);
    h.triggered();
    let n = cloud.forget_requests();
    let pass = |h: &H| {
        let (p, k, np) = (h.policy.clone(), knp.clone(), policy.clone());
        async move { knp::apply(&p, &k, &np).await.expect("pass") }
    };

    // Created (a peer by its labels), no address: a pass, nothing asked.
    let cli = pending_pod("cli-1", json!({"role": "client"}));
    h.apply_pod(&cli);
    assert_eq!(h.triggered(), ["ns/allow"]);
    pass(&h).await;
    // Its KuryrPort, no VIF yet: no trigger.
    let kp = kuryrport("cli-1", "p-cli1", "10.0.0.7");
    let mut bare = kp.clone();
    bare.status = None;
    h.apply_kp(&bare);
    assert!(h.triggered().is_empty());
    assert_eq!(cloud.forget_requests(), n, "{:?}", &cloud.lines()[n..]);
    let (pods, _) = h.policy.cluster_snapshot();
    let peer = pods.iter().find(|p| p.name == "cli-1").expect("in the snapshot");
    assert!(peer.ips.is_empty(), "{peer:?}");

    // The VIF written: the pod is a peer with the VIF's address; one pass, one call.
    h.apply_kp(&kp);
    assert_eq!(h.triggered(), ["ns/allow"]);
    let (pods, _) = h.policy.cluster_snapshot();
    let peer = pods.iter().find(|p| p.name == "cli-1").expect("in the snapshot");
    assert_eq!(peer.ips, ["10.0.0.7".parse::<std::net::IpAddr>().unwrap()]);
    pass(&h).await;
    assert_eq!(&cloud.lines()[n..], ["PUT /v2.0/address-groups/{kuryr-np/np-uid/in/0/0}/add_addresses"]);
    assert_eq!(cloud.bodies()[n], json!({"addresses": ["10.0.0.7/32"]}));
    assert_eq!(
        cloud.sim.lock().unwrap().address_groups.values().find(|g| g.name == "kuryr-np/np-uid/in/0/0").map(|g| g.addresses.len()),
        Some(2)
    );

    // The VIF turns active, then kubelet writes the same address into the status: nothing.
    let mut active = kp.clone();
    let entry = active.status.as_mut().unwrap().vifs.get_mut("eth0").unwrap();
    let mut vif = entry.vif().expect("the VIF kuryrport() wrote");
    vif.active = true;
    *entry = VifEntry::new(entry.default, &vif);
    assert_ne!(active.status, kp.status, "the VIF really changed");
    h.apply_kp(&active);
    h.apply_pod(&pod("cli-1", json!({"role": "client"}), "10.0.0.7"));
    assert!(h.triggered().is_empty());
    pass(&h).await;
    assert_eq!(cloud.forget_requests(), n + 1, "{:?}", &cloud.lines()[n..]);

    // Gone: one remove_addresses.
    h.delete_pod(&pod("cli-1", json!({"role": "client"}), "10.0.0.7"));
    h.delete_kp(&active);
    assert_eq!(h.triggered(), ["ns/allow"]);
    pass(&h).await;
    assert_eq!(&cloud.lines()[n + 1..], ["PUT /v2.0/address-groups/{kuryr-np/np-uid/in/0/0}/remove_addresses"]);
}

/// Either order of the two watches: the pod event after its KuryrPort's VIF is in the store
/// already sees the VIF's address (and the KuryrPort's own event then changes nothing); a
/// KuryrPort of an earlier pod of that name gives no address; the KuryrPort deleted before the
/// status was written takes the address away again.
#[tokio::test]
async fn the_vif_address_in_either_event_order_and_only_the_pods_own() {
    let cloud = Cloud::start().await;
    let policy = np(json!([{"port": 80}]));
    let (mut h, api, knp) = ready(&cloud, &policy).await;
    knp::apply(&h.policy, &knp, &policy).await.expect("first pass");
    let knp = with_status(&api, knp);
    h.triggered();
    let n = cloud.forget_requests();
    let members = |cloud: &Cloud| -> Vec<String> {
        let sim = cloud.sim.lock().unwrap();
        let mut a = sim.address_groups.values().find(|g| g.name == "kuryr-np/np-uid/in/0/0").expect("ag").addresses.clone();
        a.sort();
        a
    };

    // The KuryrPort's store update before the pod's event.
    let kp = kuryrport("cli-1", "p-cli1", "10.0.0.7");
    h.add_kp(&kp);
    h.apply_pod(&pending_pod("cli-1", json!({"role": "client"})));
    assert_eq!(h.triggered(), ["ns/allow"]);
    h.policy.on_kuryrport_event(&watcher::Event::Apply(kp.clone()));
    assert!(h.triggered().is_empty(), "the same view: no second pass");
    knp::apply(&h.policy, &knp, &policy).await.expect("pass");
    assert_eq!(&cloud.lines()[n..], ["PUT /v2.0/address-groups/{kuryr-np/np-uid/in/0/0}/add_addresses"]);
    assert_eq!(members(&cloud), ["10.0.0.6/32", "10.0.0.7/32"]);

    // The KuryrPort deleted while the status has no address: the address leaves.
    h.delete_kp(&kp);
    assert_eq!(h.triggered(), ["ns/allow"]);
    knp::apply(&h.policy, &knp, &policy).await.expect("pass");
    assert_eq!(members(&cloud), ["10.0.0.6/32"]);

    // A KuryrPort left by an earlier pod of that name (another uid): no address from it.
    let mut stale = kuryrport("cli-1", "p-old", "10.0.0.9");
    stale.spec.pod_uid = "uid-earlier".into();
    h.apply_kp(&stale);
    let (pods, _) = h.policy.cluster_snapshot();
    assert!(pods.iter().find(|p| p.name == "cli-1").expect("in the snapshot").ips.is_empty());
    knp::apply(&h.policy, &knp, &policy).await.expect("pass");
    assert_eq!(members(&cloud), ["10.0.0.6/32"]);
}

/// A newly selected pod: only its port is read and written (the other selected port is not).
#[tokio::test]
async fn a_newly_selected_pod_touches_only_its_port() {
    let cloud = Cloud::start().await;
    let policy = np(json!([{"port": 80}]));
    let (mut h, _api, knp) = ready(&cloud, &policy).await;
    knp::apply(&h.policy, &knp, &policy).await.expect("first pass");
    let n = cloud.forget_requests();

    h.apply_pod(&pod("web-1", json!({"app": "web"}), "10.0.0.7"));
    h.add_kp(&kuryrport("web-1", "p-web1", "10.0.0.7"));
    cloud.add_port("p-web1", &[DEFAULT_SG]);
    knp::apply(&h.policy, &knp, &policy).await.expect("new pod");
    assert_eq!(&cloud.lines()[n..], ["GET /v2.0/ports/p-web1", "PUT /v2.0/ports/p-web1"]);
    assert_eq!(cloud.port("p-web1"), cloud.port("p-web"));

    // Its port already right (e.g. created with the groups): read once, never written.
    h.apply_pod(&pod("web-2", json!({"app": "web"}), "10.0.0.8"));
    h.add_kp(&kuryrport("web-2", "p-web2", "10.0.0.8"));
    let groups = cloud.port("p-web");
    cloud.add_port("p-web2", &groups.iter().map(String::as_str).collect::<Vec<_>>());
    let m = cloud.forget_requests();
    knp::apply(&h.policy, &knp, &policy).await.expect("right port");
    assert_eq!(&cloud.lines()[m..], ["GET /v2.0/ports/p-web2"]);
}

/// The new-port hook: a selected pod's port gets the policy's groups at creation; a pod no
/// policy selects gets the defaults; before the policy's group exists the port waits.
#[tokio::test]
async fn new_ports_get_their_groups_at_creation() {
    let cloud = Cloud::start().await;
    let policy = np(json!([{"port": 80}]));
    let (mut h, _api, knp) = ready(&cloud, &policy).await;
    let err = h.ctx.port_security_groups(NS, "web-0").await.expect_err("no group yet");
    assert!(err.is_transient(), "{err}");
    assert_eq!(h.ctx.port_security_groups(NS, "cli-0").await.expect("peer"), [DEFAULT_SG]);

    knp::apply(&h.policy, &knp, &policy).await.expect("first pass");
    h.apply_pod(&pod("web-9", json!({"app": "web"}), "10.0.0.9"));
    let got = h.ctx.port_security_groups(NS, "web-9").await.expect("groups");
    assert_eq!(got, cloud.port("p-web"));
    assert!(got.contains(&cloud.id_of("kuryr-np/np-uid/in")));
}

/// Deletion: ports first (back to the defaults), then the policy's group, then its address
/// group, then the finalizer; the base groups stay.
#[tokio::test]
async fn deletion_regroups_ports_then_deletes_groups_then_address_groups() {
    let cloud = Cloud::start().await;
    let policy = np(json!([{"port": 80}]));
    let (mut h, api, knp) = ready(&cloud, &policy).await;
    knp::apply(&h.policy, &knp, &policy).await.expect("first pass");
    let n = cloud.forget_requests();
    let kube_n = api.calls().len();
    let names = cloud.names();

    h.delete_np(&policy);
    let mut going = knp.clone();
    going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2025-01-01T00:00:00Z".parse().unwrap()));
    knp::reconcile(Arc::new(going), h.policy.clone()).await.expect("teardown");

    let lines: Vec<String> = cloud
        .fake
        .seen()
        .iter()
        .filter(|s| !s.is_auth())
        .skip(n)
        .map(|s| {
            let p: Vec<String> =
                s.path().split('/').map(|seg| names.get(seg).map(|x| format!("{{{x}}}")).unwrap_or(seg.to_string())).collect();
            format!("{} {}", s.method, p.join("/"))
        })
        .filter(|l| !l.starts_with("GET "))
        .collect();
    assert_eq!(
        lines,
        [
            "PUT /v2.0/ports/p-web",
            "DELETE /v2.0/security-groups/{kuryr-np/np-uid/in}",
            "DELETE /v2.0/address-groups/{kuryr-np/np-uid/in/0/0}"
        ]
    );
    assert_eq!(cloud.port("p-web"), [DEFAULT_SG]);
    let kube: Vec<String> = api.lines()[kube_n..].to_vec();
    assert_eq!(kube, ["PATCH /apis/openstack.org/v1/namespaces/ns/kuryrnetworkpolicies/allow?"], "finalizer removed last");
    let sim = cloud.sim.lock().unwrap();
    assert!(sim.address_groups.is_empty());
    let left: Vec<&str> = sim.groups.values().map(|g| g.name.as_str()).collect();
    assert_eq!(left.len(), 3, "only the base groups stay: {left:?}");
    assert!(left.iter().all(|n| n.starts_with("kuryr-np-base/")));
}

/// A crash after the group and address group were made (the group not even tagged): the next
/// process finds both by description, tags the group, and creates neither again.
#[tokio::test]
async fn adoption_after_a_crash_never_duplicates() {
    let cloud = Cloud::start().await;
    let policy = np(json!([{"port": 80}]));
    let (h, _api, knp) = ready(&cloud, &policy).await;
    let s = policy_settings();
    let sg = h
        .ctx
        .neutron
        .create_security_group(&SecurityGroupCreate {
            name: "kuryr-np/np-uid/in".into(),
            description: kuryr_controller::policy::neutron::sg_description(&s, NS, "allow"),
            stateful: None,
            project_id: String::new(),
        })
        .await
        .expect("sg");
    h.ctx
        .neutron
        .create_address_group(&AddressGroupCreate {
            name: "kuryr-np/np-uid/in/0/0".into(),
            description: kuryr_controller::policy::neutron::ag_description(&s, NS, "allow"),
            addresses: vec!["10.0.0.99/32".into()],
            project_id: String::new(),
        })
        .await
        .expect("ag");
    let n = cloud.forget_requests();

    knp::apply(&h.policy, &knp, &policy).await.expect("adopting pass");

    let lines = cloud.lines()[n..].to_vec();
    assert!(lines.contains(&"PUT /v2.0/security-groups/{kuryr-np/np-uid/in}/tags".to_string()), "{lines:#?}");
    assert!(!lines.contains(&"POST /v2.0/address-groups".to_string()), "{lines:#?}");
    let creates = lines.iter().filter(|l| *l == "POST /v2.0/security-groups").count();
    assert_eq!(creates, 3, "only the base groups are made: {lines:#?}");
    assert!(lines.contains(&"PUT /v2.0/address-groups/{kuryr-np/np-uid/in/0/0}/add_addresses".to_string()));
    assert!(lines.contains(&"PUT /v2.0/address-groups/{kuryr-np/np-uid/in/0/0}/remove_addresses".to_string()));
    let sim = cloud.sim.lock().unwrap();
    let ours: Vec<_> = sim.groups.values().filter(|g| g.name == "kuryr-np/np-uid/in").collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].id, sg.id);
    assert!(ours[0].tags.iter().any(|t| t.contains(CLUSTER)));
    assert_eq!(sim.address_groups.len(), 1);
    let ag = sim.address_groups.values().next().expect("ag");
    assert_eq!(ag.addresses, ["10.0.0.6/32"]);
}

/// What the cloud cannot do becomes one Warning Event per distinct note, not one per pass.
#[tokio::test]
async fn notes_become_one_warning_each() {
    let cloud = Cloud::start().await;
    let policy = np(json!([{"port": 80}, {"protocol": "ICMP", "port": 1}]));
    let (h, api, knp) = ready(&cloud, &policy).await;
    knp::apply(&h.policy, &knp, &policy).await.expect("pass");
    knp::apply(&h.policy, &knp, &policy).await.expect("pass again");
    let ev = api.wait_event("PolicyNotEnforceable").await;
    assert!(ev["note"].as_str().unwrap_or_default().contains("ICMP"), "{ev}");
    // Negative check: no second Event within 100 ms of the first.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(api.events().iter().filter(|e| e["reason"] == "PolicyNotEnforceable").count(), 1);
}

/// A pass Neutron refuses (the project's security group quota) becomes a Warning Event on the
/// NetworkPolicy naming the refusal, and the pass is retried.
#[tokio::test]
async fn a_refused_pass_becomes_a_warning_on_the_networkpolicy() {
    let cloud = Cloud::start().await;
    let policy = np(json!([{"port": 80}]));
    let (h, api, knp) = ready(&cloud, &policy).await;
    cloud.sim.lock().unwrap_or_else(|e| e.into_inner()).group_quota = Some(0);
    let err = knp::apply(&h.policy, &knp, &policy).await.expect_err("the quota refuses the groups");
    let action = knp::error_policy(Arc::new(knp.clone()), &err, h.policy.clone());
    assert_ne!(action, kube::runtime::controller::Action::await_change(), "a refused pass is retried");
    let ev = api.wait_event("PolicyNotApplied").await;
    let note = ev["note"].as_str().unwrap_or_default();
    assert!(note.contains("Quota exceeded"), "{ev}");
    assert_eq!(ev["regarding"]["kind"], "NetworkPolicy", "{ev}");
    assert_eq!(ev["regarding"]["name"], knp.metadata.name.clone().unwrap_or_default(), "{ev}");
}

/// The NetworkPolicy reconciler: finalizer first, then the KuryrNetworkPolicy in upstream's
/// shape (owner, finalizer, `networkPolicyLink`, rules under `sgRule`); no Neutron call.
#[tokio::test]
async fn networkpolicy_gets_its_finalizer_and_kuryrnetworkpolicy() {
    let cloud = Cloud::start().await;
    let mut policy = np(json!([{"port": 80}]));
    policy.metadata.finalizers = None;
    let echo = serde_json::to_value(&policy).unwrap();
    let (client, api) = ApiServer::start(move |c| match (c.method.as_str(), c.target.split('?').next().unwrap_or_default()) {
        ("PATCH", "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/allow") => (200, echo.clone()),
        ("POST", "/apis/openstack.org/v1/namespaces/ns/kuryrnetworkpolicies") => (201, c.body.clone()),
        _ => default_kube(c),
    });
    let mut h = harness(client, &cloud).await;
    h.add_np(&policy);
    two_pods(&mut h, &cloud).await;

    kuryr_controller::policy::networkpolicy::reconcile(Arc::new(policy.clone()), h.policy.clone()).await.expect("reconcile");

    assert_eq!(
        api.lines(),
        [
            "PATCH /apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/allow?",
            "POST /apis/openstack.org/v1/namespaces/ns/kuryrnetworkpolicies?",
        ]
    );
    let calls = api.calls();
    assert_eq!(calls[0].body[1]["value"], json!(["kuryr.openstack.org/networkpolicy-finalizer"]));
    let k = &calls[1].body;
    assert_eq!(k["metadata"]["finalizers"], json!(["kuryr.openstack.org/networkpolicy-finalizer"]));
    assert_eq!(k["metadata"]["annotations"]["networkPolicyLink"], "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/allow");
    assert_eq!(k["metadata"]["ownerReferences"][0]["uid"], NP_UID);
    assert_eq!(k["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(k["spec"]["podSelector"], json!({"matchLabels": {"app": "web"}}));
    assert_eq!(k["spec"]["egressSgRules"], json!([]));
    assert_eq!(
        k["spec"]["ingressSgRules"],
        json!([{"securityGroup": "np-uid/in", "remoteAddressGroup": "np-uid/in/0/0",
                "sgRule": {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80,
                           "description": "kuryr-rs network policy ns/allow"}}])
    );
    assert_eq!(cloud.forget_requests(), 0, "no Neutron call: {:?}", cloud.lines());
}

/// A deleted NetworkPolicy whose KuryrNetworkPolicy is gone loses its finalizer.
#[tokio::test]
async fn deleted_networkpolicy_without_kuryrnetworkpolicy_loses_its_finalizer() {
    let cloud = Cloud::start().await;
    let mut policy = np(json!([{"port": 80}]));
    policy.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2025-01-01T00:00:00Z".parse().unwrap()));
    let echo = serde_json::to_value(&policy).unwrap();
    let (client, api) = ApiServer::start(move |c| match c.method.as_str() {
        "PATCH" => (200, echo.clone()),
        _ => default_kube(c),
    });
    let h = harness(client, &cloud).await;
    kuryr_controller::policy::networkpolicy::reconcile(Arc::new(policy), h.policy.clone()).await.expect("reconcile");
    assert_eq!(
        api.lines(),
        [
            "GET /apis/openstack.org/v1/namespaces/ns/kuryrnetworkpolicies/allow",
            "PATCH /apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/allow?",
        ]
    );
    assert_eq!(api.calls()[1].body[1], json!({"op": "remove", "path": "/metadata/finalizers/0"}));
}

/// A cloud without the `address-group` extension: peers become one rule per address (a pod
/// leaving the peer set is one rule delete), with a Warning saying so; never a silent allow.
#[tokio::test]
async fn without_address_groups_peers_become_rules() {
    let cloud = Cloud::start_with(false).await;
    let policy = np(json!([{"port": 80}]));
    let (mut h, api, knp) = ready(&cloud, &policy).await;
    knp::apply(&h.policy, &knp, &policy).await.expect("first pass");
    let lines = cloud.lines();
    assert!(!lines.iter().any(|l| l.starts_with("POST /v2.0/address-groups")), "{lines:#?}");
    let pol = lines.iter().position(|l| l == "PUT /v2.0/security-groups/{kuryr-np/np-uid/in}/tags").expect("policy group");
    assert_eq!(lines[pol + 1], "POST /v2.0/security-group-rules");
    let rules = &cloud.bodies()[pol + 1]["security_group_rules"];
    assert_eq!(rules.as_array().map(Vec::len), Some(1), "{rules}");
    assert_eq!(rules[0]["remote_ip_prefix"], "10.0.0.6/32");
    assert_eq!(rules[0]["port_range_min"], 80);
    api.wait_event("PolicyNotEnforceable").await;
    let knp = with_status(&api, knp);

    let n = cloud.forget_requests();
    h.apply_pod(&pod("cli-0", json!({"role": "other"}), "10.0.0.6"));
    knp::apply(&h.policy, &knp, &policy).await.expect("relabel");
    assert_eq!(&cloud.lines()[n..], ["DELETE /v2.0/security-group-rules/{rule}"]);
    let sim = cloud.sim.lock().unwrap();
    assert!(sim.rules_of(&cloud_id(&sim, "kuryr-np/np-uid/in")).is_empty(), "nothing allowed in any more");
}
