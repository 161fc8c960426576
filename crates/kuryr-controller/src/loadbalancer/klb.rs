//! KuryrLoadBalancer reconciler (upstream `KuryrLoadBalancerHandler`): spec → Octavia.
//!
//! * **Find** the load balancer: by `status.loadbalancer.id` (ours or upstream's), else by the
//!   owner tag `kuryr-rs-klb=<KuryrLoadBalancer uid>` every object we create carries, so a
//!   controller killed between create and status write adopts it instead of creating another.
//! * **Replace** one in `ERROR`, with another VIP or another provider (cascade delete, then create).
//! * **Create** a missing one fully populated: load balancer, listeners, pools and members in one
//!   call; the status is written at once (ids), before waiting for `ACTIVE`.
//! * **Converge** an existing one with reads first (listeners by load balancer, the status tree
//!   with members): a missing listener is created with its pool and members (one call), a
//!   missing pool with its members (one call), a pool whose members differ is replaced in one
//!   batch call (`PUT /pools/{id}/members`), listeners no longer asked for go. Octavia refuses
//!   writes while the load balancer is `PENDING_*`: each write waits for `ACTIVE` by following
//!   `provisioning_status` ([`kuryr_openstack::Octavia::wait_for_lb`]); a 409 waits and retries once.
//! * **Release** (finalizer): cascade delete, wait until gone, drop the finalizer.
//!
//! Out-of-band deletions are found by [`super::audit`], which re-triggers the affected objects.

use super::model::{self, WantListener, WantMember};
use super::public_ip::{self, PublicIp};
use super::Lb;
use crate::runtime::error::Error;
use crate::runtime::finalizers::{add_finalizer_patch, json_patch, remove_finalizer_patch};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use kuryr_core::crd::KuryrLoadBalancer;
use kuryr_core::names::{resource_description, KURYRLB_FINALIZER};
use kuryr_openstack::octavia::{
    status as lbstatus, AdditionalVip, HealthMonitor, HealthMonitorCreate, HealthMonitorUpdate, LbState, ListenerCreate, ListenerUpdate,
    LoadBalancer, LoadBalancerCreate, MemberSpec, Pool, PoolCreate, StatusTree,
};
use kuryr_openstack::Query;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::time::Instant;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "kuryrloadbalancer";

/// What the KuryrLoadBalancer reconciler acts on: the spec (its generation), deletion and the
/// finalizers. Its own status writes do not wake it (they are the result, not a request).
pub fn fingerprint(k: &KuryrLoadBalancer) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.metadata.uid.hash(&mut h);
    k.metadata.generation.hash(&mut h);
    k.metadata.deletion_timestamp.is_some().hash(&mut h);
    k.metadata.finalizers.hash(&mut h);
    Some(h.finish())
}

/// The tag naming the KuryrLoadBalancer (by uid) an Octavia load balancer was created for.
pub fn owner_tag(uid: &str) -> String {
    format!("kuryr-rs-klb={uid}")
}

#[tracing::instrument(
    skip_all,
    fields(controller = CONTROLLER, namespace = %klb.namespace().unwrap_or_default(), name = %klb.name_any())
)]
pub async fn reconcile(klb: Arc<KuryrLoadBalancer>, lb: Arc<Lb>) -> Result<Action, Error> {
    let ctx = &lb.ctx;
    ctx.metrics.reconciled(CONTROLLER);
    if !ctx.leader.is_leader() {
        return Ok(Action::await_change());
    }
    lb.wait_synced().await;
    let ns = klb.namespace().ok_or_else(|| Error::Invalid(format!("kuryrloadbalancer {} has no namespace", klb.name_any())))?;
    let name = klb.name_any();
    let what = format!("{ns}/{name}");
    let budget = ctx.settings.reconcile_timeout + lb.settings.activation_timeout;
    let fut = async {
        if klb.metadata.deletion_timestamp.is_some() {
            return release(&klb, &ns, &name, &lb).await;
        }
        if !klb.finalizers().iter().any(|f| f == KURYRLB_FINALIZER) {
            // Upstream's and ours carry it from creation; one without gets it before any
            // Octavia object exists (then converges in this same pass).
            ctx.leader.ensure()?;
            let api: Api<KuryrLoadBalancer> = Api::namespaced(ctx.client.clone(), &ns);
            if json_patch(&api, &name, add_finalizer_patch(klb.as_ref(), KURYRLB_FINALIZER))
                .await
                .map_err(|e| Error::kube("add finalizer to", format!("kuryrloadbalancer {what}"), e))?
                .is_none()
            {
                return Ok(Action::await_change());
            }
        }
        converge(&klb, &ns, &name, &lb).await
    };
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(budget, fut)
        .await
        .map_err(|_| Error::Timeout { what: format!("reconcile of kuryrloadbalancer {what}"), after: budget })?;
    if r.is_ok() {
        ctx.backoff.succeeded(&format!("{CONTROLLER}/{what}"));
        tracing::debug!(took = ?started.elapsed(), "converged");
    }
    r
}

