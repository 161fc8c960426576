//! Pure translation (`crate::policy::model`): NetworkPolicy + the cached pods and namespaces →
//! the Neutron security groups, rules and address groups that enforce it, and the diffs that
//! turn what Neutron has into that. No I/O: every decision here is unit-tested.
//!
//! # Design
//!
//! * **Peers are address groups.** Every peer of a rule (podSelector, namespaceSelector, both,
//!   or an ipBlock) is one Neutron address group; rules name it with `remote_address_group_id`.
//!   A pod joining or leaving a peer set is one `add_addresses`/`remove_addresses` call, never a
//!   rule change. Pod peers hold `/32` and `/128` addresses; an ipBlock's group holds `cidr`
//!   minus its `except`s as a minimal CIDR list. Address group keys ([`AgKey`]) are derived from
//!   the policy uid, the direction, the rule index, the peer index and the resolved port, so
//!   the same input always yields the same key and updates are diffs.
//! * **One security group per policy and direction** (`Ingress`, `Egress`), attached to the
//!   ports of the selected pods. Several policies selecting a pod are a union: its port gets all
//!   their groups (Neutron rules only allow, so the sum is the union Kubernetes asks for).
//! * **Default deny.** Neutron groups only allow; isolation comes from what a port *lacks*. A
//!   pod no policy selects keeps the configured default groups ([`PodGroups::Default`]). A pod
//!   some policy selects gets [`BaseGroup::Infra`] (ingress from the configured always-allowed
//!   CIDRs: the nodes, for kubelet probes, and whatever else the operator lists), plus
//!   [`BaseGroup::IngressOpen`] (allow all ingress) unless a policy selecting it has type
//!   `Ingress`, plus [`BaseGroup::EgressOpen`] unless a policy selecting it has type `Egress`,
//!   plus the groups of the policies selecting it. So `ingress: []` denies all ingress,
//!   `ingress: [{}]` allows all, and an egress-only policy leaves ingress open.
//! * **Named ports.** Ingress: a named port is resolved against the *selected* pod's container
//!   ports (name and protocol). Pods of one policy whose resolutions differ get different
//!   ingress groups (the [`SgKey::variant`] is derived from the resolution), so no pod is opened
//!   on a port another pod happens to call by that name, and a pod without the name gets no rule
//!   for it. Egress: a named port is resolved against the *peer* pods: the peer's address group
//!   is split by resolved port (one group and rule per distinct protocol/port), so each peer is
//!   reachable only on its own port. A named port towards an ipBlock cannot be resolved and
//!   allows nothing (with a note), never everything.
//! * **Families.** Rules with an address-group or "any" remote exist for each configured
//!   family ([`ModelSettings::families`]), so a pod joining never needs a new rule; ipBlock
//!   rules exist for the ipBlock's family only.
//!
//! The reconciler computes [`desired`] for one policy from the shared caches (in memory, no
//! API LIST), then applies [`diff_security_groups`], [`diff_address_groups`] (create address
//! groups before the rules that name them, delete them after) and [`diff_rules`] per security
//! group, and [`pod_groups`] for the ports of the pods whose set changed. A pod event concerns
//! only the policies [`concerns`] names for its old or new state, a namespace label change only
//! those [`uses_namespace_labels`]; for a label change that is typically one address moved in
//! one group. An ingress variant group exists while some selected pod has that resolution (it is
//! created before the port of the first such pod). Where the cloud lacks the `address-group`
//! extension, [`expand_address_groups`] turns the rules into `remote_ip_prefix` rules.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kuryr_core::crd::KuryrPort;
use kuryr_openstack::neutron::{Direction, EtherType, SecurityGroupRule, SecurityGroupRuleCreate};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

// ------------------------------------------------------------------------------------ inputs

/// A transport protocol a policy port can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// `TCP`/`UDP`/`SCTP` (Kubernetes spelling); `None` for anything else.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Neutron's name.
    pub fn neutron(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    fn from_neutron(s: &str) -> Option<Protocol> {
        match s {
            "tcp" | "6" => Some(Protocol::Tcp),
            "udp" | "17" => Some(Protocol::Udp),
            "sctp" | "132" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// A container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// What the model needs of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Sorted; empty until known (such a pod can be selected, but is nobody's peer yet).
    pub ips: Vec<IpAddr>,
    pub ports: Vec<ContainerPort>,
}

impl PodInfo {
    /// From the API object: `None` for host-network pods (policies do not apply to them, and
    /// their address is the node's). Terminal pods (Succeeded/Failed) keep no addresses:
    /// theirs may already belong to another pod.
    pub fn from_pod(pod: &Pod) -> Option<PodInfo> {
        let spec = pod.spec.as_ref()?;
        if spec.host_network == Some(true) {
            return None;
        }
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = Vec::new();
        if !is_terminal(pod) {
            let listed = status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| p.ip.as_str());
            let single = status.and_then(|s| s.pod_ip.as_deref());
            ips.extend(listed.chain(single).filter_map(|s| s.parse::<IpAddr>().ok()));
            ips.sort();
            ips.dedup();
        }
        let ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(ContainerPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: u16::try_from(p.container_port).ok().filter(|p| *p > 0)?,
                    protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?,
                })
            })
            .collect();
        Some(PodInfo { namespace: pod.namespace()?, name: pod.name_any(), labels: pod.labels().clone(), ips, ports })
    }

    /// As [`PodInfo::from_pod`]; while the Pod's status has no address yet (kubelet writes it
    /// only once the sandbox and the containers started, up to seconds after the port is
    /// plugged), the addresses of the pod's KuryrPort's default VIF (`kp`: the KuryrPort of the
    /// pod's namespace and name, asked for only then), which exist before the port is even
    /// plugged. The status is preferred when it has addresses (the two agree: kubelet reports
    /// what the CNI wired, the VIF's). See [`vif_ips`] for which KuryrPort counts.
    pub fn from_pod_and_port<K>(pod: &Pod, kp: impl FnOnce() -> Option<K>) -> Option<PodInfo>
    where
        K: std::ops::Deref<Target = KuryrPort>,
    {
        let mut info = PodInfo::from_pod(pod)?;
        if info.ips.is_empty() && !is_terminal(pod) {
            if let Some(kp) = kp() {
                info.ips = vif_ips(pod, &kp);
            }
        }
        Some(info)
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The port this pod calls `name` for `protocol` (Kubernetes matches both).
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports.iter().find(|p| p.name.as_deref() == Some(name) && p.protocol == protocol).map(|p| p.port)
    }
}

