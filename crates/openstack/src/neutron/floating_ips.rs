//! Floating IPs.

use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::*;
use crate::error::Result;
use crate::query::Query;
use crate::serde_util::nullable;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
}

impl Neutron {
    // floating IPs

    #[instrument(level = "debug", name = "neutron.create_floating_ip", skip_all)]
    pub async fn create_floating_ip(&self, req: &FloatingIpCreate) -> Result<FloatingIp> {
        FLOATING_IPS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "neutron.list_floating_ips", skip(self))]
    pub async fn list_floating_ips(&self, query: &Query) -> Result<Vec<FloatingIp>> {
        FLOATING_IPS.list(&self.session, query).await
    }

    #[instrument(level = "debug", name = "neutron.get_floating_ip", skip(self))]
    pub async fn get_floating_ip(&self, id: &str) -> Result<FloatingIp> {
        FLOATING_IPS.get(&self.session, id).await
    }

    /// Associates the floating IP with `port_id`, or disassociates it (`None`).
    #[instrument(level = "debug", name = "neutron.associate_floating_ip", skip(self))]
    pub async fn associate_floating_ip(
        &self,
        id: &str,
        port_id: Option<&str>,
    ) -> Result<FloatingIp> {
        FLOATING_IPS
            .update(
                &self.session,
                id,
                &serde_json::json!({ "port_id": port_id }),
            )
            .await
    }

    /// Sets the floating IP's description.
    #[instrument(level = "debug", name = "neutron.describe_floating_ip", skip(self))]
    pub async fn describe_floating_ip(&self, id: &str, description: &str) -> Result<FloatingIp> {
        FLOATING_IPS
            .update(
                &self.session,
                id,
                &serde_json::json!({ "description": description }),
            )
            .await
    }

    /// `Ok(false)` if it was already gone.
    #[instrument(level = "debug", name = "neutron.delete_floating_ip", skip(self))]
    pub async fn delete_floating_ip(&self, id: &str) -> Result<bool> {
        FLOATING_IPS.delete(&self.session, id, None).await
    }
}
