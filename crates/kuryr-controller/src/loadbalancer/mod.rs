//! Services → Octavia load balancers (`crate::loadbalancer`; upstream `ServiceHandler`,
//! `EndpointsHandler`, `KuryrLoadBalancerHandler`). One hop per module:
//! * [`model`]: pure translation Service + EndpointSlices → KuryrLoadBalancer spec → listeners,
//!   pools, members.
//! * [`service`]: Service reconciler (finalizer, KuryrLoadBalancer spec, Events for what is not
//!   provided).
//! * [`klb`]: KuryrLoadBalancer reconciler (Octavia: find/adopt, create fully populated,
//!   converge with batch member updates, release).
//! * [`public_ip`]: floating IPs of `type: LoadBalancer` Services.
//! * [`settings`]: `kuryr.conf` → [`LbSettings`].
//! * [`audit`] (here): the periodic comparison with Octavia that repairs out-of-band deletions.
//!
//! Watches: Services, EndpointSlices (each change triggers its Service), KuryrLoadBalancers (each
//! change, the final deletion included, triggers its Service: a spec written before the cache
//! had the object is re-checked, and the Service finalizer goes once the object is gone).

pub mod klb;
pub mod model;
pub mod public_ip;
pub mod service;
pub mod settings;

pub use settings::LbSettings;

use crate::runtime::context::Context;
use crate::runtime::run::{scoped_api, watchdog};
use crate::runtime::wiring::{controller, domain_watch, event_watch, log_errors};
use futures_util::Stream;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, PredicateConfig, WatchStreamExt};
use kube::ResourceExt;
use kuryr_core::crd::KuryrLoadBalancer;
use kuryr_core::names::cluster_tag;
use kuryr_openstack::Query;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The load balancer domain's state: the shared runtime context, its settings and its stores.
pub struct Lb {
    pub ctx: Arc<Context>,
    pub settings: LbSettings,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub klbs: Store<KuryrLoadBalancer>,
    /// How many of the three watches delivered their initial list.
    listed: AtomicU8,
    synced: watch::Sender<bool>,
    /// Notes already published per Service (one Event per change, not per reconcile).
    noted: Mutex<HashMap<String, String>>,
    /// When the Service reconciler last wrote each KuryrLoadBalancer's spec (by namespace/name),
    /// for the convergence histogram.
    changed_at: Mutex<HashMap<String, std::time::Instant>>,
}

impl Lb {
    /// The domain's state around its three stores, nothing listed yet.
    fn new(
        ctx: Arc<Context>,
        settings: LbSettings,
        services: Store<Service>,
        slices: Store<EndpointSlice>,
        klbs: Store<KuryrLoadBalancer>,
    ) -> Lb {
        Lb {
            ctx,
            settings,
            services,
            slices,
            klbs,
            listed: AtomicU8::new(0),
            synced: watch::channel(false).0,
            noted: Mutex::default(),
            changed_at: Mutex::default(),
        }
    }

    /// The Service reconciler wrote the spec of `key` (`namespace/name`).
    pub fn spec_changed(&self, key: &str) {
        self.changed_at.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), std::time::Instant::now());
    }

    /// Octavia converged for `key`: observes the time since its last spec change.
    pub fn converged(&self, key: &str) {
        if let Some(t) = self.changed_at.lock().unwrap_or_else(|e| e.into_inner()).remove(key) {
            self.ctx.metrics.observe_lb_converge(t.elapsed());
        }
    }

    /// Resolves once the three caches are complete (woken by the watches, no polling).
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn one_listed(&self) {
        if self.listed.fetch_add(1, Ordering::AcqRel) + 1 >= 3 && self.synced.send_if_modified(|s| !std::mem::replace(s, true)) {
            tracing::info!(
                services = self.services.len(),
                endpointslices = self.slices.len(),
                kuryrloadbalancers = self.klbs.len(),
                "load balancer caches synced"
            );
        }
    }
}

