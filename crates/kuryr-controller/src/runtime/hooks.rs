//! What the runtime's cross-domain tasks (GC's sweep, the pod path's port creation) ask of the
//! domains that keep state about the resources they touch. A domain implements the hook; the
//! wiring ([`crate::runtime::run`]) hands it over, so GC and the pod path reach only the runtime
//! and kuryr-core types, never another domain.

use crate::runtime::error::Error;
use futures_util::future::BoxFuture;

/// Called by GC's sweep (`crate::gc::sweep`) while it deletes orphans.
pub trait SweepHooks: Send + Sync {
    /// A deleted node's pool ports are about to be deleted: forget them first (no claim may get
    /// one).
    fn node_gone(&self, node: &str);

    /// Releases an orphaned trunk subport: detached from its trunk (found through the parent
    /// port), then deleted. `Ok(false)`: it was already gone.
    fn release_subport<'a>(&'a self, port_id: &'a str) -> BoxFuture<'a, Result<bool, Error>>;
}

/// What the pod path asks of the NetworkPolicy domain when it builds a pod's port: the security
/// groups the port must have from its first moment (a pod is never reachable before its policies
/// apply). The policy domain implements it; without policies the configured defaults are used.
pub trait PortGroups: Send + Sync {
    /// The security group ids of a new port for pod `namespace/name`. `Err` (transient): the
    /// groups a policy selecting the pod needs do not exist yet; the port waits.
    fn port_security_groups<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>>;
}

/// What the pod path asks of the namespace-networks domain (`[kubernetes] pod_subnets_driver =
/// namespace`) when it builds a pod's port: the subnet it goes on. Without the domain every pod
/// uses `[neutron_defaults] pod_subnet`.
pub trait PodSubnets: Send + Sync {
    /// The subnet id of a new port in `namespace`; `None`: the namespace's network is not ready
    /// yet. The domain has then been asked for it, and re-triggers the namespace's waiting
    /// KuryrPorts (through [`Hooks::kuryrport_trigger`]) once it is ready: the caller waits for
    /// that event, it does not poll.
    fn pod_subnet(&self, namespace: &str) -> Option<String>;
}

/// Event taps of one shared watch: every domain that wants its events adds a sender at start.
pub struct Taps<K>(std::sync::Mutex<Vec<tokio::sync::mpsc::UnboundedSender<kube::runtime::watcher::Event<K>>>>);

impl<K> Default for Taps<K> {
    fn default() -> Self {
        Taps(std::sync::Mutex::new(Vec::new()))
    }
}

impl<K> Taps<K> {
    /// Adds a receiver of every event (call before the watch starts).
    pub fn add(&self, tx: tokio::sync::mpsc::UnboundedSender<kube::runtime::watcher::Event<K>>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
    }

    /// The senders added so far (the watch takes them when it starts).
    pub fn senders(&self) -> Vec<tokio::sync::mpsc::UnboundedSender<kube::runtime::watcher::Event<K>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The domains' hooks and event taps, set once at start (unset: the defaults).
#[derive(Default)]
pub struct Hooks {
    /// Set by the policy domain when NetworkPolicy is on.
    pub port_groups: std::sync::OnceLock<std::sync::Arc<dyn PortGroups>>,
    /// Set by the namespace-networks domain when `pod_subnets_driver = namespace`.
    pub pod_subnets: std::sync::OnceLock<std::sync::Arc<dyn PodSubnets>>,
    /// Set at start when a `[kubernetes] *_project_driver` is `annotation`.
    pub projects: std::sync::OnceLock<std::sync::Arc<crate::runtime::projects::Projects>>,
    /// Every pod watch event (after the shared store applied it), for the policy domain.
    pub pod_events: Taps<k8s_openapi::api::core::v1::Pod>,
    /// Every KuryrPort watch event, for the policy domain (a pod's port id appears there) and
    /// the namespace-networks domain (a namespace's last KuryrPort gone lets its network go).
    pub kuryrport_events: Taps<kuryr_core::crd::KuryrPort>,
    /// Triggers a KuryrPort reconcile (set by the pod path when its controllers start): how the
    /// namespace-networks domain wakes the KuryrPorts that wait for their namespace's network.
    pub kuryrport_trigger:
        std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<kube::runtime::reflector::ObjectRef<kuryr_core::crd::KuryrPort>>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("port_groups", &self.port_groups.get().is_some())
            .field("pod_subnets", &self.pod_subnets.get().is_some())
            .finish_non_exhaustive()
    }
}
