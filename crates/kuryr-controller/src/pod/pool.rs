//! Warm pools of Neutron ports (`[kubernetes] vif_pool_driver = neutron`, knobs in `[vif_pool]`).
//!
//! A pool is keyed by (node, network) and grouped by security-group set. Its ports are
//! bulk-created (`max(ports_pool_batch, ports_pool_min - free)` ports, in `POST /ports` chunks
//! of 1, 2, 4… up to `ports_pool_batch` ports, each started only while no pod's own port
//! creation is queued or in flight, back to 1 after a chunk during which a pod asked),
//! bound to the node, stamped as pool ports (name `kuryr-pool/<node>`, description `kuryr-rs pool
//! port: cluster <c>, node <n>`, empty `device_id`), and published to the node's kuryr-daemon in the
//! node's *pool KuryrPort* (`kuryr-pool/pool-<node>`, `status.vifs` = port id → VIF; see
//! [`kuryr_core::names::POOL_LABEL`]). The daemon pre-plugs them, so they are ACTIVE before any pod
//! needs one — upstream's pooled ports stayed DOWN until a pod was wired.
//!
//! Claim (a pod needs a port): pop one of the exact security-group set, else of another set of
//! the same pool (then one `PUT` sets its security groups). A miss (empty pool): the pod's own
//! port is created first; the refill starts once that port is ACTIVE ([`missed`], [`settled`]).
//! No other OpenStack call is on the pod's path: the pod's KuryrPort status, written right after,
//! is the record of the claim; the pod's stamp on the port (device_id = pod UID, name,
//! description, tags) is written in the background. A crash before the status write leaves a port that still looks free and is
//! recovered into the pool; recovery skips ports a KuryrPort records. The port stays published
//! ("claiming") until the pod's KuryrPort has the VIF, so the daemon never sees it in neither
//! place.
//!
//! Release (the pod's KuryrPort is deleted): while the node's pool is below `ports_pool_max`, one
//! `PUT` restamps the port as a pool port and it is published again (no DELETE, no POST);
//! otherwise it is deleted.
//!
//! Recovery: all of this lives in memory and is rebuilt from Neutron alone (the pool stamp) when
//! this replica becomes the leader, before it serves a claim; a claimed port carries its pod's
//! stamp, so it can never be recovered into a pool twice. Followers hold no pool state.

use crate::pod::context::PodContext;
use crate::pod::ports::{self, PodPortRequest};
use crate::runtime::error::Error;
use crate::runtime::settings::{PoolSettings, Settings};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kuryr_core::crd::KuryrPort;
use kuryr_core::names::{pool_kuryrport_name, DEVICE_OWNER, POOL_NAMESPACE};
use kuryr_openstack::neutron::{Port, PortCreate, PortUpdate};
use kuryr_openstack::Query;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Which pool a port belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolKey {
    pub node: String,
    pub network_id: String,
}

/// Sorted security-group ids.
pub type SgSet = Vec<String>;

fn sg_set(sgs: &[String]) -> SgSet {
    let mut v = sgs.to_vec();
    v.sort();
    v.dedup();
    v
}

/// The name of a node's pool ports.
pub fn pool_port_name(node: &str) -> String {
    format!("kuryr-pool/{node}")
}

/// The description of a node's pool ports (names the cluster, for GC and recovery).
pub fn pool_description(cluster: &str, node: &str) -> String {
    kuryr_core::names::pool_port_description(cluster, node)
}

/// Whether `port` is a free pool port of `cluster`.
pub fn is_pool_port(port: &Port, cluster: &str) -> bool {
    port.device_owner == DEVICE_OWNER
        && port.device_id.is_empty()
        && kuryr_core::names::is_pool_port_description(&port.description, cluster)
}

/// One port of a bulk `POST /ports` for the pool of `key`.
pub fn pool_port_create(s: &Settings, key: &PoolKey, sgs: &[String]) -> PortCreate {
    PortCreate {
        network_id: key.network_id.clone(),
        name: pool_port_name(&key.node),
        description: pool_description(&s.cluster_name, &key.node),
        admin_state_up: Some(true),
        fixed_ips: Some(s.fixed_ips_on(&s.pod_subnet)),
        device_owner: DEVICE_OWNER.to_string(),
        binding_host_id: key.node.clone(),
        security_groups: Some(sgs.to_vec()),
        project_id: s.project.clone(),
        // Tags are not applied by a bulk POST without Neutron's tag-ports-during-bulk-creation
        // extension; a claim adds them (driver::neutron::acquire), the pool stamp is the description.
        ..PortCreate::default()
    }
}

/// The `PUT` that hands a pool port to a pod (security groups only if they differ).
pub fn claim_update(s: &Settings, req: &PodPortRequest, port: &Port, sgs: &[String]) -> PortUpdate {
    PortUpdate {
        name: Some(format!("{}/{}", req.namespace, req.name)),
        description: Some(ports::description(&s.cluster_name, req)),
        device_id: Some(req.pod_uid.clone()),
        security_groups: (sg_set(&port.security_groups) != sg_set(sgs)).then(|| sgs.to_vec()),
        ..PortUpdate::default()
    }
}

/// The `PUT` that returns a released port to its node's pool.
pub fn recycle_update(s: &Settings, node: &str) -> PortUpdate {
    PortUpdate {
        name: Some(pool_port_name(node)),
        description: Some(pool_description(&s.cluster_name, node)),
        device_id: Some(String::new()),
        ..PortUpdate::default()
    }
}

/// The oldest ACTIVE port of a group, else its oldest.
fn pop_preferring_active(q: &mut VecDeque<Port>) -> Option<Port> {
    match q.iter().position(|p| p.status == "ACTIVE") {
        Some(i) => q.remove(i),
        None => q.pop_front(),
    }
}

