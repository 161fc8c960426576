use super::*;
use serde_json::json;

const UID: &str = "0b7c5a6e-1111-4000-8000-00000000000a";

fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn pod(ns: &str, name: &str, l: &[(&str, &str)], ips: &[&str]) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(l),
        ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        ports: Vec::new(),
    }
}

fn with_port(mut p: PodInfo, name: &str, port: u16, protocol: Protocol) -> PodInfo {
    p.ports.push(ContainerPort { name: Some(name.into()), port, protocol });
    p
}

fn np(ns: &str, spec: serde_json::Value) -> NetworkPolicy {
    np_uid(ns, UID, spec)
}

fn np_uid(ns: &str, uid: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": ns, "uid": uid},
        "spec": spec
    }))
    .unwrap()
}

fn namespaces(n: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
    n.iter().map(|(name, l)| (name.to_string(), labels(l))).collect()
}

fn v4() -> ModelSettings {
    ModelSettings::default()
}

fn dual() -> ModelSettings {
    ModelSettings { families: vec![EtherType::IPv4, EtherType::IPv6], always_allow_ingress: vec![] }
}

fn run(policy: &NetworkPolicy, pods: &[PodInfo], ns: &BTreeMap<String, BTreeMap<String, String>>, s: &ModelSettings) -> PolicyState {
    desired(policy, &Cluster { pods, namespaces: ns, services: &[] }, s)
}

fn ag(st: &PolicyState, key: &str) -> Vec<String> {
    st.address_groups.get(&AgKey(key.into())).unwrap_or_else(|| panic!("no group {key}: {:?}", st.address_groups)).iter().cloned().collect()
}

fn in_key() -> SgKey {
    SgKey { policy_uid: UID.into(), direction: Dir::Ingress, variant: String::new() }
}

fn eg_key() -> SgKey {
    SgKey { policy_uid: UID.into(), direction: Dir::Egress, variant: String::new() }
}

fn rule(direction: Dir, ethertype: Family, protocol: Option<Protocol>, ports: Option<(u16, u16)>, remote: Remote) -> RuleSpec {
    RuleSpec { direction, ethertype, protocol, ports, remote }
}

fn agr(key: &str) -> Remote {
    Remote::AddressGroup(AgKey(key.into()))
}

fn k(rest: &str) -> String {
    format!("{UID}/{rest}")
}

// ------------------------------------------------------------------------ selectors, types

#[test]
fn label_selectors() {
    let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
    let l = labels(&[("app", "web"), ("tier", "front")]);
    assert!(selects(&sel(json!({})), &l));
    assert!(selects(&sel(json!({})), &labels(&[])));
    assert!(selects(&sel(json!({"matchLabels": {"app": "web"}})), &l));
    assert!(!selects(&sel(json!({"matchLabels": {"app": "web", "x": "y"}})), &l));
    assert!(selects(&sel(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]})), &l));
    assert!(!selects(&sel(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]})), &l));
    assert!(!selects(&sel(json!({"matchExpressions": [{"key": "nope", "operator": "In", "values": ["back"]}]})), &l));
    assert!(selects(&sel(json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["back"]}]})), &l));
    assert!(selects(&sel(json!({"matchExpressions": [{"key": "nope", "operator": "NotIn", "values": ["back"]}]})), &l));
    assert!(!selects(&sel(json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]})), &l));
    assert!(selects(&sel(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]})), &l));
    assert!(!selects(&sel(json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]})), &l));
    assert!(selects(&sel(json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]})), &l));
    // ANDed, and an unknown operator matches nothing.
    assert!(!selects(&sel(json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]})), &l));
    assert!(!selects(&sel(json!({"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]})), &l));
}

#[test]
fn policy_types_default_like_the_api_server() {
    let t = |spec| policy_types(&np("a", spec));
    assert_eq!(t(json!({"podSelector": {}})), (true, false));
    assert_eq!(t(json!({"podSelector": {}, "egress": [{}]})), (true, true));
    assert_eq!(t(json!({"podSelector": {}, "egress": []})), (true, false));
    assert_eq!(t(json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})), (false, true));
    assert_eq!(t(json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})), (true, true));
    // Types govern: egress rules of an Ingress-only policy are ignored.
    let st = run(&np("a", json!({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{}]})), &[], &namespaces(&[]), &v4());
    assert!(st.ingress && !st.egress);
    assert_eq!(st.groups.keys().cloned().collect::<Vec<_>>(), [in_key()]);
}

// ------------------------------------------------------------------------------ ipBlocks

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn cidr_minus_examples() {
    let n = |s: &str| s.parse::<IpNet>().unwrap();
    assert_eq!(
        cidr_minus(n("10.0.0.0/8"), &nets(&["10.1.0.0/16"])),
        nets(&["10.0.0.0/16", "10.2.0.0/15", "10.4.0.0/14", "10.8.0.0/13", "10.16.0.0/12", "10.32.0.0/11", "10.64.0.0/10", "10.128.0.0/9"])
    );
    // Two excepts that together are half of the block: one CIDR left.
    assert_eq!(cidr_minus(n("10.0.0.0/24"), &nets(&["10.0.0.0/26", "10.0.0.64/26"])), nets(&["10.0.0.128/25"]));
    assert_eq!(cidr_minus(n("10.0.0.0/24"), &nets(&["10.0.0.0/24"])), nets(&[]));
    assert_eq!(cidr_minus(n("10.0.0.0/24"), &nets(&["10.0.0.0/16"])), nets(&[]));
    assert_eq!(cidr_minus(n("10.0.0.0/24"), &nets(&["10.0.1.0/24", "fd00::/8"])), nets(&["10.0.0.0/24"]));
    assert_eq!(cidr_minus(n("10.0.0.5/24"), &[]), nets(&["10.0.0.0/24"]));
    assert_eq!(cidr_minus(n("10.0.0.0/30"), &nets(&["10.0.0.1/32"])), nets(&["10.0.0.0/32", "10.0.0.2/31"]));
    assert_eq!(cidr_minus(n("fd00::/64"), &nets(&["fd00::/65"])), nets(&["fd00::8000:0:0:0/65"]));
    assert_eq!(cidr_minus(n("::/0"), &nets(&["8000::/1"])), nets(&["::/1"]));
    assert_eq!(cidr_minus(n("0.0.0.0/0"), &nets(&["0.0.0.0/1"])), nets(&["128.0.0.0/1"]));
}