/// A Succeeded or Failed pod: its addresses may already belong to another pod.
fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// The addresses (sorted) of `kp`'s default VIF when `kp` is `pod`'s port: written for this pod
/// (`spec.podUid` is the pod's uid: a KuryrPort left by an earlier pod of the same name is not)
/// and not being deleted (its port goes back to a pool or away, and its address with it). Empty
/// otherwise, and when the VIF cannot be read.
pub fn vif_ips(pod: &Pod, kp: &KuryrPort) -> Vec<IpAddr> {
    let uid = pod.metadata.uid.as_deref().filter(|u| !u.is_empty());
    if uid != Some(kp.spec.pod_uid.as_str()) || kp.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let Some(Ok(vif)) = kp.status.as_ref().and_then(|s| s.default_vif()).map(|(_, v)| v) else { return Vec::new() };
    let mut ips: Vec<IpAddr> = vif.ips.iter().map(|i| i.address).collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The cached cluster the model reads: pods, namespace labels and Services.
#[derive(Clone, Copy, Debug)]
pub struct Cluster<'a> {
    pub pods: &'a [PodInfo],
    /// Namespace name → labels (a namespace missing here matches no namespaceSelector).
    pub namespaces: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// Services with ClusterIPs: egress to a peer also allows the VIPs of the Services it backs.
    pub services: &'a [ServiceInfo],
}

/// Settings of the translation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSettings {
    /// The families pods have addresses of; address-group and "any" rules exist for each.
    pub families: Vec<EtherType>,
    /// Ingress every policy-selected pod accepts (node subnets for kubelet probes; upstream
    /// allowed the worker and service subnets).
    pub always_allow_ingress: Vec<IpNet>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings { families: vec![EtherType::IPv4], always_allow_ingress: Vec::new() }
    }
}

// ----------------------------------------------------------------------------------- outputs

/// The remote of a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Remote {
    /// Any address of the rule's ethertype.
    Any,
    /// One CIDR (the always-allowed CIDRs; also the fallback where address groups are missing).
    Prefix(IpNet),
    AddressGroup(AgKey),
}

/// One Neutron rule, as the model wants it (the group it belongs to is the map key above it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSpec {
    pub direction: Dir,
    pub ethertype: Family,
    /// `None`: any protocol (then no ports).
    pub protocol: Option<Protocol>,
    /// Inclusive range; `None`: all ports.
    pub ports: Option<(u16, u16)>,
    pub remote: Remote,
}

/// [`Direction`] with an order (for sets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    pub fn neutron(self) -> Direction {
        match self {
            Dir::Ingress => Direction::Ingress,
            Dir::Egress => Direction::Egress,
        }
    }
    fn short(self) -> &'static str {
        match self {
            Dir::Ingress => "in",
            Dir::Egress => "eg",
        }
    }
}

/// [`EtherType`] with an order (for sets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn neutron(self) -> EtherType {
        match self {
            Family::V4 => EtherType::IPv4,
            Family::V6 => EtherType::IPv6,
        }
    }
    fn of_net(n: &IpNet) -> Family {
        match n {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
    fn of(e: EtherType) -> Family {
        match e {
            EtherType::IPv4 => Family::V4,
            EtherType::IPv6 => Family::V6,
        }
    }
}

/// Stable key of an address group: `<policy uid>/<in|eg>/<rule>/<peer>[/<proto>-<port>]`
/// (`peer` is `all` for the whole cluster: a named egress port with no `to`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgKey(pub String);

impl AgKey {
    fn new(uid: &str, dir: Dir, rule: usize, peer: &str, port: Option<(Protocol, u16)>) -> AgKey {
        let mut k = format!("{uid}/{}/{rule}/{peer}", dir.short());
        if let Some((p, n)) = port {
            k.push_str(&format!("/{}-{n}", p.neutron()));
        }
        AgKey(k)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Stable key of a policy's security group: policy uid, direction and, for ingress with named
/// ports, the variant (a hash of the pods' resolution; empty otherwise).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SgKey {
    pub policy_uid: String,
    pub direction: Dir,
    pub variant: String,
}

impl SgKey {
    /// `<uid>/<in|eg>[/<variant>]`, for names and descriptions.
    pub fn as_string(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.policy_uid, self.direction.short())
        } else {
            format!("{}/{}/{}", self.policy_uid, self.direction.short(), self.variant)
        }
    }
}