/// In-memory pool state (the leader's).
#[derive(Debug, Default)]
pub struct State {
    /// Free ports by pool and security-group set, oldest first.
    free: BTreeMap<PoolKey, BTreeMap<SgSet, VecDeque<Port>>>,
    /// Taken for a pod whose KuryrPort does not list it yet (still published).
    claiming: HashMap<String, Port>,
    /// Open claims: pod UID → the claiming port taken for it. A retry after a failed status
    /// write takes the same port again instead of a second one (the first would stay claiming,
    /// published and never reused), and a pod gone before its write releases it.
    claims: HashMap<String, String>,
    /// Pools with a bulk create in flight.
    populating: HashSet<PoolKey>,
    /// Ports of pods that missed their pool, not ACTIVE yet, and since when: the pool's refill
    /// waits for them (see [`State::settle`]).
    activating: HashMap<String, (PoolKey, Instant)>,
    /// Whether the state was rebuilt from Neutron during the current leadership.
    recovered: bool,
    /// When each free port joined the pool (its status is followed for a while, see
    /// [`State::unconfirmed`]).
    since: HashMap<String, Instant>,
}

impl State {
    fn free_count(&self, key: &PoolKey) -> usize {
        self.free.get(key).map(|g| g.values().map(VecDeque::len).sum()).unwrap_or(0)
    }

    fn node_count(&self, node: &str) -> usize {
        self.free.iter().filter(|(k, _)| k.node == node).map(|(k, _)| self.free_count(k)).sum()
    }

    fn contains(&self, id: &str) -> bool {
        self.claiming.contains_key(id) || self.free.values().flat_map(|g| g.values()).flatten().any(|p| p.id == id)
    }

    /// Adds a free port (unless known).
    pub fn add(&mut self, port: Port) {
        if self.contains(&port.id) {
            return;
        }
        let key = PoolKey { node: port.binding_host_id.clone(), network_id: port.network_id.clone() };
        self.since.insert(port.id.clone(), Instant::now());
        self.free.entry(key).or_default().entry(sg_set(&port.security_groups)).or_default().push_back(port);
    }

