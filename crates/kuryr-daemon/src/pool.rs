//! Pre-plugged ports: the daemon half of the warm pool.
//!
//! kuryr-controller keeps per-node pools of Neutron ports bound to the node and publishes them
//! in one *pool KuryrPort* per node (label [`kuryr_core::names::POOL_LABEL`]`=true`, plus the usual node label, so
//! the daemon's KuryrPort watch already has it): `status.vifs` maps Neutron port id → VIF.
//! The daemon plugs every `ovs` VIF of it ahead of time: a veth pair, host end
//! `tap<id[:11]>` on the OVS bridge with the same external ids as a pod's plug (OVN binds the
//! port to this chassis, Neutron reports it ACTIVE before any pod exists), pod end
//! `kp<id[:11]>` with the port's MAC and MTU in the holding netns ([`kuryr_core::names::POOL_NETNS`] by default, both ends
//! up). An ADD whose default VIF is held only moves that end into the pod netns, renames it
//! to `CNI_IFNAME` and configures L3 ([`Pool::take`]): no veth creation, no OVSDB.
//!
//! Reconciling is event-driven (the KuryrPort store's change signal, plus a wake-up after DEL
//! and GC): desired = the VIFs of this node's pool KuryrPorts; held = the `kp…` veths in the
//! holding netns. A held port is unplugged (OVS port removed, veth deleted) only when it is
//! neither in a pool KuryrPort nor a VIF of some pod's KuryrPort on this node: the controller
//! writes the claiming pod's KuryrPort before it removes the port from the pool, so a claimed
//! port stays plugged until the pod's ADD takes it (or its KuryrPort goes away). Every change
//! to one port runs under that port's lock, which ADD (take) and DEL take too.
//!
//! Restart-safe: what the holding netns holds is adopted (its OVS port checked once and
//! re-added if missing), never re-plugged. Nothing is decided before the KuryrPort cache has
//! its initial list.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kuryr_core::crd::KuryrPort;
use kuryr_core::names::is_pool;
use kuryr_core::vif::{Binding, Vif};
use kuryr_netplumb::{LinkInfo, Netns};
use tokio::sync::{watch, Notify};

use crate::attachments::AttachmentStore;
use crate::binding::ovs::{self, Hold, OvsDriver};
use crate::binding::{
    blocking, port_dev_name, BindError, BindingDriver, HostEnv, PlugTarget, Plugged,
};
use crate::locks::{KeyGuard, KeyedLocks};
use crate::metrics::Metrics;
use crate::watch::Cluster;

/// Prefix of the pod ends waiting in the holding netns: `kp` + 11 characters of the port id.
pub const HELD_PREFIX: &str = "kp";
/// Length of the port-id prefix in device names (`tap…`, `kp…`).
const SHORT: usize = 11;
/// Retry backoff after a failed reconcile.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a pre-plug (or an adoption) waits for ovs-vswitchd to open the device before the
/// port counts as ready.
const VERIFY_WAIT: Duration = Duration::from_secs(10);

/// The first 11 characters of a port id: the key of everything pool-related.
pub fn short_id(port_id: &str) -> String {
    port_id.chars().take(SHORT).collect()
}

/// Name of a held pod end in the holding netns.
pub fn held_ifname(port_id: &str) -> String {
    port_dev_name(HELD_PREFIX, port_id)
}

/// Host end of a (pre-)plugged `ovs` port: what a normal plug names it too.
pub fn tap_ifname(port_id: &str) -> String {
    port_dev_name("tap", port_id)
}

/// The `ovs` VIFs of this node's pool KuryrPorts, by short id. Pool KuryrPorts being deleted
/// hold nothing.
pub fn pool_vifs(kps: &[Arc<KuryrPort>]) -> BTreeMap<String, Vif> {
    let mut out = BTreeMap::new();
    for kp in kps.iter().filter(|k| is_pool(k.metadata.labels.as_ref())) {
        if kp.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(st) = &kp.status else { continue };
        for (key, entry) in &st.vifs {
            match entry.vif() {
                Ok(v) if matches!(v.binding, Binding::Ovs { .. }) => {
                    out.insert(short_id(&v.port_id), v);
                }
                Ok(v) => {
                    tracing::debug!(port = %v.port_id, binding = v.binding.kind(), "pool VIF with a binding that is not pre-plugged")
                }
                Err(e) => {
                    tracing::warn!(kuryrport = ?kp.metadata.name, %key, error = %e, "unreadable VIF in a pool KuryrPort")
                }
            }
        }
    }
    out
}

