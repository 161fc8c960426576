//! Two-phase mark-and-sweep garbage collection of the OpenStack resources this controller
//! creates, compared with what the cluster still references.
//!
//! *Ours* is decided from OpenStack's side alone:
//! - pod ports: `device_owner = compute:kuryr`, all `[neutron_defaults] resource_tags`, and a
//!   description naming this cluster (`…: cluster <name>, …`, see [`crate::pod::ports::description`];
//!   ports made before the cluster tag existed have only that);
//! - every other kind (trunk subports, security groups, networks, subnets, floating IPs, Octavia
//!   load balancers): the cluster tag [`kuryr_core::names::cluster_tag`] plus the resource tags;
//!   router interfaces: those on one of our subnets; security group rules: those in one of our
//!   groups whose description ([`kuryr_core::names::resource_description`]) names this cluster;
//!   address groups (Neutron cannot tag them): a `network policy address group` description
//!   naming this cluster.
//!
//! Another cluster's resources, resources kuryr-rs did not create and the ids kuryr.conf names
//! (pod subnet and network, pod security groups) are never candidates.
//!
//! *Referenced*: a port by a Pod or KuryrPort UID (its `device_id`, or the `(uid …)` of a subport's
//! description) or a KuryrPort `status.vifs` entry; a network, subnet and router interface by a
//! KuryrNetwork `status` (`netId`, `subnetId`, `routerId`); a security group and its rules by a
//! KuryrNetworkPolicy `status` (`securityGroupId`, `securityGroups`, `securityGroupRules[].id`),
//! an address group by its `addressGroups`; a load balancer,
//! its security groups and floating IP by a KuryrLoadBalancer `status` (`loadbalancer.id`,
//! `loadbalancer.security_groups`, `service_pub_ip_info.ip_id`).
//!
//! A pass *marks* the orphans it sees and *sweeps* (deletes) only those it had already marked in
//! the previous pass and still sees now: a resource created a moment ago whose CRD the caches have
//! not delivered yet, or a crash-window port that the next reconcile adopts, is never deleted.
//! The sweep runs in dependency order ([`Kind`]'s order: load balancers and floating IPs first,
//! networks last); a delete that fails (e.g. a subnet still holding ports) is logged and stays
//! marked for the next pass. GC only runs on the leader once the caches are synced; with
//! `--watch-namespace` it only looks at that namespace's resources (a port's name is
//! `<namespace>/<name>`; other kinds' descriptions name `<namespace>/<name>`).
//!
//! One hop per module: [`inventory`](mod@inventory) lists what OpenStack and the cluster hold (no writes);
//! [`orphans`](mod@orphans) decides, purely, what is orphaned and remembers the marks between passes;
//! [`sweep`] deletes the twice-marked ones and runs the periodic task.

pub mod inventory;
pub mod orphans;
pub mod sweep;

pub use inventory::{inventory, orphans, protected};
pub use orphans::{described_uid, find_orphans, names_cluster, Inventory, Marks, Referenced, Scope};
pub use sweep::{pass, run, Report};

/// `device_owner` of a trunk subport (Neutron sets it when the port joins a trunk).
pub use kuryr_core::names::SUBPORT_OWNER;
/// `device_owner`s of router interface ports.
pub const ROUTER_INTERFACE_OWNERS: [&str; 3] =
    ["network:router_interface", "network:router_interface_distributed", "network:ha_router_replicated_interface"];

/// Resource kinds GC knows, in sweep order (what holds another goes first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    LoadBalancer,
    FloatingIp,
    RouterInterface,
    TrunkSubport,
    Port,
    SecurityGroupRule,
    SecurityGroup,
    /// NetworkPolicy peer sets (after the groups: a rule naming one blocks its delete).
    AddressGroup,
    Subnet,
    Network,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::LoadBalancer => "loadbalancer",
            Kind::FloatingIp => "floatingip",
            Kind::RouterInterface => "router_interface",
            Kind::TrunkSubport => "trunk_subport",
            Kind::Port => "port",
            Kind::SecurityGroupRule => "security_group_rule",
            Kind::SecurityGroup => "security_group",
            Kind::AddressGroup => "address_group",
            Kind::Subnet => "subnet",
            Kind::Network => "network",
        }
    }
}

/// One orphaned resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Orphan {
    pub kind: Kind,
    pub id: String,
    pub name: String,
    /// What it hangs off: the router of a router interface (`id` is the interface port), the
    /// parent port of a subport, the security group of a rule, the deleted node of a pool port.
    pub via: Option<String>,
    /// Why it is an orphan (for logs and `--dry-run`).
    pub reason: String,
}

impl std::fmt::Display for Orphan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.kind.as_str(), self.id, self.name)?;
        if let Some(v) = &self.via {
            write!(f, " on {v}")?;
        }
        write!(f, ": {}", self.reason)
    }
}