pub fn error_policy(klb: Arc<KuryrLoadBalancer>, err: &Error, lb: Arc<Lb>) -> Action {
    let ns = klb.namespace().unwrap_or_default();
    if !matches!(err.inner(), Error::NotLeader) {
        if let Some(svc) = lb.services.get(&ObjectRef::new(&klb.name_any()).within(&ns)) {
            let who = match err.inner() {
                Error::OpenStack(e) if e.fault() == kuryr_openstack::Fault::OpenStack => "Octavia/Neutron",
                _ => "kuryr-rs",
            };
            lb.ctx.events.warning(svc.object_ref(&()), "KuryrEnsureLBError", "EnsureLB", format!("{who} fault: {err}"));
        }
    }
    crate::runtime::policy::error_action(CONTROLLER, &ns, &klb.name_any(), err, &lb.ctx)
}

/// `ok_if_gone(get)`: a 404 is `None`.
fn found<T>(r: Result<T, kuryr_openstack::Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn status_id(klb: &KuryrLoadBalancer) -> Option<String> {
    klb.status.as_ref()?.loadbalancer.get("id")?.as_str().filter(|s| !s.is_empty()).map(String::from)
}

/// The load balancer this KuryrLoadBalancer stands for, if it exists (not being deleted).
async fn find(klb: &KuryrLoadBalancer, lb: &Lb) -> Result<Option<LoadBalancer>, Error> {
    let oct = &lb.ctx.octavia;
    if let Some(id) = status_id(klb) {
        if let Some(l) = found(oct.get_load_balancer(&id).await)? {
            if !matches!(l.provisioning_status.as_str(), lbstatus::PENDING_DELETE | lbstatus::DELETED) {
                return Ok(Some(l));
            }
        }
    }
    let Some(uid) = klb.uid() else { return Ok(None) };
    let tagged = oct.list_load_balancers(&Query::new().eq("tags", owner_tag(&uid))).await?;
    Ok(tagged.into_iter().find(|l| !matches!(l.provisioning_status.as_str(), lbstatus::PENDING_DELETE | lbstatus::DELETED)))
}

/// Cascade-deletes a load balancer and waits until Octavia says it is gone.
async fn delete_lb(id: &str, lb: &Lb) -> Result<(), Error> {
    let oct = &lb.ctx.octavia;
    let deadline = Instant::now() + lb.settings.activation_timeout;
    // A load balancer still PENDING_* refuses the delete: let it settle first.
    match oct.wait_for_lb(id, deadline).await {
        Ok(LbState::Deleted) => return Ok(()),
        Ok(LbState::Active(_)) | Err(kuryr_openstack::Error::Provisioning { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    oct.delete_load_balancer(id, true).await?;
    match oct.wait_for_lb(id, deadline).await {
        Ok(LbState::Deleted) => Ok(()),
        Ok(LbState::Active(_)) => Err(Error::Invalid(format!("octavia load balancer {id} is still ACTIVE after its delete"))),
        // ERROR while deleting: report it; the next attempt deletes again.
        Err(e) => Err(e.into()),
    }
}

/// Waits for `ACTIVE` (the load balancer accepts writes again).
async fn settle(id: &str, lb: &Lb) -> Result<LoadBalancer, Error> {
    let deadline = Instant::now() + lb.settings.activation_timeout;
    match lb.ctx.octavia.wait_for_lb(id, deadline).await? {
        LbState::Active(l) => Ok(*l),
        LbState::Deleted => Err(Error::Invalid(format!("octavia load balancer {id} disappeared while being changed"))),
    }
}

/// One write to a load balancer: on 409 (immutable while `PENDING_*`: someone else is changing
/// it) wait for `ACTIVE` and retry once; after the write, wait for `ACTIVE` again.
async fn write<T, F, Fut>(id: &str, lb: &Lb, f: F) -> Result<T, Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kuryr_openstack::Error>>,
{
    let out = match f().await {
        Err(e) if e.is_conflict() => {
            settle(id, lb).await?;
            f().await?
        }
        r => r?,
    };
    settle(id, lb).await?;
    Ok(out)
}

/// The Neutron subnet a member address is in: one of the configured member subnets, or the VIP
/// subnet `vip_subnet` (routed) when none holds it.
async fn member_subnet(address: &str, vip_subnet: &str, lb: &Lb) -> Result<String, Error> {
    let Ok(ip) = address.parse::<std::net::IpAddr>() else { return Ok(vip_subnet.to_string()) };
    for id in &lb.settings.member_subnets {
        let s = lb.ctx.cache.subnet(&lb.ctx.neutron, id).await?;
        if s.cidr.parse::<ipnet::IpNet>().is_ok_and(|n| n.contains(&ip)) {
            return Ok(id.clone());
        }
    }
    Ok(vip_subnet.to_string())
}

/// The subnet of every member address the spec asks for, resolved once per pass (for the
/// members' `subnet_id` and the status).
async fn member_subnets(want: &[WantListener], vip_subnet: &str, lb: &Lb) -> Result<BTreeMap<String, String>, Error> {
    let mut subnets = BTreeMap::new();
    for m in want.iter().flat_map(|w| w.members.iter()) {
        if !subnets.contains_key(&m.address) {
            subnets.insert(m.address.clone(), member_subnet(&m.address, vip_subnet, lb).await?);
        }
    }
    Ok(subnets)
}

fn member_specs(members: &BTreeSet<WantMember>, subnets: &BTreeMap<String, String>, lb: &Lb) -> Vec<MemberSpec> {
    members
        .iter()
        .map(|m| MemberSpec {
            address: m.address.clone(),
            protocol_port: m.port,
            subnet_id: subnets.get(&m.address).cloned().unwrap_or_else(|| lb.settings.service_subnet.clone()),
            name: m.name.clone(),
            tags: lb.settings.tags.clone(),
            ..MemberSpec::default()
        })
        .collect()
}

/// Additional VIPs as normalised addresses (Octavia may write them in another form or order).
fn vip_set(vips: &[AdditionalVip]) -> BTreeSet<String> {
    vips.iter().map(|v| model::normalize_ip(&v.ip_address)).collect()
}

/// Whether Octavia listener `x` is the one `w` asks for (same protocol and port).
fn serves(x: &kuryr_openstack::octavia::Listener, w: &WantListener) -> bool {
    x.protocol.eq_ignore_ascii_case(&w.protocol) && x.protocol_port == w.port
}

fn timeout(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0)
}

/// Octavia's `session_persistence` for `sessionAffinity: ClientIP` (`SOURCE_IP`; the ovn provider
/// turns `persistence_timeout` into the OVN load balancer's affinity timeout).
fn persistence(klb: &KuryrLoadBalancer) -> Option<serde_json::Value> {
    klb.spec.session_affinity_timeout.map(|t| json!({"type": "SOURCE_IP", "persistence_timeout": t}))
}

/// Whether a pool's `session_persistence` is what `want` asks (only type and timeout count).
fn persistence_matches(have: Option<&serde_json::Value>, want: Option<&serde_json::Value>) -> bool {
    let key = |v: Option<&serde_json::Value>| v.filter(|v| !v.is_null()).map(|v| (v["type"].clone(), v["persistence_timeout"].clone()));
    key(have) == key(want)
}

/// The pool protocol for listener `w`: the listener's, or `PROXY`/`PROXYV2` for a TCP one when
/// the spec asks for the PROXY protocol.
fn pool_protocol(klb: &KuryrLoadBalancer, w: &WantListener) -> String {
    match klb.spec.proxy_protocol.as_deref() {
        Some(p) if w.protocol == "TCP" => p.to_string(),
        _ => w.protocol.clone(),
    }
}

/// The health monitor a pool of listener `w` should have, if any (its type follows the
/// protocol; a provider without one for it gets none: the Service has an Event saying so).
fn monitor(klb: &KuryrLoadBalancer, w: &WantListener, tags: &[String], lb: &Lb) -> Option<HealthMonitorCreate> {
    let hm = klb.spec.health_monitor.as_ref()?;
    let provider = klb.spec.provider.as_deref().or(lb.settings.provider.as_deref());
    let type_ = model::ProviderCaps::of(provider).monitor_type(&w.protocol)?;
    Some(HealthMonitorCreate {
        type_: type_.to_string(),
        delay: hm.delay,
        timeout: hm.timeout,
        max_retries: hm.max_retries,
        max_retries_down: hm.max_retries_down,
        name: w.name.clone(),
        tags: tags.to_vec(),
        ..HealthMonitorCreate::default()
    })
}

/// Listener `allowed_cidrs`: `None` when the spec restricts nothing; otherwise the spec's
/// ranges plus the cluster's own subnets (pods, nodes, services), so that restricting who reaches
/// the floating IP never cuts in-cluster clients off the ClusterIP (the same listener serves both).
async fn allowed_cidrs(klb: &KuryrLoadBalancer, lb: &Lb) -> Result<Option<Vec<String>>, Error> {
    if klb.spec.allowed_cidrs.is_empty() {
        return Ok(None);
    }
    let mut out: BTreeSet<String> = klb.spec.allowed_cidrs.iter().cloned().collect();
    for id in lb.settings.member_subnets.iter().chain(lb.settings.service_subnets()) {
        out.insert(lb.ctx.cache.subnet(&lb.ctx.neutron, id).await?.cidr.clone());
    }
    Ok(Some(out.into_iter().collect()))
}

fn pool_create(
    klb: &KuryrLoadBalancer,
    w: &WantListener,
    listener_id: &str,
    tags: &[String],
    subnets: &BTreeMap<String, String>,
    lb: &Lb,
) -> PoolCreate {
    PoolCreate {
        protocol: pool_protocol(klb, w),
        lb_algorithm: lb.settings.lb_algorithm.clone(),
        listener_id: listener_id.to_string(),
        name: w.name.clone(),
        tags: tags.to_vec(),
        session_persistence: persistence(klb),
        members: member_specs(&w.members, subnets, lb),
        healthmonitor: monitor(klb, w, tags, lb),
        ..PoolCreate::default()
    }
}

fn listener_create(
    klb: &KuryrLoadBalancer,
    w: &WantListener,
    lb_id: &str,
    tags: &[String],
    subnets: &BTreeMap<String, String>,
    allowed: Option<&Vec<String>>,
    lb: &Lb,
) -> ListenerCreate {
    ListenerCreate {
        loadbalancer_id: lb_id.to_string(),
        protocol: w.protocol.clone(),
        protocol_port: w.port,
        name: w.name.clone(),
        timeout_client_data: timeout(klb.spec.timeout_client_data),
        timeout_member_data: timeout(klb.spec.timeout_member_data),
        tags: tags.to_vec(),
        allowed_cidrs: allowed.cloned(),
        default_pool: Some(pool_create(klb, w, "", tags, subnets, lb)),
        ..ListenerCreate::default()
    }
}

async fn converge(klb: &KuryrLoadBalancer, ns: &str, name: &str, lb: &Lb) -> Result<Action, Error> {
    let Some(t) = Target::resolve(klb, ns, name, lb).await? else { return Ok(Action::await_change()) };
    let found = find(klb, lb).await?;
    if let Some(l) = found.as_ref().filter(|l| status_id(klb).as_deref() != Some(l.id.as_str())) {
        // Found by the owner tag, not recorded: made before a crash (or a failed status write).
        tracing::info!(lb = %l.id, "adopting the Service's load balancer (not recorded in the status)");
        lb.ctx.metrics.adopted("loadbalancer");
    }
    let current = t.replace_unfit(found).await?;
    let (l, mut changed) = t.active(current).await?;
    let seen = t.observe(&l).await?;
    for w in &t.want {
        changed |= t.converge_listener(&l, &seen, w).await?;
    }
    changed |= t.delete_extra_listeners(&l, &seen.listeners).await?;
    t.publish_status(&l, changed, seen).await?;
    lb.converged(&format!("{ns}/{name}"));
    Ok(Action::await_change())
}

/// What one converge pass works towards: the spec's wants and what they resolve to.
struct Target<'a> {
    klb: &'a KuryrLoadBalancer,
    ns: &'a str,
    name: &'a str,
    lb: &'a Lb,
    ip: String,
    lb_name: String,
    want: Vec<WantListener>,
    tags: Vec<String>,
    subnet: String,
    provider: Option<String>,
    subnets: BTreeMap<String, String>,
    allowed: Option<Vec<String>>,
    flavor: Option<String>,
    uid: String,
}

/// What a pass reads of the load balancer before writing to it.
struct Observed {
    listeners: Vec<kuryr_openstack::octavia::Listener>,
    tree: StatusTree,
    pools: Vec<Pool>,
    monitors: Vec<HealthMonitor>,
}

impl Observed {
    /// The members of pool `pool_id` (those not being deleted) as (address, port, name); `None`
    /// for a pool not in the tree.
    fn pool_members(&self, pool_id: &str) -> Option<BTreeSet<(String, u16, String)>> {
        self.tree.listeners.iter().flat_map(|x| x.pools.iter()).find(|p| p.id == pool_id).map(|p| {
            p.members
                .iter()
                .filter(|m| m.provisioning_status != lbstatus::PENDING_DELETE)
                .map(|m| (model::normalize_ip(&m.address), m.protocol_port, m.name.clone()))
                .collect()
        })
    }

    /// Pool `pool_id` as listed, if it is.
    fn pool(&self, pool_id: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.id == pool_id)
    }
}

impl<'a> Target<'a> {
    /// Resolves the spec: `None` while it has no IP (nothing to converge yet).
    async fn resolve(klb: &'a KuryrLoadBalancer, ns: &'a str, name: &'a str, lb: &'a Lb) -> Result<Option<Target<'a>>, Error> {
        let Some(ip) = klb.spec.ip.clone().filter(|s| !s.is_empty()) else { return Ok(None) };
        let uid = klb.uid().ok_or_else(|| Error::Invalid(format!("kuryrloadbalancer {ns}/{name} has no uid")))?;
        let lb_name = model::lb_name(ns, name);
        let want = model::listeners(&lb_name, &klb.spec);
        let mut tags = lb.settings.tags.clone();
        tags.push(owner_tag(&uid));
        let subnet = klb.spec.subnet_id.clone().unwrap_or_else(|| lb.settings.service_subnet.clone());
        let provider = klb.spec.provider.clone().or_else(|| lb.settings.provider.clone());
        let subnets = member_subnets(&want, &subnet, lb).await?;
        let allowed = allowed_cidrs(klb, lb).await?;
        let flavor = klb.spec.flavor_id.clone().filter(|f| !f.is_empty());
        Ok(Some(Target { klb, ns, name, lb, ip, lb_name, want, tags, subnet, provider, subnets, allowed, flavor, uid }))
    }

    /// Octavia's `additional_vips` for a dual-stack Service's other ClusterIPs.
    fn additional_vips(&self) -> Vec<AdditionalVip> {
        self.klb.spec.additional_vips.iter().map(|v| AdditionalVip { subnet_id: v.subnet_id.clone(), ip_address: v.ip.clone() }).collect()
    }

    /// Why the existing load balancer `l` cannot serve the spec, if it cannot.
    fn unfit(&self, l: &LoadBalancer) -> Option<String> {
        let (ip, provider, flavor) = (&self.ip, &self.provider, &self.flavor);
        if l.provisioning_status == lbstatus::ERROR {
            Some("it is in ERROR".to_string())
        } else if model::normalize_ip(&l.vip_address) != *ip {
            Some(format!("its VIP {} is not the ClusterIP {ip}", l.vip_address))
        } else if vip_set(&l.additional_vips) != vip_set(&self.additional_vips()) {
            Some(format!(
                "its additional VIPs {:?} are not the other ClusterIPs {:?}",
                vip_set(&l.additional_vips),
                vip_set(&self.additional_vips())
            ))
        } else if provider.as_deref().is_some_and(|p| p != l.provider) {
            Some(format!("its provider {} is not {}", l.provider, provider.as_deref().unwrap_or_default()))
        } else if flavor.is_some() && *flavor != l.flavor_id {
            Some(format!("its flavor {} is not {}", l.flavor_id.as_deref().unwrap_or("(none)"), flavor.as_deref().unwrap_or_default()))
        } else {
            None
        }
    }

    /// Deletes the current load balancer when it is unfit (with an Event on the Service);
    /// returns what is left of it.
    async fn replace_unfit(&self, current: Option<LoadBalancer>) -> Result<Option<LoadBalancer>, Error> {
        let Some(l) = current else { return Ok(None) };
        let Some(why) = self.unfit(&l) else { return Ok(Some(l)) };
        let ctx = &self.lb.ctx;
        ctx.leader.ensure()?;
        tracing::warn!(lb = %l.id, %why, "replacing the load balancer");
        if let Some(svc) = self.lb.services.get(&ObjectRef::new(self.name).within(self.ns)) {
            ctx.events.normal(
                svc.object_ref(&()),
                "KuryrReplaceLB",
                "EnsureLB",
                format!("replacing Octavia load balancer {}: {why}", l.id),
            );
        }
        delete_lb(&l.id, self.lb).await?;
        Ok(None)
    }

    /// The load balancer, `ACTIVE`: the current one once settled, or a new one created fully
    /// populated; `true` when it was created.
    async fn active(&self, current: Option<LoadBalancer>) -> Result<(LoadBalancer, bool), Error> {
        match current {
            Some(l) if l.provisioning_status == lbstatus::ACTIVE => Ok((l, false)),
            Some(l) => Ok((settle(&l.id, self.lb).await?, false)),
            None => Ok((self.create().await?, true)),
        }
    }

    /// Creates the load balancer with its listeners, pools and members in one call, records it
    /// in the status and waits for `ACTIVE`.
    async fn create(&self) -> Result<LoadBalancer, Error> {
        let (klb, ns, name, lb) = (self.klb, self.ns, self.name, self.lb);
        lb.ctx.leader.ensure()?;
        let listeners = self.want.iter().map(|w| self.listener_create(w, "")).collect();
        let req = LoadBalancerCreate {
            name: self.lb_name.clone(),
            description: resource_description("load balancer", &lb.settings.cluster_name, ns, name),
            vip_subnet_id: self.subnet.clone(),
            vip_address: self.ip.clone(),
            additional_vips: self.additional_vips(),
            provider: self.provider.clone().unwrap_or_default(),
            flavor_id: self.flavor.clone().unwrap_or_default(),
            project_id: klb.spec.project_id.clone().unwrap_or_else(|| lb.settings.project.clone()),
            tags: self.tags.clone(),
            listeners,
            ..LoadBalancerCreate::default()
        };
        let created = lb.ctx.octavia.create_load_balancer(&req).await?;
        tracing::info!(lb = %created.id, vip = %self.ip, listeners = self.want.len(), "octavia load balancer created (fully populated)");
        // Record it before waiting: a crash from here on finds it by id (and by tag).
        let keep = PublicIp::from_status(klb);
        write_status(klb, ns, name, &status_json(&created, &[], &StatusTree::default(), &BTreeMap::new(), keep.as_ref()), lb).await?;
        settle(&created.id, lb).await
    }

    /// Listener `w` as created (with its pool and members) on load balancer `lb_id`.
    fn listener_create(&self, w: &WantListener, lb_id: &str) -> ListenerCreate {
        listener_create(self.klb, w, lb_id, &self.tags, &self.subnets, self.allowed.as_ref(), self.lb)
    }

    /// Reads first: listeners of this load balancer, and its status tree.
    async fn observe(&self, l: &LoadBalancer) -> Result<Observed, Error> {
        let oct = &self.lb.ctx.octavia;
        let listeners = oct.list_listeners(&Query::new().eq("loadbalancer_id", &l.id)).await?;
        let tree = oct.status_tree(&l.id).await?;
        // Pools' settings (session persistence) are not in the tree.
        let pools = oct.list_pools(&Query::new().eq("loadbalancer_id", &l.id)).await?;
        // Health monitors only when one is asked for or a pool has one (one tag-filtered list).
        let monitors = if self.klb.spec.health_monitor.is_some() || pools.iter().any(|p| p.healthmonitor_id.is_some()) {
            oct.list_health_monitors(&Query::new().eq("tags", owner_tag(&self.uid))).await?
        } else {
            Vec::new()
        };
        Ok(Observed { listeners, tree, pools, monitors })
    }

    /// Makes the listener `w` asks for what it asks: created with its pool when missing,
    /// else its settings and pool converged. `Ok(true)` when Octavia was written.
    async fn converge_listener(&self, l: &LoadBalancer, seen: &Observed, w: &WantListener) -> Result<bool, Error> {
        let Some(have) = seen.listeners.iter().find(|x| serves(x, w)) else {
            self.lb.ctx.leader.ensure()?;
            let req = self.listener_create(w, &l.id);
            write(&l.id, self.lb, || self.lb.ctx.octavia.create_listener(&req)).await?;
            tracing::info!(listener = %w.name, members = w.members.len(), "listener created with its pool");
            return Ok(true);
        };
        let mut changed = self.update_listener(l, have).await?;
        match self.reusable_pool(l, seen, have, w).await? {
            None => {
                self.lb.ctx.leader.ensure()?;
                let req = pool_create(self.klb, w, &have.id, &self.tags, &self.subnets, self.lb);
                write(&l.id, self.lb, || self.lb.ctx.octavia.create_pool(&req)).await?;
                tracing::info!(listener = %w.name, members = w.members.len(), "pool created");
                changed = true;
            }
            Some(pool_id) => changed |= self.converge_pool(l, seen, w, pool_id).await?,
        }
        Ok(changed)
    }

    /// Updates listener `have`'s timeouts and allowed CIDRs where they differ from the spec.
    async fn update_listener(&self, l: &LoadBalancer, have: &kuryr_openstack::octavia::Listener) -> Result<bool, Error> {
        let klb = self.klb;
        let (tc, tm) = (timeout(klb.spec.timeout_client_data), timeout(klb.spec.timeout_member_data));
        let have_cidrs = have.allowed_cidrs.clone().filter(|c| !c.is_empty()).map(|mut c| {
            c.sort();
            c
        });
        let cidrs_differ = have_cidrs != self.allowed;
        if (tc.is_some() && tc != have.timeout_client_data) || (tm.is_some() && tm != have.timeout_member_data) || cidrs_differ {
            self.lb.ctx.leader.ensure()?;
            let req = ListenerUpdate {
                timeout_client_data: tc,
                timeout_member_data: tm,
                // `[]` lifts a restriction.
                allowed_cidrs: cidrs_differ.then(|| self.allowed.clone().unwrap_or_default()),
            };
            write(&l.id, self.lb, || self.lb.ctx.octavia.update_listener(&have.id, &req)).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Listener `have`'s pool, if it has one to keep: a pool speaking another protocol (PROXY on
    /// or off) cannot be changed, so it is deleted here (to be replaced).
    async fn reusable_pool<'s>(
        &self,
        l: &LoadBalancer,
        seen: &Observed,
        have: &'s kuryr_openstack::octavia::Listener,
        w: &WantListener,
    ) -> Result<Option<&'s str>, Error> {
        let pool = have.default_pool_id.as_deref().filter(|p| seen.pool_members(p).is_some());
        if let Some(p) = pool.and_then(|id| seen.pool(id)) {
            if !p.protocol.eq_ignore_ascii_case(&pool_protocol(self.klb, w)) {
                self.lb.ctx.leader.ensure()?;
                write(&l.id, self.lb, || self.lb.ctx.octavia.delete_pool(&p.id)).await?;
                tracing::info!(pool = %p.id, from = %p.protocol, to = %pool_protocol(self.klb, w), "pool protocol changed: pool replaced");
                return Ok(None);
            }
        }
        Ok(pool)
    }

    /// Makes existing pool `pool_id` what `w` asks: session persistence, health monitor and
    /// members (replaced in one batch call when they differ). `Ok(true)` when Octavia was written.
    async fn converge_pool(&self, l: &LoadBalancer, seen: &Observed, w: &WantListener, pool_id: &str) -> Result<bool, Error> {
        let (klb, lb, oct) = (self.klb, self.lb, &self.lb.ctx.octavia);
        let mut changed = false;
        let want_p = persistence(klb);
        let have_p = seen.pool(pool_id).and_then(|p| p.session_persistence.as_ref());
        if !persistence_matches(have_p, want_p.as_ref()) {
            lb.ctx.leader.ensure()?;
            let body = json!({ "session_persistence": want_p });
            write(&l.id, lb, || oct.update_pool(pool_id, &body)).await?;
            tracing::info!(pool = %pool_id, persistence = %body, "pool session persistence updated");
            changed = true;
        }
        let have_hm = seen.pool(pool_id).and_then(|p| p.healthmonitor_id.clone());
        changed |= converge_monitor(klb, w, pool_id, have_hm.as_deref(), &seen.monitors, &self.tags, &l.id, lb).await?;
        // Names too: a member named otherwise (an earlier release's `<address>:<port>`) is renamed
        // in the same batch call (Octavia updates a member of the same address and port in place).
        let want_set: BTreeSet<(String, u16, String)> = w.members.iter().map(|m| (m.address.clone(), m.port, m.name.clone())).collect();
        if seen.pool_members(pool_id).as_ref() != Some(&want_set) {
            lb.ctx.leader.ensure()?;
            let specs = member_specs(&w.members, &self.subnets, lb);
            write(&l.id, lb, || oct.replace_members(pool_id, &specs)).await?;
            tracing::info!(pool = %pool_id, members = specs.len(), "pool members replaced (one batch call)");
            changed = true;
        }
        Ok(changed)
    }

    /// Deletes the listeners (and their pools) no longer asked for. `Ok(true)` when any went.
    async fn delete_extra_listeners(&self, l: &LoadBalancer, listeners: &[kuryr_openstack::octavia::Listener]) -> Result<bool, Error> {
        let oct = &self.lb.ctx.octavia;
        let mut changed = false;
        for extra in listeners.iter().filter(|x| !self.want.iter().any(|w| serves(x, w))) {
            self.lb.ctx.leader.ensure()?;
            if let Some(p) = extra.default_pool_id.as_deref() {
                write(&l.id, self.lb, || oct.delete_pool(p)).await?;
            }
            write(&l.id, self.lb, || oct.delete_listener(&extra.id)).await?;
            tracing::info!(listener = %extra.name, "listener no longer asked for: deleted");
            changed = true;
        }
        Ok(changed)
    }

    /// Ensures the public IP and writes the status where it differs, then publishes the IP.
    async fn publish_status(&self, l: &LoadBalancer, changed: bool, seen: Observed) -> Result<(), Error> {
        let (klb, ns, name, lb, oct) = (self.klb, self.ns, self.name, self.lb, &self.lb.ctx.octavia);
        // Status: from fresh reads when anything changed, else from what was just read.
        let (listeners, tree) = if changed {
            (oct.list_listeners(&Query::new().eq("loadbalancer_id", &l.id)).await?, oct.status_tree(&l.id).await?)
        } else {
            (seen.listeners, seen.tree)
        };
        let public = public_ip::ensure(klb, ns, name, &l.vip_port_id, lb).await?;
        let status = status_json(l, &listeners, &tree, &self.subnets, public.as_ref());
        if klb.status.as_ref().map(|s| serde_json::to_value(s).unwrap_or_default()) != Some(status.clone()) {
            write_status(klb, ns, name, &status, lb).await?;
        }
        public_ip::publish(ns, name, public.as_ref(), lb).await?;
        Ok(())
    }
}

