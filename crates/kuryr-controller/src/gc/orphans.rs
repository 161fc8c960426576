//! Pure orphan finding (`crate::gc::orphans`): what the cluster references, what OpenStack holds,
//! which of it is an orphan, and the marks between passes. No I/O.

use super::{Kind, Orphan, ROUTER_INTERFACE_OWNERS, SUBPORT_OWNER};
use k8s_openapi::api::core::v1::Pod;
use kuryr_core::crd::{KuryrLoadBalancer, KuryrNetwork, KuryrNetworkPolicy, KuryrPort};
use kuryr_core::names::{cluster_tag, description_owner, DEVICE_OWNER};
use kuryr_openstack::neutron::{AddressGroup, FloatingIp, Network, Port, SecurityGroup, SecurityGroupRule, Subnet};
use kuryr_openstack::octavia::LoadBalancer;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// What the cluster references.
#[derive(Debug, Default)]
pub struct Referenced {
    /// Pod UIDs and KuryrPort `spec.podUid`s.
    pub uids: HashSet<String>,
    /// Port ids in KuryrPort `status.vifs`.
    pub ports: HashSet<String>,
    /// KuryrNetwork `status.netId`.
    pub networks: HashSet<String>,
    /// KuryrNetwork `status.subnetId`.
    pub subnets: HashSet<String>,
    /// KuryrNetwork (`status.subnetId`, `status.routerId`).
    pub router_interfaces: HashSet<(String, String)>,
    /// KuryrNetworkPolicy `status.securityGroupId`, KuryrLoadBalancer `status.loadbalancer.security_groups`.
    pub security_groups: HashSet<String>,
    /// KuryrNetworkPolicy `status.securityGroupRules[].id`.
    pub security_group_rules: HashSet<String>,
    /// KuryrNetworkPolicy `status.addressGroups` (kuryr-rs).
    pub address_groups: HashSet<String>,
    /// KuryrLoadBalancer `status.loadbalancer.id`.
    pub load_balancers: HashSet<String>,
    /// KuryrLoadBalancer `status.service_pub_ip_info.ip_id`.
    pub floating_ips: HashSet<String>,
    /// The cluster's Nodes (`None`: not listed; then no pool port is judged by its node).
    pub nodes: Option<HashSet<String>>,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

impl Referenced {
    /// From the reflector caches.
    pub fn collect<'a>(pods: impl IntoIterator<Item = &'a Pod>, kps: impl IntoIterator<Item = &'a KuryrPort>) -> Referenced {
        let mut r = Referenced::default();
        for p in pods {
            if let Some(uid) = &p.metadata.uid {
                r.uids.insert(uid.clone());
            }
        }
        for kp in kps {
            if !kp.spec.pod_uid.is_empty() {
                r.uids.insert(kp.spec.pod_uid.clone());
            }
            for entry in kp.status.iter().flat_map(|s| s.vifs.values()) {
                if let Ok(v) = entry.vif() {
                    r.ports.insert(v.port_id);
                }
            }
        }
        r
    }

    /// Adds what KuryrNetworks, KuryrNetworkPolicies and KuryrLoadBalancers reference.
    pub fn add_crds<'a>(
        &mut self,
        networks: impl IntoIterator<Item = &'a KuryrNetwork>,
        policies: impl IntoIterator<Item = &'a KuryrNetworkPolicy>,
        lbs: impl IntoIterator<Item = &'a KuryrLoadBalancer>,
    ) {
        for n in networks.into_iter().filter_map(|n| n.status.as_ref()) {
            self.networks.extend(n.net_id.clone());
            self.subnets.extend(n.subnet_id.clone());
            if let (Some(s), Some(r)) = (&n.subnet_id, &n.router_id) {
                self.router_interfaces.insert((s.clone(), r.clone()));
            }
        }
        for p in policies.into_iter().filter_map(|p| p.status.as_ref()) {
            self.security_groups.extend(p.security_group_id.clone());
            self.security_groups.extend(p.security_groups.values().cloned());
            self.address_groups.extend(p.address_groups.values().cloned());
            for rule in &p.security_group_rules {
                // Upstream writes the rule's fields flat; accept them under `sgRule` too.
                if let Some(id) = str_at(rule, "/id").or_else(|| str_at(rule, "/sgRule/id")) {
                    self.security_group_rules.insert(id.to_string());
                }
            }
        }
        for lb in lbs.into_iter().filter_map(|l| l.status.as_ref()) {
            if let Some(id) = str_at(&lb.loadbalancer, "/id") {
                self.load_balancers.insert(id.to_string());
            }
            if let Some(sgs) = lb.loadbalancer.get("security_groups").and_then(Value::as_array) {
                self.security_groups.extend(sgs.iter().filter_map(Value::as_str).map(str::to_string));
            }
            if let Some(id) = str_at(&lb.service_pub_ip_info, "/ip_id") {
                self.floating_ips.insert(id.to_string());
            }
        }
    }
}