/// Groups every policy-selected pod gets, besides its policies' groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BaseGroup {
    /// Allow all ingress: for pods no `Ingress` policy selects.
    IngressOpen,
    /// Allow all egress: for pods no `Egress` policy selects.
    EgressOpen,
    /// Ingress from [`ModelSettings::always_allow_ingress`].
    Infra,
}

/// A group on a port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupRef {
    Base(BaseGroup),
    Policy(SgKey),
}

/// What a pod's port should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodGroups {
    /// No policy selects the pod: the configured default groups.
    Default,
    /// Exactly these groups.
    Groups(BTreeSet<GroupRef>),
}

/// Everything one NetworkPolicy asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Selected pods are ingress-isolated (policy type `Ingress`).
    pub ingress: bool,
    /// Selected pods are egress-isolated (policy type `Egress`).
    pub egress: bool,
    /// The policy's security groups and their rules (a group may have none: deny).
    pub groups: BTreeMap<SgKey, BTreeSet<RuleSpec>>,
    /// Address groups the rules name, with their addresses (`/32`, `/128` or ipBlock CIDRs).
    pub address_groups: BTreeMap<AgKey, BTreeSet<String>>,
    /// Selected pods (`namespace/name`) → this policy's groups their ports get.
    pub pods: BTreeMap<String, BTreeSet<SgKey>>,
    /// What the policy asks for that cannot be expressed (nothing is allowed for it); one
    /// Warning Event each.
    pub notes: Vec<String>,
}

// --------------------------------------------------------------------------- label selectors

/// Whether `labels` match `sel` (`matchLabels` and `matchExpressions` ANDed; empty = all).
/// An unknown operator matches nothing.
pub fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let ml = sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    ml && sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|v| values.contains(v)),
            "NotIn" => got.is_none_or(|v| !values.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    })
}

// -------------------------------------------------------------------------------- ipBlocks

/// `cidr` minus `except`s as a minimal list of CIDRs (host bits of the inputs are cleared).
/// An except of the other family or outside `cidr` removes nothing.
pub fn cidr_minus(cidr: IpNet, except: &[IpNet]) -> Vec<IpNet> {
    let mut nets = vec![cidr.trunc()];
    for ex in except.iter().map(IpNet::trunc) {
        let mut next = Vec::with_capacity(nets.len() + 1);
        for n in nets {
            if ex.contains(&n) {
                continue;
            }
            if !n.contains(&ex) {
                next.push(n);
                continue;
            }
            // Walk down from n towards ex, keeping the half that does not contain it.
            let mut cur = n;
            while cur.prefix_len() < ex.prefix_len() {
                let Ok(mut halves) = cur.subnets(cur.prefix_len() + 1) else { break };
                let (Some(a), Some(b)) = (halves.next(), halves.next()) else { break };
                if a.contains(&ex) {
                    next.push(b);
                    cur = a;
                } else {
                    next.push(a);
                    cur = b;
                }
            }
        }
        nets = next;
    }
    IpNet::aggregate(&nets)
}

/// A pod address as Neutron stores it in an address group.
pub fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

// ------------------------------------------------------------------------------ translation

/// A policy port, checked: protocol plus number range, or a name, or just a protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PortSpec {
    /// No `ports`: every protocol and port.
    All,
    Range(Protocol, Option<(u16, u16)>),
    Named(Protocol, String),
}

fn port_specs(ports: Option<&Vec<NetworkPolicyPort>>, notes: &mut Vec<String>, what: &str) -> Vec<PortSpec> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else { return vec![PortSpec::All] };
    let mut out = Vec::new();
    for p in ports {
        let proto_s = p.protocol.as_deref().unwrap_or("TCP");
        let Some(proto) = Protocol::parse(proto_s) else {
            notes.push(format!("{what}: protocol {proto_s} is not supported (TCP, UDP, SCTP); that port allows nothing"));
            continue;
        };
        match &p.port {
            None => out.push(PortSpec::Range(proto, None)),
            Some(IntOrString::String(name)) => match name.parse::<i32>() {
                // A numeric string is a number (the API server accepts it for `port`).
                Ok(n) => push_range(&mut out, proto, n, p.end_port, notes, what),
                Err(_) => {
                    if p.end_port.is_some() {
                        notes.push(format!("{what}: endPort with the named port {name} is ignored"));
                    }
                    out.push(PortSpec::Named(proto, name.clone()))
                }
            },
            Some(IntOrString::Int(n)) => push_range(&mut out, proto, *n, p.end_port, notes, what),
        }
    }
    out
}

fn push_range(out: &mut Vec<PortSpec>, proto: Protocol, port: i32, end: Option<i32>, notes: &mut Vec<String>, what: &str) {
    let valid = |n: i32| u16::try_from(n).ok().filter(|n| *n > 0);
    let (Some(min), Some(max)) = (valid(port), valid(end.unwrap_or(port))) else {
        notes.push(format!("{what}: port {port}..{} is out of range; it allows nothing", end.unwrap_or(port)));
        return;
    };
    if max < min {
        notes.push(format!("{what}: endPort {max} is below port {min}; it allows nothing"));
        return;
    }
    out.push(PortSpec::Range(proto, Some((min, max))));
}