/// Short ids of the ports pods' (and standalone containers') KuryrPorts on this node hold.
pub fn claimed(kps: &[Arc<KuryrPort>]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for kp in kps.iter().filter(|k| !is_pool(k.metadata.labels.as_ref())) {
        let Some(st) = &kp.status else { continue };
        for entry in st.vifs.values() {
            if let Ok(v) = entry.vif() {
                out.insert(short_id(&v.port_id));
            }
        }
    }
    out
}

/// What a reconcile depends on: the pool's ports (MAC, MTU, id) and the claimed ones.
type Fingerprint = (BTreeMap<String, (String, u32, String)>, BTreeSet<String>);

/// What a reconcile decides (pure; see [`plan`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// In a pool, not held: plug.
    pub plug: Vec<String>,
    /// Held, in a pool, not yet checked by this process (adopted after a restart).
    pub adopt: Vec<String>,
    /// Held, in no pool and claimed by no KuryrPort: unplug.
    pub unplug: Vec<String>,
}

/// desired (pool), held (holding netns), claimed (pods' KuryrPorts), known (plugged or
/// checked by this process) → what to do, by short id.
pub fn plan(
    desired: &BTreeMap<String, Vif>,
    held: &BTreeSet<String>,
    claimed: &BTreeSet<String>,
    known: &HashSet<String>,
) -> Plan {
    let mut p = Plan::default();
    for s in desired.keys() {
        if !held.contains(s) {
            p.plug.push(s.clone());
        } else if !known.contains(s) {
            p.adopt.push(s.clone());
        }
    }
    for s in held {
        if !desired.contains_key(s) && !claimed.contains(s) {
            p.unplug.push(s.clone());
        }
    }
    p
}

/// The warm pool of this node. Disabled (holds nothing, ADD always plugs) without a holding
/// netns.
#[derive(Debug)]
pub struct Pool {
    holding: Option<Netns>,
    netns_name: String,
    /// Bridge of held ports whose VIF is no longer known (after a restart).
    default_bridge: String,
    locks: KeyedLocks,
    /// Short ids plugged or checked by this process.
    known: Mutex<HashSet<String>>,
    dirty: AtomicBool,
    wake: Notify,
    metrics: Metrics,
}

impl Pool {
    /// A pool that pre-plugs nothing.
    pub fn disabled(metrics: Metrics) -> Pool {
        Pool {
            holding: None,
            netns_name: String::new(),
            default_bridge: String::new(),
            locks: KeyedLocks::new(),
            known: Mutex::default(),
            dirty: AtomicBool::new(false),
            wake: Notify::new(),
            metrics,
        }
    }

