//! Routers and router interfaces.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::instrument;

use super::*;
use crate::error::Result;
use crate::query::Query;
use crate::serde_util::nullable;
use crate::Method;

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

impl Neutron {
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
}