/// Every address of a /23 is in the result iff it is in the block and in no except, and the
/// result is minimal (no two of its CIDRs overlap or could be merged).
#[test]
fn cidr_minus_is_exact_and_minimal() {
    let block: IpNet = "192.168.0.0/23".parse().unwrap();
    let cases: [&[&str]; 5] = [
        &["192.168.0.0/25", "192.168.1.200/29"],
        &["192.168.0.7/32", "192.168.0.8/32", "192.168.1.0/24"],
        &["192.168.0.0/23"],
        &["192.168.0.128/25", "192.168.0.0/25", "192.168.1.3/32"],
        &["192.168.0.64/26", "192.168.0.96/27"],
    ];
    for excepts in cases {
        let ex = nets(excepts);
        let out = cidr_minus(block, &ex);
        for i in 0..512u32 {
            let ip: IpAddr = std::net::Ipv4Addr::from(0xc0a8_0000 + i).into();
            let want = block.contains(&ip) && !ex.iter().any(|e| e.contains(&ip));
            assert_eq!(out.iter().filter(|n| n.contains(&ip)).count(), usize::from(want), "{ip} with {excepts:?}: {out:?}");
        }
        assert_eq!(IpNet::aggregate(&out), out, "not minimal: {out:?}");
    }
}

#[test]
fn host_cidrs_are_neutron_normalized() {
    assert_eq!(host_cidr("10.0.0.5".parse().unwrap()), "10.0.0.5/32");
    assert_eq!(host_cidr("FD00:0:0::5".parse().unwrap()), "fd00::5/128");
}

// ------------------------------------------------------------------------ pods from the API

