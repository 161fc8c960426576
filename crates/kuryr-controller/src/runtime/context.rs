//! What every reconciler gets from the runtime: clients, shared reflector stores, settings,
//! metrics, events, the leader gate, health and back-off. Domain state (the pod path's activator,
//! pools, nested-vlan trunks, stage timeline) lives in its domain (`crate::pod::context`).

use crate::runtime::cache::NeutronCache;
use crate::runtime::error::Error;
use crate::runtime::events::Events;
use crate::runtime::health::Health;
use crate::runtime::hooks::{Hooks, PodSubnets, PortGroups};
use crate::runtime::lease::LeaderGate;
use crate::runtime::metrics::Metrics;
use crate::runtime::settings::Settings;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use kube::Client;
use kuryr_core::crd::KuryrPort;
use kuryr_openstack::{Neutron, Octavia};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Shared clients and stores of the controllers.
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
    pub leader: LeaderGate,
    pub health: Health,
    pub backoff: Backoff,
    /// Both reflector stores have their initial lists (set once by the watches; see
    /// [`Context::synced`], [`Context::wait_synced`]).
    pub synced: tokio::sync::watch::Sender<bool>,
    /// Hooks other domains set at start (the policy domain's [`PortGroups`]) and event taps.
    pub hooks: Hooks,
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

    /// The security groups a new port of pod `namespace/name` is created with: the policy
    /// domain's answer when NetworkPolicy is on, else `[neutron_defaults] pod_security_groups`.
    pub async fn port_security_groups(&self, namespace: &str, name: &str) -> Result<Vec<String>, Error> {
        match self.hooks.port_groups.get() {
            Some(h) => h.port_security_groups(namespace, name).await,
            None => Ok(self.settings.pod_security_groups.clone()),
        }
    }

    /// The OpenStack project of a new `kind` resource of `namespace`: the namespace's
    /// `openstack.org/kuryr-project` when that kind's project driver is `annotation`, else
    /// `[neutron_defaults] project` ([`crate::runtime::projects`]).
    pub async fn project_for(&self, kind: crate::runtime::projects::ProjectKind, namespace: &str) -> String {
        match self.hooks.projects.get() {
            Some(p) => p.project_for(kind, namespace).await,
            None => self.settings.project.clone(),
        }
    }

    /// Whether resources may live in other projects than `[neutron_defaults] project` (some
    /// project driver is `annotation`): lists of what kuryr-rs made must then not be filtered
    /// by project.
    pub fn multi_project(&self) -> bool {
        self.settings.project_drivers.any_annotation()
    }

    /// Installs the policy domain's hook (once).
    pub fn set_port_groups(&self, hook: std::sync::Arc<dyn PortGroups>) {
        let _ = self.hooks.port_groups.set(hook);
    }

    /// The subnet a new port in `namespace` goes on: the namespace-networks domain's answer when
    /// `pod_subnets_driver = namespace` (`None`: not ready yet; the KuryrPort waits for
    /// [`Context::retrigger_waiting_kuryrports`]), else `[neutron_defaults] pod_subnet`.
    pub fn pod_subnet(&self, namespace: &str) -> Option<String> {
        match self.hooks.pod_subnets.get() {
            Some(h) => h.pod_subnet(namespace),
            None => Some(self.settings.pod_subnet.clone()),
        }
    }

    /// Installs the namespace-networks domain's hook (once).
    pub fn set_pod_subnets(&self, hook: std::sync::Arc<dyn PodSubnets>) {
        let _ = self.hooks.pod_subnets.set(hook);
    }

    /// Re-triggers the KuryrPorts of `namespace` that have no VIF yet (and are not being
    /// deleted): they wait for their namespace's network, which just became ready. Returns how
    /// many were woken.
    pub fn retrigger_waiting_kuryrports(&self, namespace: &str) -> usize {
        let Some(tx) = self.hooks.kuryrport_trigger.get() else { return 0 };
        let mut n = 0;
        for kp in self.kuryrports.state() {
            let waiting = kp.metadata.namespace.as_deref() == Some(namespace)
                && kp.metadata.deletion_timestamp.is_none()
                && !kuryr_core::names::is_pool(kp.metadata.labels.as_ref())
                && kp.status.as_ref().is_none_or(|s| s.default_vif().is_none());
            if waiting {
                let _ = tx.send(kube::runtime::reflector::ObjectRef::from_obj(kp.as_ref()));
                n += 1;
            }
        }
        n
    }

    /// Marks the caches synced; `true` the first time.
    pub fn set_synced(&self) -> bool {
        self.synced.send_if_modified(|s| !std::mem::replace(s, true))
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
}
