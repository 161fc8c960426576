//! Neutron (networking v2.0): networks, subnets, subnet pools, ports, routers,
//! security groups, tags, trunks.
//!
//! Response structs ignore unknown fields and default missing ones (so `fields=`
//! queries decode). Create structs skip empty strings and `None`s when serializing.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::instrument;

use crate::error::Result;
use crate::query::Query;
use crate::resource::Kind;
use crate::serde_util::{lenient_u32, nullable};
use crate::session::{seg, Service, Session};
use crate::Method;

const NET: Service = Service::Network;

/// Max ids per `id=` batch in [`Neutron::list_ports_by_id`] (keeps the URL < 8 KiB).
pub const ID_BATCH: usize = 100;

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

// ---------------------------------------------------------------- networks

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    pub admin_state_up: bool,
    pub shared: bool,
    #[serde(rename = "router:external")]
    pub external: bool,
    pub mtu: Option<u32>,
    #[serde(deserialize_with = "nullable")]
    pub subnets: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    pub port_security_enabled: Option<bool>,
    #[serde(rename = "provider:network_type")]
    pub provider_network_type: Option<String>,
    #[serde(rename = "provider:physical_network")]
    pub provider_physical_network: Option<String>,
    #[serde(rename = "provider:segmentation_id")]
    pub provider_segmentation_id: Option<u32>,
    pub revision_number: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NetworkCreate {
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_security_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
    #[serde(
        rename = "provider:network_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_network_type: Option<String>,
    #[serde(
        rename = "provider:physical_network",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_physical_network: Option<String>,
    #[serde(
        rename = "provider:segmentation_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_segmentation_id: Option<u32>,
}

// ---------------------------------------------------------------- subnets

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: String,
    pub nexthop: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationPool {
    pub start: String,
    pub end: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Subnet {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    pub network_id: String,
    pub cidr: String,
    pub ip_version: u8,
    pub gateway_ip: Option<String>,
    pub enable_dhcp: bool,
    pub subnetpool_id: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub host_routes: Vec<HostRoute>,
    #[serde(deserialize_with = "nullable")]
    pub dns_nameservers: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub allocation_pools: Vec<AllocationPool>,
    pub ipv6_address_mode: Option<String>,
    pub ipv6_ra_mode: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    pub revision_number: Option<u64>,
}

/// New subnet. Give `cidr`, or `subnetpool_id` (+ optional `prefixlen`).
/// `gateway_ip: Some(None)` creates a subnet without gateway.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubnetCreate {
    pub network_id: String,
    pub ip_version: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnetpool_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefixlen: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_ip: Option<Option<String>>,
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_dhcp: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_routes: Option<Vec<HostRoute>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_nameservers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_pools: Option<Vec<AllocationPool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_ra_mode: Option<String>,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
}

impl Default for SubnetCreate {
    fn default() -> Self {
        SubnetCreate {
            network_id: String::new(),
            ip_version: 4,
            cidr: None,
            subnetpool_id: None,
            prefixlen: None,
            gateway_ip: None,
            name: String::new(),
            description: String::new(),
            enable_dhcp: None,
            host_routes: None,
            dns_nameservers: None,
            allocation_pools: None,
            ipv6_address_mode: None,
            ipv6_ra_mode: None,
            project_id: String::new(),
        }
    }
}

// ---------------------------------------------------------------- subnet pools

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubnetPool {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub prefixes: Vec<String>,
    #[serde(deserialize_with = "lenient_u32")]
    pub default_prefixlen: Option<u32>,
    #[serde(deserialize_with = "lenient_u32")]
    pub min_prefixlen: Option<u32>,
    #[serde(deserialize_with = "lenient_u32")]
    pub max_prefixlen: Option<u32>,
    pub ip_version: u8,
    pub shared: bool,
    pub is_default: bool,
    pub address_scope_id: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    pub revision_number: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SubnetPoolCreate {
    pub prefixes: Vec<String>,
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_prefixlen: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_prefixlen: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prefixlen: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_scope_id: Option<String>,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
}

// ---------------------------------------------------------------- ports

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip_address: String,
}

/// Requested fixed IP: a subnet, an address, or both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FixedIpRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