#[test]
fn pod_info_from_pod() {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "a", "labels": {"app": "web"}},
        "spec": {"containers": [
            {"name": "c1", "ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
            {"name": "c2", "ports": [{"containerPort": 9000, "protocol": "SCTP"}, {"containerPort": 7, "protocol": "ICMP"}]}]},
        "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}
    }))
    .unwrap();
    let info = PodInfo::from_pod(&p).unwrap();
    assert_eq!(info.key(), "a/web-0");
    assert_eq!(info.ips, ["10.0.0.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]);
    assert_eq!(info.named_port("http", Protocol::Tcp), Some(8080));
    assert_eq!(info.named_port("http", Protocol::Udp), None, "a named port matches name and protocol");
    assert_eq!(info.named_port("dns", Protocol::Udp), Some(53));
    assert_eq!(info.ports.len(), 3, "{:?}", info.ports);
    assert_eq!(info.labels, labels(&[("app", "web")]));

    let mut done = p.clone();
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert!(PodInfo::from_pod(&done).unwrap().ips.is_empty());
    let mut host = p.clone();
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(PodInfo::from_pod(&host), None);
    let mut pending = p;
    pending.status = None;
    assert!(PodInfo::from_pod(&pending).unwrap().ips.is_empty());
}

/// The KuryrPort of pod `uid-<name>` with one default VIF holding `ips`.
fn kuryrport(name: &str, pod_uid: &str, ips: &[&str]) -> KuryrPort {
    use kuryr_core::crd::{KuryrPortStatus, VifEntry};
    use kuryr_core::vif::{Binding, Vif, VifIp};
    let vif = Vif {
        port_id: "p-1".into(),
        network_id: "net-1".into(),
        mac: "fa:16:3e:00:00:01".into(),
        mtu: 1450,
        ips: ips
            .iter()
            .map(|a| VifIp {
                address: a.parse().unwrap(),
                subnet_cidr: if a.contains(':') { "fd00::/64".into() } else { "10.0.0.0/24".into() },
                subnet_id: None,
                gateway: None,
                routes: Vec::new(),
                dns: Vec::new(),
            })
            .collect(),
        binding: Binding::Ovs { bridge: "br-int".into() },
        host_ifname: "tap".into(),
        active: false,
        port_filter: true,
    };
    let mut kp: KuryrPort = serde_json::from_value(json!({
        "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
        "metadata": {"name": name, "namespace": "a"},
        "spec": {"podUid": pod_uid, "podNodeName": "node-1"}
    }))
    .unwrap();
    kp.status = Some(KuryrPortStatus { vifs: BTreeMap::from([("eth0".to_string(), VifEntry::new(true, &vif))]) });
    kp
}

/// Before kubelet writes the pod's status, its addresses are its KuryrPort's VIF's (only the
/// KuryrPort of this pod, not being deleted); the status wins once it has them; terminal and
/// host-network pods as without a KuryrPort.
#[test]
fn pod_info_from_the_kuryrport_vif_until_the_status_has_addresses() {
    let pending: Pod = serde_json::from_value(json!({
        "metadata": {"name": "cli-0", "namespace": "a", "uid": "uid-1", "labels": {"role": "client"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
        "status": {"phase": "Pending"}
    }))
    .unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let kp = kuryrport("cli-0", "uid-1", &["fd00::7", "10.0.0.7"]);
    let info = PodInfo::from_pod_and_port(&pending, || Some(&kp)).unwrap();
    assert_eq!(info.ips, [ip("10.0.0.7"), ip("fd00::7")], "the VIF's, sorted");
    assert_eq!(info.labels, labels(&[("role", "client")]));
    // As the status will say it: the same view (no event for the pod's status write).
    let mut running = pending.clone();
    running.status = Some(
        serde_json::from_value(json!({"phase": "Running", "podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}, {"ip": "fd00::7"}]}))
            .unwrap(),
    );
    assert_eq!(PodInfo::from_pod_and_port(&running, || Some(&kp)), Some(info.clone()));
    assert_eq!(PodInfo::from_pod(&running), Some(info));
    // The status wins, and the KuryrPort is not even looked up.
    let other = kuryrport("cli-0", "uid-1", &["10.0.0.99"]);
    let got = PodInfo::from_pod_and_port(&running, || -> Option<&KuryrPort> { panic!("looked up") }).unwrap();
    assert_eq!(got.ips, [ip("10.0.0.7"), ip("fd00::7")]);
    assert_eq!(PodInfo::from_pod_and_port(&running, || Some(&other)).unwrap().ips, got.ips);

    // Without a KuryrPort, or with one that is not this pod's, or going: no address yet.
    assert!(PodInfo::from_pod_and_port(&pending, || None::<&KuryrPort>).unwrap().ips.is_empty());
    let earlier = kuryrport("cli-0", "uid-0", &["10.0.0.3"]);
    assert!(PodInfo::from_pod_and_port(&pending, || Some(&earlier)).unwrap().ips.is_empty(), "an earlier pod's");
    let mut going = kp.clone();
    going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
    assert!(PodInfo::from_pod_and_port(&pending, || Some(&going)).unwrap().ips.is_empty(), "being deleted");
    let mut no_vif = kp.clone();
    no_vif.status = None;
    assert!(PodInfo::from_pod_and_port(&pending, || Some(&no_vif)).unwrap().ips.is_empty(), "no VIF written");
    let mut bad_vif = kp.clone();
    bad_vif.status.as_mut().unwrap().vifs.get_mut("eth0").unwrap().vif = json!({"portId": ""});
    assert!(PodInfo::from_pod_and_port(&pending, || Some(&bad_vif)).unwrap().ips.is_empty(), "unreadable VIF");
    let mut no_uid = pending.clone();
    no_uid.metadata.uid = None;
    let blank = kuryrport("cli-0", "", &["10.0.0.7"]);
    assert!(PodInfo::from_pod_and_port(&no_uid, || Some(&blank)).unwrap().ips.is_empty(), "no uid matches nothing");

    // Terminal: no address, VIF or not. Host network: not a pod the model sees.
    let mut done = pending.clone();
    done.status.as_mut().unwrap().phase = Some("Failed".into());
    assert!(PodInfo::from_pod_and_port(&done, || Some(&kp)).unwrap().ips.is_empty());
    let mut host = pending;
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(PodInfo::from_pod_and_port(&host, || Some(&kp)), None);
}

// ---------------------------------------------------------------------- deny / allow / types

#[test]
fn deny_all_ingress_isolates_and_keeps_egress_and_infra() {
    let pods = [pod("a", "p1", &[], &["10.0.0.1"]), pod("b", "p2", &[], &["10.0.0.2"])];
    let st = run(&np("a", json!({"podSelector": {}, "policyTypes": ["Ingress"]})), &pods, &namespaces(&[]), &v4());
    assert_eq!(st.groups, BTreeMap::from([(in_key(), BTreeSet::new())]));
    assert!(st.address_groups.is_empty());
    assert_eq!(st.pods.keys().collect::<Vec<_>>(), ["a/p1"]);
    let want: BTreeSet<GroupRef> =
        [GroupRef::Base(BaseGroup::Infra), GroupRef::Base(BaseGroup::EgressOpen), GroupRef::Policy(in_key())].into();
    assert_eq!(pod_groups("a/p1", [&st]), PodGroups::Groups(want));
    assert_eq!(pod_groups("b/p2", [&st]), PodGroups::Default);
}

#[test]
fn deny_all_egress_and_allow_all_ingress() {
    let pods = [pod("a", "p1", &[], &["10.0.0.1"])];
    let st =
        run(&np("a", json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}]})), &pods, &namespaces(&[]), &dual());
    assert_eq!(
        st.groups[&in_key()],
        [rule(Dir::Ingress, Family::V4, None, None, Remote::Any), rule(Dir::Ingress, Family::V6, None, None, Remote::Any)].into()
    );
    assert!(st.groups[&eg_key()].is_empty(), "egress: [] denies");
    assert_eq!(
        pod_groups("a/p1", [&st]),
        PodGroups::Groups([GroupRef::Base(BaseGroup::Infra), GroupRef::Policy(in_key()), GroupRef::Policy(eg_key())].into())
    );
    // Egress-only: ingress stays open.
    let st = run(&np("a", json!({"podSelector": {}, "policyTypes": ["Egress"]})), &pods, &namespaces(&[]), &v4());
    assert_eq!(
        pod_groups("a/p1", [&st]),
        PodGroups::Groups([GroupRef::Base(BaseGroup::Infra), GroupRef::Base(BaseGroup::IngressOpen), GroupRef::Policy(eg_key())].into())
    );
}

#[test]
fn empty_from_is_all_sources_and_pod_without_ip_is_selected() {
    let pods = [pod("a", "new", &[("app", "db")], &[])];
    let st = run(
        &np("a", json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [], "ports": [{"port": 5432}]}]})),
        &pods,
        &namespaces(&[]),
        &v4(),
    );
    assert_eq!(st.groups[&in_key()], [rule(Dir::Ingress, Family::V4, Some(Protocol::Tcp), Some((5432, 5432)), Remote::Any)].into());
    assert_eq!(st.pods["a/new"], [in_key()].into(), "selected before it has an address: its port is created with the group");
}

#[test]
fn base_group_rules() {
    let s = ModelSettings {
        families: vec![EtherType::IPv4, EtherType::IPv6],
        always_allow_ingress: nets(&["192.168.77.0/24", "fd77::1/64", "0.0.0.0/0"]),
    };
    assert_eq!(
        base_rules(BaseGroup::Infra, &s),
        [
            rule(Dir::Ingress, Family::V4, None, None, Remote::Any),
            rule(Dir::Ingress, Family::V4, None, None, Remote::Prefix("192.168.77.0/24".parse().unwrap())),
            rule(Dir::Ingress, Family::V6, None, None, Remote::Prefix("fd77::/64".parse().unwrap())),
        ]
        .into()
    );
    assert_eq!(base_rules(BaseGroup::EgressOpen, &v4()), [rule(Dir::Egress, Family::V4, None, None, Remote::Any)].into());
    assert_eq!(base_rules(BaseGroup::IngressOpen, &s).len(), 2);
    assert!(base_rules(BaseGroup::Infra, &v4()).is_empty());
}

// ------------------------------------------------------------------------------------ peers

fn cluster_pods() -> Vec<PodInfo> {
    vec![
        pod("a", "db", &[("app", "db")], &["10.0.0.1"]),
        pod("a", "web", &[("app", "web")], &["10.0.0.2", "fd00::2"]),
        pod("a", "other", &[("app", "other")], &["10.0.0.3"]),
        pod("b", "web", &[("app", "web")], &["10.0.1.2"]),
        pod("b", "cache", &[("app", "cache")], &["10.0.1.3"]),
        pod("c", "web", &[("app", "web")], &["10.0.2.2"]),
    ]
}