/// The policy types, defaulted as the API server does: `Ingress` always, `Egress` when there
/// are egress rules.
pub fn policy_types(np: &NetworkPolicy) -> (bool, bool) {
    let Some(spec) = np.spec.as_ref() else { return (true, false) };
    match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        Some(t) => (t.iter().any(|t| t == "Ingress"), t.iter().any(|t| t == "Egress")),
        None => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// A resolved peer: pods, a CIDR list, or everything.
enum Peer<'a> {
    Pods(Vec<&'a PodInfo>),
    Cidrs(Family, Vec<IpNet>),
}

fn resolve_peer<'a>(
    p: &NetworkPolicyPeer,
    policy_ns: &str,
    cluster: &Cluster<'a>,
    notes: &mut Vec<String>,
    what: &str,
) -> Option<Peer<'a>> {
    if let Some(b) = &p.ip_block {
        let Ok(cidr) = b.cidr.parse::<IpNet>() else {
            notes.push(format!("{what}: ipBlock cidr {} is not a CIDR; it allows nothing", b.cidr));
            return None;
        };
        let mut except = Vec::new();
        for e in b.except.iter().flatten() {
            match e.parse::<IpNet>() {
                Ok(n) => except.push(n),
                Err(_) => {
                    // Dropping an except would allow more than asked: drop the whole peer.
                    notes.push(format!("{what}: ipBlock except {e} is not a CIDR; the ipBlock allows nothing"));
                    return None;
                }
            }
        }
        return Some(Peer::Cidrs(Family::of_net(&cidr), cidr_minus(cidr, &except)));
    }
    if p.pod_selector.is_none() && p.namespace_selector.is_none() {
        notes.push(format!("{what}: a peer without podSelector, namespaceSelector or ipBlock allows nothing"));
        return None;
    }
    let in_ns = |pod: &PodInfo| match &p.namespace_selector {
        None => pod.namespace == policy_ns,
        Some(sel) => cluster.namespaces.get(&pod.namespace).is_some_and(|labels| selects(sel, labels)),
    };
    let pods =
        cluster.pods.iter().filter(|pod| in_ns(pod) && p.pod_selector.as_ref().is_none_or(|sel| selects(sel, &pod.labels))).collect();
    Some(Peer::Pods(pods))
}

/// Rule output helper: one rule per family. The whole port range is no range, as Neutron
/// lists it.
fn push_rules(
    out: &mut BTreeSet<RuleSpec>,
    dir: Dir,
    families: &[Family],
    proto: Option<Protocol>,
    ports: Option<(u16, u16)>,
    remote: Remote,
) {
    let ports = ports.filter(|r| *r != (1, 65535));
    for f in families {
        out.insert(RuleSpec { direction: dir, ethertype: *f, protocol: proto, ports, remote: remote.clone() });
    }
}

/// 64-bit FNV-1a, hex: a short stable name for a named-port resolution.
fn fnv(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// How a pod resolves the named ports of a policy's ingress rules.
type Resolution = BTreeMap<(Protocol, String), Option<u16>>;

/// The desired Neutron state of one policy.
pub fn desired(np: &NetworkPolicy, cluster: &Cluster<'_>, settings: &ModelSettings) -> PolicyState {
    let namespace = np.namespace().unwrap_or_default();
    let uid = np.uid().unwrap_or_else(|| format!("{namespace}.{}", np.name_any()));
    let (ingress, egress) = policy_types(np);
    let mut st = PolicyState { uid: uid.clone(), namespace: namespace.clone(), name: np.name_any(), ingress, egress, ..Default::default() };
    let Some(spec) = np.spec.as_ref() else { return st };
    let cx = Translation { uid, namespace, cluster: *cluster, families: families(settings) };
    let selected = cx.selected(spec.pod_selector.as_ref());
    if ingress {
        cx.ingress_groups(&mut st, spec.ingress.as_deref().unwrap_or_default(), &selected);
    }
    if egress {
        cx.egress_group(&mut st, spec.egress.as_deref().unwrap_or_default(), &selected);
    }
    st.notes.dedup();
    st
}

/// The configured families, sorted and deduplicated.
fn families(settings: &ModelSettings) -> Vec<Family> {
    let mut f: Vec<Family> = settings.families.iter().map(|e| Family::of(*e)).collect();
    f.sort();
    f.dedup();
    f
}

/// A policy's remotes, per ingress rule: each with the families its rules need.
type RulePeers = Vec<Vec<(Remote, Vec<Family>)>>;

/// Ingress selected pods grouped by named-port resolution, under their variant names.
type Variants<'a> = BTreeMap<String, (Resolution, Vec<&'a PodInfo>)>;

/// What every phase of [`desired`] reads: the policy's identity, the cluster and the families.
struct Translation<'a> {
    uid: String,
    namespace: String,
    cluster: Cluster<'a>,
    families: Vec<Family>,
}