    /// Free ports not known ACTIVE that joined the pool less than `window` ago: the daemon
    /// pre-plugs published ports, so they turn ACTIVE shortly; a claim of an ACTIVE one writes
    /// an active VIF at once (no activator round). Older ones are left to the activator.
    pub fn unconfirmed(&mut self, window: Duration) -> Vec<String> {
        let free: HashSet<&str> = self.free.values().flat_map(|g| g.values()).flatten().map(|p| p.id.as_str()).collect();
        self.since.retain(|id, _| free.contains(id.as_str()));
        let mut ids: Vec<String> = self
            .free
            .values()
            .flat_map(|g| g.values())
            .flatten()
            .filter(|p| p.status != "ACTIVE" && self.since.get(&p.id).is_some_and(|t| t.elapsed() < window))
            .map(|p| p.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// `port_id` (a missing pod's port) is ACTIVE or gone: its pool's key when no other missing
    /// pod's port of that pool still activates. Entries older than `max_age` no longer count
    /// (and are dropped): a port that never settles must not hold its pool's refill for ever.
    fn settle(&mut self, port_id: &str, max_age: Duration) -> Option<PoolKey> {
        let (key, _) = self.activating.remove(port_id)?;
        self.activating.retain(|_, (_, since)| since.elapsed() < max_age);
        (!self.activating.values().any(|(k, _)| *k == key)).then_some(key)
    }

    /// Records a free port's Neutron status.
    pub fn set_status(&mut self, port_id: &str, status: &str) {
        for p in self.free.values_mut().flat_map(|g| g.values_mut()).flatten() {
            if p.id == port_id {
                p.status = status.to_string();
            }
        }
    }

    /// Takes a port for `sgs`: the exact set first, else the largest other group; within a group
    /// the oldest port known ACTIVE (pre-plugged by the daemon: the pod's VIF is active at once),
    /// else the oldest (the pod then waits for Neutron to record it ACTIVE, behind any refill).
    pub fn take(&mut self, key: &PoolKey, sgs: &[String]) -> Option<Port> {
        let groups = self.free.get_mut(key)?;
        let want = sg_set(sgs);
        let port = match groups.get_mut(&want).and_then(pop_preferring_active) {
            Some(p) => p,
            None => {
                let other = groups.iter().filter(|(_, q)| !q.is_empty()).max_by_key(|(_, q)| q.len()).map(|(k, _)| k.clone())?;
                pop_preferring_active(groups.get_mut(&other)?)?
            }
        };
        groups.retain(|_, q| !q.is_empty());
        self.claiming.insert(port.id.clone(), port.clone());
        Some(port)
    }

    /// Takes a port for pod `pod_uid`: the port its open claim holds (a retry), else as
    /// [`State::take`], recorded as the pod's open claim.
    pub fn take_for(&mut self, key: &PoolKey, sgs: &[String], pod_uid: &str) -> Option<Port> {
        if let Some(port) = self.claims.get(pod_uid).and_then(|id| self.claiming.get(id)) {
            return Some(port.clone());
        }
        let port = self.take(key, sgs)?;
        if !pod_uid.is_empty() {
            self.claims.insert(pod_uid.to_string(), port.id.clone());
        }
        Some(port)
    }

    /// The port of pod `pod_uid`'s open claim, if it still claims one.
    pub fn open_claim(&self, pod_uid: &str) -> Option<String> {
        self.claims.get(pod_uid).filter(|id| self.claiming.contains_key(id.as_str())).cloned()
    }

    /// A claim failed: the port goes back to the front of its group.
    pub fn give_back(&mut self, port_id: &str) {
        self.claims.retain(|_, id| id != port_id);
        if let Some(port) = self.claiming.remove(port_id) {
            let key = PoolKey { node: port.binding_host_id.clone(), network_id: port.network_id.clone() };
            self.free.entry(key).or_default().entry(sg_set(&port.security_groups)).or_default().push_front(port);
        }
    }

    /// The pod's KuryrPort lists the port now (or the claim is abandoned): stop publishing it.
    pub fn claimed(&mut self, port_id: &str) -> Option<Port> {
        self.claims.retain(|_, id| id != port_id);
        self.claiming.remove(port_id)
    }

    /// Free and claiming ports of `node` (what its pool KuryrPort lists).
    pub fn published(&self, node: &str) -> BTreeMap<String, Port> {
        let mut out: BTreeMap<String, Port> = self
            .free
            .iter()
            .filter(|(k, _)| k.node == node)
            .flat_map(|(_, g)| g.values().flatten())
            .map(|p| (p.id.clone(), p.clone()))
            .collect();
        out.extend(self.claiming.values().filter(|p| p.binding_host_id == node).map(|p| (p.id.clone(), p.clone())));
        out
    }

    fn nodes(&self) -> BTreeSet<String> {
        self.free.keys().map(|k| k.node.clone()).chain(self.claiming.values().map(|p| p.binding_host_id.clone())).collect()
    }
}

/// Work for the pool task (it owns the `Arc<PodContext>` the reconcilers do not have).
#[derive(Debug)]
enum Job {
    Populate(PoolKey, SgSet),
    Publish(String),
    /// Stamp a claimed port with its pod (device_id, name, description, tags), off the pod's path.
    Stamp(String, PortUpdate),
}

/// The pools of this controller (present when `vif_pool_driver = neutron`).
#[derive(Debug)]
pub struct Pools {
    cfg: PoolSettings,
    state: Mutex<State>,
    /// Serializes recovery with claims.
    recovery: tokio::sync::Mutex<()>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// The receiving end, for [`run`].
pub struct PoolJobs(mpsc::UnboundedReceiver<Job>);

impl Pools {
    pub fn new(cfg: PoolSettings) -> (Pools, PoolJobs) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Pools { cfg, state: Mutex::default(), recovery: tokio::sync::Mutex::new(()), jobs: tx }, PoolJobs(rx))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Free ports of the (node, network) pool.
    pub fn free(&self, key: &PoolKey) -> usize {
        self.with(|s| s.free_count(key))
    }

    /// Whether a refill of the (node, network) pool has been asked for and not finished.
    pub fn refilling(&self, key: &PoolKey) -> bool {
        self.with(|s| s.populating.contains(key))
    }

    fn publish(&self, node: &str) {
        let _ = self.jobs.send(Job::Publish(node.to_string()));
    }

    /// Ids of the free and claiming ports of `node` this replica holds.
    pub fn node_ports(&self, node: &str) -> BTreeSet<String> {
        self.with(|s| s.published(node).into_keys().collect())
    }

    /// Asks for a refill if the pool is below `min` (one bulk create per pool at a time).
    fn refill(&self, key: &PoolKey, sgs: &[String]) {
        let start = self.with(|s| {
            let below = s.free_count(key) < self.cfg.min.max(1);
            below && s.populating.insert(key.clone())
        });
        if start {
            let _ = self.jobs.send(Job::Populate(key.clone(), sg_set(sgs)));
        }
    }

    /// Drops `node`'s free ports (the node is gone: GC deletes them and its pool KuryrPort, so
    /// nothing is published for it any more).
    pub fn forget_node(&self, node: &str) {
        self.with(|s| s.free.retain(|k, _| k.node != node));
    }

    /// Drops all state (leadership lost: the next leader rebuilds it from Neutron).
    pub fn forget(&self) {
        self.with(|s| *s = State::default());
    }
}

/// Writes a claimed port's pod stamp and the resource tags (best effort: the KuryrPort status
/// already records the claim; a port left with the pool stamp is still the pod's because it is
/// recorded, and recovery skips recorded ports).
async fn stamp(ctx: &PodContext, port_id: &str, upd: &PortUpdate) {
    let r = async {
        ctx.leader.ensure()?;
        let port = ctx.neutron.update_port(port_id, upd).await?;
        if let Some(tags) = ports::tags_to_set(&port.tags, &ctx.settings.tags) {
            ctx.neutron.set_tags(kuryr_openstack::neutron::TagResource::Port, port_id, &tags).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    match r {
        Ok(()) => {}
        Err(e) if matches!(&e, Error::OpenStack(o) if o.is_not_found()) => {}
        Err(e) => {
            tracing::warn!(port = %port_id, error = %e, "cannot stamp a claimed pool port with its pod (it stays recorded in the KuryrPort)")
        }
    }
}

/// Adds every free pool port of this cluster Neutron has and the pools do not know.
async fn adopt_strays(ctx: &PodContext, pools: &Pools) -> Result<usize, Error> {
    let found = ctx.neutron.list_ports(&Query::new().eq("device_owner", DEVICE_OWNER)).await?;
    // A claimed port whose stamp has not been written yet still looks free in Neutron: the
    // KuryrPort that records it says otherwise.
    let recorded = recorded_by_pods(&ctx.kuryrports.state(), None);
    let mine: Vec<Port> = found.into_iter().filter(|p| is_pool_port(p, &ctx.settings.cluster_name) && !recorded.contains(&p.id)).collect();
    let nodes: BTreeSet<String> = mine.iter().map(|p| p.binding_host_id.clone()).collect();
    let n = pools.with(|s| {
        let before: usize = nodes.iter().map(|n| s.node_count(n)).sum();
        mine.into_iter().for_each(|p| s.add(p));
        nodes.iter().map(|n| s.node_count(n)).sum::<usize>() - before
    });
    for node in &nodes {
        pools.publish(node);
    }
    Ok(n)
}

/// Rebuilds the pools from Neutron once per leadership: every free pool port of this cluster.
async fn ensure_recovered(ctx: &PodContext, pools: &Pools) -> Result<(), Error> {
    if pools.with(|s| s.recovered) {
        return Ok(());
    }
    let _g = pools.recovery.lock().await;
    if pools.with(|s| s.recovered) {
        return Ok(());
    }
    ctx.leader.ensure()?;
    let n = adopt_strays(ctx, pools).await?;
    let nodes = pools.with(|s| {
        s.recovered = true;
        s.nodes().len()
    });
    tracing::info!(ports = n, nodes, "warm pools recovered from Neutron");
    Ok(())
}

/// One batched status read of the pool ports not known ACTIVE yet (`GET /ports?id=…`).
async fn follow_status(ctx: &PodContext, pools: &Pools, ids: &[String]) {
    match ctx.neutron.list_ports_by_id(ids, &["id", "status"]).await {
        Ok(ports) => {
            let active: Vec<&Port> = ports.iter().filter(|p| p.status == "ACTIVE").collect();
            if !active.is_empty() {
                tracing::debug!(ports = active.len(), "warm-pool ports ACTIVE (pre-plugged)");
                pools.with(|s| active.iter().for_each(|p| s.set_status(&p.id, &p.status)));
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the warm-pool ports' status; the activator covers claimed ones"),
    }
}

/// Rebuilds the pools as soon as this replica leads and the caches are synced (readiness waits
/// for it), retrying with backoff while Neutron fails; stops when leadership is lost.
async fn recover(ctx: Arc<PodContext>, pools: Arc<Pools>) {
    ctx.health.set_pools_recovered(Some(false));
    ctx.wait_synced().await;
    let mut failures = 0;
    while ctx.leader.is_leader() {
        match ensure_recovered(&ctx, &pools).await {
            Ok(()) => {
                ctx.health.set_pools_recovered(Some(true));
                return;
            }
            Err(e) => {
                failures += 1;
                let delay = crate::runtime::context::backoff_delay(failures, e.is_transient());
                tracing::warn!(error = %e, retry_in = ?delay, "cannot recover the warm pools from Neutron");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Pools off (`vif_pool_driver = noop`): releases what pools of an earlier configuration left.
/// The nodes' pool KuryrPorts go first (each kuryr-daemon then unplugs the pre-plugged ports
/// no pod claims), then every free pool port of this cluster that no KuryrPort records is
/// deleted. Claimed ports (a pod's KuryrPort records them) stay with their pods. Returns
/// (pool KuryrPorts deleted, ports deleted).
pub async fn drain(ctx: &PodContext) -> Result<(usize, usize), Error> {
    ctx.leader.ensure()?;
    let kps = ctx.kuryrports.state();
    let mut deleted_kps = 0;
    for kp in kps.iter().filter(|k| kuryr_core::names::is_pool(k.metadata.labels.as_ref())) {
        let (Some(ns), Some(name)) = (kp.metadata.namespace.as_deref(), kp.metadata.name.as_deref()) else { continue };
        ctx.leader.ensure()?;
        let api: Api<KuryrPort> = Api::namespaced(ctx.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                deleted_kps += 1;
                tracing::info!(kuryrport = %format!("{ns}/{name}"), "pools are off: deleted the pool KuryrPort");
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube("delete", format!("kuryrport {ns}/{name}"), e)),
        }
    }
    let recorded = recorded_by_pods(&kps, None);
    let found = ctx.neutron.list_ports(&Query::new().eq("device_owner", DEVICE_OWNER).eq("device_id", "")).await?;
    let mut deleted = 0;
    for p in found.iter().filter(|p| is_pool_port(p, &ctx.settings.cluster_name) && !recorded.contains(&p.id)) {
        ctx.leader.ensure()?;
        if ctx.neutron.delete_port(&p.id).await? {
            deleted += 1;
            tracing::info!(port = %p.id, node = %p.binding_host_id, "pools are off: deleted a free pool port");
        }
    }
    ctx.metrics.pool_event("drained", deleted as u64);
    Ok((deleted_kps, deleted))
}

/// [`drain`] each time this replica becomes the leader (once the caches are synced), retried
/// with backoff while it fails.
pub async fn run_drain(ctx: Arc<PodContext>) {
    let mut leading = ctx.leader.subscribe();
    loop {
        if *leading.borrow_and_update() {
            ctx.wait_synced().await;
            let mut failures = 0;
            while ctx.leader.is_leader() {
                match drain(&ctx).await {
                    Ok((kps, ports)) => {
                        if kps + ports > 0 {
                            tracing::info!(pool_kuryrports = kps, ports, "pools are off (vif_pool_driver = noop): drained the warm pools");
                        }
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        let delay = crate::runtime::context::backoff_delay(failures, e.is_transient());
                        tracing::warn!(error = %e, retry_in = ?delay, "cannot drain the warm pools");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
        if leading.changed().await.is_err() {
            return;
        }
    }
}

/// Claims a pool port for `req` (one `PUT`), or `None` when the pool is empty: the caller
/// creates the pod's port directly, then calls [`missed`] (the refill goes after that creation,
/// so a miss costs the pod its own port, not a bulk of the pool's).
pub async fn claim(ctx: &PodContext, pools: &Pools, req: &PodPortRequest, network_id: &str) -> Result<Option<Port>, Error> {
    ensure_recovered(ctx, pools).await?;
    let key = PoolKey { node: req.node.clone(), network_id: network_id.to_string() };
    // Pools hold ports with the default groups; a pod some NetworkPolicy selects gets its
    // policies' groups in the claim's PUT (before the port is the pod's).
    let defaults = ctx.settings.pod_security_groups.clone();
    let sgs = crate::pod::driver::neutron::new_port_groups(ctx, req).await?;
    loop {
        let Some(port) = pools.with(|s| s.take_for(&key, &sgs, &req.pod_uid)) else {
            ctx.metrics.pool_event("miss", 1);
            return Ok(None);
        };
        if let Err(e) = ctx.leader.ensure() {
            pools.with(|s| s.give_back(&port.id));
            return Err(e);
        }
        let stamp = claim_update(&ctx.settings, req, &port, &sgs);
        // The pod's KuryrPort status is the record of the claim (written next, before anything
        // can see the port as the pod's); Neutron only needs a call now if the security groups
        // differ. The pod's stamp on the port follows off the pod's path.
        let claimed = match &stamp.security_groups {
            None => Ok(port.clone()),
            Some(sg) => {
                let upd = PortUpdate { security_groups: Some(sg.clone()), ..PortUpdate::default() };
                ctx.neutron.update_port(&port.id, &upd).await
            }
        };
        match claimed {
            Ok(claimed) => {
                let _ = pools.jobs.send(Job::Stamp(claimed.id.clone(), PortUpdate { security_groups: None, ..stamp }));
                ctx.metrics.pool_event("claimed", 1);
                ctx.metrics.set_pool_size(&key.node, pools.with(|s| s.node_count(&key.node)));
                pools.refill(&key, &defaults);
                tracing::info!(port = %claimed.id, pod = %format!("{}/{}", req.namespace, req.name), "claimed a warm-pool port");
                return Ok(Some(claimed));
            }
            Err(e) if e.is_not_found() => {
                tracing::warn!(port = %port.id, "a pool port is gone from Neutron; trying the next");
                pools.with(|s| s.claimed(&port.id));
                pools.publish(&key.node);
            }
            Err(e) => {
                pools.with(|s| s.give_back(&port.id));
                return Err(e.into());
            }
        }
    }
}

/// A pod missed the pool of (`node`, `network_id`) and has its own port (`port`, unless its
/// creation failed) now. The refill waits until that port is ACTIVE ([`settled`]): Neutron's
/// worker also records the port's status, behind any refill bulk in flight.
pub fn missed(ctx: &PodContext, pools: &Pools, node: &str, network_id: &str, port: Option<&Port>) {
    let key = PoolKey { node: node.to_string(), network_id: network_id.to_string() };
    match port {
        Some(p) if p.status != "ACTIVE" => {
            pools.with(|s| s.activating.insert(p.id.clone(), (key, Instant::now())));
        }
        _ => pools.refill(&key, &ctx.settings.pod_security_groups),
    }
}

/// The activator is done with `port_id` (ACTIVE, or gone): if a pod that missed its pool waited
/// for it, and no other such pod of that pool still waits (for less than the activation
/// deadline), the pool is refilled now.
pub fn settled(ctx: &PodContext, pools: &Pools, port_id: &str) {
    if let Some(key) = pools.with(|s| s.settle(port_id, ctx.settings.activation_deadline)) {
        pools.refill(&key, &ctx.settings.pod_security_groups);
    }
}

/// The pod's KuryrPort lists the claimed port: the node's pool KuryrPort may drop it now.
pub fn recorded(pools: &Pools, port_id: &str) {
    if let Some(p) = pools.with(|s| s.claimed(port_id)) {
        pools.publish(&p.binding_host_id);
    }
}

/// The pool port pod `pod_uid`'s open claim holds (claimed, its KuryrPort does not list it yet).
pub fn open_claim(pools: &Pools, pod_uid: &str) -> Option<String> {
    pools.with(|s| s.open_claim(pod_uid))
}

/// What [`recycle`] did with a released port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycled {
    /// Back in its node's pool.
    Pooled,
    /// The pool is full or the port does not fit a pool: the caller deletes it.
    Unfit,
    /// Already gone from Neutron.
    Gone,
    /// Another pod's now: stamped with another pod's UID, or recorded by another pod's
    /// KuryrPort. A KuryrPort whose finalizer outlived an earlier release (the API server was
    /// away) releases again, after the pool gave the port to a new pod: it must not take the port
    /// back from that pod (chaos soak, seed 667542).
    Foreign,
}

/// Whether `port`, released by the pod `pod_uid`, is stamped for another pod (a claimed pool
/// port carries its pod's UID in `device_id`; a free one and an unstamped claim have none).
pub fn stamped_for_another(port: &Port, pod_uid: &str) -> bool {
    !port.device_id.is_empty() && !pod_uid.is_empty() && port.device_id != pod_uid
}

/// Returns a released port to its node's pool, unless it is unfit (the caller deletes it), gone,
/// or another pod's now (the claim's stamp is written in the background, so the KuryrPorts are
/// asked as well as Neutron's `device_id`).
pub async fn recycle(ctx: &PodContext, pools: &Pools, port_id: &str, pod_uid: &str) -> Result<Recycled, Error> {
    ensure_recovered(ctx, pools).await?;
    if recorded_elsewhere(ctx, port_id, pod_uid) {
        tracing::warn!(port = %port_id, pod_uid = %pod_uid, "released port is recorded by another pod's KuryrPort: left to it");
        return Ok(Recycled::Foreign);
    }
    let port = match ctx.neutron.get_port(port_id).await {
        Ok(p) => p,
        Err(e) if e.is_not_found() => {
            pools.with(|s| s.claimed(port_id));
            return Ok(Recycled::Gone);
        }
        Err(e) => return Err(e.into()),
    };
    if stamped_for_another(&port, pod_uid) {
        tracing::warn!(port = %port_id, pod_uid = %pod_uid, owner = %port.device_id, "released port is stamped for another pod: left to it");
        return Ok(Recycled::Foreign);
    }
    pools.with(|s| s.claimed(port_id));
    let subnet_ok = port.fixed_ips.iter().any(|f| f.subnet_id == ctx.settings.pod_subnet);
    let node = port.binding_host_id.clone();
    let full = pools.cfg.max != 0 && pools.with(|s| s.node_count(&node)) >= pools.cfg.max;
    if node.is_empty() || !subnet_ok || full || port.device_owner != DEVICE_OWNER {
        return Ok(Recycled::Unfit);
    }
    ctx.leader.ensure()?;
    let mut upd = recycle_update(&ctx.settings, &node);
    // A pod's NetworkPolicy groups do not follow its port into the pool (a policy's group in use
    // by a free port could never be deleted).
    if sg_set(&port.security_groups) != sg_set(&ctx.settings.pod_security_groups) {
        upd.security_groups = Some(ctx.settings.pod_security_groups.clone());
    }
    let port = ctx.neutron.update_port(port_id, &upd).await?;
    pools.with(|s| s.add(port));
    ctx.metrics.pool_event("recycled", 1);
    ctx.metrics.set_pool_size(&node, pools.with(|s| s.node_count(&node)));
    pools.publish(&node);
    tracing::info!(port = %port_id, node = %node, "released port returned to the warm pool");
    Ok(Recycled::Pooled)
}

/// Whether a pod's KuryrPort other than `pod_uid`'s records `port_id`.
fn recorded_elsewhere(ctx: &PodContext, port_id: &str, pod_uid: &str) -> bool {
    recorded_by_pods(&ctx.kuryrports.state(), Some(pod_uid)).contains(port_id)
}

/// The ports the pods' KuryrPorts record, but those of the pod `except_uid` (the pool KuryrPorts
/// do not count: they list free ports).
fn recorded_by_pods(kps: &[Arc<KuryrPort>], except_uid: Option<&str>) -> HashSet<String> {
    kps.iter()
        .filter(|k| !kuryr_core::names::is_pool(k.metadata.labels.as_ref()))
        .filter(|k| except_uid.is_none_or(|uid| k.spec.pod_uid != uid))
        .flat_map(|k| crate::pod::kuryrport::recorded_ports(k))
        .collect()
}

/// Serves the pool jobs (bulk creates, publishing) and drops the state when leadership is lost.
pub async fn run(ctx: Arc<PodContext>, pools: Arc<Pools>, PoolJobs(mut rx): PoolJobs) {
    let mut leading = ctx.leader.subscribe();
    let mut pending: BTreeSet<String> = BTreeSet::new();
    // Bulk creates and stamps run on their own; publishing is collected per node.
    let dispatch = |job: Job, pending: &mut BTreeSet<String>| match job {
        Job::Publish(node) => {
            pending.insert(node);
        }
        Job::Populate(key, sgs) => {
            let (ctx, pools) = (ctx.clone(), pools.clone());
            tokio::spawn(async move { populate(&ctx, &pools, key, sgs).await });
        }
        Job::Stamp(id, upd) => {
            let ctx = ctx.clone();
            tokio::spawn(async move { stamp(&ctx, &id, &upd).await });
        }
    };
    if *leading.borrow_and_update() {
        tokio::spawn(recover(ctx.clone(), pools.clone()));
    }
    let mut status_tick = tokio::time::interval(ctx.settings.activation_interval);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let unconfirmed = pools.with(|s| s.unconfirmed(ctx.settings.activation_deadline));
        tokio::select! {
            _ = status_tick.tick(), if !unconfirmed.is_empty() && ctx.leader.is_leader() => {
                follow_status(&ctx, &pools, &unconfirmed).await;
            }
            job = rx.recv() => match job {
                None => return,
                Some(job) => dispatch(job, &mut pending),
            },
            r = leading.changed() => {
                if r.is_err() { return; }
                if *leading.borrow_and_update() {
                    tokio::spawn(recover(ctx.clone(), pools.clone()));
                } else {
                    tracing::info!("leadership lost: dropping the warm-pool state");
                    pools.forget();
                    ctx.health.set_pools_recovered(None);
                }
            }
        }
        // Coalesce: everything queued for the same node is one patch.
        while let Ok(job) = rx.try_recv() {
            dispatch(job, &mut pending);
        }
        for node in std::mem::take(&mut pending) {
            if let Err(e) = publish(&ctx, &pools, &node).await {
                tracing::warn!(node = %node, error = %e, "cannot publish the node's warm pool; retrying with the next change");
                ctx.metrics.reconcile_error("pool", e.metric_label());
            }
        }
    }
}

async fn populate(ctx: &PodContext, pools: &Pools, key: PoolKey, sgs: SgSet) {
    let r = async {
        ensure_recovered(ctx, pools).await?;
        let free = pools.free(&key);
        let mut n = pools.cfg.batch.max(pools.cfg.min.saturating_sub(free));
        if pools.cfg.max != 0 {
            n = n.min(pools.cfg.max.saturating_sub(pools.with(|s| s.node_count(&key.node))));
        }
        if n == 0 {
            return Ok(0);
        }
        // Chunks: every chunk is usable as soon as it lands. Pods go first: a chunk starts only
        // when no pod's port creation is queued or in flight. A pod whose creation comes while a
        // chunk is in flight waits for that chunk (a Neutron API worker makes a bulk's ports
        // one after the other, about as long each as one port alone: bench/results/
        // neutron-bulk.json), so chunks start at one port, double while no pod asks for a port
        // during a chunk (up to `ports_pool_batch`) and drop back to one when a pod does.
        let mut count = 0;
        let mut size = 1;
        while count < n {
            ctx.creates.idle().await;
            let asked = ctx.creates.submitted();
            let chunk = (n - count).min(size);
            ctx.leader.ensure()?;
            let reqs = vec![pool_port_create(&ctx.settings, &key, &sgs); chunk];
            let created = match ctx.neutron.create_ports(&reqs).await {
                Ok(c) => c,
                Err(e) => {
                    // A timed-out POST may still have created the ports: adopt them now, not at
                    // the next leader's recovery.
                    if let Err(e2) = adopt_strays(ctx, pools).await {
                        tracing::warn!(error = %e2, "cannot list pool ports after a failed bulk create");
                    }
                    return Err(e.into());
                }
            };
            count += created.len();
            pools.with(|s| created.into_iter().for_each(|p| s.add(p)));
            pools.publish(&key.node);
            size = if ctx.creates.submitted() == asked { (size * 2).min(pools.cfg.batch.max(1)) } else { 1 };
        }
        Ok::<usize, Error>(count)
    }
    .await;
    pools.with(|s| s.populating.remove(&key));
    match r {
        Ok(n) => {
            if n > 0 {
                tracing::info!(node = %key.node, network = %key.network_id, ports = n, "warm pool filled (one bulk create)");
                ctx.metrics.pool_event("created", n as u64);
            }
            ctx.metrics.set_pool_size(&key.node, pools.with(|s| s.node_count(&key.node)));
            pools.publish(&key.node);
        }
        Err(e) => {
            tracing::warn!(node = %key.node, network = %key.network_id, error = %e, "cannot fill the warm pool; pods get ports one by one");
            ctx.metrics.reconcile_error("pool", e.metric_label());
        }
    }
}

/// Writes the node's pool KuryrPort: creates it if missing, then one merge patch of
/// `status.vifs` (new ports added, gone ones set to null).
async fn publish(ctx: &PodContext, pools: &Pools, node: &str) -> Result<(), Error> {
    ctx.leader.ensure()?;
    let want = pools.with(|s| s.published(node));
    let api: Api<KuryrPort> = Api::namespaced(ctx.client.clone(), POOL_NAMESPACE);
    let name = pool_kuryrport_name(node);
    let current = match api.get_opt(&name).await.map_err(|e| Error::kube("get", format!("kuryrport {POOL_NAMESPACE}/{name}"), e))? {
        Some(kp) => kp,
        None => create_pool_kuryrport(ctx, &api, node, &name).await?,
    };
    let have: BTreeSet<String> = current.status.iter().flat_map(|s| s.vifs.keys().cloned()).collect();
    let mut vifs = Map::new();
    for gone in have.iter().filter(|id| !want.contains_key(*id)) {
        vifs.insert(gone.clone(), Value::Null);
    }
    for (id, port) in want.iter().filter(|(id, _)| !have.contains(*id)) {
        match ports::vif_of(ctx, port).await? {
            Ok(vif) => {
                vifs.insert(id.clone(), json!({"default": false, "vif": vif.to_status_value()}));
            }
            // Not bound (yet): the daemon could not plug it; it is published once it is.
            Err(e) => tracing::debug!(port = %id, error = %e, "pool port not publishable"),
        }
    }
    if vifs.is_empty() {
        return Ok(());
    }
    ctx.leader.ensure()?;
    let patch = json!({"status": {"vifs": vifs}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube("patch status of", format!("kuryrport {POOL_NAMESPACE}/{name}"), e))?;
    tracing::debug!(node = %node, ports = want.len(), "pool KuryrPort published");
    Ok(())
}

async fn create_pool_kuryrport(ctx: &PodContext, api: &Api<KuryrPort>, node: &str, name: &str) -> Result<KuryrPort, Error> {
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": POOL_NAMESPACE}})).map_err(|e| Error::Invalid(e.to_string()))?;
    match nss.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        // 403: the deployment creates it (the chart does), the controller need not be allowed to.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
        Err(e) => return Err(Error::kube("create", format!("namespace {POOL_NAMESPACE}"), e)),
    }
    match api.create(&PostParams::default(), &KuryrPort::pool(node)).await {
        Ok(kp) => Ok(kp),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            api.get(name).await.map_err(|e| Error::kube("get", format!("kuryrport {POOL_NAMESPACE}/{name}"), e))
        }
        Err(e) => Err(Error::kube("create", format!("kuryrport {POOL_NAMESPACE}/{name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(id: &str, node: &str, sgs: &[&str]) -> Port {
        serde_json::from_value(json!({"id": id, "network_id": "net", "binding:host_id": node, "device_owner": DEVICE_OWNER,
            "device_id": "", "security_groups": sgs, "description": "kuryr-rs pool port: cluster c1, node vm"}))
        .expect("port")
    }

    #[test]
    fn a_released_port_stamped_for_another_pod_is_left_to_it() {
        let mut p = port("a", "vm", &["default"]);
        assert!(!stamped_for_another(&p, "uid-old"), "a free (unstamped) port is the releaser's to recycle");
        p.device_id = "uid-old".into();
        assert!(!stamped_for_another(&p, "uid-old"), "its own stamp");
        p.device_id = "uid-new".into();
        assert!(stamped_for_another(&p, "uid-old"), "claimed by another pod since the first release");
        assert!(!stamped_for_another(&p, ""), "a KuryrPort without a UID cannot tell: the old rule applies");
    }

    #[test]
    fn free_ports_are_followed_until_active_and_claimed_with_their_status() {
        let mut s = State::default();
        let key = PoolKey { node: "vm".into(), network_id: "net".into() };
        s.add(port("a", "vm", &["sg"]));
        s.add(port("b", "vm", &["sg"]));
        assert_eq!(s.unconfirmed(Duration::from_secs(60)), ["a", "b"]);
        assert!(s.unconfirmed(Duration::ZERO).is_empty(), "past the window: left to the activator");
        s.set_status("a", "ACTIVE");
        assert_eq!(s.unconfirmed(Duration::from_secs(60)), ["b"]);
        let claimed = s.take(&key, &["sg".to_string()]).expect("a port");
        assert_eq!((claimed.id.as_str(), claimed.status.as_str()), ("a", "ACTIVE"), "the oldest, with its known status");
        s.take(&key, &["sg".to_string()]).expect("b");
        assert!(s.unconfirmed(Duration::from_secs(60)).is_empty(), "claimed ports are no longer followed");
    }

    #[test]
    fn a_pools_refill_waits_for_its_missing_pods_ports_but_not_for_ever() {
        let mut s = State::default();
        let key = PoolKey { node: "vm".into(), network_id: "net".into() };
        let other = PoolKey { node: "vm2".into(), network_id: "net".into() };
        for (id, k) in [("a", &key), ("b", &key), ("c", &other)] {
            s.activating.insert(id.into(), (k.clone(), Instant::now()));
        }
        let long = Duration::from_secs(60);
        assert_eq!(s.settle("a", long), None, "b of the same pool still activates");
        assert_eq!(s.settle("x", long), None, "not a missing pod's port");
        assert_eq!(s.settle("b", long), Some(key.clone()));
        // A port that never settles (its pod went before it was ACTIVE) stops counting after
        // the deadline.
        s.activating.insert("stuck".into(), (key.clone(), Instant::now()));
        s.activating.insert("d".into(), (key.clone(), Instant::now()));
        assert_eq!(s.settle("d", long), None, "stuck is still young");
        s.activating.insert("e".into(), (key.clone(), Instant::now()));
        assert_eq!(s.settle("e", Duration::ZERO), Some(key), "stuck is past the deadline");
        assert!(!s.activating.contains_key("stuck"), "and dropped");
    }

    #[test]
    fn take_prefers_the_exact_security_groups_then_the_largest_other_group() {
        let mut s = State::default();
        let key = PoolKey { node: "vm".into(), network_id: "net".into() };
        s.add(port("a", "vm", &["sg2"]));
        s.add(port("b", "vm", &["sg1"]));
        s.add(port("c", "vm", &["sg2"]));
        s.add(port("a", "vm", &["sg2"]));
        s.add(port("x", "other", &["sg1"]));
        assert_eq!(s.free_count(&key), 3, "a duplicate is not added twice");
        let sg1 = vec!["sg1".to_string()];
        assert_eq!(s.take(&key, &sg1).map(|p| p.id).as_deref(), Some("b"));
        assert_eq!(s.take(&key, &sg1).map(|p| p.id).as_deref(), Some("a"), "then the oldest of another group");
        assert_eq!(s.published("vm").keys().cloned().collect::<Vec<_>>(), ["a", "b", "c"], "claiming ports stay published");
        s.give_back("a");
        assert_eq!(s.take(&key, &["sg2".to_string()]).map(|p| p.id).as_deref(), Some("a"), "given back to the front");
        assert!(s.claimed("a").is_some());
        assert!(s.claimed("b").is_some());
        assert_eq!(s.published("vm").keys().cloned().collect::<Vec<_>>(), ["c"]);
        assert_eq!(s.published("other").keys().cloned().collect::<Vec<_>>(), ["x"]);
        assert_eq!(s.take(&key, &sg1).map(|p| p.id).as_deref(), Some("c"));
        assert!(s.take(&key, &sg1).is_none());
    }

    #[test]
    fn a_pods_retried_claim_takes_the_port_its_open_claim_holds() {
        let mut s = State::default();
        let key = PoolKey { node: "vm".into(), network_id: "net".into() };
        for id in ["a", "b", "c"] {
            s.add(port(id, "vm", &["sg"]));
        }
        let sg = vec!["sg".to_string()];
        let first = s.take_for(&key, &sg, "u1").expect("a port").id;
        // Its KuryrPort status write failed; the reconcile retries.
        assert_eq!(s.take_for(&key, &sg, "u1").map(|p| p.id), Some(first.clone()), "the same port, not a second one");
        assert_eq!(s.free_count(&key), 2, "nothing else taken");
        assert_eq!(s.open_claim("u1"), Some(first.clone()));
        let other = s.take_for(&key, &sg, "u2").expect("another pod's port").id;
        assert_ne!(other, first);
        // Recorded by u1's KuryrPort: the claim is closed.
        s.claimed(&first);
        assert_eq!(s.open_claim("u1"), None);
        // Given back (a failed Neutron update): closed too, the port free again.
        s.give_back(&other);
        assert_eq!(s.open_claim("u2"), None);
        assert_eq!(s.free_count(&key), 2);
        assert!(s.take_for(&key, &sg, "").is_some(), "a request without a UID takes a port");
        assert!(s.claims.is_empty(), "and opens no claim");
    }

    #[test]
    fn take_prefers_a_port_known_active() {
        let mut s = State::default();
        let key = PoolKey { node: "vm".into(), network_id: "net".into() };
        for id in ["old", "mid", "new"] {
            s.add(port(id, "vm", &["sg1"]));
        }
        s.set_status("new", "ACTIVE");
        let sg1 = vec!["sg1".to_string()];
        assert_eq!(s.take(&key, &sg1).map(|p| p.id).as_deref(), Some("new"), "the ACTIVE one before older DOWN ones");
        assert_eq!(s.take(&key, &sg1).map(|p| p.id).as_deref(), Some("old"), "none ACTIVE: the oldest");
        s.add(port("o1", "vm", &["sg2"]));
        s.add(port("o2", "vm", &["sg2"]));
        s.set_status("o2", "ACTIVE");
        assert_eq!(s.take(&key, &["sg9".to_string()]).map(|p| p.id).as_deref(), Some("o2"), "also in another group");
    }

    #[test]
    fn requests_stamp_pool_and_pod() {
        let s = Settings { cluster_name: "c1".into(), pod_subnet: "sub".into(), project: "p".into(), ..Settings::defaults() };
        let key = PoolKey { node: "vm".into(), network_id: "net".into() };
        let body = serde_json::to_value(pool_port_create(&s, &key, &["sg1".into()])).expect("json");
        assert_eq!(
            body,
            json!({"network_id": "net", "name": "kuryr-pool/vm", "description": "kuryr-rs pool port: cluster c1, node vm",
                   "admin_state_up": true, "fixed_ips": [{"subnet_id": "sub"}], "device_owner": "compute:kuryr",
                   "binding:host_id": "vm", "security_groups": ["sg1"], "project_id": "p"})
        );
        let p = port("a", "vm", &["sg1"]);
        assert!(is_pool_port(&p, "c1"));
        assert!(!is_pool_port(&p, "c2"), "another cluster's pool");
        let req =
            PodPortRequest { namespace: "ns".into(), name: "web".into(), pod_uid: "uid".into(), node: "vm".into(), standalone: false };
        let same = serde_json::to_value(claim_update(&s, &req, &p, &["sg1".into()])).expect("json");
        assert_eq!(
            same,
            json!({"name": "ns/web", "description": "kuryr-rs pod port: cluster c1, pod ns/web (uid uid)", "device_id": "uid"})
        );
        let other = serde_json::to_value(claim_update(&s, &req, &p, &["sg9".into()])).expect("json");
        assert_eq!(other["security_groups"], json!(["sg9"]));
        let mut claimed = p.clone();
        claimed.device_id = "uid".into();
        assert!(!is_pool_port(&claimed, "c1"), "a claimed port is never recovered into a pool");
        assert_eq!(
            serde_json::to_value(recycle_update(&s, "vm")).expect("json"),
            json!({"name": "kuryr-pool/vm", "description": "kuryr-rs pool port: cluster c1, node vm", "device_id": ""})
        );
    }
}