fn cluster_ns() -> BTreeMap<String, BTreeMap<String, String>> {
    namespaces(&[("a", &[("team", "x")]), ("b", &[("team", "y")]), ("c", &[])])
}

#[test]
fn pod_selector_peer_is_an_address_group_of_the_policy_namespace() {
    let policy = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]}]}),
    );
    let st = run(&policy, &cluster_pods(), &cluster_ns(), &dual());
    assert_eq!(ag(&st, &k("in/0/0")), ["10.0.0.2/32", "fd00::2/128"]);
    assert_eq!(
        st.groups[&in_key()],
        [
            rule(Dir::Ingress, Family::V4, Some(Protocol::Tcp), Some((5432, 5432)), agr(&k("in/0/0"))),
            rule(Dir::Ingress, Family::V6, Some(Protocol::Tcp), Some((5432, 5432)), agr(&k("in/0/0"))),
        ]
        .into()
    );
    assert_eq!(st.pods.keys().collect::<Vec<_>>(), ["a/db"]);
    assert!(st.notes.is_empty(), "{:?}", st.notes);
}

#[test]
fn namespace_selector_peer_and_both_together() {
    let peers = json!([
        {"namespaceSelector": {"matchLabels": {"team": "y"}}},
        {"namespaceSelector": {}},
        {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}, "podSelector": {"matchLabels": {"app": "web"}}}
    ]);
    let st = run(&np("a", json!({"podSelector": {}, "ingress": [{"from": peers}]})), &cluster_pods(), &cluster_ns(), &v4());
    assert_eq!(ag(&st, &k("in/0/0")), ["10.0.1.2/32", "10.0.1.3/32"], "every pod of namespace b");
    assert_eq!(ag(&st, &k("in/0/1")).len(), 7, "every pod of every namespace (7 addresses)");
    assert_eq!(ag(&st, &k("in/0/2")), ["10.0.0.2/32", "10.0.1.2/32", "fd00::2/128"], "web pods of a and b, not of c (no team label)");
    assert_eq!(st.groups[&in_key()].len(), 3, "{:?}", st.groups);
    // A namespace the cache does not have matches no namespaceSelector.
    let no_ns = namespaces(&[]);
    let st = run(&np("a", json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})), &cluster_pods(), &no_ns, &v4());
    assert!(ag(&st, &k("in/0/0")).is_empty());
}

#[test]
fn ip_block_with_except_is_a_group_of_its_family() {
    let policy = np(
        "a",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"ipBlock": {"cidr": "172.16.0.0/16", "except": ["172.16.1.0/24", "172.16.128.0/17"]}}]}],
               "egress": [{"to": [{"ipBlock": {"cidr": "fd10::/64"}}], "ports": [{"port": 443}]}]}),
    );
    let st = run(&policy, &cluster_pods(), &cluster_ns(), &dual());
    assert_eq!(
        ag(&st, &k("in/0/0")),
        ["172.16.0.0/24", "172.16.16.0/20", "172.16.2.0/23", "172.16.32.0/19", "172.16.4.0/22", "172.16.64.0/18", "172.16.8.0/21"]
    );
    assert_eq!(st.groups[&in_key()], [rule(Dir::Ingress, Family::V4, None, None, agr(&k("in/0/0")))].into(), "IPv4 only");
    assert_eq!(ag(&st, &k("eg/0/0")), ["fd10::/64"]);
    assert_eq!(st.groups[&eg_key()], [rule(Dir::Egress, Family::V6, Some(Protocol::Tcp), Some((443, 443)), agr(&k("eg/0/0")))].into());
    // A broken except drops the whole peer rather than allow more.
    let bad = np("a", json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["nonsense"]}}]}]}));
    let st = run(&bad, &cluster_pods(), &cluster_ns(), &v4());
    assert!(st.groups[&in_key()].is_empty());
    assert_eq!(st.notes.len(), 1, "{:?}", st.notes);
}

#[test]
fn several_peers_and_rules_get_their_own_groups() {
    let policy = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}, {"podSelector": {"matchLabels": {"app": "other"}}}]},
            {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 1, "endPort": 65535, "protocol": "UDP"}]}]}),
    );
    let st = run(&policy, &cluster_pods(), &cluster_ns(), &v4());
    assert_eq!(st.address_groups.keys().map(|k| k.0.clone()).collect::<Vec<_>>(), [k("in/0/0"), k("in/0/1"), k("in/1/0")]);
    assert_eq!(
        st.groups[&in_key()],
        [
            rule(Dir::Ingress, Family::V4, None, None, agr(&k("in/0/0"))),
            rule(Dir::Ingress, Family::V4, None, None, agr(&k("in/0/1"))),
            rule(Dir::Ingress, Family::V4, Some(Protocol::Udp), None, agr(&k("in/1/0"))),
        ]
        .into(),
        "1..65535 is no range, as Neutron lists it"
    );
}

// ------------------------------------------------------------------------------------ ports

#[test]
fn ports_numbers_ranges_protocols() {
    let policy = np(
        "a",
        json!({"podSelector": {}, "ingress": [{"ports": [
            {"port": 80}, {"port": 8000, "endPort": 8100}, {"protocol": "UDP", "port": 53}, {"protocol": "SCTP", "port": 9000},
            {"protocol": "UDP"}, {"port": "443"}, {"port": 90, "endPort": 89}, {"port": 70000}, {"protocol": "ICMP", "port": 1}
        ]}]}),
    );
    let st = run(&policy, &cluster_pods(), &cluster_ns(), &v4());
    let any = |p, r| rule(Dir::Ingress, Family::V4, Some(p), r, Remote::Any);
    assert_eq!(
        st.groups[&in_key()],
        [
            any(Protocol::Tcp, Some((80, 80))),
            any(Protocol::Tcp, Some((8000, 8100))),
            any(Protocol::Udp, Some((53, 53))),
            any(Protocol::Sctp, Some((9000, 9000))),
            any(Protocol::Udp, None),
            any(Protocol::Tcp, Some((443, 443))),
        ]
        .into()
    );
    assert_eq!(st.notes.len(), 3, "{:?}", st.notes);
    assert!(st.notes.iter().any(|n| n.contains("endPort 89 is below port 90")), "{:?}", st.notes);
    assert!(st.notes.iter().any(|n| n.contains("ICMP")), "{:?}", st.notes);
}