/// Makes pool `pool_id`'s health monitor what the spec asks: created, changed, or deleted.
/// `Ok(true)` when Octavia was written.
#[allow(clippy::too_many_arguments)]
async fn converge_monitor(
    klb: &KuryrLoadBalancer,
    w: &WantListener,
    pool_id: &str,
    have: Option<&str>,
    monitors: &[HealthMonitor],
    tags: &[String],
    lb_id: &str,
    lb: &Lb,
) -> Result<bool, Error> {
    let oct = &lb.ctx.octavia;
    let want = monitor(klb, w, tags, lb);
    match (have, want) {
        (None, None) => Ok(false),
        (Some(id), None) => {
            lb.ctx.leader.ensure()?;
            write(lb_id, lb, || oct.delete_health_monitor(id)).await?;
            tracing::info!(pool = %pool_id, monitor = %id, "health monitor no longer asked for: deleted");
            Ok(true)
        }
        (None, Some(mut req)) => {
            lb.ctx.leader.ensure()?;
            req.pool_id = pool_id.to_string();
            write(lb_id, lb, || oct.create_health_monitor(&req)).await?;
            tracing::info!(pool = %pool_id, kind = %req.type_, "health monitor created");
            Ok(true)
        }
        (Some(id), Some(req)) => {
            // One we did not tag (adopted) is left as it is: its settings are unknown here.
            let Some(h) = monitors.iter().find(|h| h.id == id) else { return Ok(false) };
            if !h.type_.eq_ignore_ascii_case(&req.type_) {
                lb.ctx.leader.ensure()?;
                write(lb_id, lb, || oct.delete_health_monitor(id)).await?;
                let req = HealthMonitorCreate { pool_id: pool_id.to_string(), ..req };
                write(lb_id, lb, || oct.create_health_monitor(&req)).await?;
                return Ok(true);
            }
            let upd = HealthMonitorUpdate {
                delay: req.delay,
                timeout: req.timeout,
                max_retries: req.max_retries,
                max_retries_down: req.max_retries_down,
            };
            if (h.delay, h.timeout, h.max_retries, h.max_retries_down) == (upd.delay, upd.timeout, upd.max_retries, upd.max_retries_down) {
                return Ok(false);
            }
            lb.ctx.leader.ensure()?;
            write(lb_id, lb, || oct.update_health_monitor(id, &upd)).await?;
            tracing::info!(pool = %pool_id, monitor = %id, "health monitor settings updated");
            Ok(true)
        }
    }
}