impl<'a> Translation<'a> {
    /// The pods of the policy's namespace its podSelector selects.
    fn selected(&self, pod_selector: Option<&LabelSelector>) -> Vec<&'a PodInfo> {
        self.cluster.pods.iter().filter(|p| p.namespace == self.namespace && pod_selector.is_none_or(|s| selects(s, &p.labels))).collect()
    }

    /// Records the address group `key` holding a resolved peer's addresses; returns the remote
    /// naming it and the families its rules need.
    fn peer_group(&self, st: &mut PolicyState, key: AgKey, peer: &Peer<'_>) -> (Remote, Vec<Family>) {
        match peer {
            Peer::Pods(pods) => {
                let addrs = pods.iter().flat_map(|p| p.ips.iter().copied().map(host_cidr)).collect();
                st.address_groups.insert(key.clone(), addrs);
                (Remote::AddressGroup(key), self.families.clone())
            }
            Peer::Cidrs(f, nets) => {
                st.address_groups.insert(key.clone(), nets.iter().map(IpNet::to_string).collect());
                (Remote::AddressGroup(key), vec![*f])
            }
        }
    }

    /// The ingress groups: one per named-port resolution of the selected pods, each holding
    /// the rules as that resolution reads them, on the ports of its pods.
    fn ingress_groups(&self, st: &mut PolicyState, rules: &[NetworkPolicyIngressRule], selected: &[&'a PodInfo]) {
        let (peers, ports) = self.ingress_peers_and_ports(st, rules);
        for (variant, (resolution, pods)) in ingress_variants(&ports, selected) {
            let key = SgKey { policy_uid: self.uid.clone(), direction: Dir::Ingress, variant };
            let set = ingress_rules(&ports, &peers, &resolution);
            for pod in pods {
                st.pods.entry(pod.key()).or_default().insert(key.clone());
            }
            st.groups.insert(key, set);
        }
    }

    /// Peers (shared by all variants, with the families their rules need) and ports per
    /// ingress rule; the peers' address groups are recorded in `st`.
    fn ingress_peers_and_ports(&self, st: &mut PolicyState, rules: &[NetworkPolicyIngressRule]) -> (RulePeers, Vec<Vec<PortSpec>>) {
        let mut peers: RulePeers = Vec::new();
        let mut ports: Vec<Vec<PortSpec>> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let what = format!("ingress rule {i}");
            ports.push(port_specs(r.ports.as_ref(), &mut st.notes, &what));
            if ports.last().is_some_and(Vec::is_empty) {
                // No valid port: the rule allows nothing, so it needs no peer groups either.
                peers.push(Vec::new());
                continue;
            }
            peers.push(self.ingress_remotes(st, i, r.from.as_ref(), &what));
        }
        (peers, ports)
    }

    /// The remotes of ingress rule `rule`: any source without `from`, else one address group
    /// per peer that resolves.
    fn ingress_remotes(
        &self,
        st: &mut PolicyState,
        rule: usize,
        from: Option<&Vec<NetworkPolicyPeer>>,
        what: &str,
    ) -> Vec<(Remote, Vec<Family>)> {
        let Some(from) = from.filter(|f| !f.is_empty()) else { return vec![(Remote::Any, self.families.clone())] };
        let mut remotes = Vec::new();
        for (j, p) in from.iter().enumerate() {
            let key = AgKey::new(&self.uid, Dir::Ingress, rule, &j.to_string(), None);
            if let Some(peer) = resolve_peer(p, &self.namespace, &self.cluster, &mut st.notes, &format!("{what} peer {j}")) {
                remotes.push(self.peer_group(st, key, &peer));
            }
        }
        remotes
    }

    /// The egress group: every egress rule's ports towards its peers, on the ports of the
    /// selected pods.
    fn egress_group(&self, st: &mut PolicyState, rules: &[NetworkPolicyEgressRule], selected: &[&'a PodInfo]) {
        let key = SgKey { policy_uid: self.uid.clone(), direction: Dir::Egress, variant: String::new() };
        let mut set = BTreeSet::new();
        for (i, r) in rules.iter().enumerate() {
            self.egress_rule(st, &mut set, i, r);
        }
        for pod in selected {
            st.pods.entry(pod.key()).or_default().insert(key.clone());
        }
        st.groups.insert(key, set);
    }

    /// The rules of egress rule `i`: each of its ports towards each of its peers.
    fn egress_rule(&self, st: &mut PolicyState, set: &mut BTreeSet<RuleSpec>, i: usize, r: &NetworkPolicyEgressRule) {
        let what = format!("egress rule {i}");
        let ports = port_specs(r.ports.as_ref(), &mut st.notes, &what);
        if ports.is_empty() {
            return;
        }
        let resolved = self.egress_peers(st, r.to.as_ref(), &what);
        for (peer_name, peer) in &resolved {
            for p in &ports {
                match (p, peer) {
                    (PortSpec::Named(proto, name), None) => {
                        // Any destination on a named port: every pod of the cluster that has it.
                        let all: Vec<&PodInfo> = self.cluster.pods.iter().collect();
                        named_egress(st, set, &self.families, &self.uid, i, peer_name, *proto, name, &all);
                    }
                    (PortSpec::Named(proto, name), Some(Peer::Pods(pods))) => {
                        named_egress(st, set, &self.families, &self.uid, i, peer_name, *proto, name, pods);
                    }
                    (PortSpec::Named(_, name), Some(Peer::Cidrs(..))) => {
                        st.notes.push(format!(
                            "{what} peer {peer_name}: the named port {name} cannot be resolved for an ipBlock; it allows nothing"
                        ));
                    }
                    (other, peer) => {
                        let (proto, range) = match other {
                            PortSpec::Range(proto, r) => (Some(*proto), *r),
                            _ => (None, None),
                        };
                        let (remote, families) = match peer {
                            None => (Remote::Any, self.families.clone()),
                            Some(peer) => self.peer_group(st, AgKey::new(&self.uid, Dir::Egress, i, peer_name, None), peer),
                        };
                        push_rules(set, Dir::Egress, &families, proto, range, remote);
                    }
                }
                // The same peers through their Services' ClusterIPs (any destination needs none).
                match peer {
                    Some(Peer::Pods(pods)) => services::vip_rules(set, self.cluster.services, &services::Behind::Pods(pods), p),
                    Some(Peer::Cidrs(_, nets)) => {
                        services::vip_rules(set, self.cluster.services, &services::Behind::Cidrs(nets, self.cluster.pods), p)
                    }
                    None => {}
                }
            }
        }
    }

    /// The peers of an egress rule's `to`, by name; `None` peer = any destination.
    fn egress_peers(&self, st: &mut PolicyState, to: Option<&Vec<NetworkPolicyPeer>>, what: &str) -> Vec<(String, Option<Peer<'a>>)> {
        let mut resolved: Vec<(String, Option<Peer<'a>>)> = Vec::new();
        match to.filter(|t| !t.is_empty()) {
            None => resolved.push(("all".into(), None)),
            Some(to) => {
                for (j, p) in to.iter().enumerate() {
                    if let Some(peer) = resolve_peer(p, &self.namespace, &self.cluster, &mut st.notes, &format!("{what} peer {j}")) {
                        resolved.push((j.to_string(), Some(peer)));
                    }
                }
            }
        }
        resolved
    }
}

/// The selected pods grouped by how they resolve the ingress rules' named ports, by variant name.
fn ingress_variants<'a>(ports: &[Vec<PortSpec>], selected: &[&'a PodInfo]) -> Variants<'a> {
    // Named ports the ingress rules use: each selected pod's resolution picks its variant.
    let named: BTreeSet<(Protocol, String)> = ports
        .iter()
        .flatten()
        .filter_map(|p| match p {
            PortSpec::Named(proto, n) => Some((*proto, n.clone())),
            _ => None,
        })
        .collect();
    let mut by_resolution: BTreeMap<Resolution, Vec<&'a PodInfo>> = BTreeMap::new();
    for pod in selected {
        let resolution: Resolution = named.iter().map(|(proto, n)| ((*proto, n.clone()), pod.named_port(n, *proto))).collect();
        by_resolution.entry(resolution).or_default().push(*pod);
    }
    if by_resolution.is_empty() && named.is_empty() {
        // No pod selected yet: the group exists anyway, so a pod that comes gets it at once.
        by_resolution.insert(BTreeMap::new(), Vec::new());
    }
    name_variants(named.is_empty(), by_resolution)
}