/// Starts the Service and KuryrLoadBalancer controllers and the audit; returns the controllers'
/// future (to run beside the pod controllers) and the audit task.
pub fn start(
    ctx: &Arc<Context>,
    settings: LbSettings,
    namespace: Option<&str>,
    concurrency: u16,
    shutdown: watch::Receiver<bool>,
) -> (impl Future<Output = ()> + Send + 'static, JoinHandle<()>) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let (klb_store, klb_writer) = reflector::store::<KuryrLoadBalancer>();
    let lb = Arc::new(Lb::new(ctx.clone(), settings, svc_store.clone(), slice_store, klb_store.clone()));
    let (svc_tx, svc_rx) = mpsc::unbounded_channel::<ObjectRef<Service>>();
    let (klb_tx, klb_rx) = mpsc::unbounded_channel::<ObjectRef<KuryrLoadBalancer>>();
    let svc_stream = service_watch(&lb, namespace, svc_writer);
    let slices = slice_watch(&lb, namespace, slice_writer, svc_tx.clone(), &shutdown);
    let klb_stream = klb_watch(&lb, namespace, klb_writer, svc_tx);

    let ccfg = ControllerConfig::default().concurrency(concurrency);
    let svc_controller =
        controller(svc_stream, svc_store, ccfg.clone(), svc_rx, ctx, &shutdown).run(service::reconcile, service::error_policy, lb.clone());
    let klb_controller = controller(klb_stream, klb_store, ccfg, klb_rx, ctx, &shutdown).run(klb::reconcile, klb::error_policy, lb.clone());
    let (svc_controller, klb_controller) = (log_errors(service::CONTROLLER, svc_controller), log_errors(klb::CONTROLLER, klb_controller));
    let audit_task = tokio::spawn(audit(lb.clone(), klb_tx));
    let health = ctx.health.clone();
    let fut = async move {
        let s = watchdog("service-controller", svc_controller, shutdown.clone(), health.clone());
        let k = watchdog("kuryrloadbalancer-controller", klb_controller, shutdown.clone(), health.clone());
        let e = watchdog("endpointslice-watch", slices, shutdown, health);
        tokio::join!(s, k, e);
    };
    (fut, audit_task)
}

/// Start phase: the Service watch, for the Service controller.
fn service_watch(
    lb: &Arc<Lb>,
    namespace: Option<&str>,
    writer: reflector::store::Writer<Service>,
) -> impl Stream<Item = Result<Service, watcher::Error>> + Send {
    let l = lb.clone();
    domain_watch(scoped_api::<Service>(&lb.ctx.client, namespace), "services", writer, lb.ctx.health.clone(), move |ev| {
        if let watcher::Event::InitDone = ev {
            l.one_listed();
        }
    })
}

/// Start phase: the EndpointSlice watch; each change triggers its Service (`svc_tx`).
fn slice_watch(
    lb: &Arc<Lb>,
    namespace: Option<&str>,
    writer: reflector::store::Writer<EndpointSlice>,
    svc_tx: mpsc::UnboundedSender<ObjectRef<Service>>,
    shutdown: &watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    let l = lb.clone();
    let api = scoped_api::<EndpointSlice>(&lb.ctx.client, namespace);
    event_watch(api, "endpointslices", writer, lb.ctx.health.clone(), shutdown, move |ev| match ev {
        watcher::Event::Apply(s) | watcher::Event::Delete(s) => {
            if let Some(r) = service::slice_service(s) {
                let _ = svc_tx.send(r);
            }
        }
        watcher::Event::InitDone => l.one_listed(),
        _ => {}
    })
}

/// Start phase: the KuryrLoadBalancer watch, for its controller; each change triggers its
/// Service (`svc_tx`).
fn klb_watch(
    lb: &Arc<Lb>,
    namespace: Option<&str>,
    writer: reflector::store::Writer<KuryrLoadBalancer>,
    svc_tx: mpsc::UnboundedSender<ObjectRef<Service>>,
) -> impl Stream<Item = Result<KuryrLoadBalancer, watcher::Error>> + Send {
    let l = lb.clone();
    let api = scoped_api::<KuryrLoadBalancer>(&lb.ctx.client, namespace);
    domain_watch(api, "kuryrloadbalancers", writer, lb.ctx.health.clone(), move |ev| match ev {
        // Every change (its final deletion too) wakes its Service: the Service reconciler
        // compares its plan with the KuryrLoadBalancer it has just seen (no API call when they
        // agree), so a change it made before its cache had the object is never lost.
        watcher::Event::Delete(k) | watcher::Event::Apply(k) => {
            if let Some(r) = service::klb_service(k) {
                let _ = svc_tx.send(r);
            }
        }
        watcher::Event::InitDone => l.one_listed(),
        _ => {}
    })
    .predicate_filter(klb::fingerprint, PredicateConfig::default())
}

/// Whether Octavia has load balancer `id`, not in ERROR (a failed GET counts as present: the
/// next pass asks again).
async fn exists_healthy(oct: &kuryr_openstack::Octavia, id: &str) -> bool {
    match oct.get_load_balancer(id).await {
        Ok(l) => !matches!(
            l.provisioning_status.as_str(),
            kuryr_openstack::octavia::status::ERROR
                | kuryr_openstack::octavia::status::DELETED
                | kuryr_openstack::octavia::status::PENDING_DELETE
        ),
        Err(e) => !e.is_not_found(),
    }
}

