//! Octavia (load-balancer v2): providers, load balancers, listeners, pools, members.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::instrument;

use crate::error::{Error, Result};
use crate::query::Query;
use crate::resource::Kind;
use crate::serde_util::nullable;
use crate::session::{Service, Session};
use crate::Method;

const LB: Service = Service::LoadBalancer;

/// Provisioning status values.
pub mod status {
    pub const ACTIVE: &str = "ACTIVE";
    pub const ERROR: &str = "ERROR";
    pub const DELETED: &str = "DELETED";
    pub const PENDING_CREATE: &str = "PENDING_CREATE";
    pub const PENDING_UPDATE: &str = "PENDING_UPDATE";
    pub const PENDING_DELETE: &str = "PENDING_DELETE";
}

/// First and last poll intervals of [`Octavia::wait_for_lb`].
pub const POLL_MIN: Duration = Duration::from_millis(100);
pub const POLL_MAX: Duration = Duration::from_secs(1);

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Provider {
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
}

/// `{"id": ...}` reference to a child object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdRef {
    pub id: String,
}

/// One of a load balancer's `additional_vips` (API 2.26+): another address, e.g. of the other
/// IP family, on the VIP's network.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default)]
pub struct AdditionalVip {
    #[serde(deserialize_with = "nullable")]
    pub subnet_id: String,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_empty")]
    pub ip_address: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadBalancer {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub provisioning_status: String,
    #[serde(deserialize_with = "nullable")]
    pub operating_status: String,
    pub admin_state_up: bool,
    #[serde(deserialize_with = "nullable")]
    pub vip_address: String,
    #[serde(deserialize_with = "nullable")]
    pub vip_port_id: String,
    #[serde(deserialize_with = "nullable")]
    pub vip_subnet_id: String,
    #[serde(deserialize_with = "nullable")]
    pub vip_network_id: String,
    #[serde(deserialize_with = "nullable")]
    pub additional_vips: Vec<AdditionalVip>,
    #[serde(deserialize_with = "nullable")]
    pub provider: String,
    pub flavor_id: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub listeners: Vec<IdRef>,
    #[serde(deserialize_with = "nullable")]
    pub pools: Vec<IdRef>,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl LoadBalancer {
    pub fn is_active(&self) -> bool {
        self.provisioning_status == status::ACTIVE
    }
}

/// New load balancer. Give one of `vip_subnet_id`, `vip_network_id`, `vip_port_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoadBalancerCreate {
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub vip_subnet_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub vip_network_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub vip_port_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub vip_address: String,
    /// More VIPs on the VIP's network (a dual-stack Service's second ClusterIP).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additional_vips: Vec<AdditionalVip>,
    /// e.g. `ovn`, `amphora`; empty means Octavia's default.
    #[serde(skip_serializing_if = "is_empty")]
    pub provider: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub flavor_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Fully populated create: the listeners (with their default pools and members) are created
    /// in the same call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerCreate>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Listener {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    pub protocol: String,
    pub protocol_port: u16,
    pub default_pool_id: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub loadbalancers: Vec<IdRef>,
    #[serde(deserialize_with = "nullable")]
    pub provisioning_status: String,
    #[serde(deserialize_with = "nullable")]
    pub operating_status: String,
    pub admin_state_up: bool,
    pub connection_limit: Option<i64>,
    pub allowed_cidrs: Option<Vec<String>>,
    pub timeout_client_data: Option<u32>,
    pub timeout_member_data: Option<u32>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
}

/// New listener. Inside a [`LoadBalancerCreate`] leave `loadbalancer_id` empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ListenerCreate {
    #[serde(skip_serializing_if = "is_empty")]
    pub loadbalancer_id: String,
    /// `TCP`, `UDP`, `SCTP`, `HTTP`...
    pub protocol: String,
    pub protocol_port: u16,
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub default_pool_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_cidrs: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_client_data: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_member_data: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Created with the listener, members included (one call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_pool: Option<PoolCreate>,
}

/// Changes to a listener (`PUT /listeners/{id}`): only the fields that are `Some`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ListenerUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_client_data: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_member_data: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_cidrs: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pool {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    pub protocol: String,
    pub lb_algorithm: String,
    #[serde(deserialize_with = "nullable")]
    pub listeners: Vec<IdRef>,
    #[serde(deserialize_with = "nullable")]
    pub loadbalancers: Vec<IdRef>,
    #[serde(deserialize_with = "nullable")]
    pub members: Vec<IdRef>,
    #[serde(deserialize_with = "nullable")]
    pub provisioning_status: String,
    #[serde(deserialize_with = "nullable")]
    pub operating_status: String,
    pub admin_state_up: bool,
    pub session_persistence: Option<serde_json::Value>,
    pub healthmonitor_id: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
}