/// Whether a port's description names `cluster` (`…: cluster <name>, …`).
pub fn names_cluster(description: &str, cluster: &str) -> bool {
    description.starts_with("kuryr-rs ") && description.contains(&format!(": cluster {cluster}, "))
}

/// The pod UID a pod port's description names (`… (uid <uid>)`).
pub fn described_uid(description: &str) -> Option<&str> {
    description.strip_suffix(')')?.rsplit_once(" (uid ").map(|(_, uid)| uid).filter(|u| !u.is_empty())
}

/// What GC found in OpenStack (already filtered by owner and tags by the list queries).
#[derive(Debug, Default)]
pub struct Inventory {
    /// `compute:kuryr` ports.
    pub ports: Vec<Port>,
    /// `trunk:subport` ports with the cluster tag.
    pub subports: Vec<Port>,
    pub networks: Vec<Network>,
    pub subnets: Vec<Subnet>,
    /// Router interface ports (any subnet; GC keeps those on our subnets).
    pub router_ports: Vec<Port>,
    pub security_groups: Vec<SecurityGroup>,
    /// Rules of `security_groups`.
    pub security_group_rules: Vec<SecurityGroupRule>,
    /// Address groups of the project (no tags exist for them: judged by their description).
    pub address_groups: Vec<AddressGroup>,
    pub floating_ips: Vec<FloatingIp>,
    pub load_balancers: Vec<LoadBalancer>,
}

/// Which resources a pass may judge.
#[derive(Debug, Default)]
pub struct Scope {
    pub cluster: String,
    /// `--watch-namespace`.
    pub namespace: Option<String>,
    /// Ids kuryr.conf names: never candidates.
    pub protected: HashSet<String>,
}

impl Scope {
    fn port_in_scope(&self, p: &Port) -> bool {
        !self.protected.contains(&p.id) && self.namespace.as_deref().is_none_or(|ns| p.name.split_once('/').is_some_and(|(n, _)| n == ns))
    }

    /// A tagged resource of another kind: carries the cluster tag, and with a namespace scope its
    /// description names that namespace.
    pub(super) fn owned(&self, id: &str, tags: &[String], description: &str) -> bool {
        !self.protected.contains(id)
            && tags.contains(&cluster_tag(&self.cluster))
            && self.namespace.as_deref().is_none_or(|ns| description_owner(description) == Some((self.cluster.as_str(), ns)))
    }
}

/// How the descriptions of NetworkPolicy address groups start (`kuryr_core::names::resource_description`).
const ADDRESS_GROUP_DESCRIPTION: &str = "kuryr-rs network policy address group: ";

fn orphan(kind: Kind, id: &str, name: &str, via: Option<&str>, reason: impl Into<String>) -> Orphan {
    Orphan { kind, id: id.to_string(), name: name.to_string(), via: via.map(str::to_string), reason: reason.into() }
}