/// Variant name: a short hash of the resolution (empty without named ports). Two
/// resolutions never share a group: on a hash collision the later one gets a suffix.
fn name_variants<'a>(unnamed: bool, by_resolution: BTreeMap<Resolution, Vec<&'a PodInfo>>) -> Variants<'a> {
    let mut variants: Variants<'a> = BTreeMap::new();
    for (resolution, pods) in by_resolution {
        let mut variant = if unnamed {
            String::new()
        } else {
            let text: Vec<String> = resolution
                .iter()
                .map(|((proto, n), port)| format!("{n}/{}={}", proto.neutron(), port.map(|p| p.to_string()).unwrap_or_default()))
                .collect();
            fnv(&text.join(","))[..12].to_string()
        };
        let base = variant.clone();
        let mut n = 1;
        while variants.contains_key(&variant) {
            n += 1;
            variant = format!("{base}-{n}");
        }
        variants.insert(variant, (resolution, pods));
    }
    variants
}

/// The rules of one ingress variant: every rule's ports, named ones as `resolution` reads
/// them (a name it lacks allows nothing), from each of the rule's peers.
fn ingress_rules(ports: &[Vec<PortSpec>], peers: &RulePeers, resolution: &Resolution) -> BTreeSet<RuleSpec> {
    let mut set = BTreeSet::new();
    for (i, rule_ports) in ports.iter().enumerate() {
        for p in rule_ports {
            let (proto, range) = match p {
                PortSpec::All => (None, None),
                PortSpec::Range(proto, r) => (Some(*proto), *r),
                PortSpec::Named(proto, n) => match resolution.get(&(*proto, n.clone())).copied().flatten() {
                    Some(port) => (Some(*proto), Some((port, port))),
                    None => continue,
                },
            };
            for (remote, fams) in &peers[i] {
                push_rules(&mut set, Dir::Ingress, fams, proto, range, remote.clone());
            }
        }
    }
    set
}

/// Egress to `pods` on the named port `name`: one address group and rule set per distinct
/// resolved port, holding the pods that resolve to it.
#[allow(clippy::too_many_arguments)]
fn named_egress(
    st: &mut PolicyState,
    set: &mut BTreeSet<RuleSpec>,
    families: &[Family],
    uid: &str,
    rule: usize,
    peer: &str,
    proto: Protocol,
    name: &str,
    pods: &[&PodInfo],
) {
    let mut by_port: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for pod in pods {
        if let Some(port) = pod.named_port(name, proto) {
            by_port.entry(port).or_default().extend(pod.ips.iter().copied().map(host_cidr));
        }
    }
    for (port, addrs) in by_port {
        let k = AgKey::new(uid, Dir::Egress, rule, peer, Some((proto, port)));
        st.address_groups.entry(k.clone()).or_default().extend(addrs);
        push_rules(set, Dir::Egress, families, Some(proto), Some((port, port)), Remote::AddressGroup(k));
    }
}

