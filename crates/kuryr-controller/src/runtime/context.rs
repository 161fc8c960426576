//! What every reconciler gets: clients, shared reflector stores, settings, metrics, events, the
//! activator handle and the leader gate.

use crate::pod::activator::Activator;
use crate::runtime::cache::NeutronCache;
use crate::runtime::events::Events;
use crate::runtime::health::Health;
use crate::runtime::lease::LeaderGate;
use crate::runtime::metrics::{Metrics, Stage};
use crate::runtime::settings::Settings;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use kube::Client;
use kuryr_core::crd::KuryrPort;
use kuryr_openstack::{Neutron, Octavia};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared state of the controllers.
pub struct Context {
    pub client: Client,
    pub neutron: Neutron,
    /// Octavia (GC lists load balancers; the cloud may have none: see `Error::NoEndpoint`).
    pub octavia: Octavia,
    pub settings: Settings,
    /// All pods (trimmed), kept by the pod watch.
    pub pods: Store<Pod>,
    /// All KuryrPorts, kept by the KuryrPort watch.
    pub kuryrports: Store<KuryrPort>,
    pub cache: NeutronCache,
    pub metrics: Arc<Metrics>,
    pub events: Events,
    pub activator: Activator,
    pub leader: LeaderGate,
    pub health: Health,
    pub timeline: Timeline,
    pub backoff: Backoff,
    /// Both reflector stores have their initial lists (set once by the watches; see
    /// [`Context::synced`], [`Context::wait_synced`]).
    pub synced: tokio::sync::watch::Sender<bool>,
    /// Warm pools (`vif_pool_driver = neutron`).
    pub pools: Option<Arc<crate::pod::pool::Pools>>,
    /// Pods whose KuryrPort this replica created in the current leadership term and for which
    /// no port has been asked for yet: no earlier attempt can have left a port with their UID,
    /// so their first acquire skips the adoption lookup (see [`Context::take_fresh`]).
    pub fresh: Mutex<HashMap<String, u64>>,
    /// nested-vlan: node parents and per-trunk attachment queues.
    pub nested: crate::pod::nested::Nested,
}

impl Context {
    /// The pod and KuryrPort caches are complete (reconcilers wait for this).
    pub fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves once the caches are synced (woken by the watches, no polling).
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Records that this replica just created the KuryrPort of pod `uid`.
    pub fn mark_fresh(&self, uid: &str) {
        let term = self.leader.term();
        self.fresh.lock().unwrap_or_else(|e| e.into_inner()).insert(uid.to_string(), term);
    }

    /// Whether pod `uid`'s KuryrPort was created by this replica in the current term with no port
    /// attempt since; the first call answers for the one attempt it starts (later calls: `false`).
    pub fn take_fresh(&self, uid: &str) -> bool {
        let entry = self.fresh.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        entry.is_some_and(|term| term == self.leader.term() && self.leader.is_leader())
    }

    /// Drops pod `uid`'s fresh mark (its KuryrPort is gone before any port was asked for).
    pub fn forget_fresh(&self, uid: &str) {
        self.fresh.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }

    /// Marks the caches synced; `true` the first time.
    pub fn set_synced(&self) -> bool {
        self.synced.send_if_modified(|s| !std::mem::replace(s, true))
    }
}

/// When each pod passed each stage, for the stage histograms. Keyed by pod UID.
#[derive(Debug, Default)]
pub struct Timeline {
    inner: Mutex<HashMap<String, Times>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Times {
    seen: Option<Instant>,
    port: Option<Instant>,
    vif: Option<Instant>,
}

/// Entries are dropped after this long even if the pod never got ACTIVE.
const TIMELINE_MAX_AGE: Duration = Duration::from_secs(1800);

impl Timeline {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Times>) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// The pod controller saw the pod (first time only counts).
    pub fn pod_seen(&self, uid: &str) {
        self.with(|m| {
            if m.len() > 10_000 {
                m.retain(|_, t| t.seen.is_some_and(|s| s.elapsed() < TIMELINE_MAX_AGE));
            }
            m.entry(uid.to_string()).or_default().seen.get_or_insert_with(Instant::now);
        });
    }