/// Every `audit_interval`, while leading: three tag-filtered lists (load balancers, listeners,
/// pools of this cluster) compared with the KuryrLoadBalancers' status; a KuryrLoadBalancer whose
/// load balancer, listener or pool is missing or in ERROR is reconciled again (which recreates
/// what is missing). Members changed out of band are repaired at the next endpoint change.
/// The first of `pools` whose members (by id) in the KuryrLoadBalancer status are not the ones
/// Octavia lists for it, if any (a pool Octavia does not list is reported as missing elsewhere).
fn members_differ(pools: &[String], status: &[serde_json::Value], octavia: &HashMap<&str, BTreeSet<&str>>) -> Option<String> {
    pools
        .iter()
        .find(|p| {
            octavia.get(p.as_str()).is_some_and(|have| {
                let recorded: BTreeSet<&str> =
                    status.iter().filter(|m| m["pool_id"].as_str() == Some(p.as_str())).filter_map(|m| m["id"].as_str()).collect();
                recorded != *have
            })
        })
        .cloned()
}

async fn audit(lb: Arc<Lb>, trigger: mpsc::UnboundedSender<ObjectRef<KuryrLoadBalancer>>) {
    let oct = lb.ctx.octavia.clone();
    let tag = cluster_tag(&lb.settings.cluster_name);
    loop {
        tokio::time::sleep(lb.settings.audit_interval).await;
        if !lb.ctx.leader.is_leader() || !*lb.synced.borrow() {
            continue;
        }
        let q = Query::new().eq("tags", &tag);
        let (lbs, listeners, pools) = match tokio::try_join!(oct.list_load_balancers(&q), oct.list_listeners(&q), oct.list_pools(&q)) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "load balancer audit: cannot list Octavia objects");
                continue;
            }
        };
        let healthy: HashSet<&str> =
            lbs.iter().filter(|l| l.provisioning_status != kuryr_openstack::octavia::status::ERROR).map(|l| l.id.as_str()).collect();
        let listener_ids: HashSet<&str> = listeners.iter().map(|l| l.id.as_str()).collect();
        let pool_ids: HashSet<&str> = pools.iter().map(|p| p.id.as_str()).collect();
        // The pools list names each pool's members: a member deleted or added out of band shows
        // as a difference with the status, without listing members pool by pool.
        let pool_members: HashMap<&str, BTreeSet<&str>> =
            pools.iter().map(|p| (p.id.as_str(), p.members.iter().map(|m| m.id.as_str()).collect())).collect();
        for k in lb.klbs.state() {
            if k.metadata.deletion_timestamp.is_some() || k.spec.ip.is_none() {
                continue;
            }
            let Some(st) = k.status.as_ref() else { continue };
            let id = st.loadbalancer.get("id").and_then(|v| v.as_str()).unwrap_or_default();
            let ids = |v: &[serde_json::Value]| -> Vec<String> { v.iter().filter_map(|x| x["id"].as_str().map(String::from)).collect() };
            let missing = if id.is_empty() {
                Some("load balancer (none recorded)".to_string())
            } else if !healthy.contains(id) && !exists_healthy(&oct, id).await {
                // Not in this cluster's tagged list (or in ERROR): one GET tells a load balancer
                // made by upstream kuryr or another cluster name from a missing one.
                Some(format!("load balancer {id}"))
            } else if !healthy.contains(id) {
                // Not ours to audit further (its listeners and pools carry no cluster tag).
                None
            } else if let Some(l) = ids(&st.listeners).into_iter().find(|l| !listener_ids.contains(l.as_str())) {
                Some(format!("listener {l}"))
            } else if let Some(p) = ids(&st.pools).into_iter().find(|p| !pool_ids.contains(p.as_str())) {
                Some(format!("pool {p}"))
            } else {
                members_differ(&ids(&st.pools), &st.members, &pool_members).map(|p| format!("members of pool {p} (changed out of band)"))
            };
            if let Some(m) = missing {
                let r = ObjectRef::from_obj(k.as_ref());
                tracing::info!(klb = %format!("{}/{}", k.namespace().unwrap_or_default(), k.name_any()), missing = %m, "audit: not in Octavia (or in ERROR): reconciling");
                let _ = trigger.send(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_deleted_or_added_out_of_band_are_found_from_the_pools_list() {
        let status = [json!({"id": "m1", "pool_id": "p1"}), json!({"id": "m2", "pool_id": "p1"}), json!({"id": "m3", "pool_id": "p2"})];
        let pools = ["p1".to_string(), "p2".to_string(), "p3".to_string()];
        let octavia = |p1: &[&'static str], p2: &[&'static str]| -> HashMap<&'static str, BTreeSet<&'static str>> {
            HashMap::from([("p1", p1.iter().copied().collect()), ("p2", p2.iter().copied().collect()), ("p3", BTreeSet::new())])
        };
        assert_eq!(members_differ(&pools, &status, &octavia(&["m1", "m2"], &["m3"])), None, "in sync (p3: no members either side)");
        assert_eq!(members_differ(&pools, &status, &octavia(&["m1"], &["m3"])).as_deref(), Some("p1"), "m2 deleted");
        assert_eq!(members_differ(&pools, &status, &octavia(&["m1", "m2"], &["m3", "x"])).as_deref(), Some("p2"), "x added");
        assert_eq!(members_differ(&pools[..1], &status, &HashMap::new()), None, "a pool Octavia does not list is not judged here");
    }
}