/// Whether `pod` matters to `np`: selected by it, or a possible peer of one of its rules (a
/// pod/namespace selector peer it matches, or an egress rule to anywhere on a named port). A
/// pod event needs [`desired`] again only for the policies this holds for with the old or the
/// new pod; the others are untouched.
pub fn concerns(np: &NetworkPolicy, pod: &PodInfo, namespaces: &BTreeMap<String, BTreeMap<String, String>>) -> bool {
    let Some(spec) = np.spec.as_ref() else { return false };
    let ns = np.namespace().unwrap_or_default();
    if pod.namespace == ns && spec.pod_selector.as_ref().is_none_or(|s| selects(s, &pod.labels)) {
        return true;
    }
    let is_peer = |p: &NetworkPolicyPeer| {
        if p.ip_block.is_some() || (p.pod_selector.is_none() && p.namespace_selector.is_none()) {
            return false;
        }
        let in_ns = match &p.namespace_selector {
            None => pod.namespace == ns,
            Some(sel) => namespaces.get(&pod.namespace).is_some_and(|l| selects(sel, l)),
        };
        in_ns && p.pod_selector.as_ref().is_none_or(|sel| selects(sel, &pod.labels))
    };
    let (ingress, egress) = policy_types(np);
    let named = |ports: Option<&Vec<NetworkPolicyPort>>| {
        ports.into_iter().flatten().any(|p| matches!(&p.port, Some(IntOrString::String(s)) if s.parse::<i32>().is_err()))
    };
    (ingress && spec.ingress.iter().flatten().any(|r| r.from.iter().flatten().any(is_peer)))
        || (egress
            && spec.egress.iter().flatten().any(|r| match r.to.as_ref().filter(|t| !t.is_empty()) {
                None => named(r.ports.as_ref()),
                Some(to) => to.iter().any(is_peer),
            }))
}

/// Whether a namespace label change can change what `np` wants (it has a namespaceSelector peer).
pub fn uses_namespace_labels(np: &NetworkPolicy) -> bool {
    let Some(spec) = np.spec.as_ref() else { return false };
    let (ingress, egress) = policy_types(np);
    let from = spec.ingress.iter().flatten().filter(|_| ingress).flat_map(|r| r.from.iter().flatten());
    let to = spec.egress.iter().flatten().filter(|_| egress).flat_map(|r| r.to.iter().flatten());
    from.chain(to).any(|p| p.namespace_selector.is_some())
}

/// The groups of a pod's port, given the desired states of the policies of its namespace
/// (others cannot select it).
pub fn pod_groups<'a>(pod_key: &str, policies: impl IntoIterator<Item = &'a PolicyState>) -> PodGroups {
    let mut groups = BTreeSet::new();
    let (mut ingress, mut egress, mut selected) = (false, false, false);
    for p in policies {
        if let Some(keys) = p.pods.get(pod_key) {
            selected = true;
            ingress |= p.ingress;
            egress |= p.egress;
            groups.extend(keys.iter().cloned().map(GroupRef::Policy));
        }
    }
    if !selected {
        return PodGroups::Default;
    }
    groups.insert(GroupRef::Base(BaseGroup::Infra));
    if !ingress {
        groups.insert(GroupRef::Base(BaseGroup::IngressOpen));
    }
    if !egress {
        groups.insert(GroupRef::Base(BaseGroup::EgressOpen));
    }
    PodGroups::Groups(groups)
}

/// The rules of a base group.
pub fn base_rules(g: BaseGroup, settings: &ModelSettings) -> BTreeSet<RuleSpec> {
    let families: Vec<Family> = settings.families.iter().map(|e| Family::of(*e)).collect();
    let mut out = BTreeSet::new();
    match g {
        BaseGroup::IngressOpen => push_rules(&mut out, Dir::Ingress, &families, None, None, Remote::Any),
        BaseGroup::EgressOpen => push_rules(&mut out, Dir::Egress, &families, None, None, Remote::Any),
        BaseGroup::Infra => {
            for n in &settings.always_allow_ingress {
                let n = n.trunc();
                let remote = if n.prefix_len() == 0 { Remote::Any } else { Remote::Prefix(n) };
                push_rules(&mut out, Dir::Ingress, &[Family::of_net(&n)], None, None, remote);
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------- diffs

/// Neutron calls that turn the current address groups into the desired ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgDiff {
    /// Groups to create, with their addresses (before the rules naming them).
    pub create: Vec<(AgKey, Vec<String>)>,
    /// `add_addresses` per existing group id.
    pub add: Vec<(String, Vec<String>)>,
    /// `remove_addresses` per existing group id.
    pub remove: Vec<(String, Vec<String>)>,
    /// Group ids to delete (after the rules naming them are gone).
    pub delete: Vec<String>,
}

impl AgDiff {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.add.is_empty() && self.remove.is_empty() && self.delete.is_empty()
    }
}

/// A current address group: its Neutron id and addresses (as Neutron lists them, normalized).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentAg {
    pub id: String,
    pub addresses: BTreeSet<String>,
}

/// Security groups to create (by key) and delete (by id): `current` maps the keys of the
/// groups Neutron has (found by name or tag) to their ids.
pub fn diff_security_groups<'a>(
    desired: impl IntoIterator<Item = &'a SgKey>,
    current: &BTreeMap<SgKey, String>,
) -> (Vec<SgKey>, Vec<String>) {
    let desired: BTreeSet<&SgKey> = desired.into_iter().collect();
    let create = desired.iter().filter(|k| !current.contains_key(**k)).map(|k| (*k).clone()).collect();
    let delete = current.iter().filter(|(k, _)| !desired.contains(k)).map(|(_, id)| id.clone()).collect();
    (create, delete)
}

