//! What the runtime's cross-domain tasks (GC's sweep) ask of the domains that keep state about
//! the resources they delete. A domain implements the hook; the wiring ([`crate::runtime::run`])
//! hands it over, so GC reaches only the runtime and kuryr-core types, never a domain.

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
