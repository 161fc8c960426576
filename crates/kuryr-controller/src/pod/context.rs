//! The pod path's context: the runtime's [`Context`] (clients, stores, settings) plus the state
//! only the pod path keeps: the port driver, the activator handle, warm pools, fresh marks,
//! nested-vlan trunks and the stage timeline. The pod reconcilers and tasks get an `Arc<PodContext>`; it derefs to the
//! runtime's [`Context`] for the shared parts.

use crate::pod::activator::{self, Activator};
use crate::pod::driver::nested::{self, Nested};
use crate::pod::driver::PortDriver;
use crate::pod::pool::{PoolJobs, Pools};
use crate::pod::timeline::Timeline;
use crate::runtime::batch::Coalescer;
use crate::runtime::context::Context;
use crate::runtime::error::Error;
use crate::runtime::hooks::SweepHooks;
use futures_util::future::BoxFuture;
use kuryr_openstack::neutron::{Port, PortCreate};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Shared runtime context plus the pod path's own state.
pub struct PodContext {
    /// The runtime's shared clients and stores.
    pub rt: Arc<Context>,
    /// How pods' ports are made and released (`[kubernetes] pod_vif_driver`), chosen once.
    pub driver: PortDriver,
    pub activator: Activator,
    /// Warm pools (`vif_pool_driver = neutron`).
    pub pools: Option<Arc<Pools>>,
    /// Pods whose KuryrPort this replica created in the current leadership term and for which
    /// no port has been asked for yet: no earlier attempt can have left a port with their UID,
    /// so their first acquire skips the adoption lookup (see [`PodContext::take_fresh`]).
    pub fresh: Mutex<HashMap<String, u64>>,
    /// nested-vlan: node parents and per-trunk attachment queues (kept whatever the driver: GC's
    /// sweep releases orphaned subports through them).
    pub nested: Nested,
    pub timeline: Timeline,
    /// Pod port creations in flight, coalesced per project into bulk `POST /ports` when
    /// `port_bulk_max` > 1 ([`crate::pod::driver::neutron`]); warm-pool refills wait until it is
    /// idle.
    pub creates: PortCreates,
}

/// Pod port creations in flight (see [`crate::runtime::batch`]).
pub type PortCreates = Coalescer<String, PortCreate, Result<Port, Error>>;

/// The receiving ends of the pod path's background tasks (see [`PodContext::new`]).
pub struct PodTasks {
    pub activator: mpsc::UnboundedReceiver<activator::Cmd>,
    /// `Some` when pools are on.
    pub pool_jobs: Option<PoolJobs>,
}

impl Deref for PodContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.rt
    }
}

impl PodContext {
    /// The pod path's state on `rt`: the port driver per `rt.settings.pod_vif`, pools per
    /// `rt.settings.pool`; the tasks' receiving ends are for [`activator::run`] and
    /// [`crate::pod::pool::run`].
    pub fn new(rt: Arc<Context>) -> (PodContext, PodTasks) {
        let (activator, activator_rx) = Activator::channel();
        let (pools, pool_jobs) = match rt.settings.pool.clone() {
            Some(cfg) => {
                let (p, jobs) = Pools::new(cfg);
                (Some(Arc::new(p)), Some(jobs))
            }
            None => (None, None),
        };
        let driver = PortDriver::from_settings(&rt.settings);
        let creates = Coalescer::new(rt.settings.port_bulk_max);
        let ctx = PodContext {
            rt,
            driver,
            activator,
            pools,
            fresh: Mutex::default(),
            nested: Nested::default(),
            timeline: Timeline::default(),
            creates,
        };
        (ctx, PodTasks { activator: activator_rx, pool_jobs })
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
}

/// GC's sweep: pool ports of a deleted node leave the pools; subports are detached then deleted.
impl SweepHooks for PodContext {
    fn node_gone(&self, node: &str) {
        if let Some(pools) = &self.pools {
            pools.forget_node(node);
        }
    }

    fn release_subport<'a>(&'a self, port_id: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(nested::release(self, port_id, None))
    }
}
