//! Ports.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::instrument;

use super::*;
use crate::error::Result;
use crate::query::Query;
use crate::serde_util::nullable;
use crate::Method;

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

    /// The parent port of a trunk subport (`device_owner = trunk:subport`): its
    /// `binding:profile.parent_name`, if set.
    pub fn trunk_parent(&self) -> Option<&str> {
        if self.device_owner != SUBPORT_OWNER {
            return None;
        }
        self.binding_profile
            .get("parent_name")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    }
}

/// `device_owner` Neutron gives a port attached to a trunk.
pub const SUBPORT_OWNER: &str = "trunk:subport";

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

impl Neutron {
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
}
