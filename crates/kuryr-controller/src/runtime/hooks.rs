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

/// The domains' hooks and event taps, set once at start (unset: the defaults).
#[derive(Default)]
pub struct Hooks {
    /// Set by the policy domain when NetworkPolicy is on.
    pub port_groups: std::sync::OnceLock<std::sync::Arc<dyn PortGroups>>,
    /// Every pod watch event (after the shared store applied it), for the policy domain.
    pub pod_events: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<kube::runtime::watcher::Event<k8s_openapi::api::core::v1::Pod>>>,
    /// Every KuryrPort watch event, for the policy domain (a pod's port id appears there).
    pub kuryrport_events:
        std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<kube::runtime::watcher::Event<kuryr_core::crd::KuryrPort>>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").field("port_groups", &self.port_groups.get().is_some()).finish_non_exhaustive()
    }
}