    /// The port exists (created or adopted): observes `pod_to_port`.
    pub fn port_ready(&self, uid: &str, metrics: &Metrics) {
        self.with(|m| {
            let t = m.entry(uid.to_string()).or_default();
            let now = Instant::now();
            if let (Some(seen), None) = (t.seen, t.port) {
                metrics.observe_stage(Stage::PodToPort, now - seen);
            }
            t.port.get_or_insert(now);
        });
    }

    /// The VIF is in the KuryrPort status: observes `port_to_vif`.
    pub fn vif_written(&self, uid: &str, metrics: &Metrics) {
        self.with(|m| {
            let t = m.entry(uid.to_string()).or_default();
            let now = Instant::now();
            if let (Some(port), None) = (t.port, t.vif) {
                metrics.observe_stage(Stage::PortToVif, now - port);
            }
            t.vif.get_or_insert(now);
        });
    }

    /// The port is ACTIVE: observes `vif_to_active` and `pod_to_active`, forgets the pod.
    pub fn active(&self, uid: &str, metrics: &Metrics) {
        if let Some(t) = self.with(|m| m.remove(uid)) {
            let now = Instant::now();
            if let Some(vif) = t.vif {
                metrics.observe_stage(Stage::VifToActive, now - vif);
            }
            if let Some(seen) = t.seen {
                metrics.observe_stage(Stage::PodToActive, now - seen);
            }
        }
    }

    /// The pod's port is gone: forget it.
    pub fn forget(&self, uid: &str) {
        self.with(|m| m.remove(uid));
    }
}

/// Per-object retry state for `error_policy`: exponential back-off with jitter, reset on
/// success.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure of `key`; returns the delay before the next attempt.
    pub fn failed(&self, key: &str, transient: bool) -> Duration {
        let n = {
            let mut g = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = g.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        backoff_delay(n, transient)
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// Delay after the `n`th consecutive failure: transient errors start at 0.5 s and cap at 60 s;
/// others (bad config, binding failures) start at 10 s and cap at 5 min. Plus up to 25 % jitter.
pub fn backoff_delay(n: u32, transient: bool) -> Duration {
    let (base, cap) =
        if transient { (Duration::from_millis(500), Duration::from_secs(60)) } else { (Duration::from_secs(10), Duration::from_secs(300)) };
    let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(cap);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    exp + exp.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let d1 = backoff_delay(1, true);
        assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_millis(625), "{d1:?}");
        let d3 = backoff_delay(3, true);
        assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_millis(2500), "{d3:?}");
        assert!(backoff_delay(30, true) <= Duration::from_secs(75));
        assert!(backoff_delay(1, false) >= Duration::from_secs(10));
        assert!(backoff_delay(30, false) <= Duration::from_secs(375));
        let b = Backoff::default();
        assert!(b.failed("a", true) < Duration::from_secs(1));
        assert!(b.failed("a", true) >= Duration::from_secs(1));
        b.succeeded("a");
        assert!(b.failed("a", true) < Duration::from_secs(1));
    }

    #[test]
    fn timeline_observes_each_stage_once() {
        let m = Metrics::new();
        let t = Timeline::default();
        t.pod_seen("u");
        t.pod_seen("u");
        t.port_ready("u", &m);
        t.port_ready("u", &m);
        t.vif_written("u", &m);
        t.active("u", &m);
        t.active("u", &m);
        let text = m.encode();
        for stage in ["pod_to_port", "port_to_vif", "vif_to_active", "pod_to_active"] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("kuryr_controller_stage_duration_seconds_count") && l.contains(stage) && l.ends_with(" 1")),
                "{stage} once:\n{text}"
            );
        }
    }
}