/// The orphans in `inv` (pure: no calls).
pub fn find_orphans(inv: &Inventory, scope: &Scope, refs: &Referenced) -> Vec<Orphan> {
    let cluster = scope.cluster.as_str();
    let mut out = Vec::new();
    for p in &inv.ports {
        if p.device_owner != DEVICE_OWNER || !names_cluster(&p.description, cluster) || !scope.port_in_scope(p) {
            continue;
        }
        // A warm-pool port of a node that no longer exists: its pool KuryrPort still lists it,
        // but no pod can ever claim it.
        let pool_node = kuryr_core::names::is_pool_port_description(&p.description, cluster)
            .then(|| p.name.strip_prefix(&format!("{}/", kuryr_core::names::POOL_NAMESPACE)))
            .flatten();
        if let (Some(node), Some(nodes)) = (pool_node, &refs.nodes) {
            if !nodes.contains(node) {
                let why = format!("warm-pool port of node {node}, which no longer exists");
                out.push(orphan(Kind::Port, &p.id, &p.name, Some(node), why));
                continue;
            }
        }
        // nested-vlan ports have no device_id: the UID their description names counts too.
        let uid_named = described_uid(&p.description).is_some_and(|u| refs.uids.contains(u));
        if !refs.ports.contains(&p.id) && !refs.uids.contains(&p.device_id) && !uid_named {
            let why = format!("device_id {} is no Pod or KuryrPort UID and no KuryrPort lists the port", p.device_id);
            out.push(orphan(Kind::Port, &p.id, &p.name, None, why));
        }
    }
    for p in &inv.subports {
        let uid = described_uid(&p.description);
        if p.device_owner == SUBPORT_OWNER
            && names_cluster(&p.description, cluster)
            && p.tags.contains(&cluster_tag(cluster))
            && scope.port_in_scope(p)
            && !refs.ports.contains(&p.id)
            && uid.is_none_or(|u| !refs.uids.contains(u))
        {
            let why = format!("pod uid {} is no Pod or KuryrPort UID and no KuryrPort lists the subport", uid.unwrap_or("?"));
            out.push(orphan(Kind::TrunkSubport, &p.id, &p.name, p.trunk_parent(), why));
        }
    }
    for n in inv.networks.iter().filter(|n| scope.owned(&n.id, &n.tags, &n.description)) {
        if !refs.networks.contains(&n.id) {
            out.push(orphan(Kind::Network, &n.id, &n.name, None, "no KuryrNetwork status names it (netId)"));
        }
    }
    let our_subnets: HashSet<&str> =
        inv.subnets.iter().filter(|s| scope.owned(&s.id, &s.tags, &s.description)).map(|s| s.id.as_str()).collect();
    for s in inv.subnets.iter().filter(|s| our_subnets.contains(s.id.as_str())) {
        if !refs.subnets.contains(&s.id) {
            out.push(orphan(Kind::Subnet, &s.id, &s.name, None, "no KuryrNetwork status names it (subnetId)"));
        }
    }
    for p in inv.router_ports.iter().filter(|p| ROUTER_INTERFACE_OWNERS.contains(&p.device_owner.as_str())) {
        for ip in p.fixed_ips.iter().filter(|ip| our_subnets.contains(ip.subnet_id.as_str())) {
            if !refs.router_interfaces.contains(&(ip.subnet_id.clone(), p.device_id.clone())) {
                let why = format!("no KuryrNetwork status names subnet {} on router {}", ip.subnet_id, p.device_id);
                out.push(orphan(Kind::RouterInterface, &p.id, &format!("subnet {}", ip.subnet_id), Some(&p.device_id), why));
                break;
            }
        }
    }
    let mut referenced_groups = HashSet::new();
    for g in inv.security_groups.iter().filter(|g| scope.owned(&g.id, &g.tags, &g.description)) {
        if refs.security_groups.contains(&g.id) {
            referenced_groups.insert(g.id.as_str());
        } else {
            out.push(orphan(Kind::SecurityGroup, &g.id, &g.name, None, "no KuryrNetworkPolicy or KuryrLoadBalancer status names it"));
        }
    }
    // Rules of unreferenced groups go with their group.
    for r in inv.security_group_rules.iter().filter(|r| referenced_groups.contains(r.security_group_id.as_str())) {
        let mine = description_owner(&r.description)
            .is_some_and(|(c, ns)| c == cluster && scope.namespace.as_deref().is_none_or(|want| want == ns));
        if mine && !refs.security_group_rules.contains(&r.id) && !scope.protected.contains(&r.id) {
            let why = "its KuryrNetworkPolicy's status.securityGroupRules does not list it";
            out.push(orphan(Kind::SecurityGroupRule, &r.id, &r.description, Some(&r.security_group_id), why));
        }
    }
    // Address groups carry no tags: ours by their NetworkPolicy description (cluster, namespace).
    for g in &inv.address_groups {
        let mine = g.description.starts_with(ADDRESS_GROUP_DESCRIPTION)
            && description_owner(&g.description)
                .is_some_and(|(c, ns)| c == cluster && scope.namespace.as_deref().is_none_or(|want| want == ns));
        if mine && !scope.protected.contains(&g.id) && !refs.address_groups.contains(&g.id) {
            out.push(orphan(Kind::AddressGroup, &g.id, &g.name, None, "no KuryrNetworkPolicy status names it (addressGroups)"));
        }
    }
    for f in inv.floating_ips.iter().filter(|f| scope.owned(&f.id, &f.tags, &f.description)) {
        if !refs.floating_ips.contains(&f.id) {
            let why = "no KuryrLoadBalancer status names it (service_pub_ip_info.ip_id)";
            out.push(orphan(Kind::FloatingIp, &f.id, &f.floating_ip_address, None, why));
        }
    }
    for lb in inv.load_balancers.iter().filter(|l| scope.owned(&l.id, &l.tags, &l.description)) {
        let going = matches!(lb.provisioning_status.as_str(), "PENDING_DELETE" | "DELETED");
        if !going && !refs.load_balancers.contains(&lb.id) {
            out.push(orphan(Kind::LoadBalancer, &lb.id, &lb.name, None, "no KuryrLoadBalancer status names it (loadbalancer.id)"));
        }
    }
    out.sort();
    out
}