#[test]
fn named_ingress_port_differs_per_pod_without_over_permitting() {
    let pods = vec![
        with_port(pod("a", "p8080", &[("app", "web")], &["10.0.0.1"]), "http", 8080, Protocol::Tcp),
        with_port(pod("a", "p9090", &[("app", "web")], &["10.0.0.2"]), "http", 9090, Protocol::Tcp),
        with_port(pod("a", "twin", &[("app", "web")], &["10.0.0.4"]), "http", 8080, Protocol::Tcp),
        with_port(pod("a", "udp-only", &[("app", "web")], &["10.0.0.5"]), "http", 7000, Protocol::Udp),
        pod("a", "none", &[("app", "web")], &["10.0.0.3"]),
    ];
    let policy = np("a", json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}, {"port": 22}]}]}));
    let st = run(&policy, &pods, &cluster_ns(), &v4());
    let ssh = rule(Dir::Ingress, Family::V4, Some(Protocol::Tcp), Some((22, 22)), Remote::Any);
    let http = |p| rule(Dir::Ingress, Family::V4, Some(Protocol::Tcp), Some((p, p)), Remote::Any);
    let group_of = |pod: &str| -> &BTreeSet<RuleSpec> {
        let keys = &st.pods[pod];
        assert_eq!(keys.len(), 1, "{pod}: {keys:?}");
        &st.groups[keys.iter().next().unwrap()]
    };
    assert_eq!(group_of("a/p8080"), &[http(8080), ssh.clone()].into());
    assert_eq!(group_of("a/p9090"), &[http(9090), ssh.clone()].into());
    assert_eq!(group_of("a/none"), &[ssh.clone()].into(), "no http port: only the numbered port");
    assert_eq!(group_of("a/udp-only"), &[ssh].into(), "a UDP port named http is not the TCP port http");
    assert_eq!(st.pods["a/p8080"], st.pods["a/twin"], "same resolution, same group");
    assert_ne!(st.pods["a/p8080"], st.pods["a/p9090"]);
    assert_eq!(st.groups.len(), 3, "three resolutions: 8080, 9090, none");
    assert!(st.groups.keys().all(|k| k.variant.len() == 12 && k.direction == Dir::Ingress), "{:?}", st.groups.keys());
    // Stable: the same input, the same keys.
    assert_eq!(run(&policy, &pods, &cluster_ns(), &v4()), st);
}

#[test]
fn named_egress_port_splits_the_peer_group_by_resolved_port() {
    let pods = vec![
        pod("a", "client", &[("app", "client")], &["10.0.0.9"]),
        with_port(pod("kube-system", "dns1", &[("k8s-app", "kube-dns")], &["10.0.5.1"]), "dns", 53, Protocol::Udp),
        with_port(pod("kube-system", "dns2", &[("k8s-app", "kube-dns")], &["10.0.5.2"]), "dns", 5353, Protocol::Udp),
        with_port(pod("kube-system", "dns3", &[("k8s-app", "kube-dns")], &["10.0.5.3"]), "dns", 53, Protocol::Udp),
        pod("kube-system", "dns-no-port", &[("k8s-app", "kube-dns")], &["10.0.5.4"]),
    ];
    let ns = namespaces(&[("a", &[]), ("kube-system", &[("kubernetes.io/metadata.name", "kube-system")])]);
    let policy = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": "dns", "protocol": "UDP"}, {"port": 9153}]}]}),
    );
    let st = run(&policy, &pods, &ns, &v4());
    assert_eq!(ag(&st, &k("eg/0/0/udp-53")), ["10.0.5.1/32", "10.0.5.3/32"]);
    assert_eq!(ag(&st, &k("eg/0/0/udp-5353")), ["10.0.5.2/32"]);
    assert_eq!(ag(&st, &k("eg/0/0")).len(), 4, "the numbered port goes to every peer");
    assert_eq!(
        st.groups[&eg_key()],
        [
            rule(Dir::Egress, Family::V4, Some(Protocol::Udp), Some((53, 53)), agr(&k("eg/0/0/udp-53"))),
            rule(Dir::Egress, Family::V4, Some(Protocol::Udp), Some((5353, 5353)), agr(&k("eg/0/0/udp-5353"))),
            rule(Dir::Egress, Family::V4, Some(Protocol::Tcp), Some((9153, 9153)), agr(&k("eg/0/0"))),
        ]
        .into()
    );
    assert_eq!(st.pods.keys().collect::<Vec<_>>(), ["a/client"]);
}

#[test]
fn named_egress_port_to_anywhere_resolves_across_the_cluster_and_not_for_ip_blocks() {
    let pods = vec![pod("a", "client", &[], &["10.0.0.9"]), with_port(pod("b", "srv", &[], &["10.0.1.1"]), "metrics", 9100, Protocol::Tcp)];
    let policy = np(
        "a",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
            {"ports": [{"port": "metrics"}]},
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": "metrics"}]}]}),
    );
    let st = run(&policy, &pods, &namespaces(&[]), &v4());
    assert_eq!(ag(&st, &k("eg/0/all/tcp-9100")), ["10.0.1.1/32"]);
    assert_eq!(
        st.groups[&eg_key()],
        [rule(Dir::Egress, Family::V4, Some(Protocol::Tcp), Some((9100, 9100)), agr(&k("eg/0/all/tcp-9100")))].into()
    );
    assert_eq!(st.notes.len(), 1, "{:?}", st.notes);
    assert!(st.notes[0].contains("ipBlock"), "{:?}", st.notes);
}

