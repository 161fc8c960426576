//! Trunks and subports (nested-vlan).

use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::*;
use crate::error::Result;
use crate::query::Query;
use crate::serde_util::nullable;
use crate::Method;

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
pub(super) struct PortIdOnly<'a> {
    pub(super) port_id: &'a str,
}

impl Neutron {
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