/// Diff of address groups by key.
pub fn diff_address_groups(desired: &BTreeMap<AgKey, BTreeSet<String>>, current: &BTreeMap<AgKey, CurrentAg>) -> AgDiff {
    let mut d = AgDiff::default();
    for (k, want) in desired {
        match current.get(k) {
            None => d.create.push((k.clone(), want.iter().cloned().collect())),
            Some(cur) => {
                let add: Vec<String> = want.difference(&cur.addresses).cloned().collect();
                let remove: Vec<String> = cur.addresses.difference(want).cloned().collect();
                if !add.is_empty() {
                    d.add.push((cur.id.clone(), add));
                }
                if !remove.is_empty() {
                    d.remove.push((cur.id.clone(), remove));
                }
            }
        }
    }
    d.delete = current.iter().filter(|(k, _)| !desired.contains_key(k)).map(|(_, c)| c.id.clone()).collect();
    d
}

/// Neutron calls that turn one security group's rules into the desired ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleDiff {
    /// One bulk POST.
    pub create: Vec<RuleSpec>,
    /// Rule ids to delete (rules Neutron added at creation included).
    pub delete: Vec<String>,
}

impl RuleSpec {
    /// The model's view of a Neutron rule; `None` for what the model never makes (a
    /// `remote_group_id`, an address group it does not know, a protocol it does not use), which
    /// the diff then deletes.
    pub fn from_neutron(r: &SecurityGroupRule, ag_keys: &HashMap<String, AgKey>) -> Option<RuleSpec> {
        let remote = match (&r.remote_ip_prefix, &r.remote_group_id, &r.remote_address_group_id) {
            (None, None, None) => Remote::Any,
            (Some(p), None, None) => match p.parse::<IpNet>().ok()?.trunc() {
                // Neutron may keep 0.0.0.0/0 or store it as no prefix: both are "any".
                n if n.prefix_len() == 0 => Remote::Any,
                n => Remote::Prefix(n),
            },
            (None, None, Some(ag)) => Remote::AddressGroup(ag_keys.get(ag)?.clone()),
            _ => return None,
        };
        let protocol = match r.protocol.as_deref() {
            None | Some("any") | Some("") => None,
            Some(p) => Some(Protocol::from_neutron(p)?),
        };
        let ports = match (protocol, r.port_range_min, r.port_range_max) {
            (_, None, None) => None,
            (Some(_), Some(a), Some(b)) if (a, b) == (1, 65535) => None,
            (Some(_), Some(a), Some(b)) => Some((a, b)),
            (Some(_), Some(a), None) => Some((a, a)),
            _ => return None,
        };
        let direction = match r.direction {
            Direction::Ingress => Dir::Ingress,
            Direction::Egress => Dir::Egress,
        };
        Some(RuleSpec { direction, ethertype: Family::of(r.ethertype), protocol, ports, remote })
    }

    /// The create request; `None` when the rule names an address group without a Neutron id.
    pub fn to_create(&self, security_group_id: &str, ag_ids: &HashMap<AgKey, String>) -> Option<SecurityGroupRuleCreate> {
        let mut req = SecurityGroupRuleCreate {
            security_group_id: security_group_id.to_owned(),
            direction: self.direction.neutron(),
            ethertype: self.ethertype.neutron(),
            protocol: self.protocol.map(|p| p.neutron().to_owned()),
            port_range_min: self.ports.map(|p| p.0),
            port_range_max: self.ports.map(|p| p.1),
            ..SecurityGroupRuleCreate::default()
        };
        match &self.remote {
            Remote::Any => {}
            Remote::Prefix(n) => req.remote_ip_prefix = Some(n.to_string()),
            Remote::AddressGroup(k) => req.remote_address_group_id = Some(ag_ids.get(k)?.clone()),
        }
        Some(req)
    }
}

/// Diff of one group's rules: `current` as Neutron lists them; `ag_keys` maps address group
/// ids to keys.
pub fn diff_rules(desired: &BTreeSet<RuleSpec>, current: &[SecurityGroupRule], ag_keys: &HashMap<String, AgKey>) -> RuleDiff {
    let mut seen: BTreeSet<RuleSpec> = BTreeSet::new();
    let mut d = RuleDiff::default();
    for r in current {
        match RuleSpec::from_neutron(r, ag_keys) {
            Some(spec) if desired.contains(&spec) && seen.insert(spec.clone()) => {}
            _ => d.delete.push(r.id.clone()),
        }
    }
    d.create = desired.difference(&seen).cloned().collect();
    d
}

/// Fallback for a cloud without the `address-group` extension: each address-group rule
/// becomes one `remote_ip_prefix` rule per address of the group's family (a rule explosion,
/// and pod churn rewrites rules: only for such clouds).
pub fn expand_address_groups(rules: &BTreeSet<RuleSpec>, groups: &BTreeMap<AgKey, BTreeSet<String>>) -> BTreeSet<RuleSpec> {
    let mut out = BTreeSet::new();
    for r in rules {
        match &r.remote {
            Remote::AddressGroup(k) => {
                for n in groups.get(k).into_iter().flatten().filter_map(|a| a.parse::<IpNet>().ok()) {
                    if Family::of_net(&n) == r.ethertype {
                        out.insert(RuleSpec { remote: Remote::Prefix(n), ..r.clone() });
                    }
                }
            }
            _ => {
                out.insert(r.clone());
            }
        }
    }
    out
}

pub mod services;
pub use services::ServiceInfo;

#[cfg(test)]
mod tests;