/// New pool: attach to a `listener_id` or a `loadbalancer_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PoolCreate {
    pub protocol: String,
    /// `ROUND_ROBIN`, `SOURCE_IP_PORT` (the only one of the ovn provider)...
    pub lb_algorithm: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub listener_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub loadbalancer_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Created with the pool (inside a listener or load balancer create).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberSpec>,
    /// Created with the pool (inside a listener or load balancer create, or with a pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthmonitor: Option<HealthMonitorCreate>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthMonitor {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// `TCP`, `UDP-CONNECT`, `SCTP`, `HTTP`, `PING`...
    #[serde(rename = "type")]
    pub type_: String,
    pub delay: u32,
    pub timeout: u32,
    pub max_retries: u32,
    pub max_retries_down: u32,
    #[serde(deserialize_with = "nullable")]
    pub pools: Vec<IdRef>,
    #[serde(deserialize_with = "nullable")]
    pub provisioning_status: String,
    #[serde(deserialize_with = "nullable")]
    pub operating_status: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
}

/// New health monitor: give `pool_id`, or leave it empty inside a [`PoolCreate`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HealthMonitorCreate {
    #[serde(skip_serializing_if = "is_empty")]
    pub pool_id: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// Seconds between probes.
    pub delay: u32,
    /// Seconds a probe may take (at most `delay`).
    pub timeout: u32,
    /// Successes before a member is ONLINE again (1–10).
    pub max_retries: u32,
    /// Failures before a member is ERROR (1–10).
    pub max_retries_down: u32,
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Changes to a health monitor (`PUT /healthmonitors/{id}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HealthMonitorUpdate {
    pub delay: u32,
    pub timeout: u32,
    pub max_retries: u32,
    pub max_retries_down: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    pub address: String,
    pub protocol_port: u16,
    pub subnet_id: Option<String>,
    pub weight: Option<u32>,
    pub backup: bool,
    pub monitor_address: Option<String>,
    pub monitor_port: Option<u16>,
    #[serde(deserialize_with = "nullable")]
    pub provisioning_status: String,
    #[serde(deserialize_with = "nullable")]
    pub operating_status: String,
    pub admin_state_up: bool,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
}

/// One member of a batch update ([`Octavia::replace_members`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemberSpec {
    pub address: String,
    pub protocol_port: u16,
    #[serde(skip_serializing_if = "is_empty")]
    pub subnet_id: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `GET /loadbalancers/{id}/status`: the whole tree (listeners, pools, members with address and
/// port) in one call.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct StatusTree {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub provisioning_status: String,
    #[serde(deserialize_with = "nullable")]
    pub operating_status: String,
    #[serde(deserialize_with = "nullable")]
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ListenerStatus {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub provisioning_status: String,
    #[serde(deserialize_with = "nullable")]
    pub pools: Vec<PoolStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PoolStatus {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub provisioning_status: String,
    #[serde(deserialize_with = "nullable")]
    pub members: Vec<MemberStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct MemberStatus {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    pub protocol_port: u16,
    #[serde(deserialize_with = "nullable")]
    pub provisioning_status: String,
    #[serde(deserialize_with = "nullable")]
    pub operating_status: String,
}

/// Outcome of [`Octavia::wait_for_lb`].
#[derive(Clone, Debug, PartialEq)]
pub enum LbState {
    /// Provisioning status is `ACTIVE`.
    Active(Box<LoadBalancer>),
    /// 404 or `DELETED`.
    Deleted,
}

const fn kind(path: &'static str, one: &'static str, many: &'static str) -> Kind {
    Kind::new(LB, "/v2/lbaas", path, one, many)
}

const LOADBALANCERS: Kind = kind("loadbalancers", "loadbalancer", "loadbalancers");
const LISTENERS: Kind = kind("listeners", "listener", "listeners");
const POOLS: Kind = kind("pools", "pool", "pools");
const HEALTHMONITORS: Kind = kind("healthmonitors", "healthmonitor", "healthmonitors");

/// Octavia client over a shared [`Session`].
#[derive(Clone, Debug)]
pub struct Octavia {
    session: Session,
}

impl Octavia {
    pub fn new(session: Session) -> Self {
        Octavia { session }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    #[instrument(level = "debug", name = "octavia.list_providers", skip(self))]
    pub async fn list_providers(&self) -> Result<Vec<Provider>> {
        self.session
            .get_key(LB, "/v2/lbaas/providers".into(), None, "providers")
            .await
    }

    // load balancers

    #[instrument(level = "debug", name = "octavia.create_load_balancer", skip_all, fields(name = %req.name, provider = %req.provider))]
    pub async fn create_load_balancer(&self, req: &LoadBalancerCreate) -> Result<LoadBalancer> {
        LOADBALANCERS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "octavia.get_load_balancer", skip(self))]
    pub async fn get_load_balancer(&self, id: &str) -> Result<LoadBalancer> {
        LOADBALANCERS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "octavia.list_load_balancers", skip(self))]
    pub async fn list_load_balancers(&self, query: &Query) -> Result<Vec<LoadBalancer>> {
        LOADBALANCERS.list(&self.session, query).await
    }

    /// Deletes a load balancer; `cascade` also deletes its listeners, pools and members.
    /// `Ok(false)` if it was already gone.
    #[instrument(level = "debug", name = "octavia.delete_load_balancer", skip(self))]
    pub async fn delete_load_balancer(&self, id: &str, cascade: bool) -> Result<bool> {
        let q = cascade.then(|| Query::new().eq("cascade", "true"));
        LOADBALANCERS.delete(&self.session, id, q).await
    }

    /// The load balancer's whole tree with statuses, members' addresses and ports included.
    #[instrument(level = "debug", name = "octavia.status_tree", skip(self))]
    pub async fn status_tree(&self, id: &str) -> Result<StatusTree> {
        #[derive(Deserialize)]
        struct Wrap {
            loadbalancer: StatusTree,
        }
        let w: Wrap = self
            .session
            .get_key(
                LB,
                format!("{}/status", LOADBALANCERS.item(id)),
                None,
                "statuses",
            )
            .await?;
        Ok(w.loadbalancer)
    }

    /// Polls until the load balancer is `ACTIVE` or gone (404/`DELETED`), backing off
    /// from [`POLL_MIN`] to [`POLL_MAX`]. `ERROR` fails at once; the deadline gives
    /// [`Error::WaitTimeout`].
    #[instrument(level = "debug", name = "octavia.wait_for_lb", skip(self, deadline))]
    pub async fn wait_for_lb(&self, id: &str, deadline: Instant) -> Result<LbState> {
        let started = Instant::now();
        let mut delay = POLL_MIN;
        let mut last = String::from("unknown");
        loop {
            match self.get_load_balancer(id).await {
                Ok(lb) => match lb.provisioning_status.as_str() {
                    status::ACTIVE => return Ok(LbState::Active(Box::new(lb))),
                    status::DELETED => return Ok(LbState::Deleted),
                    status::ERROR => {
                        return Err(Error::Provisioning {
                            service: LB,
                            resource: "load balancer",
                            id: id.to_owned(),
                            status: lb.provisioning_status,
                        })
                    }
                    other => {
                        if other != last {
                            tracing::debug!(status = other, "waiting");
                        }
                        last = other.to_owned();
                    }
                },
                Err(e) if e.is_not_found() => return Ok(LbState::Deleted),
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::WaitTimeout {
                    what: format!("octavia load balancer {id}"),
                    waited: now - started,
                    last_state: last,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(POLL_MAX);
        }
    }

    // listeners

    #[instrument(level = "debug", name = "octavia.create_listener", skip_all, fields(lb = %req.loadbalancer_id, port = req.protocol_port))]
    pub async fn create_listener(&self, req: &ListenerCreate) -> Result<Listener> {
        LISTENERS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "octavia.get_listener", skip(self))]
    pub async fn get_listener(&self, id: &str) -> Result<Listener> {
        LISTENERS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "octavia.list_listeners", skip(self))]
    pub async fn list_listeners(&self, query: &Query) -> Result<Vec<Listener>> {
        LISTENERS.list(&self.session, query).await
    }

    #[instrument(level = "debug", name = "octavia.update_listener", skip(self, req))]
    pub async fn update_listener(&self, id: &str, req: &ListenerUpdate) -> Result<Listener> {
        LISTENERS.update(&self.session, id, req).await
    }

    #[instrument(level = "debug", name = "octavia.delete_listener", skip(self))]
    pub async fn delete_listener(&self, id: &str) -> Result<bool> {
        LISTENERS.delete(&self.session, id, None).await
    }

    // pools

    #[instrument(level = "debug", name = "octavia.create_pool", skip_all, fields(listener = %req.listener_id))]
    pub async fn create_pool(&self, req: &PoolCreate) -> Result<Pool> {
        POOLS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "octavia.get_pool", skip(self))]
    pub async fn get_pool(&self, id: &str) -> Result<Pool> {
        POOLS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "octavia.list_pools", skip(self))]
    pub async fn list_pools(&self, query: &Query) -> Result<Vec<Pool>> {
        POOLS.list(&self.session, query).await
    }

    /// Changes a pool (`PUT /pools/{id}`), e.g. `{"session_persistence": …}`.
    #[instrument(level = "debug", name = "octavia.update_pool", skip(self, body))]
    pub async fn update_pool(&self, id: &str, body: &serde_json::Value) -> Result<Pool> {
        POOLS.update(&self.session, id, body).await
    }

    #[instrument(level = "debug", name = "octavia.delete_pool", skip(self))]
    pub async fn delete_pool(&self, id: &str) -> Result<bool> {
        POOLS.delete(&self.session, id, None).await
    }

    // health monitors

    #[instrument(level = "debug", name = "octavia.create_health_monitor", skip_all, fields(pool = %req.pool_id, kind = %req.type_))]
    pub async fn create_health_monitor(&self, req: &HealthMonitorCreate) -> Result<HealthMonitor> {
        HEALTHMONITORS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "octavia.list_health_monitors", skip(self))]
    pub async fn list_health_monitors(&self, query: &Query) -> Result<Vec<HealthMonitor>> {
        HEALTHMONITORS.list(&self.session, query).await
    }

    #[instrument(
        level = "debug",
        name = "octavia.update_health_monitor",
        skip(self, req)
    )]
    pub async fn update_health_monitor(
        &self,
        id: &str,
        req: &HealthMonitorUpdate,
    ) -> Result<HealthMonitor> {
        HEALTHMONITORS.update(&self.session, id, req).await
    }

    #[instrument(level = "debug", name = "octavia.delete_health_monitor", skip(self))]
    pub async fn delete_health_monitor(&self, id: &str) -> Result<bool> {
        HEALTHMONITORS.delete(&self.session, id, None).await
    }

    // members

    #[instrument(level = "debug", name = "octavia.list_members", skip(self))]
    pub async fn list_members(&self, pool_id: &str, query: &Query) -> Result<Vec<Member>> {
        let path = format!("{}/members", POOLS.item(pool_id));
        self.session.get_key(LB, path, Some(query), "members").await
    }

    /// Replaces the whole member set of a pool in one call (Octavia batch update).
    /// Octavia applies it asynchronously: wait for the load balancer afterwards. The ovn
    /// provider may report the LB `ACTIVE` while removed members are still listed as
    /// `PENDING_DELETE` for a moment.
    #[instrument(level = "debug", name = "octavia.replace_members", skip_all, fields(pool_id, count = members.len()))]
    pub async fn replace_members(&self, pool_id: &str, members: &[MemberSpec]) -> Result<()> {
        tracing::Span::current().record("pool_id", pool_id);
        let path = format!("{}/members", POOLS.item(pool_id));
        let req = crate::Request::new(LB, Method::PUT, path).json_wrapped("members", members)?;
        self.session.request(req).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serde_util::decode_key;
    use serde_json::json;

    #[test]
    fn decode_lb_and_friends() {
        let body = br#"{"loadbalancer": {"admin_state_up": true, "availability_zone": null, "created_at": "2024-05-01T12:00:00", "description": "svc default/nginx", "flavor_id": null, "id": "5f7c8e3a-1b2d-4c5e-9f0a-1b2c3d4e5f60", "listeners": [{"id": "l1"}], "name": "default/nginx", "operating_status": "OFFLINE", "pools": [], "project_id": "p", "provider": "ovn", "provisioning_status": "PENDING_CREATE", "tags": ["kuryr"], "tenant_id": "p", "updated_at": null, "vip_address": "10.0.0.10", "vip_network_id": "n1", "vip_port_id": "vp1", "vip_qos_policy_id": null, "vip_subnet_id": "s1", "vip_vnic_type": "normal", "additional_vips": []}}"#;
        let lb: LoadBalancer = decode_key(body, "loadbalancer").unwrap();
        assert_eq!(lb.provider, "ovn");
        assert_eq!(lb.provisioning_status, status::PENDING_CREATE);
        assert!(!lb.is_active());
        assert_eq!(lb.listeners, [IdRef { id: "l1".into() }]);
        assert_eq!(lb.vip_address, "10.0.0.10");
        assert_eq!(lb.updated_at, None);

        let providers = br#"{"providers": [{"name": "amphora", "description": "The Octavia Amphora driver."}, {"name": "octavia", "description": "Deprecated alias of the Octavia Amphora driver."}, {"name": "ovn", "description": "Octavia OVN driver."}]}"#;
        let p: Vec<Provider> = decode_key(providers, "providers").unwrap();
        assert!(p.iter().any(|p| p.name == "ovn"));

        let listener = br#"{"listener": {"admin_state_up": true, "allowed_cidrs": null, "connection_limit": -1, "default_pool_id": null, "default_tls_container_ref": null, "description": "", "id": "l1", "insert_headers": {}, "l7policies": [], "loadbalancers": [{"id": "lb1"}], "name": "tcp-80", "operating_status": "OFFLINE", "project_id": "p", "protocol": "TCP", "protocol_port": 80, "provisioning_status": "PENDING_CREATE", "sni_container_refs": [], "tags": [], "timeout_client_data": 50000, "tenant_id": "p"}}"#;
        let l: Listener = decode_key(listener, "listener").unwrap();
        assert_eq!(
            (l.protocol.as_str(), l.protocol_port, l.connection_limit),
            ("TCP", 80, Some(-1))
        );

        let pool = br#"{"pool": {"admin_state_up": true, "description": "", "healthmonitor_id": null, "id": "pl1", "lb_algorithm": "SOURCE_IP_PORT", "listeners": [{"id": "l1"}], "loadbalancers": [{"id": "lb1"}], "members": [], "name": "", "operating_status": "OFFLINE", "project_id": "p", "protocol": "TCP", "provisioning_status": "ACTIVE", "session_persistence": null, "tags": [], "tls_enabled": false}}"#;
        let p: Pool = decode_key(pool, "pool").unwrap();
        assert_eq!(p.lb_algorithm, "SOURCE_IP_PORT");

        let members = br#"{"members": [{"address": "10.0.0.5", "admin_state_up": true, "backup": false, "created_at": "2024-05-01T12:00:00", "id": "m1", "monitor_address": null, "monitor_port": null, "name": "pod-a", "operating_status": "NO_MONITOR", "project_id": "p", "protocol_port": 8080, "provisioning_status": "ACTIVE", "subnet_id": "s1", "tags": [], "updated_at": null, "weight": 1}]}"#;
        let m: Vec<Member> = decode_key(members, "members").unwrap();
        assert_eq!(
            (m[0].address.as_str(), m[0].protocol_port, m[0].weight),
            ("10.0.0.5", 8080, Some(1))
        );
    }

    #[test]
    fn encode_requests() {
        let lb = LoadBalancerCreate {
            name: "default/nginx".into(),
            vip_subnet_id: "s1".into(),
            provider: "ovn".into(),
            tags: vec!["kuryr".into()],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(crate::serde_util::Wrapped("loadbalancer", &lb)).unwrap(),
            json!({"loadbalancer": {"name": "default/nginx", "vip_subnet_id": "s1", "provider": "ovn", "tags": ["kuryr"]}})
        );
        let members = [MemberSpec {
            address: "10.0.0.5".into(),
            protocol_port: 8080,
            subnet_id: "s1".into(),
            ..Default::default()
        }];
        assert_eq!(
            serde_json::to_value(crate::serde_util::Wrapped("members", &members[..])).unwrap(),
            json!({"members": [{"address": "10.0.0.5", "protocol_port": 8080, "subnet_id": "s1"}]})
        );
        let pool = PoolCreate {
            protocol: "TCP".into(),
            lb_algorithm: "SOURCE_IP_PORT".into(),
            listener_id: "l1".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&pool).unwrap(),
            json!({"protocol": "TCP", "lb_algorithm": "SOURCE_IP_PORT", "listener_id": "l1"})
        );
    }
}