/// The marks between passes.
#[derive(Debug, Default)]
pub struct Marks {
    marked: BTreeMap<(Kind, String), Orphan>,
}

impl Marks {
    /// Records this pass's orphans; returns those already marked by the previous pass (to
    /// delete). Marks of resources that are no longer orphans are dropped.
    pub fn pass(&mut self, orphans: Vec<Orphan>) -> Vec<Orphan> {
        let mut sweep = Vec::new();
        let mut next = BTreeMap::new();
        for o in orphans {
            let key = (o.kind, o.id.clone());
            if self.marked.contains_key(&key) {
                sweep.push(o.clone());
            }
            next.insert(key, o);
        }
        self.marked = next;
        sweep
    }

    pub fn len(&self) -> usize {
        self.marked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn port(id: &str, name: &str, device_id: &str, cluster: &str) -> Port {
        serde_json::from_value(json!({
            "id": id, "name": name, "device_id": device_id, "device_owner": DEVICE_OWNER,
            "description": format!("kuryr-rs pod port: cluster {cluster}, pod {name} (uid {device_id})"),
            "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": [], "status": "ACTIVE",
        }))
        .expect("port")
    }

    fn scope(cluster: &str, ns: Option<&str>) -> Scope {
        Scope { cluster: cluster.into(), namespace: ns.map(str::to_string), protected: HashSet::new() }
    }

    fn ids(v: Vec<Orphan>) -> Vec<String> {
        v.into_iter().map(|o| o.id).collect()
    }

    #[test]
    fn orphans_are_ports_of_this_cluster_nobody_references() {
        let mut other_owner = port("p5", "ns/e", "gone-5", "c1");
        other_owner.device_owner = "compute:nova".into();
        let inv = Inventory {
            ports: vec![
                port("p1", "ns/a", "uid-a", "c1"),  // pod exists
                port("p2", "ns/b", "gone-b", "c1"), // orphan
                port("p3", "ns/c", "gone-c", "c1"), // listed in a KuryrPort
                port("p4", "ns/d", "gone-d", "c2"), // another cluster
                other_owner,                        // not kuryr's
                port("p6", "other/f", "gone-f", "c1"),
            ],
            ..Inventory::default()
        };
        let refs = Referenced { uids: ["uid-a".to_string()].into(), ports: ["p3".to_string()].into(), ..Referenced::default() };
        assert_eq!(ids(find_orphans(&inv, &scope("c1", None), &refs)), ["p2", "p6"]);
        assert_eq!(ids(find_orphans(&inv, &scope("c1", Some("ns")), &refs)), ["p2"]);
        assert_eq!(ids(find_orphans(&inv, &scope("c2", None), &refs)), ["p4"]);
        let mut protected = scope("c1", None);
        protected.protected.insert("p2".into());
        assert_eq!(ids(find_orphans(&inv, &protected, &refs)), ["p6"]);
    }

    #[test]
    fn pool_ports_of_deleted_nodes_are_orphans_even_while_published() {
        let pool_port = |id: &str, node: &str| {
            let mut p = port(id, &format!("kuryr-pool/{node}"), "", "c1");
            p.description = kuryr_core::names::pool_port_description("c1", node);
            p
        };
        let inv = Inventory { ports: vec![pool_port("p-live", "n1"), pool_port("p-gone", "n2")], ..Inventory::default() };
        // Both are listed by their pool KuryrPorts.
        let mut refs = Referenced { ports: ["p-live".to_string(), "p-gone".to_string()].into(), ..Referenced::default() };
        assert!(find_orphans(&inv, &scope("c1", None), &refs).is_empty(), "nodes unknown: nothing judged by node");
        refs.nodes = Some(["n1".to_string()].into());
        let found = find_orphans(&inv, &scope("c1", None), &refs);
        assert_eq!(ids(found.clone()), ["p-gone"]);
        assert_eq!(found[0].via.as_deref(), Some("n2"));
    }

    #[test]
    fn a_nested_port_is_referenced_by_the_uid_in_its_description() {
        // A nested-vlan port between create and attach: compute:kuryr, no device_id.
        let mut p = port("p1", "ns/a", "", "c1");
        p.description = "kuryr-rs pod port: cluster c1, pod ns/a (uid uid-a)".into();
        let inv = Inventory { ports: vec![p], ..Inventory::default() };
        let refs = Referenced { uids: ["uid-a".to_string()].into(), ..Referenced::default() };
        assert!(find_orphans(&inv, &scope("c1", None), &refs).is_empty());
        assert_eq!(find_orphans(&inv, &scope("c1", None), &Referenced::default()).len(), 1);
        assert_eq!(described_uid("x (uid )"), None);
        assert_eq!(described_uid("no uid here"), None);
    }

    #[test]
    fn cluster_name_must_match_exactly() {
        let d = "kuryr-rs pod port: cluster c1, pod ns/a (uid u)";
        assert!(names_cluster(d, "c1"));
        assert!(!names_cluster(d, "c"));
        assert!(!names_cluster("some port: cluster c1, x", "c1"));
        let s = "kuryr-rs standalone container port: cluster c1, KuryrPort kuryr-standalone/x (uid u)";
        assert!(names_cluster(s, "c1"));
        assert_eq!(described_uid(d), Some("u"));
        assert_eq!(described_uid("kuryr-rs pool port: cluster c1, node n"), None);
    }

    /// One tagged resource of each kind per case: `keep` referenced, `orphan` not, `other` of
    /// another cluster, `elsewhere` of another namespace.
    fn world() -> (Inventory, Referenced) {
        let tag = |c: &str| vec!["kuryr-rs-local".to_string(), cluster_tag(c)];
        let desc = |what: &str, c: &str, ns: &str| kuryr_core::names::resource_description(what, c, ns, "x");
        let net = |id: &str, c: &str, ns: &str| Network {
            id: id.into(),
            tags: tag(c),
            description: desc("network", c, ns),
            ..Network::default()
        };
        let sub = |id: &str, c: &str, ns: &str| Subnet {
            id: id.into(),
            network_id: format!("net-{id}"),
            tags: tag(c),
            description: desc("subnet", c, ns),
            ..Subnet::default()
        };
        let sg = |id: &str, c: &str, ns: &str| SecurityGroup {
            id: id.into(),
            tags: tag(c),
            description: desc("sg", c, ns),
            ..SecurityGroup::default()
        };
        let rule = |id: &str, sg: &str, d: String| SecurityGroupRule {
            id: id.into(),
            security_group_id: sg.into(),
            description: d,
            ..SecurityGroupRule::default()
        };
        let ag = |id: &str, c: &str, ns: &str| AddressGroup {
            id: id.into(),
            name: format!("kuryr-np/{id}"),
            description: kuryr_core::names::resource_description("network policy address group", c, ns, "np"),
            ..AddressGroup::default()
        };
        let fip = |id: &str, c: &str, ns: &str| FloatingIp {
            id: id.into(),
            tags: tag(c),
            description: desc("fip", c, ns),
            ..FloatingIp::default()
        };
        let lb = |id: &str, c: &str, ns: &str, st: &str| LoadBalancer {
            id: id.into(),
            tags: tag(c),
            description: desc("lb", c, ns),
            provisioning_status: st.into(),
            ..LoadBalancer::default()
        };
        let rif = |id: &str, subnet: &str, router: &str| -> Port {
            serde_json::from_value(json!({
                "id": id, "device_owner": "network:router_interface", "device_id": router, "network_id": "n",
                "fixed_ips": [{"subnet_id": subnet, "ip_address": "10.0.0.1"}],
            }))
            .expect("router port")
        };
        let mut subport = port("sp-orphan", "ns/s", "", "c1");
        subport.device_owner = SUBPORT_OWNER.into();
        subport.binding_profile = serde_json::from_value(json!({"parent_name": "parent-1", "tag": 7})).expect("profile");
        subport.description = "kuryr-rs pod port: cluster c1, pod ns/s (uid gone-s)".into();
        subport.tags = tag("c1");
        let mut subport_keep = subport.clone();
        subport_keep.id = "sp-keep".into();
        subport_keep.description = "kuryr-rs pod port: cluster c1, pod ns/t (uid uid-t)".into();
        let inv = Inventory {
            subports: vec![subport, subport_keep],
            networks: vec![
                net("n-keep", "c1", "ns"),
                net("n-orphan", "c1", "ns"),
                net("n-other", "c2", "ns"),
                net("n-elsewhere", "c1", "ns2"),
            ],
            subnets: vec![sub("s-keep", "c1", "ns"), sub("s-orphan", "c1", "ns"), sub("s-other", "c2", "ns")],
            router_ports: vec![
                rif("ri-keep", "s-keep", "r1"),
                rif("ri-orphan", "s-orphan", "r1"),
                rif("ri-wrong-router", "s-keep", "r2"),
                rif("ri-other", "s-other", "r1"),
            ],
            security_groups: vec![sg("g-keep", "c1", "ns"), sg("g-orphan", "c1", "ns"), sg("g-other", "c2", "ns")],
            security_group_rules: vec![
                rule("r-keep", "g-keep", desc("rule", "c1", "ns")),
                rule("r-orphan", "g-keep", desc("rule", "c1", "ns")),
                rule("r-default-egress", "g-keep", String::new()),
                rule("r-of-orphan-group", "g-orphan", desc("rule", "c1", "ns")),
            ],
            floating_ips: vec![fip("f-keep", "c1", "ns"), fip("f-orphan", "c1", "ns"), fip("f-other", "c2", "ns")],
            address_groups: vec![ag("a-keep", "c1", "ns"), ag("a-orphan", "c1", "ns"), ag("a-other", "c2", "ns"), {
                let mut upstream = ag("a-not-policy", "c1", "ns");
                upstream.description = desc("something else", "c1", "ns");
                upstream
            }],
            load_balancers: vec![
                lb("l-keep", "c1", "ns", "ACTIVE"),
                lb("l-orphan", "c1", "ns", "ACTIVE"),
                lb("l-deleting", "c1", "ns", "PENDING_DELETE"),
            ],
            ..Inventory::default()
        };
        let knet: KuryrNetwork = serde_json::from_value(json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrNetwork", "metadata": {"name": "ns", "namespace": "ns"},
            "spec": {"nsName": "ns", "projectId": "p"},
            "status": {"netId": "n-keep", "subnetId": "s-keep", "routerId": "r1", "populated": true},
        }))
        .expect("knet");
        let knp: KuryrNetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrNetworkPolicy", "metadata": {"name": "np", "namespace": "ns"},
            "spec": {},
            "status": {"securityGroupId": "g-keep", "securityGroupRules": [{"id": "r-keep", "direction": "ingress"}], "addressGroups": {"k": "a-keep"}},
        }))
        .expect("knp");
        let klb: KuryrLoadBalancer = serde_json::from_value(json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrLoadBalancer", "metadata": {"name": "svc", "namespace": "ns"},
            "spec": {"ports": []},
            "status": {"loadbalancer": {"id": "l-keep", "security_groups": []}, "service_pub_ip_info": {"ip_id": "f-keep", "ip_addr": "172.24.4.9", "alloc_method": "pool"}},
        }))
        .expect("klb");
        let mut refs = Referenced { uids: ["uid-t".to_string()].into(), ..Referenced::default() };
        refs.add_crds([&knet], [&knp], [&klb]);
        (inv, refs)
    }

    #[test]
    fn every_kind_has_its_orphans_found_and_nothing_else() {
        let (inv, refs) = world();
        let found = find_orphans(&inv, &scope("c1", Some("ns")), &refs);
        let got: Vec<(Kind, String)> = found.iter().map(|o| (o.kind, o.id.clone())).collect();
        let want: Vec<(Kind, String)> = [
            (Kind::LoadBalancer, "l-orphan"),
            (Kind::FloatingIp, "f-orphan"),
            (Kind::RouterInterface, "ri-orphan"),
            (Kind::RouterInterface, "ri-wrong-router"),
            (Kind::TrunkSubport, "sp-orphan"),
            (Kind::SecurityGroupRule, "r-orphan"),
            (Kind::SecurityGroup, "g-orphan"),
            (Kind::AddressGroup, "a-orphan"),
            (Kind::Subnet, "s-orphan"),
            (Kind::Network, "n-orphan"),
        ]
        .into_iter()
        .map(|(k, id)| (k, id.to_string()))
        .collect();
        assert_eq!(got, want);
        // Sweep order: what holds another first.
        assert!(found.windows(2).all(|w| w[0].kind <= w[1].kind));
        let ri = found.iter().find(|o| o.id == "ri-orphan").expect("ri");
        assert_eq!(ri.via.as_deref(), Some("r1"));
        let sp = found.iter().find(|o| o.id == "sp-orphan").expect("sp");
        assert_eq!(sp.via.as_deref(), Some("parent-1"));
        // Unscoped, the other namespace's network is ours too; another cluster's never is.
        let all = ids(find_orphans(&inv, &scope("c1", None), &refs));
        assert!(all.contains(&"n-elsewhere".to_string()) && !all.iter().any(|i| i.ends_with("-other")), "{all:?}");
        // Nothing referenced at all: every resource of the cluster is an orphan, the others not.
        let bare = ids(find_orphans(&inv, &scope("c2", None), &Referenced::default()));
        assert_eq!(bare, ["f-other", "ri-other", "g-other", "a-other", "s-other", "n-other"]);
    }

    #[test]
    fn only_orphans_seen_twice_in_a_row_are_swept() {
        let o = |id: &str| Orphan { kind: Kind::Port, id: id.into(), name: id.into(), via: None, reason: String::new() };
        let mut m = Marks::default();
        assert_eq!(m.pass(vec![o("a"), o("b")]), vec![]);
        // b was adopted meanwhile (no longer an orphan): its mark is dropped.
        assert_eq!(m.pass(vec![o("a"), o("c")]), vec![o("a")]);
        assert_eq!(m.len(), 2);
        // b orphaned again: it needs two passes again.
        assert_eq!(m.pass(vec![o("b"), o("c")]), vec![o("c")]);
        assert_eq!(m.pass(vec![]), vec![]);
        assert!(m.is_empty());
    }
}