    /// Opens the holding netns `/run/netns/<netns_name>`, creating it if absent (like
    /// `ip netns add`; a placeholder file left by an interrupted create is replaced).
    pub fn open(
        netns_name: &str,
        default_bridge: &str,
        metrics: Metrics,
    ) -> Result<Pool, BindError> {
        let holding = match Netns::open_named(netns_name) {
            Ok(ns) => ns,
            Err(open_err) => {
                match Netns::create_named(netns_name) {
                    Ok(ns) => {
                        tracing::info!(
                            netns = netns_name,
                            "created the holding netns of pre-plugged ports"
                        );
                        ns
                    }
                    Err(e) if e.is_already_exists() => {
                        // The name exists but is no netns (a crash between placeholder and mount).
                        tracing::warn!(netns = netns_name, error = %open_err, "replacing an unusable holding netns file");
                        Netns::delete_named(netns_name)?;
                        Netns::create_named(netns_name)?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        Ok(Pool {
            holding: Some(holding),
            netns_name: netns_name.to_owned(),
            default_bridge: default_bridge.to_owned(),
            ..Pool::disabled(metrics)
        })
    }

    pub fn enabled(&self) -> bool {
        self.holding.is_some()
    }

    /// Name of the holding netns (empty when disabled).
    pub fn netns_name(&self) -> &str {
        &self.netns_name
    }

    /// The lock of one port (by port id), held while anything moves, plugs or unplugs it.
    pub async fn lock_port(&self, port_id: &str) -> KeyGuard {
        self.locks.lock(&short_id(port_id)).await
    }

    /// Asks for a reconcile (after a DEL or GC freed a host device a pre-plug waits for).
    pub fn wake(&self) {
        if self.enabled() {
            self.dirty.store(true, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }

    /// Held pod ends, by short id.
    async fn inventory(&self) -> Result<BTreeMap<String, LinkInfo>, BindError> {
        let Some(ns) = self.holding.clone() else {
            return Ok(BTreeMap::new());
        };
        let links = blocking(move || {
            ns.with_netlink(async |nl| nl.links().await)
                .map_err(BindError::from)
        })
        .await?;
        Ok(links
            .into_iter()
            .filter(|l| {
                l.name.len() == HELD_PREFIX.len() + SHORT
                    && l.name.starts_with(HELD_PREFIX)
                    && l.kind.as_deref() == Some("veth")
            })
            .map(|l| (l.name[HELD_PREFIX.len()..].to_owned(), l))
            .collect())
    }

    async fn find_held(&self, port_id: &str) -> Result<Option<LinkInfo>, BindError> {
        let Some(ns) = self.holding.clone() else {
            return Ok(None);
        };
        let name = held_ifname(port_id);
        blocking(move || {
            ns.with_netlink(async |nl| nl.find_link(&name).await)
                .map_err(BindError::from)
        })
        .await
    }

    /// Whether the port's pod end waits in the holding netns (then its `tap…` host end is the
    /// pool's, not some old sandbox's). Call under [`Pool::lock_port`].
    pub async fn holds(&self, port_id: &str) -> bool {
        match self.find_held(port_id).await {
            Ok(l) => l.is_some(),
            Err(e) => {
                // Cannot tell: say held, so that a DEL leaves the host side alone.
                tracing::warn!(port = port_id, error = %e, "cannot look into the holding netns");
                true
            }
        }
    }

    /// ADD fast path: if `vif` (an `ovs` VIF) is held, moves its pod end into `target.netns`
    /// as `target.ifname` and returns what a plug would. Never touches OVSDB (the bridge's
    /// TX-checksum answer is cached by the pre-plug). `None`: not held, or the held interface
    /// is not usable (MAC, host end) — then it is discarded and the caller plugs normally.
    pub async fn take(&self, env: &HostEnv, vif: &Vif, target: &PlugTarget) -> Option<Plugged> {
        let _g = self.lock_port(&vif.port_id).await;
        self.take_locked(env, vif, target).await
    }

    /// [`Pool::take`] for a caller that holds the port's lock.
    pub async fn take_locked(
        &self,
        env: &HostEnv,
        vif: &Vif,
        target: &PlugTarget,
    ) -> Option<Plugged> {
        let Binding::Ovs { bridge } = &vif.binding else {
            return None;
        };
        self.holding.as_ref()?;
        let held = match self.find_held(&vif.port_id).await {
            Ok(Some(l)) => l,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(port = %vif.port_id, error = %e, "cannot look into the holding netns; plugging normally");
                return None;
            }
        };
        match self.usable(env, vif, &held).await {
            Ok(()) => {}
            Err(why) => {
                tracing::warn!(port = %vif.port_id, %why, "pre-plugged interface not usable; discarding it and plugging normally");
                self.discard(&vif.port_id).await;
                return None;
            }
        }
        let tx_checksum_off = match env.tx_checksum_off(bridge).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(port = %vif.port_id, error = %e, "plugging normally");
                return None;
            }
        };
        let (from, to, name, ifname) = (
            self.holding.clone()?,
            target.netns.clone(),
            held.name.clone(),
            target.ifname.clone(),
        );
        let moved = blocking(move || {
            kuryr_netplumb::move_link(&from, &name, &to, Some(&ifname)).map_err(BindError::from)
        })
        .await;
        if let Err(e) = moved {
            tracing::warn!(port = %vif.port_id, error = %e, "moving the pre-plugged interface failed; discarding it and plugging normally");
            self.discard(&vif.port_id).await;
            return None;
        }
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&short_id(&vif.port_id));
        self.metrics.pool_held_dec();
        tracing::info!(port = %vif.port_id, netns = %target.netns.label(), ifname = %target.ifname, "took a pre-plugged interface");
        Some(Plugged {
            host_ifname: vif.host_ifname.clone(),
            parent: None,
            mtu: env.mtu_for(vif),
            tx_checksum_off,
            // Attached to the bridge long ago: no after-ADD attach check.
            ovs_port: None,
        })
    }

    /// Why the held end cannot serve `vif`, if it cannot.
    async fn usable(&self, env: &HostEnv, vif: &Vif, held: &LinkInfo) -> Result<(), String> {
        let tap = tap_ifname(&vif.port_id);
        if vif.host_ifname != tap {
            return Err(format!(
                "the VIF's host device is {:?}, the pre-plugged one {tap:?}",
                vif.host_ifname
            ));
        }
        let mac = ovs::mac_of(vif).map_err(|e| e.to_string())?;
        if held.mac != Some(mac) {
            return Err(format!(
                "MAC is {:?}, the VIF's {}",
                held.mac.map(|m| m.to_string()),
                vif.mac
            ));
        }
        let host = env.host.clone();
        let t = tap.clone();
        let host_end = blocking(move || {
            host.with_netlink(async |nl| nl.find_link(&t).await)
                .map_err(BindError::from)
        })
        .await
        .map_err(|e| e.to_string())?;
        match host_end {
            None => Err(format!("host end {tap} is missing")),
            Some(h) if held.link_index != Some(h.index) => Err(format!(
                "host end {tap} (ifindex {}) is not the peer (ifindex {:?})",
                h.index, held.link_index
            )),
            // ovs-vswitchd puts every device it receives on in promiscuous mode: a host end
            // that is not has no datapath (a stale OVS port, or vswitchd down).
            Some(h) if !h.admin_up => Err(format!("host end {tap} is down")),
            Some(h) if h.promiscuity == Some(0) => Err(format!(
                "ovs-vswitchd does not hold host end {tap} (promiscuity 0)"
            )),
            Some(_) => Ok(()),
        }
    }

    /// Deletes a held veth (both ends); its OVS port stays for whoever plugs next.
    async fn discard(&self, port_id: &str) {
        let Some(ns) = self.holding.clone() else {
            return;
        };
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&short_id(port_id));
        if let Err(e) = crate::binding::delete_link_in(&ns, &held_ifname(port_id)).await {
            tracing::warn!(port = port_id, error = %e, "cannot delete the pre-plugged interface");
        }
    }

    /// The reconcile loop: waits for the KuryrPort cache's initial list, then reconciles on
    /// every change of the pool or of the claimed ports, on [`Pool::wake`], and after a
    /// failure (backoff). Returns on shutdown.
    pub async fn run(
        self: Arc<Self>,
        cni: Arc<crate::cni::Cni>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if !self.enabled() {
            return;
        }
        let (cluster, env, store) = (&cni.cluster, &cni.env, &cni.store);
        let mut changes = cluster.subscribe();
        loop {
            changes.borrow_and_update();
            if cluster.kp_stream.synced() {
                break;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = crate::daemon::stopped(&mut shutdown) => return,
            }
        }
        tracing::info!(netns = %self.netns_name, "pre-plugging the pool's ports");
        let mut last: Option<Fingerprint> = None;
        let mut backoff = RETRY_MIN;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            changes.borrow_and_update();
            let kps = cluster.kuryrports.state();
            let desired = pool_vifs(&kps);
            let claims = claimed(&kps);
            let fp = (
                desired
                    .iter()
                    .map(|(s, v)| (s.clone(), (v.mac.clone(), v.mtu, v.port_id.clone())))
                    .collect::<BTreeMap<_, _>>(),
                claims.clone(),
            );
            let due = retry_at.is_some_and(|t| t <= tokio::time::Instant::now());
            let dirty = self.dirty.swap(false, Ordering::SeqCst);
            if dirty || due || last.as_ref() != Some(&fp) {
                retry_at = None;
                match self.reconcile(cluster, env, store, &desired, &claims).await {
                    Ok(()) => backoff = RETRY_MIN,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "pool reconcile failed");
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
                last = Some(fp);
            }
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = self.wake.notified() => {}
                _ = retry => {}
                _ = crate::daemon::stopped(&mut shutdown) => return,
            }
        }
    }

    /// One reconcile pass; `Err` (first failure) asks for a retry.
    async fn reconcile(
        &self,
        cluster: &Cluster,
        env: &HostEnv,
        store: &AttachmentStore,
        desired: &BTreeMap<String, Vif>,
        claims: &BTreeSet<String>,
    ) -> Result<(), BindError> {
        let held = self.inventory().await?;
        let held_ids: BTreeSet<String> = held.keys().cloned().collect();
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let p = plan(desired, &held_ids, claims, &known);
        let mut first_err = None;
        for s in &p.adopt {
            if let Err(e) = self.adopt(env, &desired[s]).await {
                first_err.get_or_insert(e);
            }
        }
        for s in &p.unplug {
            if let Err(e) = self.unplug(cluster, env, s, &held[s]).await {
                first_err.get_or_insert(e);
            }
        }
        // Pre-plugs in parallel: each is a veth and an OVSDB transaction.
        let plugs = p
            .plug
            .iter()
            .map(|s| self.plug(cluster, env, store, &desired[s]));
        for r in futures_util::future::join_all(plugs).await {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        if let Ok(now) = self.inventory().await {
            self.metrics.set_pool_held(now.len());
        }
        if !(p.plug.is_empty() && p.unplug.is_empty() && p.adopt.is_empty()) {
            tracing::info!(
                plugged = p.plug.len(),
                adopted = p.adopt.len(),
                unplugged = p.unplug.len(),
                "pool reconciled"
            );
        }
        first_err.map_or(Ok(()), Err)
    }

    /// A held port found after a restart: check (once) that its OVS port is there with its
    /// iface-id, re-add it if not. The veth is kept (same ifindex, no re-plug).
    async fn adopt(&self, env: &HostEnv, vif: &Vif) -> Result<(), BindError> {
        let _g = self.lock_port(&vif.port_id).await;
        let Binding::Ovs { bridge } = &vif.binding else {
            return Ok(());
        };
        let tap = tap_ifname(&vif.port_id);
        env.tx_checksum_off(bridge).await?;
        let iface = env.ovs.find_interface(&tap).await?;
        let ok = iface
            .as_ref()
            .is_some_and(|i| i.external_ids.get("iface-id") == Some(&vif.port_id));
        if ok {
            self.metrics.pool_op("adopt");
            tracing::info!(port = %vif.port_id, "adopted a pre-plugged port");
        } else {
            ovs::add_ovs_port(env, bridge, &tap, vif, "").await?;
            self.metrics.pool_op("replug_ovs");
            tracing::warn!(port = %vif.port_id, "adopted a pre-plugged port whose OVS port was missing: re-added it");
        }
        // The veth may have been re-created while we were down (its OVS port kept): only a
        // device vswitchd holds counts.
        self.verify_held(env, bridge, &tap, "adopt").await?;
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(short_id(&vif.port_id));
        Ok(())
    }

    /// Waits (bounded) until ovs-vswitchd holds `tap`; a stale port is re-added once.
    /// Call under the port's lock.
    async fn verify_held(
        &self,
        env: &HostEnv,
        bridge: &str,
        tap: &str,
        found_by: &'static str,
    ) -> Result<(), BindError> {
        let t = Instant::now();
        match ovs::await_hold(&env.ovs, &env.host, tap, VERIFY_WAIT).await? {
            Hold::Held { ofport } => {
                self.metrics.stage("preplug_verify", t.elapsed());
                tracing::debug!(%tap, ofport, "ovs-vswitchd holds the pre-plugged device");
                Ok(())
            }
            Hold::Stale(why) => {
                tracing::warn!(%tap, %why, found_by, "stale OVS port of a pre-plugged device: re-adding it");
                let after = ovs::repair(&env.ovs, &env.host, bridge, tap, VERIFY_WAIT).await;
                let held = matches!(after, Ok(Hold::Held { .. }));
                self.metrics.stale_repair(found_by, held);
                if held {
                    tracing::info!(%tap, "re-added the stale OVS port: ovs-vswitchd holds its device now");
                    Ok(())
                } else {
                    Err(BindError::Unusable(format!(
                        "OVS port {tap} was stale ({why}) and re-adding it did not help: {after:?}"
                    )))
                }
            }
            other => Err(BindError::Unusable(format!(
                "ovs-vswitchd does not hold {tap} after {:?}: {other:?}",
                t.elapsed()
            ))),
        }
    }

    /// The OVS ports of the held interfaces (`port_id` is the short id, the lock key).
    pub async fn held_ports(&self) -> Result<Vec<crate::stale::OwnedPort>, BindError> {
        Ok(self
            .inventory()
            .await?
            .into_keys()
            .map(|s| crate::stale::OwnedPort {
                ifname: format!("tap{s}"),
                port_id: s,
                bridge: self.default_bridge.clone(),
                pod: None,
            })
            .collect())
    }

    /// Pre-plugs one pool port into the holding netns.
    async fn plug(
        &self,
        cluster: &Cluster,
        env: &HostEnv,
        store: &AttachmentStore,
        vif: &Vif,
    ) -> Result<(), BindError> {
        let _g = self.lock_port(&vif.port_id).await;
        let s = short_id(&vif.port_id);
        // Still in the pool (it may have been claimed while we waited for the lock)?
        if !pool_vifs(&cluster.kuryrports.state()).contains_key(&s) {
            return Ok(());
        }
        let Some(holding) = self.holding.clone() else {
            return Ok(());
        };
        let tap = tap_ifname(&vif.port_id);
        if vif.host_ifname != tap {
            tracing::warn!(port = %vif.port_id, host_ifname = %vif.host_ifname, "pool VIF with an unexpected host device name; not pre-plugging it");
            return Ok(());
        }
        // A recycled port whose previous pod still has it: wait for that DEL (it wakes us).
        if crate::binding::link_exists(&env.host, &tap).await? {
            let owned = store
                .list()
                .map_err(|e| BindError::Unusable(e.to_string()))?
                .iter()
                .any(|a| a.interfaces.iter().any(|i| i.host_ifname == tap));
            if owned {
                tracing::info!(port = %vif.port_id, %tap, "pool port still attached to a pod here; pre-plugging it after that pod's DEL");
                return Ok(());
            }
        }
        let t = Instant::now();
        let target = PlugTarget {
            netns: holding.clone(),
            ifname: held_ifname(&vif.port_id),
            // Replace a host device nobody owns (left over).
            fresh: true,
        };
        let res = async {
            let plugged = OvsDriver.plug_host(env, vif, "", &target).await?;
            let name = target.ifname.clone();
            blocking(move || {
                holding
                    .with_netlink(async |nl| nl.set_up(&name).await)
                    .map_err(BindError::from)
            })
            .await?;
            // Ready only once vswitchd holds the device (ACTIVE in Neutron is not enough).
            let Binding::Ovs { bridge } = &vif.binding else {
                return Ok(());
            };
            let port = plugged.ovs_port.unwrap_or_else(|| tap.clone());
            self.verify_held(env, bridge, &port, "preplug").await
        }
        .await;
        match res {
            Ok(()) => {
                self.known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(s);
                self.metrics.stage("preplug", t.elapsed());
                self.metrics.pool_op("preplug");
                tracing::info!(port = %vif.port_id, %tap, took_ms = t.elapsed().as_millis() as u64, "pre-plugged a pool port");
                Ok(())
            }
            Err(e) => {
                self.metrics.background_failure("preplug");
                tracing::warn!(port = %vif.port_id, error = %e, "pre-plugging a pool port failed");
                Err(e)
            }
        }
    }

    /// Unplugs a held port that no KuryrPort wants any more (OVS port, then the veth).
    async fn unplug(
        &self,
        cluster: &Cluster,
        env: &HostEnv,
        s: &str,
        held: &LinkInfo,
    ) -> Result<(), BindError> {
        let _g = self.locks.lock(s).await;
        // Re-check under the lock: claimed or returned to the pool meanwhile, or taken by an ADD.
        let kps = cluster.kuryrports.state();
        if pool_vifs(&kps).contains_key(s) || claimed(&kps).contains(s) {
            return Ok(());
        }
        let Some(now) = self.find_held(s).await? else {
            return Ok(());
        };
        if now.index != held.index {
            return Ok(());
        }
        let tap = format!("tap{s}");
        let res = async {
            env.ovs.del_port(&self.default_bridge, &tap).await?;
            if let Some(ns) = &self.holding {
                crate::binding::delete_link_in(ns, &held.name).await?;
            }
            Ok::<(), BindError>(())
        }
        .await;
        match res {
            Ok(()) => {
                self.known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(s);
                self.metrics.pool_op("unplug");
                tracing::info!(port_prefix = s, %tap, "unplugged a pre-plugged port no KuryrPort holds");
                Ok(())
            }
            Err(e) => {
                self.metrics.background_failure("pool_unplug");
                tracing::warn!(port_prefix = s, error = %e, "unplugging a pre-plugged port failed");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::tests::vif;
    use kuryr_core::crd::{KuryrPortSpec, KuryrPortStatus, VifEntry};
    use kuryr_core::names::{NODE_NAME_LABEL, POOL_LABEL};

    fn kp(name: &str, pool: bool, vifs: &[(&str, &Vif)]) -> Arc<KuryrPort> {
        let mut k = KuryrPort::new(
            name,
            KuryrPortSpec {
                pod_uid: String::new(),
                pod_node_name: "n1".into(),
                pod_static: false,
            },
        );
        let mut labels: BTreeMap<String, String> =
            [(NODE_NAME_LABEL.to_string(), "n1".to_string())].into();
        if pool {
            labels.insert(POOL_LABEL.into(), "true".into());
        }
        k.metadata.labels = Some(labels);
        let mut st = KuryrPortStatus::default();
        for (key, v) in vifs {
            st.vifs.insert((*key).into(), VifEntry::new(!pool, v));
        }
        k.status = Some(st);
        Arc::new(k)
    }

    fn ovs_vif(id: &str) -> Vif {
        let mut v = vif(id);
        v.binding = Binding::Ovs {
            bridge: "br-int".into(),
        };
        v.host_ifname = tap_ifname(id);
        v
    }

    #[test]
    fn names_fit_ifnamsiz() {
        let id = "0123456789abcdef-0000";
        assert_eq!(held_ifname(id), "kp0123456789a");
        assert_eq!(tap_ifname(id), "tap0123456789a");
        assert!(held_ifname(id).len() <= 15 && tap_ifname(id).len() <= 15);
        assert_eq!(short_id(id), "0123456789a");
    }

    #[test]
    fn desired_and_claimed_come_from_pool_and_pod_kuryrports() {
        let (a, b, c) = (
            ovs_vif("aaaaaaaaaaa-1"),
            ovs_vif("bbbbbbbbbbb-2"),
            ovs_vif("ccccccccccc-3"),
        );
        let mut hybrid = ovs_vif("ddddddddddd-4");
        hybrid.binding = Binding::Hybrid {
            bridge: "br-int".into(),
            linux_bridge: "qbr".into(),
        };
        let mut deleting = (*kp("pool-old", true, &[("ccccccccccc-3", &c)])).clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let kps = vec![
            kp(
                "pool-n1",
                true,
                &[("aaaaaaaaaaa-1", &a), ("ddddddddddd-4", &hybrid)],
            ),
            kp("web", false, &[("eth0", &b)]),
            Arc::new(deleting),
        ];
        let d = pool_vifs(&kps);
        assert_eq!(d.keys().collect::<Vec<_>>(), ["aaaaaaaaaaa"]);
        assert_eq!(
            claimed(&kps).into_iter().collect::<Vec<_>>(),
            ["bbbbbbbbbbb"]
        );
    }

    #[test]
    fn plan_keeps_claimed_ports_and_adopts_unknown_held_ones() {
        let desired: BTreeMap<String, Vif> = [
            ("a".to_string(), ovs_vif("a")),
            ("b".to_string(), ovs_vif("b")),
            ("c".to_string(), ovs_vif("c")),
        ]
        .into();
        let held: BTreeSet<String> = ["b", "c", "x", "y"].map(String::from).into();
        let claimed: BTreeSet<String> = ["x"].map(String::from).into();
        let known: HashSet<String> = ["c"].map(String::from).into();
        let p = plan(&desired, &held, &claimed, &known);
        assert_eq!(p.plug, ["a"]);
        assert_eq!(p.adopt, ["b"]);
        // x is claimed by a pod that has not ADDed yet: kept. y: nobody wants it.
        assert_eq!(p.unplug, ["y"]);
    }
}