impl FixedIpRequest {
    pub fn subnet(subnet_id: impl Into<String>) -> Self {
        FixedIpRequest {
            subnet_id: Some(subnet_id.into()),
            ip_address: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AllowedAddressPair {
    pub ip_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Port {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    pub network_id: String,
    #[serde(deserialize_with = "nullable")]
    pub mac_address: String,
    #[serde(deserialize_with = "nullable")]
    pub fixed_ips: Vec<FixedIp>,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub device_id: String,
    #[serde(deserialize_with = "nullable")]
    pub device_owner: String,
    #[serde(rename = "binding:host_id", deserialize_with = "nullable")]
    pub binding_host_id: String,
    #[serde(rename = "binding:vif_type", deserialize_with = "nullable")]
    pub binding_vif_type: String,
    #[serde(rename = "binding:vif_details")]
    pub binding_vif_details: Value,
    #[serde(rename = "binding:vnic_type", deserialize_with = "nullable")]
    pub binding_vnic_type: String,
    #[serde(rename = "binding:profile")]
    pub binding_profile: Value,
    #[serde(deserialize_with = "nullable")]
    pub security_groups: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub allowed_address_pairs: Vec<AllowedAddressPair>,
    pub port_security_enabled: Option<bool>,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    /// `false` also when not requested through `fields=`.
    pub admin_state_up: bool,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    pub revision_number: Option<u64>,
    /// Set on a trunk's parent port (the `trunk-details` extension).
    pub trunk_details: Option<TrunkDetails>,
}

impl Port {
    /// First fixed IP address, if any.
    pub fn ip(&self) -> Option<&str> {
        self.fixed_ips.first().map(|f| f.ip_address.as_str())
    }
}

/// New port. Empty strings and `None`s are not sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PortCreate {
    pub network_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(skip_serializing_if = "is_empty")]
    pub mac_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    #[serde(skip_serializing_if = "is_empty")]
    pub device_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub device_owner: String,
    #[serde(rename = "binding:host_id", skip_serializing_if = "is_empty")]
    pub binding_host_id: String,
    #[serde(rename = "binding:vnic_type", skip_serializing_if = "is_empty")]
    pub binding_vnic_type: String,
    #[serde(rename = "binding:profile", skip_serializing_if = "Option::is_none")]
    pub binding_profile: Option<Value>,
    /// `Some(vec![])` means no security groups (not the default group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_security_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_address_pairs: Option<Vec<AllowedAddressPair>>,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
    /// Needs Neutron's `tag-ports-during-bulk-creation` extension.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Port update: only `Some` fields are sent (`Some(String::new())` clears a field).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PortUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_owner: Option<String>,
    #[serde(rename = "binding:host_id", skip_serializing_if = "Option::is_none")]
    pub binding_host_id: Option<String>,
    #[serde(rename = "binding:profile", skip_serializing_if = "Option::is_none")]
    pub binding_profile: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_security_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_address_pairs: Option<Vec<AllowedAddressPair>>,
}

// ---------------------------------------------------------------- routers

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Router {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    pub admin_state_up: bool,
    pub external_gateway_info: Option<Value>,
    #[serde(deserialize_with = "nullable")]
    pub routes: Vec<HostRoute>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    pub revision_number: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouterCreate {
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_gateway_info: Option<Value>,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
}

/// What to attach to / detach from a router.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RouterInterface {
    Subnet { subnet_id: String },
    Port { port_id: String },
}

impl RouterInterface {
    pub fn subnet(id: impl Into<String>) -> Self {
        RouterInterface::Subnet {
            subnet_id: id.into(),
        }
    }
    pub fn port(id: impl Into<String>) -> Self {
        RouterInterface::Port { port_id: id.into() }
    }
}

/// Answer of add/remove_router_interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouterInterfaceInfo {
    /// The router id.
    pub id: String,
    pub subnet_id: String,
    #[serde(deserialize_with = "nullable")]
    pub subnet_ids: Vec<String>,
    pub port_id: String,
    pub network_id: String,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
}

// ---------------------------------------------------------------- floating IPs

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FloatingIp {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub floating_ip_address: String,
    #[serde(deserialize_with = "nullable")]
    pub floating_network_id: String,
    pub port_id: Option<String>,
    pub fixed_ip_address: Option<String>,
    pub router_id: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    pub revision_number: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FloatingIpCreate {
    pub floating_network_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floating_ip_address: Option<String>,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
}

// ---------------------------------------------------------------- security groups

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Ingress,
    Egress,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EtherType {
    #[default]
    IPv4,
    IPv6,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityGroupRule {
    pub id: String,
    pub security_group_id: String,
    pub direction: Direction,
    pub ethertype: EtherType,
    pub protocol: Option<String>,
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub remote_address_group_id: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    pub revision_number: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SecurityGroupRuleCreate {
    pub security_group_id: String,
    pub direction: Direction,
    pub ethertype: EtherType,
    /// `tcp`, `udp`, `icmp`, a number, or `None` for any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range_min: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range_max: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ip_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_group_id: Option<String>,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityGroup {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub security_group_rules: Vec<SecurityGroupRule>,
    pub stateful: Option<bool>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    pub revision_number: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SecurityGroupCreate {
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stateful: Option<bool>,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
}

// ---------------------------------------------------------------- trunks

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubPort {
    pub port_id: String,
    /// Usually `vlan`.
    pub segmentation_type: String,
    pub segmentation_id: u32,
}

impl SubPort {
    pub fn vlan(port_id: impl Into<String>, vlan_id: u32) -> Self {
        SubPort {
            port_id: port_id.into(),
            segmentation_type: "vlan".into(),
            segmentation_id: vlan_id,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Trunk {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    pub port_id: String,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    pub admin_state_up: bool,
    #[serde(deserialize_with = "nullable")]
    pub sub_ports: Vec<SubPort>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    pub revision_number: Option<u64>,
}

/// `trunk_details` of a trunk's parent port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrunkDetails {
    pub trunk_id: String,
    #[serde(deserialize_with = "nullable")]
    pub sub_ports: Vec<SubPort>,
}

/// New trunk on `port_id` (the parent port). Empty strings and `None`s are not sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrunkCreate {
    pub port_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_ports: Option<Vec<SubPort>>,
}

#[derive(Serialize)]
struct PortIdOnly<'a> {
    port_id: &'a str,
}

// ---------------------------------------------------------------- tags

/// Resources that carry tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagResource {
    Network,
    Subnet,
    SubnetPool,
    Port,
    Router,
    SecurityGroup,
    Trunk,
    FloatingIp,
}

impl TagResource {
    /// Collection path segment.
    pub fn collection(self) -> &'static str {
        match self {
            TagResource::Network => "networks",
            TagResource::Subnet => "subnets",
            TagResource::SubnetPool => "subnetpools",
            TagResource::Port => "ports",
            TagResource::Router => "routers",
            TagResource::SecurityGroup => "security-groups",
            TagResource::Trunk => "trunks",
            TagResource::FloatingIp => "floatingips",
        }
    }
}

#[derive(Serialize)]
struct TagsBody<'a, S: AsRef<str>> {
    #[serde(serialize_with = "ser_strs")]
    tags: &'a [S],
}

fn ser_strs<S: AsRef<str>, Ser: serde::Serializer>(
    v: &&[S],
    s: Ser,
) -> Result<Ser::Ok, Ser::Error> {
    s.collect_seq(v.iter().map(AsRef::as_ref))
}

// ---------------------------------------------------------------- client

const fn kind(path: &'static str, one: &'static str, many: &'static str) -> Kind {
    Kind::new(NET, "/v2.0", path, one, many)
}

const NETWORKS: Kind = kind("networks", "network", "networks");
const SUBNETS: Kind = kind("subnets", "subnet", "subnets");
const SUBNETPOOLS: Kind = kind("subnetpools", "subnetpool", "subnetpools");
const PORTS: Kind = kind("ports", "port", "ports");
const ROUTERS: Kind = kind("routers", "router", "routers");
const SECURITY_GROUPS: Kind = kind("security-groups", "security_group", "security_groups");
const SG_RULES: Kind = kind(
    "security-group-rules",
    "security_group_rule",
    "security_group_rules",
);
const TRUNKS: Kind = kind("trunks", "trunk", "trunks");
const FLOATING_IPS: Kind = kind("floatingips", "floatingip", "floatingips");

/// Neutron client over a shared [`Session`].
#[derive(Clone, Debug)]
pub struct Neutron {
    session: Session,
}

impl Neutron {
    pub fn new(session: Session) -> Self {
        Neutron { session }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    // networks

    #[instrument(level = "debug", name = "neutron.create_network", skip_all, fields(name = %req.name))]
    pub async fn create_network(&self, req: &NetworkCreate) -> Result<Network> {
        NETWORKS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "neutron.get_network", skip(self))]
    pub async fn get_network(&self, id: &str) -> Result<Network> {
        NETWORKS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "neutron.list_networks", skip(self))]
    pub async fn list_networks(&self, query: &Query) -> Result<Vec<Network>> {
        NETWORKS.list(&self.session, query).await
    }

    /// Deletes a network; `Ok(false)` if it was already gone.
    #[instrument(level = "debug", name = "neutron.delete_network", skip(self))]
    pub async fn delete_network(&self, id: &str) -> Result<bool> {
        NETWORKS.delete(&self.session, id, None).await
    }

    // subnets

    #[instrument(level = "debug", name = "neutron.create_subnet", skip_all, fields(network_id = %req.network_id))]
    pub async fn create_subnet(&self, req: &SubnetCreate) -> Result<Subnet> {
        SUBNETS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "neutron.get_subnet", skip(self))]
    pub async fn get_subnet(&self, id: &str) -> Result<Subnet> {
        SUBNETS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "neutron.list_subnets", skip(self))]
    pub async fn list_subnets(&self, query: &Query) -> Result<Vec<Subnet>> {
        SUBNETS.list(&self.session, query).await
    }

    #[instrument(level = "debug", name = "neutron.delete_subnet", skip(self))]
    pub async fn delete_subnet(&self, id: &str) -> Result<bool> {
        SUBNETS.delete(&self.session, id, None).await
    }

    // subnet pools

    #[instrument(level = "debug", name = "neutron.create_subnetpool", skip_all, fields(name = %req.name))]
    pub async fn create_subnetpool(&self, req: &SubnetPoolCreate) -> Result<SubnetPool> {
        SUBNETPOOLS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "neutron.get_subnetpool", skip(self))]
    pub async fn get_subnetpool(&self, id: &str) -> Result<SubnetPool> {
        SUBNETPOOLS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "neutron.list_subnetpools", skip(self))]
    pub async fn list_subnetpools(&self, query: &Query) -> Result<Vec<SubnetPool>> {
        SUBNETPOOLS.list(&self.session, query).await
    }

    #[instrument(level = "debug", name = "neutron.delete_subnetpool", skip(self))]
    pub async fn delete_subnetpool(&self, id: &str) -> Result<bool> {
        SUBNETPOOLS.delete(&self.session, id, None).await
    }

    // ports

    #[instrument(level = "debug", name = "neutron.create_port", skip_all, fields(network_id = %req.network_id))]
    pub async fn create_port(&self, req: &PortCreate) -> Result<Port> {
        PORTS.create(&self.session, req).await
    }

    /// Creates all ports in one bulk POST (all or nothing), in request order.
    #[instrument(level = "debug", name = "neutron.create_ports", skip_all, fields(count = reqs.len()))]
    pub async fn create_ports(&self, reqs: &[PortCreate]) -> Result<Vec<Port>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        self.session
            .send_key(
                NET,
                Method::POST,
                PORTS.collection(),
                Some(PORTS.many),
                reqs,
                Some(PORTS.many),
            )
            .await
    }

    #[instrument(level = "debug", name = "neutron.get_port", skip(self))]
    pub async fn get_port(&self, id: &str) -> Result<Port> {
        PORTS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "neutron.list_ports", skip(self))]
    pub async fn list_ports(&self, query: &Query) -> Result<Vec<Port>> {
        PORTS.list(&self.session, query).await
    }

    /// Ports by id via repeated `id=` filters, [`ID_BATCH`] ids per request.
    /// `fields` empty means all fields. Missing ports are simply absent.
    #[instrument(level = "debug", name = "neutron.list_ports_by_id", skip_all, fields(count = ids.len()))]
    pub async fn list_ports_by_id<S: AsRef<str>>(
        &self,
        ids: &[S],
        fields: &[&str],
    ) -> Result<Vec<Port>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ID_BATCH) {
            let q = Query::new()
                .ids(chunk.iter().map(|s| s.as_ref()))
                .fields(fields.iter().copied());
            out.extend(PORTS.list::<Port>(&self.session, &q).await?);
        }
        Ok(out)
    }

    #[instrument(level = "debug", name = "neutron.update_port", skip(self, req))]
    pub async fn update_port(&self, id: &str, req: &PortUpdate) -> Result<Port> {
        PORTS.update(&self.session, id, req).await
    }

    /// Deletes a port; a 404 is success (`Ok(false)`).
    #[instrument(level = "debug", name = "neutron.delete_port", skip(self))]
    pub async fn delete_port(&self, id: &str) -> Result<bool> {
        PORTS.delete(&self.session, id, None).await
    }

    // routers

    #[instrument(level = "debug", name = "neutron.create_router", skip_all, fields(name = %req.name))]
    pub async fn create_router(&self, req: &RouterCreate) -> Result<Router> {
        ROUTERS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "neutron.get_router", skip(self))]
    pub async fn get_router(&self, id: &str) -> Result<Router> {
        ROUTERS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "neutron.list_routers", skip(self))]
    pub async fn list_routers(&self, query: &Query) -> Result<Vec<Router>> {
        ROUTERS.list(&self.session, query).await
    }

    #[instrument(level = "debug", name = "neutron.add_router_interface", skip(self))]
    pub async fn add_router_interface(
        &self,
        router_id: &str,
        iface: &RouterInterface,
    ) -> Result<RouterInterfaceInfo> {
        let path = format!("{}/add_router_interface", ROUTERS.item(router_id));
        self.session
            .send_key(NET, Method::PUT, path, None, iface, None)
            .await
    }

    #[instrument(level = "debug", name = "neutron.remove_router_interface", skip(self))]
    pub async fn remove_router_interface(
        &self,
        router_id: &str,
        iface: &RouterInterface,
    ) -> Result<RouterInterfaceInfo> {
        let path = format!("{}/remove_router_interface", ROUTERS.item(router_id));
        self.session
            .send_key(NET, Method::PUT, path, None, iface, None)
            .await
    }

    #[instrument(level = "debug", name = "neutron.delete_router", skip(self))]
    pub async fn delete_router(&self, id: &str) -> Result<bool> {
        ROUTERS.delete(&self.session, id, None).await
    }

    // security groups

    #[instrument(level = "debug", name = "neutron.create_security_group", skip_all, fields(name = %req.name))]
    pub async fn create_security_group(&self, req: &SecurityGroupCreate) -> Result<SecurityGroup> {
        SECURITY_GROUPS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "neutron.get_security_group", skip(self))]
    pub async fn get_security_group(&self, id: &str) -> Result<SecurityGroup> {
        SECURITY_GROUPS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "neutron.list_security_groups", skip(self))]
    pub async fn list_security_groups(&self, query: &Query) -> Result<Vec<SecurityGroup>> {
        SECURITY_GROUPS.list(&self.session, query).await
    }

    #[instrument(level = "debug", name = "neutron.delete_security_group", skip(self))]
    pub async fn delete_security_group(&self, id: &str) -> Result<bool> {
        SECURITY_GROUPS.delete(&self.session, id, None).await
    }

    #[instrument(level = "debug", name = "neutron.create_security_group_rule", skip_all, fields(sg = %req.security_group_id))]
    pub async fn create_security_group_rule(
        &self,
        req: &SecurityGroupRuleCreate,
    ) -> Result<SecurityGroupRule> {
        SG_RULES.create(&self.session, req).await
    }

    /// Creates several rules in one bulk POST.
    #[instrument(level = "debug", name = "neutron.create_security_group_rules", skip_all, fields(count = reqs.len()))]
    pub async fn create_security_group_rules(
        &self,
        reqs: &[SecurityGroupRuleCreate],
    ) -> Result<Vec<SecurityGroupRule>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        self.session
            .send_key(
                NET,
                Method::POST,
                SG_RULES.collection(),
                Some(SG_RULES.many),
                reqs,
                Some(SG_RULES.many),
            )
            .await
    }

    #[instrument(
        level = "debug",
        name = "neutron.list_security_group_rules",
        skip(self)
    )]
    pub async fn list_security_group_rules(&self, query: &Query) -> Result<Vec<SecurityGroupRule>> {
        SG_RULES.list(&self.session, query).await
    }

    #[instrument(
        level = "debug",
        name = "neutron.delete_security_group_rule",
        skip(self)
    )]
    pub async fn delete_security_group_rule(&self, id: &str) -> Result<bool> {
        SG_RULES.delete(&self.session, id, None).await
    }

    // tags

    /// Replaces all tags of a resource; returns the new tag list.
    #[instrument(level = "debug", name = "neutron.set_tags", skip(self, tags))]
    pub async fn set_tags<S: AsRef<str>>(
        &self,
        resource: TagResource,
        id: &str,
        tags: &[S],
    ) -> Result<Vec<String>> {
        let path = format!("/v2.0/{}/{}/tags", resource.collection(), seg(id));
        self.session
            .send_key(
                NET,
                Method::PUT,
                path,
                None,
                &TagsBody { tags },
                Some("tags"),
            )
            .await
    }

    /// Adds one tag (idempotent).
    #[instrument(level = "debug", name = "neutron.add_tag", skip(self))]
    pub async fn add_tag(&self, resource: TagResource, id: &str, tag: &str) -> Result<()> {
        let path = format!(
            "/v2.0/{}/{}/tags/{}",
            resource.collection(),
            seg(id),
            seg(tag)
        );
        self.session
            .request(crate::Request::new(NET, Method::PUT, path))
            .await
            .map(drop)
    }

    // floating IPs

    #[instrument(level = "debug", name = "neutron.create_floating_ip", skip_all)]
    pub async fn create_floating_ip(&self, req: &FloatingIpCreate) -> Result<FloatingIp> {
        FLOATING_IPS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "neutron.list_floating_ips", skip(self))]
    pub async fn list_floating_ips(&self, query: &Query) -> Result<Vec<FloatingIp>> {
        FLOATING_IPS.list(&self.session, query).await
    }

    /// `Ok(false)` if it was already gone.
    #[instrument(level = "debug", name = "neutron.delete_floating_ip", skip(self))]
    pub async fn delete_floating_ip(&self, id: &str) -> Result<bool> {
        FLOATING_IPS.delete(&self.session, id, None).await
    }

    // trunks

    #[instrument(level = "debug", name = "neutron.create_trunk", skip_all, fields(port_id = %req.port_id))]
    pub async fn create_trunk(&self, req: &TrunkCreate) -> Result<Trunk> {
        TRUNKS.create(&self.session, req).await
    }

    /// Deletes a trunk; `Ok(false)` if it was already gone. Neutron refuses (409) while the
    /// parent port is bound.
    #[instrument(level = "debug", name = "neutron.delete_trunk", skip(self))]
    pub async fn delete_trunk(&self, id: &str) -> Result<bool> {
        TRUNKS.delete(&self.session, id, None).await
    }

    #[instrument(level = "debug", name = "neutron.get_trunk", skip(self))]
    pub async fn get_trunk(&self, id: &str) -> Result<Trunk> {
        TRUNKS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "neutron.list_trunks", skip(self))]
    pub async fn list_trunks(&self, query: &Query) -> Result<Vec<Trunk>> {
        TRUNKS.list(&self.session, query).await
    }

    /// Adds VLAN subports; returns the updated trunk.
    #[instrument(level = "debug", name = "neutron.add_subports", skip_all, fields(trunk_id, count = sub_ports.len()))]
    pub async fn add_subports(&self, trunk_id: &str, sub_ports: &[SubPort]) -> Result<Trunk> {
        tracing::Span::current().record("trunk_id", trunk_id);
        let path = format!("{}/add_subports", TRUNKS.item(trunk_id));
        self.session
            .send_key(NET, Method::PUT, path, Some("sub_ports"), sub_ports, None)
            .await
    }

    /// Removes subports by port id; returns the updated trunk.
    #[instrument(level = "debug", name = "neutron.remove_subports", skip_all, fields(trunk_id, count = port_ids.len()))]
    pub async fn remove_subports<S: AsRef<str>>(
        &self,
        trunk_id: &str,
        port_ids: &[S],
    ) -> Result<Trunk> {
        tracing::Span::current().record("trunk_id", trunk_id);
        let path = format!("{}/remove_subports", TRUNKS.item(trunk_id));
        let body: Vec<PortIdOnly<'_>> = port_ids
            .iter()
            .map(|p| PortIdOnly {
                port_id: p.as_ref(),
            })
            .collect();
        self.session
            .send_key(NET, Method::PUT, path, Some("sub_ports"), &body, None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serde_util::decode_key;
    use serde_json::json;

    const PORT: &str = r#"{"port": {
        "admin_state_up": true, "allowed_address_pairs": [],
        "binding:host_id": "vm", "binding:profile": {}, "binding:vif_details": {"port_filter": true, "connectivity": "l2", "bridge_name": "br-int", "datapath_type": "netdev"},
        "binding:vif_type": "ovs", "binding:vnic_type": "normal",
        "created_at": "2024-05-01T12:00:00Z", "data_plane_status": null, "description": "",
        "device_id": "pod-uid-1", "device_owner": "compute:kuryr", "dns_assignment": [], "dns_name": "",
        "extra_dhcp_opts": [], "fixed_ips": [{"ip_address": "10.0.0.5", "subnet_id": "a0304c3a-4f08-4c43-88af-d796509c97d2"}],
        "id": "65c0ee9f-d634-4522-8954-51021b570b0d", "ip_allocation": "immediate", "mac_address": "fa:16:3e:c9:cb:f0",
        "name": "pod-1", "network_id": "a87cc70a-3e15-4acf-8205-9b711a3531b7", "port_security_enabled": true,
        "project_id": "7e02058126cc4950b75f9970368ba177", "propagate_uplink_status": false, "qos_network_policy_id": null, "qos_policy_id": null,
        "resource_request": null, "revision_number": 3, "security_groups": ["f0ac4394-7e4a-4409-9701-ba8be283dbc3"],
        "status": "DOWN", "tags": ["kuryr"], "tenant_id": "7e02058126cc4950b75f9970368ba177", "updated_at": "2024-05-01T12:00:01Z"
    }}"#;

    #[test]
    fn decode_port() {
        let p: Port = decode_key(PORT.as_bytes(), "port").unwrap();
        assert_eq!(p.id, "65c0ee9f-d634-4522-8954-51021b570b0d");
        assert_eq!(p.binding_vif_type, "ovs");
        assert_eq!(p.binding_host_id, "vm");
        assert_eq!(p.binding_vif_details["bridge_name"], "br-int");
        assert_eq!(p.ip(), Some("10.0.0.5"));
        assert_eq!(
            p.fixed_ips[0].subnet_id,
            "a0304c3a-4f08-4c43-88af-d796509c97d2"
        );
        assert_eq!(p.security_groups.len(), 1);
        assert_eq!(p.tags, ["kuryr"]);
        assert!(p.admin_state_up);
        assert_eq!(p.revision_number, Some(3));
        assert_eq!(p.port_security_enabled, Some(true));
    }

    #[test]
    fn decode_sparse_ports_from_fields_query() {
        let body = br#"{"ports": [{"id": "a", "status": "ACTIVE"}, {"id": "b", "status": "DOWN", "device_id": null, "binding:host_id": null, "fixed_ips": null}]}"#;
        let ps: Vec<Port> = decode_key(body, "ports").unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[1].status, "DOWN");
        assert_eq!(ps[1].device_id, "");
        assert!(ps[1].fixed_ips.is_empty());
        assert!(ps[0].binding_vif_details.is_null());
    }

    #[test]
    fn decode_network_subnet_pool() {
        let net = br#"{"network": {"admin_state_up": true, "availability_zone_hints": [], "availability_zones": [], "created_at": "2024-05-01T12:00:00Z", "description": "", "id": "a87cc70a-3e15-4acf-8205-9b711a3531b7", "ipv4_address_scope": null, "ipv6_address_scope": null, "l2_adjacency": true, "mtu": 1442, "name": "k8s-pods", "port_security_enabled": true, "project_id": "p", "provider:network_type": "geneve", "provider:physical_network": null, "provider:segmentation_id": 7, "qos_policy_id": null, "revision_number": 2, "router:external": false, "shared": false, "status": "ACTIVE", "subnets": ["s1"], "tags": [], "tenant_id": "p", "updated_at": "2024-05-01T12:00:00Z"}}"#;
        let n: Network = decode_key(net, "network").unwrap();
        assert_eq!(n.mtu, Some(1442));
        assert_eq!(n.provider_network_type.as_deref(), Some("geneve"));
        assert_eq!(n.provider_segmentation_id, Some(7));
        assert!(!n.external);
        assert_eq!(n.subnets, ["s1"]);

        let subnet = br#"{"subnet": {"allocation_pools": [{"end": "10.0.0.254", "start": "10.0.0.2"}], "cidr": "10.0.0.0/24", "created_at": "2024-05-01T12:00:00Z", "description": "", "dns_nameservers": ["10.96.0.10"], "dns_publish_fixed_ip": null, "enable_dhcp": false, "gateway_ip": "10.0.0.1", "host_routes": [{"destination": "10.96.0.0/12", "nexthop": "10.0.0.1"}], "id": "s1", "ip_version": 4, "ipv6_address_mode": null, "ipv6_ra_mode": null, "name": "pods", "network_id": "n1", "project_id": "p", "revision_number": 0, "segment_id": null, "service_types": [], "subnetpool_id": "sp1", "tags": [], "tenant_id": "p", "updated_at": "2024-05-01T12:00:00Z"}}"#;
        let s: Subnet = decode_key(subnet, "subnet").unwrap();
        assert_eq!(s.cidr, "10.0.0.0/24");
        assert_eq!(s.gateway_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(s.subnetpool_id.as_deref(), Some("sp1"));
        assert_eq!(s.host_routes[0].destination, "10.96.0.0/12");
        assert_eq!(s.dns_nameservers, ["10.96.0.10"]);
        assert_eq!(s.allocation_pools[0].start, "10.0.0.2");

        let no_gw = br#"{"subnet": {"id": "s2", "gateway_ip": null, "ip_version": 6, "cidr": "fd00::/64"}}"#;
        let s: Subnet = decode_key(no_gw, "subnet").unwrap();
        assert_eq!(s.gateway_ip, None);
        assert_eq!(s.ip_version, 6);

        let pools = br#"{"subnetpools": [{"address_scope_id": null, "created_at": "2024-05-01T12:00:00Z", "default_prefixlen": "26", "default_quota": null, "description": "", "id": "sp1", "ip_version": 4, "is_default": false, "max_prefixlen": 32, "min_prefixlen": "8", "name": "pods", "prefixes": ["10.0.0.0/16"], "project_id": "p", "revision_number": 0, "shared": false, "tags": ["kuryr"], "tenant_id": "p", "updated_at": "2024-05-01T12:00:00Z"}]}"#;
        let p: Vec<SubnetPool> = decode_key(pools, "subnetpools").unwrap();
        assert_eq!(p[0].default_prefixlen, Some(26));
        assert_eq!(p[0].min_prefixlen, Some(8));
        assert_eq!(p[0].max_prefixlen, Some(32));
        assert_eq!(p[0].prefixes, ["10.0.0.0/16"]);
    }

    #[test]
    fn decode_router_sg_trunk() {
        let ri = br#"{"id": "r1", "network_id": "n1", "port_id": "p1", "subnet_id": "s1", "subnet_ids": ["s1"], "project_id": "p", "tenant_id": "p", "tags": []}"#;
        let ri: RouterInterfaceInfo = serde_json::from_slice(ri).unwrap();
        assert_eq!((ri.id.as_str(), ri.port_id.as_str()), ("r1", "p1"));

        let sg = br#"{"security_group": {"id": "sg1", "name": "kuryr-pods", "description": "", "stateful": true, "project_id": "p", "tags": [], "revision_number": 1,
            "security_group_rules": [
              {"id": "r1", "security_group_id": "sg1", "direction": "egress", "ethertype": "IPv6", "protocol": null, "port_range_min": null, "port_range_max": null, "remote_ip_prefix": null, "remote_group_id": null, "remote_address_group_id": null, "description": null, "normalized_cidr": null},
              {"id": "r2", "security_group_id": "sg1", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "10.0.0.0/16", "remote_group_id": null, "description": "http"}]}}"#;
        let sg: SecurityGroup = decode_key(sg, "security_group").unwrap();
        assert_eq!(sg.security_group_rules.len(), 2);
        assert_eq!(sg.security_group_rules[0].direction, Direction::Egress);
        assert_eq!(sg.security_group_rules[0].ethertype, EtherType::IPv6);
        assert_eq!(sg.security_group_rules[1].port_range_max, Some(80));
        assert_eq!(sg.security_group_rules[1].protocol.as_deref(), Some("tcp"));

        // add_subports answers with the bare trunk.
        let trunk = br#"{"admin_state_up": true, "created_at": "2024-05-01T12:00:00Z", "description": "", "id": "t1", "name": "trunk0", "port_id": "parent", "project_id": "p", "revision_number": 2, "status": "ACTIVE", "sub_ports": [{"port_id": "c1", "segmentation_id": 101, "segmentation_type": "vlan"}], "tags": [], "tenant_id": "p", "updated_at": "2024-05-01T12:00:00Z"}"#;
        let t: Trunk = serde_json::from_slice(trunk).unwrap();
        assert_eq!(t.sub_ports, [SubPort::vlan("c1", 101)]);
        assert_eq!(t.port_id, "parent");
    }

    #[test]
    fn decode_parent_port_with_trunk_details_and_subport() {
        // A trunk's parent port (GET /ports?fixed_ips=ip_address=…) and one of its subports,
        // as Neutron 29 / ML2-OVN answers them.
        let body = br#"{"ports": [{"id": "parent", "network_id": "workers", "device_id": "vm-uuid", "device_owner": "compute:nova",
            "fixed_ips": [{"subnet_id": "wsub", "ip_address": "192.168.77.10"}], "status": "ACTIVE",
            "trunk_details": {"trunk_id": "t1", "sub_ports": [
                {"segmentation_id": 101, "segmentation_type": "vlan", "port_id": "c1", "mac_address": "fa:16:3e:0f:6a:89"}]}},
            {"id": "c1", "network_id": "pods", "device_id": "", "device_owner": "trunk:subport", "status": "DOWN",
             "binding:host_id": "", "binding:vif_type": "ovs", "binding:profile": {"parent_name": "parent", "tag": 101}}]}"#;
        let ps: Vec<Port> = decode_key(body, "ports").unwrap();
        let td = ps[0].trunk_details.as_ref().expect("trunk_details");
        assert_eq!(td.trunk_id, "t1");
        assert_eq!(td.sub_ports, [SubPort::vlan("c1", 101)]);
        assert_eq!(ps[1].trunk_details, None);
        assert_eq!(ps[1].device_owner, "trunk:subport");
        assert_eq!(ps[1].binding_profile["parent_name"], "parent");
        let null: Port = serde_json::from_value(json!({"id": "p", "trunk_details": null})).unwrap();
        assert_eq!(null.trunk_details, None);
    }

    #[test]
    fn encode_trunk_requests() {
        let t = TrunkCreate {
            port_id: "parent".into(),
            name: "worker-0".into(),
            sub_ports: Some(vec![SubPort::vlan("c1", 7)]),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(crate::serde_util::Wrapped("trunk", &t)).unwrap(),
            json!({"trunk": {"port_id": "parent", "name": "worker-0",
                   "sub_ports": [{"port_id": "c1", "segmentation_type": "vlan", "segmentation_id": 7}]}})
        );
        assert_eq!(
            serde_json::to_value(TrunkCreate {
                port_id: "p".into(),
                ..Default::default()
            })
            .unwrap(),
            json!({"port_id": "p"})
        );
    }

    #[test]
    fn encode_requests() {
        let bulk = [
            PortCreate {
                network_id: "n1".into(),
                name: "a".into(),
                device_owner: "compute:kuryr".into(),
                binding_host_id: "vm".into(),
                fixed_ips: Some(vec![FixedIpRequest::subnet("s1")]),
                security_groups: Some(vec![]),
                ..Default::default()
            },
            PortCreate {
                network_id: "n1".into(),
                ..Default::default()
            },
        ];
        let body = serde_json::to_value(crate::serde_util::Wrapped("ports", &bulk[..])).unwrap();
        assert_eq!(
            body,
            json!({"ports": [
                {"network_id": "n1", "name": "a", "device_owner": "compute:kuryr", "binding:host_id": "vm",
                 "fixed_ips": [{"subnet_id": "s1"}], "security_groups": []},
                {"network_id": "n1"}]})
        );

        let upd = PortUpdate {
            device_id: Some(String::new()),
            binding_host_id: Some(String::new()),
            name: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&upd).unwrap(),
            json!({"name": "x", "device_id": "", "binding:host_id": ""})
        );

        let sn = SubnetCreate {
            network_id: "n".into(),
            subnetpool_id: Some("sp".into()),
            prefixlen: Some(28),
            gateway_ip: Some(None),
            host_routes: Some(vec![HostRoute {
                destination: "0.0.0.0/0".into(),
                nexthop: "10.0.0.1".into(),
            }]),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&sn).unwrap(),
            json!({"network_id": "n", "ip_version": 4, "subnetpool_id": "sp", "prefixlen": 28, "gateway_ip": null,
                   "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.0.0.1"}]})
        );

        assert_eq!(
            serde_json::to_value(RouterInterface::subnet("s")).unwrap(),
            json!({"subnet_id": "s"})
        );
        assert_eq!(
            serde_json::to_value(RouterInterface::port("p")).unwrap(),
            json!({"port_id": "p"})
        );

        let rule = SecurityGroupRuleCreate {
            security_group_id: "sg".into(),
            protocol: Some("tcp".into()),
            port_range_min: Some(53),
            port_range_max: Some(53),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&rule).unwrap(),
            json!({"security_group_id": "sg", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                   "port_range_min": 53, "port_range_max": 53})
        );

        let tags = ["a", "b"];
        assert_eq!(
            serde_json::to_value(TagsBody { tags: &tags }).unwrap(),
            json!({"tags": ["a", "b"]})
        );
        let rm: Vec<PortIdOnly<'_>> = vec![PortIdOnly { port_id: "c1" }];
        assert_eq!(
            serde_json::to_value(crate::serde_util::Wrapped("sub_ports", &rm)).unwrap(),
            json!({"sub_ports": [{"port_id": "c1"}]})
        );
        assert_eq!(
            serde_json::to_value(crate::serde_util::Wrapped(
                "sub_ports",
                &[SubPort::vlan("c1", 5)]
            ))
            .unwrap(),
            json!({"sub_ports": [{"port_id": "c1", "segmentation_type": "vlan", "segmentation_id": 5}]})
        );
        assert_eq!(
            serde_json::to_value(&NetworkCreate {
                name: "n".into(),
                mtu: Some(1400),
                ..Default::default()
            })
            .unwrap(),
            json!({"name": "n", "mtu": 1400})
        );
    }
}