#[test]
fn which_policies_a_pod_event_concerns() {
    let ns = cluster_ns();
    let pods = cluster_pods();
    let (db, web, other, b_web, b_cache, c_web) = (&pods[0], &pods[1], &pods[2], &pods[3], &pods[4], &pods[5]);
    let ingress = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}, {"namespaceSelector": {"matchLabels": {"team": "y"}}, "podSelector": {"matchLabels": {"app": "cache"}}}]},
                           {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}),
    );
    assert!(concerns(&ingress, db, &ns), "selected");
    assert!(concerns(&ingress, web, &ns), "peer by pod selector");
    assert!(concerns(&ingress, b_cache, &ns), "peer by both selectors");
    assert!(!concerns(&ingress, other, &ns));
    assert!(!concerns(&ingress, b_web, &ns), "pod selector alone: the policy namespace only");
    assert!(!concerns(&ingress, c_web, &ns), "an ipBlock does not make every pod a peer");
    // Egress peers count only for Egress policies; a named port to anywhere concerns every pod.
    let egress = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "metrics"}]}]}),
    );
    assert!(concerns(&egress, c_web, &ns));
    let numbered =
        np("a", json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "80"}]}]}));
    assert!(!concerns(&numbered, c_web, &ns));
    let ingress_only = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"], "egress": [{"to": [{"namespaceSelector": {}}]}]}),
    );
    assert!(!concerns(&ingress_only, c_web, &ns));
    assert!(!uses_namespace_labels(&ingress_only), "its egress rules do not apply");
    assert!(uses_namespace_labels(&ingress));
    assert!(!uses_namespace_labels(&numbered));
}

#[test]
fn a_rule_without_valid_ports_needs_no_groups() {
    let policy = np(
        "a",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 0}]}],
               "egress": [{"to": [{"podSelector": {}}], "ports": [{"protocol": "ICMP"}]}]}),
    );
    let st = run(&policy, &cluster_pods(), &cluster_ns(), &v4());
    assert!(st.address_groups.is_empty(), "{:?}", st.address_groups);
    assert!(st.groups.values().all(BTreeSet::is_empty));
    assert_eq!(st.notes.len(), 2, "{:?}", st.notes);
}

// ----------------------------------------------------------------------------------- unions

#[test]
fn several_policies_selecting_one_pod_are_a_union() {
    let pods = cluster_pods();
    let ns = cluster_ns();
    let uid2 = "0b7c5a6e-2222-4000-8000-00000000000b";
    let a = run(&np("a", json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": 1}]}]})), &pods, &ns, &v4());
    let b = run(&np_uid("a", uid2, json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})), &pods, &ns, &v4());
    let key2 = SgKey { policy_uid: uid2.into(), direction: Dir::Egress, variant: String::new() };
    assert_eq!(
        pod_groups("a/db", [&a, &b]),
        PodGroups::Groups([GroupRef::Base(BaseGroup::Infra), GroupRef::Policy(in_key()), GroupRef::Policy(key2.clone())].into()),
        "ingress from one, egress from the other: neither open group"
    );
    assert_eq!(
        pod_groups("a/web", [&a, &b]),
        PodGroups::Groups([GroupRef::Base(BaseGroup::Infra), GroupRef::Base(BaseGroup::IngressOpen), GroupRef::Policy(key2)].into())
    );
    assert_eq!(pod_groups("b/web", [&a, &b]), PodGroups::Default);
    // Keys of different policies never collide.
    assert!(a.address_groups.keys().chain(b.address_groups.keys()).all(|k| k.0.starts_with(UID) || k.0.starts_with(uid2)));
}

// ------------------------------------------------------------------------------------ diffs

fn current_of(st: &PolicyState) -> BTreeMap<AgKey, CurrentAg> {
    st.address_groups.iter().enumerate().map(|(i, (k, a))| (k.clone(), CurrentAg { id: format!("ag-{i}"), addresses: a.clone() })).collect()
}

#[test]
fn pod_label_change_moves_exactly_one_address() {
    let policy = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}, {"namespaceSelector": {"matchLabels": {"team": "y"}}}]}],
               "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "cache"}}, "namespaceSelector": {}}]}]}),
    );
    let ns = cluster_ns();
    let mut pods = cluster_pods();
    let before = run(&policy, &pods, &ns, &v4());
    let current = current_of(&before);
    let id_of = |key: &str| current[&AgKey(key.into())].id.clone();
    assert!(diff_address_groups(&before.address_groups, &current).is_empty());

    // a/other gets app=web: it joins the ingress peer group, nothing else changes.
    pods[2].labels = labels(&[("app", "web")]);
    let after = run(&policy, &pods, &ns, &v4());
    let d = diff_address_groups(&after.address_groups, &current);
    assert_eq!(d, AgDiff { add: vec![(id_of(&k("in/0/0")), vec!["10.0.0.3/32".into()])], ..AgDiff::default() });
    assert_eq!(after.groups, before.groups, "no rule changes");
    assert_eq!(after.pods, before.pods, "no port changes");

    // a/web leaves (relabelled to cache): out of the ingress peers, into the egress peers.
    pods[1].labels = labels(&[("app", "cache")]);
    let later = run(&policy, &pods, &ns, &v4());
    let d = diff_address_groups(&later.address_groups, &current_of(&after));
    assert_eq!(
        d,
        AgDiff {
            add: vec![(id_of(&k("eg/0/0")), vec!["10.0.0.2/32".into(), "fd00::2/128".into()])],
            remove: vec![(id_of(&k("in/0/0")), vec!["10.0.0.2/32".into(), "fd00::2/128".into()])],
            ..AgDiff::default()
        }
    );

    // A selected pod relabelled out of the selection: only its port changes.
    pods[0].labels = labels(&[]);
    let unselected = run(&policy, &pods, &ns, &v4());
    assert_eq!(diff_address_groups(&unselected.address_groups, &current_of(&later)), AgDiff::default());
    assert!(!unselected.pods.contains_key("a/db"));
    assert_eq!(pod_groups("a/db", [&unselected]), PodGroups::Default);
}

#[test]
fn pod_ip_change_and_new_pod_touch_one_group() {
    let policy = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    let ns = cluster_ns();
    let mut pods = cluster_pods();
    let before = run(&policy, &pods, &ns, &v4());
    pods[1].ips = vec!["10.0.0.20".parse().unwrap()];
    pods.push(pod("a", "web-2", &[("app", "web")], &["10.0.0.21"]));
    let after = run(&policy, &pods, &ns, &v4());
    let d = diff_address_groups(&after.address_groups, &current_of(&before));
    assert_eq!(d.add, [("ag-0".to_string(), vec!["10.0.0.20/32".to_string(), "10.0.0.21/32".to_string()])]);
    assert_eq!(d.remove, [("ag-0".to_string(), vec!["10.0.0.2/32".to_string(), "fd00::2/128".to_string()])]);
    assert!(d.create.is_empty() && d.delete.is_empty());
}