/// The status upstream kuryr writes: `loadbalancer`, `listeners`, `pools`, `members`.
fn status_json(
    l: &LoadBalancer,
    listeners: &[kuryr_openstack::octavia::Listener],
    tree: &StatusTree,
    subnets: &BTreeMap<String, String>,
    public: Option<&PublicIp>,
) -> Value {
    let project = &l.project_id;
    let mut ls: Vec<Value> = listeners
        .iter()
        .map(|x| {
            json!({"id": x.id, "loadbalancer_id": l.id, "name": x.name, "port": x.protocol_port, "project_id": project,
                   "protocol": x.protocol, "timeout_client_data": x.timeout_client_data, "timeout_member_data": x.timeout_member_data})
        })
        .collect();
    ls.sort_by_key(|v| v["name"].to_string());
    let mut pools = Vec::new();
    let mut members = Vec::new();
    for x in listeners {
        let Some(pid) = x.default_pool_id.as_deref() else { continue };
        let Some(p) = tree.listeners.iter().flat_map(|t| t.pools.iter()).find(|p| p.id == pid) else { continue };
        pools.push(json!({"id": p.id, "listener_id": x.id, "loadbalancer_id": l.id, "name": p.name, "project_id": project, "protocol": x.protocol}));
        for m in p.members.iter().filter(|m| m.provisioning_status != lbstatus::PENDING_DELETE) {
            let ip = model::normalize_ip(&m.address);
            members.push(json!({"id": m.id, "ip": ip, "name": m.name, "pool_id": p.id, "port": m.protocol_port,
                                "project_id": project, "subnet_id": subnets.get(&ip)}));
        }
    }
    pools.sort_by_key(|v| v["name"].to_string());
    members.sort_by_key(|v| (v["pool_id"].to_string(), v["ip"].to_string(), v["port"].to_string()));
    json!({
        "loadbalancer": {"id": l.id, "ip": l.vip_address, "name": l.name, "port_id": l.vip_port_id, "project_id": project,
                         "provider": l.provider, "security_groups": [], "subnet_id": l.vip_subnet_id,
                         "provisioning_status": l.provisioning_status, "operating_status": l.operating_status},
        "listeners": ls, "pools": pools, "members": members,
        "service_pub_ip_info": public.map_or_else(|| json!({}), PublicIp::to_json),
    })
}

