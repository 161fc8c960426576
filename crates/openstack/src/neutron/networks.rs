//! Networks, subnets and subnet pools.

use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::*;
use crate::error::Result;
use crate::query::Query;
use crate::serde_util::{lenient_u32, nullable};

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

impl Neutron {
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
}