#[test]
fn policy_edit_creates_and_deletes_groups() {
    let ns = cluster_ns();
    let pods = cluster_pods();
    let v1 = run(
        &np("a", json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})),
        &pods,
        &ns,
        &v4(),
    );
    let v2 =
        run(&np("a", json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}, {}]})), &pods, &ns, &v4());
    let cur = current_of(&v1);
    let d = diff_address_groups(&v2.address_groups, &cur);
    // Rule 0 peer 0 changed from pods to an ipBlock: same key, its addresses are replaced.
    assert_eq!(d.add, [("ag-0".to_string(), vec!["10.9.0.0/16".to_string()])]);
    assert_eq!(d.remove.len(), 1);
    assert!(d.create.is_empty() && d.delete.is_empty());
    let v3 = run(&np("a", json!({"podSelector": {}, "ingress": [{}]})), &pods, &ns, &v4());
    let d = diff_address_groups(&v3.address_groups, &cur);
    assert_eq!(d, AgDiff { delete: vec!["ag-0".into()], ..AgDiff::default() });
    let d = diff_address_groups(&v1.address_groups, &BTreeMap::new());
    assert_eq!(d.create, [(AgKey(k("in/0/0")), vec!["10.0.0.2/32".to_string(), "fd00::2/128".into()])]);
}

#[test]
fn security_group_diff() {
    let a = in_key();
    let b = eg_key();
    let c = SgKey { variant: "abc".into(), ..in_key() };
    let current = BTreeMap::from([(a.clone(), "sg-a".to_string()), (c, "sg-c".to_string())]);
    assert_eq!(diff_security_groups([&a, &b], &current), (vec![b], vec!["sg-c".to_string()]));
    assert_eq!(diff_security_groups([], &BTreeMap::new()), (vec![], vec![]));
}

fn neutron_rule(id: &str, r: &SecurityGroupRuleCreate) -> SecurityGroupRule {
    SecurityGroupRule {
        id: id.into(),
        security_group_id: r.security_group_id.clone(),
        direction: r.direction,
        ethertype: r.ethertype,
        protocol: r.protocol.clone(),
        port_range_min: r.port_range_min,
        port_range_max: r.port_range_max,
        remote_ip_prefix: r.remote_ip_prefix.clone(),
        remote_group_id: r.remote_group_id.clone(),
        remote_address_group_id: r.remote_address_group_id.clone(),
        ..SecurityGroupRule::default()
    }
}

#[test]
fn rule_diff_against_neutron() {
    let policy = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}, {"protocol": "SCTP"}]},
            {"from": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}]}),
    );
    let st = run(&policy, &cluster_pods(), &cluster_ns(), &v4());
    let want = &st.groups[&in_key()];
    let ag_ids: HashMap<AgKey, String> = st.address_groups.keys().enumerate().map(|(i, k)| (k.clone(), format!("ag-{i}"))).collect();
    let ag_keys: HashMap<String, AgKey> = ag_ids.iter().map(|(k, v)| (v.clone(), k.clone())).collect();

    // A fresh group: Neutron's two default egress rules go, all of ours are created.
    let defaults: Vec<SecurityGroupRule> = [EtherType::IPv4, EtherType::IPv6]
        .iter()
        .enumerate()
        .map(|(i, e)| SecurityGroupRule { id: format!("default-{i}"), direction: Direction::Egress, ethertype: *e, ..Default::default() })
        .collect();
    let d = diff_rules(want, &defaults, &ag_keys);
    assert_eq!(d.delete, ["default-0", "default-1"]);
    assert_eq!(d.create.iter().cloned().collect::<BTreeSet<_>>(), *want);

    // What Neutron answers for our creates maps back to the same rules: nothing to do.
    let created: Vec<SecurityGroupRule> =
        want.iter().enumerate().map(|(i, r)| neutron_rule(&format!("r{i}"), &r.to_create("sg", &ag_ids).unwrap())).collect();
    let named: BTreeSet<&str> = created.iter().filter_map(|r| r.remote_address_group_id.as_deref()).collect();
    assert_eq!(named, ["ag-0", "ag-1"].into());
    assert_eq!(diff_rules(want, &created, &ag_keys), RuleDiff::default());

    // A stale rule, a duplicate, a remote group and an unknown address group are deleted.
    let mut current = created.clone();
    current.push(SecurityGroupRule { id: "dup".into(), ..created[0].clone() });
    current.push(SecurityGroupRule { id: "stale".into(), port_range_min: Some(1), port_range_max: Some(2), ..created[0].clone() });
    current.push(SecurityGroupRule {
        id: "rg".into(),
        remote_group_id: Some("sg-x".into()),
        remote_address_group_id: None,
        ..created[0].clone()
    });
    current.push(SecurityGroupRule { id: "unknown-ag".into(), remote_address_group_id: Some("ag-x".into()), ..created[0].clone() });
    current.remove(1);
    let d = diff_rules(want, &current, &ag_keys);
    assert_eq!(d.delete, ["dup", "stale", "rg", "unknown-ag"]);
    assert_eq!(d.create.len(), 1);
    assert_eq!(d.create[0], *want.iter().nth(1).unwrap());

    // A rule naming a group that has no id yet cannot be requested.
    assert_eq!(want.iter().next().unwrap().to_create("sg", &HashMap::new()), None);
}