async fn write_status(klb: &KuryrLoadBalancer, ns: &str, name: &str, status: &Value, lb: &Lb) -> Result<(), Error> {
    lb.ctx.leader.ensure()?;
    let api: Api<KuryrLoadBalancer> = Api::namespaced(lb.ctx.client.clone(), ns);
    tracing::debug!(klb = %klb.name_any(), "writing status");
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status})))
        .await
        .map_err(|e| Error::kube("write status of", format!("kuryrloadbalancer {ns}/{name}"), e))?;
    Ok(())
}

/// Finalizer: delete the load balancer (by status id and by owner tag), then drop the finalizer.
async fn release(klb: &KuryrLoadBalancer, ns: &str, name: &str, lb: &Lb) -> Result<Action, Error> {
    let ctx = &lb.ctx;
    if !klb.finalizers().iter().any(|f| f == KURYRLB_FINALIZER) {
        return Ok(Action::await_change());
    }
    ctx.leader.ensure()?;
    let keep = klb.spec.keep_floating_ip;
    if let Some(ip) = PublicIp::from_status(klb) {
        public_ip::release(&ip, keep, ns, name, lb).await?;
    }
    while let Some(l) = find(klb, lb).await? {
        public_ip::release_on_port(&l.vip_port_id, keep, ns, name, lb).await?;
        delete_lb(&l.id, lb).await?;
        tracing::info!(lb = %l.id, "octavia load balancer deleted");
    }
    let api: Api<KuryrLoadBalancer> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(patch) = remove_finalizer_patch(klb, KURYRLB_FINALIZER) {
        json_patch(&api, name, patch)
            .await
            .map_err(|e| Error::kube("remove finalizer from", format!("kuryrloadbalancer {ns}/{name}"), e))?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_openstack::octavia::{Listener, ListenerStatus, MemberStatus, PoolStatus};

    #[test]
    fn status_has_upstream_fields() {
        let l = LoadBalancer {
            id: "lb1".into(),
            name: "ns/web".into(),
            vip_address: "10.96.0.20".into(),
            vip_port_id: "vp1".into(),
            vip_subnet_id: "svc".into(),
            provider: "ovn".into(),
            project_id: "p".into(),
            provisioning_status: "ACTIVE".into(),
            ..LoadBalancer::default()
        };
        let listeners = [Listener {
            id: "l1".into(),
            name: "ns/web:TCP:80".into(),
            protocol: "TCP".into(),
            protocol_port: 80,
            default_pool_id: Some("p1".into()),
            ..Listener::default()
        }];
        let member = |id: &str, ip: &str, st: &str| MemberStatus {
            id: id.into(),
            address: ip.into(),
            protocol_port: 8080,
            provisioning_status: st.into(),
            ..MemberStatus::default()
        };
        let tree = StatusTree {
            listeners: vec![ListenerStatus {
                id: "l1".into(),
                pools: vec![PoolStatus {
                    id: "p1".into(),
                    name: "ns/web:TCP:80".into(),
                    members: vec![member("m1", "10.244.0.5", "ACTIVE"), member("m2", "10.244.0.6", "PENDING_DELETE")],
                    ..PoolStatus::default()
                }],
                ..ListenerStatus::default()
            }],
            ..StatusTree::default()
        };
        let subnets = BTreeMap::from([("10.244.0.5".to_string(), "pods".to_string())]);
        let fip = PublicIp { id: "f1".into(), address: "172.24.4.9".into(), alloc: "pool".into() };
        let s = status_json(&l, &listeners, &tree, &subnets, Some(&fip));
        for key in ["id", "ip", "name", "port_id", "project_id", "provider", "security_groups", "subnet_id"] {
            assert!(s["loadbalancer"].get(key).is_some(), "loadbalancer.{key} missing: {s}");
        }
        assert_eq!(s["listeners"][0]["port"], 80);
        assert_eq!(s["listeners"][0]["loadbalancer_id"], "lb1");
        assert_eq!(s["pools"][0]["listener_id"], "l1");
        assert_eq!(s["members"].as_array().map(Vec::len), Some(1), "a member being deleted is not listed: {s}");
        assert_eq!(s["members"][0]["subnet_id"], "pods");
        assert_eq!(s["service_pub_ip_info"], json!({"ip_id": "f1", "ip_addr": "172.24.4.9", "alloc_method": "pool"}));
        assert_eq!(status_json(&l, &listeners, &tree, &subnets, None)["service_pub_ip_info"], json!({}));
    }

    #[test]
    fn session_persistence_compares_type_and_timeout_only() {
        let want = json!({"type": "SOURCE_IP", "persistence_timeout": 60});
        let have = json!({"type": "SOURCE_IP", "persistence_timeout": 60, "cookie_name": null, "persistence_granularity": null});
        assert!(persistence_matches(Some(&have), Some(&want)));
        assert!(!persistence_matches(Some(&have), Some(&json!({"type": "SOURCE_IP", "persistence_timeout": 120}))));
        assert!(!persistence_matches(Some(&have), None), "affinity removed: the pool must change");
        assert!(persistence_matches(Some(&Value::Null), None));
        assert!(persistence_matches(None, None));
    }
}