#[test]
fn neutron_rule_shapes() {
    let keys = HashMap::new();
    let n = |f: &dyn Fn(&mut SecurityGroupRule)| {
        let mut r = SecurityGroupRule { id: "r".into(), direction: Direction::Ingress, ethertype: EtherType::IPv4, ..Default::default() };
        f(&mut r);
        RuleSpec::from_neutron(&r, &keys)
    };
    assert_eq!(n(&|_| {}), Some(rule(Dir::Ingress, Family::V4, None, None, Remote::Any)));
    assert_eq!(n(&|r| r.remote_ip_prefix = Some("0.0.0.0/0".into())), Some(rule(Dir::Ingress, Family::V4, None, None, Remote::Any)));
    assert_eq!(
        n(&|r| {
            r.protocol = Some("6".into());
            r.port_range_min = Some(1);
            r.port_range_max = Some(65535);
            r.remote_ip_prefix = Some("10.0.0.7/24".into());
        }),
        Some(rule(Dir::Ingress, Family::V4, Some(Protocol::Tcp), None, Remote::Prefix("10.0.0.0/24".parse().unwrap())))
    );
    assert_eq!(n(&|r| r.protocol = Some("icmp".into())), None);
    assert_eq!(n(&|r| r.port_range_min = Some(80)), None, "ports without a protocol");
    let req = rule(Dir::Egress, Family::V6, Some(Protocol::Sctp), Some((5, 6)), Remote::Prefix("fd00::/8".parse().unwrap()))
        .to_create("sg", &HashMap::new())
        .unwrap();
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        json!({"security_group_id": "sg", "direction": "egress", "ethertype": "IPv6", "protocol": "sctp",
               "port_range_min": 5, "port_range_max": 6, "remote_ip_prefix": "fd00::/8"})
    );
}

#[test]
fn fallback_without_address_groups_expands_to_prefixes() {
    let policy = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 80}]}]}),
    );
    let st = run(&policy, &cluster_pods(), &cluster_ns(), &dual());
    let flat = expand_address_groups(&st.groups[&in_key()], &st.address_groups);
    let p = |n: &str| {
        rule(
            Dir::Ingress,
            if n.contains(':') { Family::V6 } else { Family::V4 },
            Some(Protocol::Tcp),
            Some((80, 80)),
            Remote::Prefix(n.parse().unwrap()),
        )
    };
    assert_eq!(flat, [p("10.0.0.2/32"), p("fd00::2/128")].into());
}

// -------------------------------------------------------------- against the Neutron double

/// The diffs applied with the real client to the stateful Neutron double: a label change is
/// one `add_addresses` call, and the converged state has no diff left.
#[tokio::test]
async fn diffs_converge_on_the_neutron_double() {
    use kuryr_openstack::fake::SecuritySim;
    use kuryr_openstack::neutron::{AddressGroupCreate, SecurityGroupCreate};
    use kuryr_openstack::{Neutron, Session};

    let (fake, sim) = SecuritySim::start("proj").await;
    let n = Neutron::new(Session::new(&fake.cloud()).unwrap());
    let policy = np(
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]}],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/24"]}}]}]}),
    );
    let ns = cluster_ns();
    let mut pods = cluster_pods();

    async fn converge(n: &Neutron, st: &PolicyState, sgs: &mut HashMap<SgKey, String>) {
        let listed = n.list_address_groups(&kuryr_openstack::Query::new()).await.unwrap();
        let current: BTreeMap<AgKey, CurrentAg> = listed
            .iter()
            .map(|g| (AgKey(g.name.clone()), CurrentAg { id: g.id.clone(), addresses: g.addresses.iter().cloned().collect() }))
            .collect();
        let d = diff_address_groups(&st.address_groups, &current);
        let mut ids: HashMap<AgKey, String> = current.iter().map(|(k, c)| (k.clone(), c.id.clone())).collect();
        for (key, addrs) in &d.create {
            let g = n
                .create_address_group(&AddressGroupCreate { name: key.0.clone(), addresses: addrs.clone(), ..Default::default() })
                .await
                .unwrap();
            ids.insert(key.clone(), g.id);
        }
        for (id, addrs) in &d.add {
            n.add_addresses(id, addrs).await.unwrap();
        }
        for (id, addrs) in &d.remove {
            n.remove_addresses(id, addrs).await.unwrap();
        }
        let keys: HashMap<String, AgKey> = ids.iter().map(|(k, v)| (v.clone(), k.clone())).collect();
        for (key, want) in &st.groups {
            let sg = match sgs.get(key) {
                Some(id) => id.clone(),
                None => {
                    let g = n.create_security_group(&SecurityGroupCreate { name: key.as_string(), ..Default::default() }).await.unwrap();
                    sgs.insert(key.clone(), g.id.clone());
                    g.id
                }
            };
            let rd = diff_rules(want, &n.list_security_group_rules_of(&sg).await.unwrap(), &keys);
            for id in &rd.delete {
                n.delete_security_group_rule(id).await.unwrap();
            }
            let reqs: Vec<_> = rd.create.iter().map(|r| r.to_create(&sg, &ids).unwrap()).collect();
            n.create_security_group_rules(&reqs).await.unwrap();
        }
    }

    let mut sgs = HashMap::new();
    let st = run(&policy, &pods, &ns, &dual());
    converge(&n, &st, &mut sgs).await;
    {
        let s = sim.lock().unwrap();
        assert_eq!(s.address_groups.len(), 2);
        assert_eq!(s.groups.len(), 2);
        let eg = &sgs[&eg_key()];
        let rules = s.rules_of(eg);
        assert_eq!(rules.len(), 1, "the default egress rules went; one IPv4 rule to the ipBlock group: {rules:?}");
        assert_eq!(rules[0].ethertype, EtherType::IPv4);
        assert_eq!(s.rules_of(&sgs[&in_key()]).len(), 2, "IPv4 and IPv6 to the peer group");
    }
    let calls = fake.seen().len();
    converge(&n, &st, &mut sgs).await;
    let writes = fake.seen()[calls..].iter().filter(|s| s.method != "GET").count();
    assert_eq!(writes, 0, "converged: nothing to write");

    // a/other becomes a web pod: exactly one Neutron write, an add_addresses.
    pods[2].labels = labels(&[("app", "web")]);
    let calls = fake.seen().len();
    converge(&n, &run(&policy, &pods, &ns, &dual()), &mut sgs).await;
    let writes: Vec<String> =
        fake.seen()[calls..].iter().filter(|s| s.method != "GET").map(|s| format!("{} {}", s.method, s.path())).collect();
    let web_ag = sim.lock().unwrap().address_groups.values().find(|g| g.name == k("in/0/0")).unwrap().clone();
    assert_eq!(writes, [format!("PUT /v2.0/address-groups/{}/add_addresses", web_ag.id)]);
    assert_eq!(web_ag.addresses, ["10.0.0.2/32", "fd00::2/128", "10.0.0.3/32"]);
}
